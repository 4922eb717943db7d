//! The download task against a local HTTP server that plays the hub as `huggingface_hub` sees it: gated
//! repositories (401 without a token, 403 for a token without access), LFS files answered by a redirect to a CDN
//! with `X-Linked-Size` / `X-Linked-Etag`, small files behind a relative redirect to the hub's own cache, range
//! requests, and a connection dropped mid-file.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use sha2::{Digest, Sha256};

use super::*;
use crate::wheels::hex;

const FILE: &str = "SafeEdit_test.json";
const DATASET: &str = "/datasets/zjunlp/SafeEdit/resolve/main/";

fn content() -> Vec<u8> {
    (0..200_000u32).map(|i| (i % 251) as u8).collect()
}

/// One file of the fake hub: its bytes and whether it is stored in LFS (served through the CDN).
struct Stored {
    body: Vec<u8>,
    lfs: bool,
}

/// What the fake hub saw, for assertions.
#[derive(Default)]
struct Seen {
    /// GETs that reached file content (CDN or cache), in order.
    content_gets: AtomicUsize,
    /// Whether any request asked for a compressed transfer.
    compressed_asked: AtomicBool,
    /// `<method> <path>[ range=<start>-]` of every request, in order.
    requests: Mutex<Vec<String>>,
}

struct FakeHub {
    /// Resolve paths (`/datasets/<repo>/resolve/main/<file>` or `/<repo>/resolve/main/<file>`) to files.
    files: HashMap<String, Stored>,
    /// The first content GET sends half the body and closes the connection.
    drop_first_get: bool,
    /// The CDN's base URL, absolute as the hub writes it (set when serving).
    cdn: String,
}

struct Request {
    method: String,
    path: String,
    token: Option<String>,
    range_start: Option<usize>,
}

fn read_request(stream: &TcpStream, seen: &Seen) -> Option<Request> {
    let mut reader = BufReader::new(stream.try_clone().ok()?);
    let mut line = String::new();
    reader.read_line(&mut line).ok()?;
    let mut parts = line.split_whitespace();
    let (method, path) = (parts.next()?.to_string(), parts.next()?.to_string());
    let (mut token, mut range_start) = (None, None);
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header).unwrap_or(0) == 0 || header == "\r\n" {
            break;
        }
        let lower = header.to_ascii_lowercase();
        if let Some(v) = lower.strip_prefix("authorization: bearer ") {
            token = Some(v.trim().to_string());
        }
        if let Some(v) = lower.strip_prefix("range: bytes=") {
            range_start = v.trim().trim_end_matches('-').parse().ok();
        }
        if let Some(v) = lower.strip_prefix("accept-encoding:") {
            if v.trim() != "identity" {
                seen.compressed_asked.store(true, Ordering::SeqCst);
            }
        }
    }
    let range = range_start.map(|s| format!(" range={s}-")).unwrap_or_default();
    seen.requests.lock().unwrap().push(format!("{method} {path}{range}"));
    Some(Request { method, path, token, range_start })
}

fn reply(stream: &mut TcpStream, status: &str, headers: &str, body: &[u8], head: bool) {
    let _ = write!(
        stream,
        "HTTP/1.1 {status}\r\n{headers}Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    if !head {
        let _ = stream.write_all(body);
    }
}

impl FakeHub {
    fn new(files: HashMap<String, Stored>, drop_first_get: bool) -> Self {
        Self { files, drop_first_get, cdn: String::new() }
    }

    fn serve(mut self) -> (String, Arc<Seen>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        self.cdn = format!("{endpoint}/cdn");
        let seen = Arc::new(Seen::default());
        let log = seen.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                if let Some(request) = read_request(&stream, &log) {
                    self.answer(&mut stream, &request, &log);
                }
                let _ = stream.flush();
                // Closing ends a body early when fewer bytes than announced were sent.
                let _ = stream.shutdown(std::net::Shutdown::Both);
            }
        });
        (endpoint, seen)
    }

    fn answer(&self, stream: &mut TcpStream, r: &Request, seen: &Seen) {
        let head = r.method == "HEAD";
        // The CDN's signed URLs need no token; everything on the hub itself is gated.
        if let Some(key) = r.path.strip_prefix("/cdn") {
            return self.content(stream, key, r, seen);
        }
        match r.token.as_deref() {
            None => return reply(stream, "401 Unauthorized", "", b"", head),
            Some("bad") => return reply(stream, "403 Forbidden", "", b"", head),
            Some(_) => {}
        }
        if let Some(key) = r.path.strip_prefix("/api/resolve-cache") {
            return self.content(stream, key, r, seen);
        }
        let Some(stored) = self.files.get(&r.path) else {
            return reply(stream, "404 Not Found", "", b"Entry not found", head);
        };
        // Redirect bodies have a length of their own, which must never be taken for the file's size.
        let note = b"Redirecting to the file's location.";
        if stored.lfs {
            let sha = hex(&Sha256::digest(&stored.body));
            let headers = format!(
                "Location: {}{}\r\nX-Linked-Size: {}\r\nX-Linked-Etag: \"{sha}\"\r\n",
                self.cdn,
                r.path,
                stored.body.len()
            );
            reply(stream, "302 Found", &headers, note, head);
        } else {
            let headers = format!("Location: /api/resolve-cache{}\r\n", r.path);
            reply(stream, "307 Temporary Redirect", &headers, note, head);
        }
    }

    fn content(&self, stream: &mut TcpStream, key: &str, r: &Request, seen: &Seen) {
        let Some(stored) = self.files.get(key) else {
            return reply(stream, "404 Not Found", "", b"", r.method == "HEAD");
        };
        let body = &stored.body;
        // Small files carry their git SHA-1 as ETag: not a SHA-256, so only their size can be checked.
        let etag = format!("ETag: \"{}\"\r\n", "5".repeat(40));
        if r.method == "HEAD" {
            return reply(stream, "200 OK", &etag, body, true);
        }
        let n = seen.content_gets.fetch_add(1, Ordering::SeqCst);
        let start = r.range_start.unwrap_or(0);
        let (status, range) = match r.range_start {
            Some(_) => (
                "206 Partial Content",
                format!("Content-Range: bytes {start}-{}/{}\r\n", body.len() - 1, body.len()),
            ),
            None => ("200 OK", String::new()),
        };
        let slice = &body[start..];
        let _ = write!(
            stream,
            "HTTP/1.1 {status}\r\n{etag}{range}Content-Length: {}\r\nConnection: close\r\n\r\n",
            slice.len()
        );
        let send = if self.drop_first_get && n == 0 { &slice[..slice.len() / 2] } else { slice };
        let _ = stream.write_all(send);
    }
}

fn dataset_hub(drop_first_get: bool) -> (String, Arc<Seen>) {
    let files =
        HashMap::from([(format!("{DATASET}{FILE}"), Stored { body: content(), lfs: true })]);
    FakeHub::new(files, drop_first_get).serve()
}

fn files() -> Vec<(String, Expected)> {
    vec![(FILE.to_string(), Expected::default())]
}

fn read_lock_file(dir: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(dir.join("detox-lock.json")).unwrap()).unwrap()
}

#[test]
fn resumes_an_interrupted_download_and_verifies_it() {
    let (endpoint, seen) = dataset_hub(true);
    let hub = Hub { endpoint, token: Some("good".into()) };
    let dir = tempfile::tempdir().unwrap();
    let first =
        download_files(&hub, RepoKind::Dataset, "zjunlp/SafeEdit", "main", &files(), dir.path());
    let err = first.unwrap_err();
    assert!(format!("{err:#}").contains("interrupted"), "{err:#}");
    let part = dir.path().join(format!("{FILE}.part"));
    let partial = std::fs::metadata(&part).unwrap().len();
    assert!(
        partial > 0 && partial < content().len() as u64,
        "half the file is kept ({partial} bytes)"
    );
    assert!(!dir.path().join(FILE).exists(), "nothing is placed before verification");

    download_files(&hub, RepoKind::Dataset, "zjunlp/SafeEdit", "main", &files(), dir.path())
        .unwrap();
    assert_eq!(std::fs::read(dir.path().join(FILE)).unwrap(), content());
    assert!(!part.exists());
    assert_eq!(seen.content_gets.load(Ordering::SeqCst), 2);
    let lock = read_lock_file(dir.path());
    assert_eq!(lock[FILE]["sha256"], hex(&Sha256::digest(content())));
    assert_eq!(lock[FILE]["size"], content().len());
    assert_eq!(lock[FILE]["verified_against"], "hub (X-Linked-ETag)");
    assert!(!seen.compressed_asked.load(Ordering::SeqCst), "every request asks for identity");

    // Already present and matching: nothing is downloaded again.
    download_files(&hub, RepoKind::Dataset, "zjunlp/SafeEdit", "main", &files(), dir.path())
        .unwrap();
    assert_eq!(seen.content_gets.load(Ordering::SeqCst), 2);
}

#[test]
fn the_resumed_request_continues_where_the_part_file_ends() {
    let (endpoint, seen) = dataset_hub(true);
    let hub = Hub { endpoint, token: Some("good".into()) };
    let dir = tempfile::tempdir().unwrap();
    assert!(download_files(
        &hub,
        RepoKind::Dataset,
        "zjunlp/SafeEdit",
        "main",
        &files(),
        dir.path()
    )
    .is_err());
    let partial = std::fs::metadata(dir.path().join(format!("{FILE}.part"))).unwrap().len();
    download_files(&hub, RepoKind::Dataset, "zjunlp/SafeEdit", "main", &files(), dir.path())
        .unwrap();
    let requests = seen.requests.lock().unwrap().clone();
    let cdn_gets: Vec<&String> = requests.iter().filter(|r| r.starts_with("GET /cdn")).collect();
    assert_eq!(cdn_gets.len(), 2, "{requests:?}");
    assert!(!cdn_gets[0].contains("range="), "{requests:?}");
    assert!(cdn_gets[1].ends_with(&format!(" range={partial}-")), "{requests:?}");
    assert!(partial > 0);
}

#[test]
fn a_checksum_mismatch_is_refused_and_the_part_removed() {
    let (endpoint, _) = dataset_hub(false);
    let hub = Hub { endpoint, token: Some("good".into()) };
    let dir = tempfile::tempdir().unwrap();
    let pinned = vec![(FILE.to_string(), Expected { size: None, sha256: Some("0".repeat(64)) })];
    let err =
        download_files(&hub, RepoKind::Dataset, "zjunlp/SafeEdit", "main", &pinned, dir.path())
            .unwrap_err();
    assert!(err.to_string().contains("SHA-256 mismatch"), "{err}");
    assert!(!dir.path().join(FILE).exists() && !dir.path().join(format!("{FILE}.part")).exists());

    // A pinned size that the file does not have is refused too, and nothing is placed.
    let pinned = vec![(FILE.to_string(), Expected { size: Some(1234), sha256: None })];
    let err =
        download_files(&hub, RepoKind::Dataset, "zjunlp/SafeEdit", "main", &pinned, dir.path())
            .unwrap_err();
    assert!(err.to_string().contains("expected 1234"), "{err}");
    assert!(!dir.path().join(FILE).exists());
}

#[test]
fn a_manifest_pin_is_preferred_over_the_hub_and_recorded() {
    let (endpoint, _) = dataset_hub(false);
    let hub = Hub { endpoint, token: Some("good".into()) };
    let dir = tempfile::tempdir().unwrap();
    let sha = hex(&Sha256::digest(content()));
    let pinned = vec![(
        FILE.to_string(),
        Expected { size: Some(content().len() as u64), sha256: Some(sha.clone()) },
    )];
    download_files(&hub, RepoKind::Dataset, "zjunlp/SafeEdit", "main", &pinned, dir.path())
        .unwrap();
    let lock = read_lock_file(dir.path());
    assert_eq!(lock[FILE]["sha256"], sha);
    assert_eq!(lock[FILE]["verified_against"], "committed manifest");
}

#[test]
fn the_committed_manifest_lists_the_four_dataset_files() {
    let manifest: Value =
        serde_json::from_str(include_str!("../../manifests/safeedit.json")).unwrap();
    let names: Vec<String> = manifest_files(&manifest).unwrap().into_iter().map(|f| f.0).collect();
    assert_eq!(
        names,
        [
            "SafeEdit_train.json",
            "SafeEdit_val.json",
            "SafeEdit_test.json",
            "SafeEdit_test_ALL.json"
        ]
    );
    let bad = serde_json::json!({"files": [{"path": "a.json", "sha256": "abc"}]});
    assert!(manifest_files(&bad).unwrap_err().to_string().contains("files[0].sha256"));
}

#[test]
fn token_problems_and_missing_files_have_clear_messages() {
    let (endpoint, _) = dataset_hub(false);
    let dir = tempfile::tempdir().unwrap();
    let none = Hub { endpoint: endpoint.clone(), token: None };
    let err =
        download_files(&none, RepoKind::Dataset, "zjunlp/SafeEdit", "main", &files(), dir.path())
            .unwrap_err();
    assert!(err.to_string().contains("HF_TOKEN"), "{err}");
    assert!(require_token_message(&none).contains("no Hugging Face token found"));
    let bad = Hub { endpoint: endpoint.clone(), token: Some("bad".into()) };
    let err =
        download_files(&bad, RepoKind::Dataset, "zjunlp/SafeEdit", "main", &files(), dir.path())
            .unwrap_err();
    assert!(err.to_string().contains("accept its terms"), "{err}");
    let good = Hub { endpoint, token: Some("good".into()) };
    let other = vec![("missing.json".to_string(), Expected::default())];
    let err =
        download_files(&good, RepoKind::Dataset, "zjunlp/SafeEdit", "main", &other, dir.path())
            .unwrap_err();
    assert!(err.to_string().contains("404") && hub::is_not_found(&err), "{err}");
    let offline = Hub { endpoint: "http://127.0.0.1:9".into(), token: Some("good".into()) };
    let err = download_files(
        &offline,
        RepoKind::Dataset,
        "zjunlp/SafeEdit",
        "main",
        &files(),
        dir.path(),
    )
    .unwrap_err();
    assert!(err.to_string().contains("cannot reach"), "{err}");
}

fn require_token_message(hub: &Hub) -> String {
    format!("{:#}", hub::require_token(hub, "zjunlp/SafeEdit").unwrap_err())
}

/// A model repository: small JSON files behind the hub's relative redirect, weights in LFS.
fn model_files(repo: &str, names: &[(&str, &[u8], bool)]) -> HashMap<String, Stored> {
    names
        .iter()
        .map(|(name, body, lfs)| {
            (format!("/{repo}/resolve/main/{name}"), Stored { body: body.to_vec(), lfs: *lfs })
        })
        .collect()
}

#[test]
fn a_sharded_chat_model_is_fetched_through_its_index() {
    let index = br#"{"metadata": {}, "weight_map": {"a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors", "c": "model-00001-of-00002.safetensors"}}"#;
    let shard1 = vec![1u8; 70_000];
    let shard2 = vec![2u8; 50_000];
    let files = model_files(
        "org/chat",
        &[
            ("config.json", br#"{"model_type": "llama"}"#, false),
            ("generation_config.json", br#"{"do_sample": false}"#, false),
            ("tokenizer.json", br#"{"version": "1.0"}"#, false),
            ("tokenizer_config.json", br#"{}"#, false),
            ("model.safetensors.index.json", index, false),
            ("model-00001-of-00002.safetensors", &shard1, true),
            ("model-00002-of-00002.safetensors", &shard2, true),
        ],
    );
    let (endpoint, seen) = FakeHub::new(files, false).serve();
    let hub = Hub { endpoint, token: Some("good".into()) };
    let dir = tempfile::tempdir().unwrap();
    download_model(&hub, "org/chat", "main", dir.path(), false).unwrap();

    assert_eq!(
        std::fs::read(dir.path().join("config.json")).unwrap(),
        br#"{"model_type": "llama"}"#
    );
    assert_eq!(std::fs::read(dir.path().join("model-00001-of-00002.safetensors")).unwrap(), shard1);
    assert_eq!(std::fs::read(dir.path().join("model-00002-of-00002.safetensors")).unwrap(), shard2);
    assert!(!dir.path().join("special_tokens_map.json").exists(), "absent files are skipped");
    let lock = read_lock_file(dir.path());
    assert_eq!(lock["model-00002-of-00002.safetensors"]["sha256"], hex(&Sha256::digest(&shard2)));
    assert_eq!(lock["model-00002-of-00002.safetensors"]["verified_against"], "hub (X-Linked-ETag)");
    // The small files' size comes from the final answer, not from the redirect's body.
    assert_eq!(lock["config.json"]["size"], 23);
    assert!(lock["config.json"]["verified_against"].as_str().unwrap().starts_with("size only"));
    let requests = seen.requests.lock().unwrap().clone();
    assert!(
        requests.iter().any(|r| r.starts_with("HEAD /api/resolve-cache/org/chat")),
        "{requests:?}"
    );
    assert!(
        !requests.iter().any(|r| r.starts_with("HEAD /cdn")),
        "metadata requests stop at the redirect to the CDN: {requests:?}"
    );
}

#[test]
fn the_classifier_falls_back_to_pickled_weights() {
    let weights = vec![7u8; 30_000];
    let files = model_files(
        "zjunlp/SafeEdit-Safety-Classifier",
        &[
            ("config.json", br#"{"model_type": "roberta"}"#, false),
            ("vocab.json", br#"{"<s>": 0}"#, false),
            ("merges.txt", b"#version: 0.2\n", false),
            ("pytorch_model.bin", &weights, true),
        ],
    );
    let (endpoint, _) = FakeHub::new(files, false).serve();
    let hub = Hub { endpoint, token: Some("good".into()) };
    let dir = tempfile::tempdir().unwrap();
    download_model(&hub, "zjunlp/SafeEdit-Safety-Classifier", "main", dir.path(), true).unwrap();
    assert_eq!(std::fs::read(dir.path().join("pytorch_model.bin")).unwrap(), weights);
    assert!(dir.path().join("merges.txt").is_file() && dir.path().join("vocab.json").is_file());
    assert!(!dir.path().join("model.safetensors").exists());

    // A chat model without any weights is an error, not an empty folder.
    let err = download_model(&hub, "zjunlp/SafeEdit-Safety-Classifier", "main", dir.path(), false)
        .unwrap_err();
    assert!(err.to_string().contains("neither model.safetensors"), "{err}");
}

#[test]
fn a_refused_token_is_not_mistaken_for_a_missing_weights_file() {
    let files = model_files("org/gated", &[("model.safetensors", b"weights", true)]);
    let (endpoint, _) = FakeHub::new(files, false).serve();
    let hub = Hub { endpoint, token: Some("bad".into()) };
    let dir = tempfile::tempdir().unwrap();
    let err = download_model(&hub, "org/gated", "main", dir.path(), false).unwrap_err();
    assert!(err.to_string().contains("access denied (403)"), "{err}");
}

#[test]
fn shard_names_cannot_leave_the_model_folder() {
    assert!(is_plain_relative("model-00001-of-00002.safetensors"));
    assert!(is_plain_relative("sub/model.safetensors"));
    assert!(!is_plain_relative("../model.safetensors"));
    assert!(!is_plain_relative("/etc/passwd"));
    assert!(!is_plain_relative(""));
}

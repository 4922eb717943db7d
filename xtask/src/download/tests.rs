//! The download task against a local HTTP server that plays the hub: token checks, X-Linked headers, a
//! connection dropped mid-file, range requests.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use sha2::{Digest, Sha256};

use super::*;
use crate::libtorch::hex;

const FILE: &str = "SafeEdit_test.json";

fn content() -> Vec<u8> {
    (0..200_000u32).map(|i| (i % 251) as u8).collect()
}

/// Serves `content()` at the SafeEdit resolve URL. The first GET sends half the body and drops the connection.
fn serve() -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    let gets = Arc::new(AtomicUsize::new(0));
    let counter = gets.clone();
    std::thread::spawn(move || {
        let body = content();
        let sha = hex(&Sha256::digest(&body));
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut request = String::new();
            if reader.read_line(&mut request).is_err() {
                continue;
            }
            let mut auth = None;
            let mut range = None;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                let lower = line.to_ascii_lowercase();
                if let Some(v) = lower.strip_prefix("authorization: bearer ") {
                    auth = Some(v.trim().to_string());
                }
                if let Some(v) = lower.strip_prefix("range: bytes=") {
                    range = v.trim().trim_end_matches('-').parse::<usize>().ok();
                }
            }
            let mut parts = request.split_whitespace();
            let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
            let status = match auth.as_deref() {
                None => Some("401 Unauthorized"),
                Some("bad") => Some("403 Forbidden"),
                _ if !path.ends_with(&format!("/datasets/zjunlp/SafeEdit/resolve/main/{FILE}")) => {
                    Some("404 Not Found")
                }
                _ => None,
            };
            if let Some(status) = status {
                let _ = write!(
                    stream,
                    "HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                );
                continue;
            }
            if method == "HEAD" {
                let _ = write!(
                    stream,
                    "HTTP/1.1 302 Found\r\nLocation: /cdn\r\nX-Linked-Size: {}\r\nX-Linked-ETag: \"{sha}\"\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                    body.len()
                );
                continue;
            }
            let n = counter.fetch_add(1, Ordering::SeqCst);
            let start = range.unwrap_or(0);
            let slice = &body[start..];
            let head = if range.is_some() {
                format!(
                    "HTTP/1.1 206 Partial Content\r\nContent-Range: bytes {start}-{}/{}\r\n",
                    body.len() - 1,
                    body.len()
                )
            } else {
                "HTTP/1.1 200 OK\r\n".to_string()
            };
            let _ = write!(
                stream,
                "{head}Content-Length: {}\r\nConnection: close\r\n\r\n",
                slice.len()
            );
            let send = if n == 0 { &slice[..slice.len() / 2] } else { slice };
            let _ = stream.write_all(send);
            let _ = stream.flush();
            // Closing the connection ends the body early on the first GET.
            let _ = stream.shutdown(std::net::Shutdown::Both);
        }
    });
    (endpoint, gets)
}

fn files() -> Vec<(String, Expected)> {
    vec![(FILE.to_string(), Expected::default())]
}

#[test]
fn resumes_an_interrupted_download_and_verifies_it() {
    let (endpoint, gets) = serve();
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
    assert_eq!(gets.load(Ordering::SeqCst), 2);
    let lock: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("detox-lock.json")).unwrap())
            .unwrap();
    assert_eq!(lock[FILE]["sha256"], hex(&Sha256::digest(content())));
    assert_eq!(lock[FILE]["verified_against"], "hub (X-Linked-ETag)");

    // Already present and matching: nothing is downloaded again.
    download_files(&hub, RepoKind::Dataset, "zjunlp/SafeEdit", "main", &files(), dir.path())
        .unwrap();
    assert_eq!(gets.load(Ordering::SeqCst), 2);
}

#[test]
fn a_checksum_mismatch_is_refused_and_the_part_removed() {
    let (endpoint, gets) = serve();
    gets.store(1, Ordering::SeqCst); // serve whole bodies
    let hub = Hub { endpoint, token: Some("good".into()) };
    let dir = tempfile::tempdir().unwrap();
    let pinned = vec![(FILE.to_string(), Expected { size: None, sha256: Some("0".repeat(64)) })];
    let err =
        download_files(&hub, RepoKind::Dataset, "zjunlp/SafeEdit", "main", &pinned, dir.path())
            .unwrap_err();
    assert!(err.to_string().contains("SHA-256 mismatch"), "{err}");
    assert!(!dir.path().join(FILE).exists() && !dir.path().join(format!("{FILE}.part")).exists());
}

#[test]
fn token_problems_and_missing_files_have_clear_messages() {
    let (endpoint, _) = serve();
    let dir = tempfile::tempdir().unwrap();
    let none = Hub { endpoint: endpoint.clone(), token: None };
    let err =
        download_files(&none, RepoKind::Dataset, "zjunlp/SafeEdit", "main", &files(), dir.path())
            .unwrap_err();
    assert!(err.to_string().contains("HF_TOKEN"), "{err}");
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
    assert!(err.to_string().contains("404"), "{err}");
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

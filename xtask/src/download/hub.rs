//! The Hugging Face hub: endpoint, token, file URLs and what the hub says about a file before downloading it.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};

/// Whether a repository is a dataset or a model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RepoKind {
    /// `https://<endpoint>/datasets/<repo>/...`
    Dataset,
    /// `https://<endpoint>/<repo>/...`
    Model,
}

/// Connection settings.
#[derive(Debug, Clone)]
pub struct Hub {
    /// Base URL, without a trailing slash.
    pub endpoint: String,
    /// Bearer token, if any.
    pub token: Option<String>,
}

/// What a HEAD request on a file's resolve URL reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteFile {
    /// Size in bytes, if reported.
    pub size: Option<u64>,
    /// SHA-256 (hex) of an LFS file, if reported (`X-Linked-ETag`).
    pub sha256: Option<String>,
}

impl Hub {
    /// The endpoint from `DETOX_HF_ENDPOINT` or `HF_ENDPOINT` (default `https://huggingface.co`) and the token from
    /// `HF_TOKEN` (or `HUGGING_FACE_HUB_TOKEN`), else the token file the `huggingface-cli login` writes
    /// (`$HF_HOME/token`, default `~/.cache/huggingface/token`).
    pub fn from_env() -> Self {
        let endpoint = std::env::var("DETOX_HF_ENDPOINT")
            .or_else(|_| std::env::var("HF_ENDPOINT"))
            .unwrap_or_else(|_| "https://huggingface.co".into())
            .trim_end_matches('/')
            .to_string();
        Self { endpoint, token: token_from_env() }
    }

    /// The URL of `file` in `repo` at `revision`.
    pub fn resolve_url(&self, kind: RepoKind, repo: &str, revision: &str, file: &str) -> String {
        let prefix = match kind {
            RepoKind::Dataset => "datasets/",
            RepoKind::Model => "",
        };
        format!("{}/{prefix}{repo}/resolve/{revision}/{file}", self.endpoint)
    }

    /// An agent that reports every HTTP status as a response. With `follow_redirects`, it keeps the token on
    /// redirects to the same host (a renamed repository, the hub's own cache) and drops it for other hosts (the
    /// CDN's signed URLs need none).
    pub(crate) fn agent(&self, follow_redirects: bool) -> ureq::Agent {
        ureq::Agent::config_builder()
            .http_status_as_error(false)
            .max_redirects(if follow_redirects { 10 } else { 0 })
            .redirect_auth_headers(ureq::config::RedirectAuthHeaders::SameHost)
            .timeout_connect(Some(Duration::from_secs(20)))
            .build()
            .into()
    }

    /// Adds the token and asks for the bytes as stored: a compressed transfer would change sizes and break
    /// byte ranges.
    pub(crate) fn authorize<B>(&self, request: ureq::RequestBuilder<B>) -> ureq::RequestBuilder<B> {
        let request = request.header("Accept-Encoding", "identity");
        match &self.token {
            Some(token) => request.header("Authorization", &format!("Bearer {token}")),
            None => request,
        }
    }

    /// Asks the hub for a file's size and SHA-256 without downloading it.
    ///
    /// As `huggingface_hub`'s `get_hf_file_metadata` does, redirects within the hub (relative `Location`) are
    /// followed and a redirect to another host (the CDN, for LFS files) is not: the hub's answer carries
    /// `X-Linked-Size` and `X-Linked-Etag` (the LFS SHA-256). `Content-Length` is a size only on a final 2xx
    /// answer; on a redirect it measures the redirect's own body.
    pub fn head(&self, url: &str, what: &str) -> Result<RemoteFile> {
        let agent = self.agent(false);
        let mut current = url.to_string();
        let mut linked = RemoteFile { size: None, sha256: None };
        for _ in 0..=MAX_HUB_REDIRECTS {
            let response =
                self.authorize(agent.head(&current)).call().map_err(|e| network_error(e, url))?;
            let status = response.status().as_u16();
            check_status(status, what, self.token.is_some())?;
            let header = |name: &str| {
                response.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_string)
            };
            linked.size =
                linked.size.or_else(|| header("x-linked-size").and_then(|v| v.parse().ok()));
            linked.sha256 =
                linked.sha256.or_else(|| header("x-linked-etag").and_then(|v| lfs_sha256(&v)));
            if !(300..400).contains(&status) {
                let size =
                    linked.size.or_else(|| header("content-length").and_then(|v| v.parse().ok()));
                return Ok(RemoteFile { size, sha256: linked.sha256 });
            }
            match header("location").filter(|l| l.starts_with('/') && !l.starts_with("//")) {
                Some(path) => current = format!("{}{path}", origin(&current)),
                None => return Ok(linked),
            }
        }
        bail!("{what}: more than {MAX_HUB_REDIRECTS} redirects within the hub")
    }
}

/// Redirects within the hub that a metadata request follows (renamed repositories, the hub's cache).
const MAX_HUB_REDIRECTS: usize = 5;

/// `scheme://host[:port]` of a URL.
fn origin(url: &str) -> &str {
    let after_scheme = url.find("://").map_or(0, |i| i + 3);
    match url[after_scheme..].find('/') {
        Some(i) => &url[..after_scheme + i],
        None => url,
    }
}

/// The SHA-256 in an `X-Linked-Etag` value (`"<hex>"`, possibly weak `W/"<hex>"`), if it is one.
fn lfs_sha256(etag: &str) -> Option<String> {
    let v = etag.trim().trim_start_matches("W/").trim_matches('"').to_ascii_lowercase();
    (v.len() == 64 && v.chars().all(|c| c.is_ascii_hexdigit())).then_some(v)
}

/// An HTTP status from the hub that ends a download, with the message a user needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HubStatus {
    /// The HTTP status code.
    pub status: u16,
    message: String,
}

impl std::fmt::Display for HubStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for HubStatus {}

/// Whether an error is the hub's 404 for a file (a file a repository may lack).
pub fn is_not_found(e: &anyhow::Error) -> bool {
    e.downcast_ref::<HubStatus>().is_some_and(|s| s.status == 404)
}

/// Turns an HTTP status into the message a user needs.
pub fn check_status(status: u16, what: &str, has_token: bool) -> Result<(), HubStatus> {
    let message = match status {
        200..=399 => return Ok(()),
        401 if !has_token => format!(
            "{what}: the hub requires a token. Create one at https://huggingface.co/settings/tokens and export \
             HF_TOKEN=<token> (or run `huggingface-cli login`)"
        ),
        401 | 403 => format!(
            "{what}: access denied ({status}). The repository is gated: open its page on huggingface.co while logged \
             in, accept its terms, and check that HF_TOKEN belongs to that account"
        ),
        404 => format!("{what}: not found on the hub (404); check the repository id and file name"),
        _ => format!("{what}: the hub answered HTTP {status}"),
    };
    Err(HubStatus { status, message })
}

pub(crate) fn network_error(e: ureq::Error, url: &str) -> anyhow::Error {
    anyhow::anyhow!(
        "cannot reach {url}: {e}. Check the network connection (and HTTPS_PROXY if one is needed)"
    )
}

fn token_from_env() -> Option<String> {
    for var in ["HF_TOKEN", "HUGGING_FACE_HUB_TOKEN"] {
        if let Ok(t) = std::env::var(var) {
            if !t.trim().is_empty() {
                return Some(t.trim().to_string());
            }
        }
    }
    let home = std::env::var_os("HF_HOME").map(PathBuf::from).or_else(|| {
        std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache").join("huggingface"))
    })?;
    std::fs::read_to_string(home.join("token"))
        .ok()
        .map(|t| t.trim().to_string())
        .filter(|t| !t.is_empty())
}

/// Reads a required token, for gated repositories.
pub fn require_token(hub: &Hub, what: &str) -> Result<()> {
    if hub.token.is_none() {
        check_status(401, what, false).context("no Hugging Face token found")?;
    }
    Ok(())
}

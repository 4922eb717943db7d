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

    pub(crate) fn agent(&self, follow_redirects: bool) -> ureq::Agent {
        ureq::Agent::config_builder()
            .http_status_as_error(false)
            .max_redirects(if follow_redirects { 10 } else { 0 })
            .timeout_connect(Some(Duration::from_secs(20)))
            .build()
            .into()
    }

    pub(crate) fn authorize<B>(&self, request: ureq::RequestBuilder<B>) -> ureq::RequestBuilder<B> {
        match &self.token {
            Some(token) => request.header("Authorization", &format!("Bearer {token}")),
            None => request,
        }
    }

    /// Asks the hub for a file's size and SHA-256 without downloading it.
    pub fn head(&self, url: &str, what: &str) -> Result<RemoteFile> {
        let response = self
            .authorize(self.agent(false).head(url))
            .call()
            .map_err(|e| network_error(e, url))?;
        let status = response.status().as_u16();
        check_status(status, what, self.token.is_some())?;
        let header = |name: &str| {
            response.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_string)
        };
        let size = header("x-linked-size")
            .or_else(|| header("content-length"))
            .and_then(|v| v.parse().ok());
        let sha256 = header("x-linked-etag")
            .map(|v| {
                v.trim_matches('"').trim_start_matches("W/").trim_matches('"').to_ascii_lowercase()
            })
            .filter(|v| v.len() == 64 && v.chars().all(|c| c.is_ascii_hexdigit()));
        Ok(RemoteFile { size, sha256 })
    }
}

/// Turns an HTTP status into the message a user needs.
pub fn check_status(status: u16, what: &str, has_token: bool) -> Result<()> {
    match status {
        200..=399 => Ok(()),
        401 if !has_token => bail!(
            "{what}: the hub requires a token. Create one at https://huggingface.co/settings/tokens and export \
             HF_TOKEN=<token> (or run `huggingface-cli login`)"
        ),
        401 | 403 => bail!(
            "{what}: access denied ({status}). The repository is gated: open its page on huggingface.co while logged \
             in, accept its terms, and check that HF_TOKEN belongs to that account"
        ),
        404 => bail!("{what}: not found on the hub (404); check the repository id and file name"),
        _ => bail!("{what}: the hub answered HTTP {status}"),
    }
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

//! `cargo xtask download`: the gated SafeEdit files, the SafeEdit safety classifier and chat models from the
//! Hugging Face hub, resumable and verified, placed atomically, with a lock file recording what was verified.

mod fetch;
mod hub;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::Subcommand;
use serde_json::Value;

pub use fetch::{fetch, hash_file, Expected};
pub use hub::{Hub, RepoKind};

#[cfg(test)]
mod tests;

use crate::paths::workspace_root;

/// What to download.
#[derive(Debug, Subcommand)]
pub enum Target {
    /// The SafeEdit dataset files (gated: accept the terms of `zjunlp/SafeEdit` on the hub and set HF_TOKEN).
    Safeedit {
        /// Destination folder.
        #[arg(long, default_value = "data/safeedit")]
        dest: PathBuf,
    },
    /// The SafeEdit safety classifier `zjunlp/SafeEdit-Safety-Classifier` (RoBERTa-large).
    Classifier {
        /// Destination folder.
        #[arg(long, default_value = "models/zjunlp--SafeEdit-Safety-Classifier")]
        dest: PathBuf,
    },
    /// A chat model by Hugging Face repository id (config, tokenizer and safetensors weights).
    Model {
        /// Repository id, e.g. `meta-llama/Llama-2-7b-chat-hf`.
        repo: String,
        /// Destination folder (default `models/<owner>--<name>`).
        #[arg(long)]
        dest: Option<PathBuf>,
        /// Revision (branch, tag or commit).
        #[arg(long, default_value = "main")]
        revision: String,
    },
}

/// Runs a download task.
pub fn run(target: Target) -> Result<()> {
    let hub = Hub::from_env();
    let root = workspace_root();
    match target {
        Target::Safeedit { dest } => {
            let manifest: Value =
                serde_json::from_str(include_str!("../../manifests/safeedit.json"))?;
            hub::require_token(&hub, "zjunlp/SafeEdit")?;
            let files = manifest_files(&manifest)?;
            download_files(
                &hub,
                RepoKind::Dataset,
                "zjunlp/SafeEdit",
                "main",
                &files,
                &root.join(dest),
            )
        }
        Target::Classifier { dest } => download_model(
            &hub,
            "zjunlp/SafeEdit-Safety-Classifier",
            "main",
            &root.join(dest),
            true,
        ),
        Target::Model { repo, dest, revision } => {
            let dest =
                dest.unwrap_or_else(|| PathBuf::from("models").join(repo.replace('/', "--")));
            download_model(&hub, &repo, &revision, &root.join(dest), false)
        }
    }
}

/// The files of a committed manifest with the size and SHA-256 pinned for each (`null` = not pinned).
fn manifest_files(manifest: &Value) -> Result<Vec<(String, Expected)>> {
    let entries =
        manifest["files"].as_array().context("manifests/safeedit.json: no `files` array")?;
    entries
        .iter()
        .enumerate()
        .map(|(i, f)| {
            let path = f["path"].as_str().with_context(|| {
                format!("manifests/safeedit.json: files[{i}].path is not a string")
            })?;
            let sha256 = f["sha256"].as_str().map(str::to_ascii_lowercase);
            if sha256
                .as_ref()
                .is_some_and(|h| h.len() != 64 || !h.chars().all(|c| c.is_ascii_hexdigit()))
            {
                anyhow::bail!("manifests/safeedit.json: files[{i}].sha256 is not 64 hex digits");
            }
            Ok((path.to_string(), Expected { size: f["size"].as_u64(), sha256 }))
        })
        .collect()
}

/// Downloads the listed files of a repository into `dest`, verifying each against the expected values or, when
/// those are unknown, against the size and SHA-256 the hub reports; records the result in `dest/detox-lock.json`.
pub fn download_files(
    hub: &Hub,
    kind: RepoKind,
    repo: &str,
    revision: &str,
    files: &[(String, Expected)],
    dest: &Path,
) -> Result<()> {
    let mut lock = read_lock(dest)?;
    for (name, pinned) in files {
        let url = hub.resolve_url(kind, repo, revision, name);
        let what = format!("{repo}/{name}");
        let remote = hub.head(&url, &what)?;
        let expected = Expected {
            size: pinned.size.or(remote.size),
            sha256: pinned.sha256.clone().or(remote.sha256.clone()),
        };
        let fetched = fetch(hub, &url, &dest.join(name), &expected, &what)?;
        let source = match (&pinned.sha256, &remote.sha256) {
            (Some(_), _) => "committed manifest",
            (None, Some(_)) => "hub (X-Linked-ETag)",
            (None, None) => "size only (the hub reported no SHA-256 for this file)",
        };
        println!(
            "{what}: {} bytes, sha256 {} (verified against {source})",
            fetched.size, fetched.sha256
        );
        lock.insert(
            name.clone(),
            serde_json::json!({"repo": repo, "revision": revision, "size": fetched.size, "sha256": fetched.sha256, "verified_against": source}),
        );
        write_lock(dest, &lock)?;
    }
    Ok(())
}

fn download_model(
    hub: &Hub,
    repo: &str,
    revision: &str,
    dest: &Path,
    classifier: bool,
) -> Result<()> {
    let mut files: Vec<String> =
        ["config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"]
            .map(String::from)
            .to_vec();
    if classifier {
        files.extend(["vocab.json", "merges.txt"].map(String::from));
    } else {
        files.push("generation_config.json".into());
    }
    let mut present = Vec::new();
    for name in files {
        let url = hub.resolve_url(RepoKind::Model, repo, revision, &name);
        match hub.head(&url, &format!("{repo}/{name}")) {
            Ok(_) => present.push((name, Expected::default())),
            Err(e) if hub::is_not_found(&e) => {
                println!("{repo}/{name}: not in the repository, skipped")
            }
            Err(e) => return Err(e),
        }
    }
    let index_url =
        hub.resolve_url(RepoKind::Model, repo, revision, "model.safetensors.index.json");
    let single_url = hub.resolve_url(RepoKind::Model, repo, revision, "model.safetensors");
    // Only a 404 means "not this layout": a refused token or a dropped connection must stop the task.
    let exists = |url: &str, name: &str| match hub.head(url, &format!("{repo}/{name}")) {
        Ok(_) => Ok(true),
        Err(e) if hub::is_not_found(&e) => Ok(false),
        Err(e) => Err(e),
    };
    if exists(&single_url, "model.safetensors")? {
        present.push(("model.safetensors".into(), Expected::default()));
    } else if exists(&index_url, "model.safetensors.index.json")? {
        download_files(
            hub,
            RepoKind::Model,
            repo,
            revision,
            &[("model.safetensors.index.json".into(), Expected::default())],
            dest,
        )?;
        let index: Value = serde_json::from_str(&std::fs::read_to_string(
            dest.join("model.safetensors.index.json"),
        )?)?;
        let mut shards: Vec<String> = index["weight_map"]
            .as_object()
            .context("model.safetensors.index.json has no weight_map")?
            .values()
            .filter_map(|v| v.as_str().map(str::to_string))
            .collect();
        shards.sort();
        shards.dedup();
        if let Some(bad) = shards.iter().find(|s| !is_plain_relative(s)) {
            anyhow::bail!("{repo}: model.safetensors.index.json names a shard outside the model folder: {bad:?}");
        }
        present.extend(shards.into_iter().map(|s| (s, Expected::default())));
    } else if classifier {
        present.push(("pytorch_model.bin".into(), Expected::default()));
        println!("{repo} has no safetensors weights; after the download run `cargo xtask convert-bin {}`", dest.display());
    } else {
        anyhow::bail!("{repo} has neither model.safetensors nor model.safetensors.index.json");
    }
    download_files(hub, RepoKind::Model, repo, revision, &present, dest)
}

/// A relative path without `..`, so that a file named by the hub lands inside the destination folder.
fn is_plain_relative(name: &str) -> bool {
    let path = Path::new(name);
    !name.is_empty() && path.components().all(|c| matches!(c, std::path::Component::Normal(_)))
}

fn read_lock(dest: &Path) -> Result<BTreeMap<String, Value>> {
    let path = dest.join("detox-lock.json");
    if !path.is_file() {
        return Ok(BTreeMap::new());
    }
    serde_json::from_str(&std::fs::read_to_string(&path)?)
        .with_context(|| format!("reading {}", path.display()))
}

fn write_lock(dest: &Path, lock: &BTreeMap<String, Value>) -> Result<()> {
    std::fs::create_dir_all(dest)?;
    let path = dest.join("detox-lock.json");
    let tmp = dest.join(".detox-lock.json.partial");
    std::fs::write(&tmp, serde_json::to_string_pretty(lock)?)?;
    std::fs::rename(&tmp, &path)?;
    Ok(())
}

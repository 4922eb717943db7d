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
    let general = crate::general_data::ensure_for_run()?;
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
        "--prompt-layout",
        "chat",
        "--method-arg",
        "prompt_layout=chat",
        // Small general sets, every third record, so that measuring the cost adds little to the run.
        "--general-every",
        "3",
        "--general-qa",
        "6",
        "--general-sum",
        "1",
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
        ("--punkt", punkt),
    ] {
        args.push(flag.into());
        args.push(path.into());
    }
    match &general.xstest {
        Some(path) => {
            args.extend(["--over-refusal".into(), "6".into(), "--xstest-data".into(), path.into()])
        }
        None => args.extend(["--over-refusal".into(), "0".into()]),
    }
    args
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::general_data::GeneralData;

    fn count(args: &[OsString], flag: &str) -> usize {
        args.iter().filter(|a| a.as_os_str() == flag).count()
    }

    #[test]
    fn without_xstest_the_run_asks_for_no_over_refusal_set() {
        let general =
            GeneralData { nq_open: "q.jsonl".into(), xsum: "s.jsonl".into(), xstest: None };
        let args = protocol_args(Path::new("m.gguf"), Path::new("punkt"), &general);
        assert_eq!(count(&args, "--over-refusal"), 1);
        assert_eq!(count(&args, "--xstest-data"), 0);
        let i = args.iter().position(|a| a == "--over-refusal").unwrap();
        assert_eq!(args[i + 1], "0");

        let general = GeneralData { xstest: Some("x.csv".into()), ..general };
        let args = protocol_args(Path::new("m.gguf"), Path::new("punkt"), &general);
        let i = args.iter().position(|a| a == "--over-refusal").unwrap();
        assert_eq!((args[i + 1].as_os_str(), count(&args, "--xstest-data")), ("6".as_ref(), 1));
    }
}

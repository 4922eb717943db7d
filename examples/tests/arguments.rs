//! Every example refuses out-of-range arguments with a clear error naming the argument and a non-zero exit,
//! before loading a model or writing anything, and never panics.
//!
//! It runs the example executables `cargo test -p detox-examples` builds (see `common`).
mod common;

use anyhow::{ensure, Context, Result};

/// Runs `name` with `args` and checks for a refusal whose message contains `expected`.
fn refuses(name: &str, args: &[&str], expected: &str) -> Result<()> {
    let shown = format!("{name} {}", args.join(" "));
    let output =
        common::run_expecting_refusal(name, args, "was accepted: still running after 60 s")?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    ensure!(!stderr.contains("panicked"), "`{shown}` panicked:\n{stderr}");
    ensure!(output.status.code() != Some(101), "`{shown}` exited like a panic:\n{stderr}");
    ensure!(!output.status.success(), "`{shown}` was accepted:\n{stderr}");
    ensure!(stderr.contains(expected), "`{shown}`: the error does not say {expected:?}:\n{stderr}");
    Ok(())
}

fn sweep(name: &str, cases: &[(&[&str], &str)]) -> Result<()> {
    let failures: Vec<String> = cases
        .iter()
        .filter_map(|(args, expected)| {
            refuses(name, args, expected).err().map(|e| format!("{e:#}"))
        })
        .collect();
    ensure!(failures.is_empty(), "{}", failures.join("\n\n"));
    Ok(())
}

#[test]
fn bench() -> Result<()> {
    sweep(
        "bench",
        &[
            (&["--prompt", "16"], "--prompt"),
            (&["--prompt", "40", "--batch", "5"], "--prompt 40 is too short for --batch 5"),
            (&["--batch", "0"], "--batch"),
            (&["--new", "1"], "--new"),
            (&["--reps", "0"], "--reps"),
            (&["--refill-new", "0"], "--refill-new"),
            (&["--prompt", "many"], "--prompt"),
        ],
    )
}

#[test]
fn protocol_bench() -> Result<()> {
    sweep(
        "protocol_bench",
        &[
            (&["--prompt", "1"], "--prompt"),
            (&["--target", "0"], "--target"),
            (&["--steps", "0"], "--steps"),
            (&["--new", "0"], "--new"),
            (&["--gen-batches", "5,0"], "--gen-batches"),
            (&["--gen-batches", "5,x"], "--gen-batches"),
            (&["--edit-batch", "0"], "--edit-batch"),
            (&["--records", "0"], "--records"),
            (&["--seed", "x"], "--seed"),
        ],
    )
}

#[test]
fn chat_dinm_edit_forward_locate() -> Result<()> {
    sweep(
        "chat",
        &[
            (&["--max-new-tokens", "0"], "--max-new-tokens"),
            (&["--temperature", "0"], "--temperature"),
            (&["--temperature", "nan"], "--temperature"),
            (&["--temperature=-1"], "--temperature"),
        ],
    )?;
    sweep(
        "dinm_edit",
        &[(&["--max-new-tokens", "0"], "--max-new-tokens"), (&["--id", "-3"], "-3")],
    )?;
    sweep("forward", &[(&["--prompt", ""], "--prompt is empty")])?;
    sweep("locate", &[(&["--first", "0"], "--first")])
}

#[test]
fn safeedit_eval() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let out = dir.path().join("run");
    let out = out.to_str().context("temporary path")?;
    let saved = dir.path().join("saved");
    let saved = saved.to_str().context("temporary path")?;
    sweep(
        "safeedit_eval",
        &[
            (&["--out", out, "--first", "0"], "--first"),
            (&["--out", out, "--sample", "0"], "--sample"),
            (&["--out", out, "--batch-size", "0"], "--batch-size"),
            (&["--out", out, "--max-new-tokens", "0"], "--max-new-tokens"),
            (&["--out", out, "--max-input-tokens", "0"], "--max-input-tokens"),
            (&["--out", out, "--temperature", "inf"], "--temperature"),
            (&["--out", out, "--batch-records", "0"], "records per batch"),
            (&["--out", out, "--shard", "2/2"], "shard"),
            (&["--out", out, "--shard", "0/0"], "shard"),
            (&["--out", out, "--shard", "half"], "half"),
            (&["--out", out, "--save-model", saved, "--method", "dinm"], "cannot be written"),
            (
                &["--out", out, "--save-model", saved, "--method", "self-reminder"],
                "rewrites prompts",
            ),
            (&["--out", out, "--save-model", saved, "--method", "trained"], "artefact"),
            (&["--out", out, "--save-model", saved, "--method", "none"], "is a GGUF file"),
            (&["--out", out, "--save-model", saved, "--nlpcc"], "--nlpcc"),
            (
                &["--out", out, "--save-model", saved, "--max-shard-size", "5 parsecs"],
                "--max-shard-size",
            ),
            (&["--out", out, "--save-model", saved, "--save-dtype", "f64"], "--save-dtype"),
            (&["--out", out, "--save-dtype", "bf16"], "--save-model"),
        ],
    )?;
    ensure!(!dir.path().join("run").exists(), "a refused run created its directory");
    ensure!(!dir.path().join("saved").exists(), "a refused run created its model directory");
    Ok(())
}

#[test]
fn safeedit_slurm() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let out = dir.path().join("run");
    let out = out.to_str().context("temporary path")?;
    let missing = dir.path().join("missing.json");
    let missing = missing.to_str().context("temporary path")?;
    let data = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../datasets/safeedit_sample_test.json")
        .display()
        .to_string();
    let with = |extra: &'static [&'static str]| -> Vec<&str> {
        let mut args = vec!["--data", &data, "--out", out, "--shards", "2", "--dry-run"];
        args.extend_from_slice(extra);
        args
    };
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["--out", out, "--shards", "0"], "--shards"),
        (with(&["--time", "4h"]), "--time \"4h\""),
        (with(&["--merge-time", "1:2:3:4"]), "--merge-time"),
        (with(&["--mem", "lots"]), "--mem \"lots\""),
        (with(&["--gpus-per-task", "0"]), "--gpus-per-task"),
        (with(&["--cpus-per-task", "0"]), "--cpus-per-task"),
        (with(&["--max-parallel", "0"]), "--max-parallel"),
        (with(&["--partition", "gpu nodes"]), "--partition"),
        (with(&["--sbatch", "qos=long"]), "--sbatch \"qos=long\""),
        (with(&["--", "--shard", "0/2"]), "--shard cannot be passed on to safeedit_eval"),
        (with(&["--", "--pre-edit-cache=x.jsonl"]), "--pre-edit-cache cannot be passed on"),
        (with(&["--binary", "/nonexistent/safeedit_eval"]), "no such executable"),
    ];
    let mut cases: Vec<(&[&str], &str)> = cases.iter().map(|(a, e)| (a.as_slice(), *e)).collect();
    let missing_data = ["--out", out, "--shards", "2", "--data", missing];
    cases.push((&missing_data, "missing.json"));
    sweep("safeedit_slurm", &cases)?;
    ensure!(!dir.path().join("run").exists(), "a refused plan created its run directory");
    Ok(())
}

#[test]
fn train_baseline() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let out = dir.path().join("artefact");
    let out = out.to_str().context("temporary path")?;
    let saved = dir.path().join("saved");
    let saved = saved.to_str().context("temporary path")?;
    let with = |extra: &'static [&'static str]| -> Vec<&str> {
        let mut args = vec!["--method", "sft", "--out", out];
        args.extend_from_slice(extra);
        args
    };
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (with(&["--first", "0"]), "--first"),
        (with(&["--method-arg", "rank=0"]), "option `rank`"),
        (with(&["--method-arg", "alpha=-2"]), "option `alpha`"),
        (with(&["--method-arg", "lr=0"]), "option `lr`"),
        (with(&["--method-arg", "epochs=0"]), "option `epochs`"),
        (with(&["--method-arg", "batch_size=0"]), "option `batch_size`"),
        (with(&["--method-arg", "max_length=1"]), "option `max_length`"),
        (with(&["--method-arg", "stop_after=0"]), "option `stop_after`"),
        (with(&["--method-arg", "layers=1,x"]), "option `layers`"),
        (with(&["--method-arg", "layers=1,,2"]), "option `layers`"),
        (with(&["--method-arg", "modules=q_proj,"]), "option `modules`"),
        (with(&["--method-arg", "mend_rank=4"]), "has no option `mend_rank`"),
        (with(&["--method-arg", "rank"]), "expected `key=value`"),
        (vec!["--method", "dpo", "--out", out, "--method-arg", "beta=nan"], "option `beta`"),
        (vec!["--method", "mend", "--out", out, "--method-arg", "rank=0"], "option `rank`"),
        (
            vec!["--method", "ext-sub", "--out", out, "--method-arg", "lambda=inf"],
            "option `lambda`",
        ),
        (vec!["--method", "ext-sub", "--out", out], "needs option `expert`"),
        (vec!["--method", "rome", "--out", out], "unknown method `rome`"),
        (vec!["--method", "sft", "--out", out, "--save-model", saved], "is a GGUF file"),
        (vec!["--method", "sft", "--out", out, "--max-shard-size", "0"], "--max-shard-size"),
        (vec!["--method", "mend", "--out", out, "--save-model", saved], "MEND edits each record"),
    ];
    let cases: Vec<(&[&str], &str)> = cases.iter().map(|(a, e)| (a.as_slice(), *e)).collect();
    sweep("train_baseline", &cases)?;
    ensure!(!dir.path().join("artefact").exists(), "a refused run created its artefact directory");
    ensure!(!dir.path().join("saved").exists(), "a refused run created its model directory");
    Ok(())
}

#[test]
fn dinm_edit_save_model() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let saved = dir.path().join("saved");
    let saved = saved.to_str().context("temporary path")?;
    std::fs::create_dir_all(dir.path().join("full"))?;
    std::fs::write(dir.path().join("full/config.json"), "{}")?;
    let full = dir.path().join("full");
    let full = full.to_str().context("temporary path")?;
    sweep(
        "dinm_edit",
        &[
            (&["--save-model", saved], "is a GGUF file"),
            (&["--save-model", saved, "--save-dtype", "f8"], "--save-dtype"),
            (&["--max-shard-size", "1.5GB"], "--max-shard-size"),
            (&["--overwrite-model"], "--save-model"),
            (&["--model", full, "--save-model", full], "exists and is not empty"),
        ],
    )?;
    ensure!(!dir.path().join("saved").exists(), "a refused run created its model directory");
    Ok(())
}

#[test]
fn judge_agreement() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let missing = dir.path().join("missing");
    sweep(
        "judge_agreement",
        &[
            (&["--completions", missing.to_str().context("path")?], "does not exist"),
            (&["--judge", "oracle"], "unknown judge"),
            (&["--judge", "classifier:"], "names no model directory"),
        ],
    )
}

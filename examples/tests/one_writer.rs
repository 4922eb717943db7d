//! The programs that write a directory refuse one another process holds: this test's process locks a directory
//! as a running `safeedit_eval` would, then starts each writer on it (a run, an NLPCC submission, a shard merge,
//! a baseline's training). Each must exit non-zero, name the directory and the holder's pid, and leave the
//! directory as it found it.
//!
//! Like `arguments.rs`, this runs the example executables `cargo test -p detox-examples` builds.
mod common;

use std::path::Path;

use anyhow::{ensure, Context, Result};
use detox_io::{DirLock, LOCK_FILE};

fn dataset(file: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../datasets").join(file).display().to_string()
}

fn entries(dir: &Path) -> Result<Vec<String>> {
    let mut names: Vec<String> = std::fs::read_dir(dir)?
        .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect::<std::io::Result<_>>()?;
    names.sort();
    Ok(names)
}

/// Runs `name args` against `held` (locked by this process) and checks the refusal.
fn refused(name: &str, args: &[&str], held: &Path) -> Result<()> {
    let shown = format!("{name} {}", args.join(" "));
    let before = entries(held)?;
    let lock_before = std::fs::read(held.join(LOCK_FILE))?;
    let output = common::run_expecting_refusal(
        name,
        args,
        "went ahead on a directory another process holds",
    )?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    let expected =
        format!("{} is in use by another process (pid {})", held.display(), std::process::id());
    ensure!(!stderr.contains("panicked"), "`{shown}` panicked:\n{stderr}");
    ensure!(!output.status.success(), "`{shown}` exited 0 on a held directory:\n{stderr}");
    ensure!(output.status.code() != Some(101), "`{shown}` exited like a panic:\n{stderr}");
    ensure!(
        stderr.contains(&expected),
        "`{shown}`: the error does not say {expected:?}:\n{stderr}"
    );
    ensure!(entries(held)? == before, "`{shown}` changed {}", held.display());
    ensure!(
        std::fs::read(held.join(LOCK_FILE))? == lock_before,
        "`{shown}` rewrote the holder's lock file"
    );
    Ok(())
}

#[test]
fn every_writer_refuses_a_directory_another_process_holds() -> Result<()> {
    let root = tempfile::tempdir()?;
    let run = root.path().join("run");
    let _held = DirLock::acquire(&run)?;
    let out = run.to_str().context("temporary path")?;
    let test_data = dataset("safeedit_sample_test.json");
    let all_data = dataset("safeedit_sample_test_ALL.json");
    let train_data = dataset("safeedit_sample_train.json");
    let shard = root.path().join("shard");
    std::fs::create_dir_all(&shard)?;
    let shard = shard.to_str().context("temporary path")?;

    refused("safeedit_eval", &["--data", &test_data, "--first", "1", "--out", out], &run)?;
    refused(
        "safeedit_eval",
        &["--data", &all_data, "--nlpcc", "--first", "1", "--out", out],
        &run,
    )?;
    refused("safeedit_eval", &["--data", &test_data, "--merge-shards", shard, "--out", out], &run)?;
    refused("train_baseline", &["--method", "sft", "--data", &train_data, "--out", out], &run)?;
    let ext_sub = [
        "--method",
        "ext-sub",
        "--method-arg",
        "expert=expert",
        "--method-arg",
        "anti_expert=anti-expert",
        "--out",
        out,
    ];
    refused("train_baseline", &ext_sub, &run)?;
    Ok(())
}

//! The sharded benchmark on a real Slurm cluster: this test starts a single-node cluster on this machine
//! (`cluster.rs`; Debian's `slurm-wlm` and `munge`, as root: it fails saying why when it cannot), plans a
//! two-shard run of the tiny test model with `safeedit_slurm`, which submits the array and the merge job, and
//! checks that the merged records equal one `safeedit_eval` process's over the same records (timings aside).
//! Then a second run has one array task cancelled mid-run (`scancel`): its merge can never start, and planning
//! again cancels that merge, resubmits the cancelled shard alone, which resumes, and the merged records are
//! still the same.
//!
//! It runs the example executables `cargo test -p detox-examples` builds (see `common`).
mod cluster;
#[allow(dead_code)]
#[path = "../common/mod.rs"]
mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use cluster::Cluster;
use serde_json::Value;

/// Records in the test's split: three per shard.
const RECORDS: usize = 6;
/// How long the jobs of one submission may take.
const LIMIT: Duration = Duration::from_secs(600);

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The first [`RECORDS`] sample records, as a split file of their own.
fn write_split(path: &Path) -> Result<()> {
    let text = std::fs::read_to_string(workspace().join("datasets/safeedit_sample_test.json"))?;
    let records: Vec<Value> = serde_json::from_str(&text)?;
    ensure!(records.len() >= RECORDS, "the sample split has fewer than {RECORDS} records");
    std::fs::write(path, serde_json::to_string_pretty(&records[..RECORDS])?)?;
    Ok(())
}

/// What every shard and the single process run: the tiny model on the CPU, DINM with a layer per record (the
/// paper's reading: a record's result does not depend on which records ran before it in the same process).
fn eval_args() -> Vec<String> {
    let model = workspace().join("crates/detox-edit/tests/fixtures/dinm/model");
    [
        "--model",
        &model.display().to_string(),
        "--device",
        "cpu",
        "--method-arg",
        "reading=paper",
        "--no-general",
        "--max-new-tokens",
        "16",
        "--max-input-tokens",
        "200",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// A run's records with their wall times removed.
fn records(dir: &Path) -> Result<Vec<Value>> {
    let path = dir.join("records.jsonl");
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    text.lines()
        .map(|line| {
            let mut record: Value = serde_json::from_str(line)?;
            record.as_object_mut().context("a record is a JSON object")?.remove("timings");
            Ok(record)
        })
        .collect()
}

/// Complete lines in shard `index`'s records.
fn shard_records(run: &Path, index: usize) -> usize {
    std::fs::read_to_string(run.join(format!("shards/{index}/records.jsonl")))
        .map(|t| t.matches('\n').count())
        .unwrap_or(0)
}

/// The last submission in the run's `slurm/jobs.json`: array job id, merge job id, shards.
fn last_submission(run: &Path) -> Result<(Option<String>, String, Vec<u64>)> {
    let path = run.join("slurm/jobs.json");
    let jobs: Vec<Value> = serde_json::from_str(&std::fs::read_to_string(&path)?)?;
    let last = jobs.last().with_context(|| format!("{}: no submission", path.display()))?;
    let shards =
        last["shards"].as_array().context("shards")?.iter().filter_map(Value::as_u64).collect();
    Ok((
        last["array_job"].as_str().map(str::to_string),
        last["merge_job"].as_str().context("merge_job")?.to_string(),
        shards,
    ))
}

/// Runs `safeedit_slurm` against the cluster, expecting success; returns what it printed.
fn plan(cluster: &Cluster, data: &Path, run: &Path, extra: &[&str]) -> Result<String> {
    let mut command = cluster.command(common::example("safeedit_slurm")?);
    command
        .arg("--data")
        .arg(data)
        .arg("--out")
        .arg(run)
        .args(["--shards", "2", "--partition", "debug", "--time", "00:10:00"])
        .args(extra)
        .arg("--")
        .args(eval_args());
    let output = command.output().context("running safeedit_slurm")?;
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    ensure!(
        output.status.success(),
        "safeedit_slurm failed ({}):\n{stdout}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    println!("$ safeedit_slurm --out {} ...\n{stdout}", run.display());
    Ok(stdout)
}

/// The task and merge logs of a run, for failure messages.
fn job_logs(run: &Path) -> String {
    let mut text = String::new();
    if let Ok(entries) = std::fs::read_dir(run.join("slurm/logs")) {
        for entry in entries.flatten() {
            let log = std::fs::read_to_string(entry.path()).unwrap_or_default();
            text.push_str(&format!("--- {}\n{log}\n", entry.path().display()));
        }
    }
    text
}

/// Waits for a submission's jobs to end and checks that the merge wrote the merged run; returns when the array
/// ended.
fn wait_for_merge(cluster: &Cluster, run: &Path) -> Result<Instant> {
    let (array, merge, _) = last_submission(run)?;
    let ids: Vec<&str> = array.iter().map(String::as_str).collect();
    cluster.wait_until_gone(&ids, LIMIT).map_err(|e| e.context(job_logs(run)))?;
    let array_done = Instant::now();
    cluster.wait_until_gone(&[&merge], LIMIT).map_err(|e| e.context(job_logs(run)))?;
    ensure!(
        run.join("summary.json").is_file(),
        "the merge job {merge} ended without writing {}:\n{}\n{}",
        run.join("summary.json").display(),
        job_logs(run),
        cluster.logs()
    );
    Ok(array_done)
}

fn same_records(single: &[Value], run: &Path) -> Result<()> {
    let merged = records(run)?;
    ensure!(merged.len() == RECORDS, "{} merged records, expected {RECORDS}", merged.len());
    for (a, b) in single.iter().zip(&merged) {
        ensure!(
            a == b,
            "record {} differs between one process and the Slurm run:\n{a}\n{b}",
            a["id"]
        );
    }
    Ok(())
}

#[test]
fn a_two_shard_run_on_slurm_equals_one_process_and_a_cancelled_shard_resumes() -> Result<()> {
    let cluster = Cluster::start()?;
    let root = tempfile::tempdir()?;
    let data = root.path().join("split.json");
    write_split(&data)?;
    let workdir = std::env::current_dir()?;

    // One process, one thread: what each array task gets (one CPU, OMP_NUM_THREADS=1).
    let single_dir = root.path().join("single");
    let started = Instant::now();
    let output = Command::new(common::example("safeedit_eval")?)
        .current_dir(&workdir)
        .env("OMP_NUM_THREADS", "1")
        .env("RAYON_NUM_THREADS", "1")
        .arg("--data")
        .arg(&data)
        .arg("--out")
        .arg(&single_dir)
        .args(eval_args())
        .output()?;
    let single_time = started.elapsed();
    ensure!(
        output.status.success(),
        "the single-process run failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let single = records(&single_dir)?;
    ensure!(single.len() == RECORDS, "{} records from one process", single.len());

    // Case 1: two shards as a job array, then the merge.
    let run = root.path().join("run");
    let started = Instant::now();
    let printed = plan(&cluster, &data, &run, &[])?;
    ensure!(printed.contains("--dependency=afterok:"), "no dependent merge submitted:\n{printed}");
    let array_time = wait_for_merge(&cluster, &run)? - started;
    let slurm_time = started.elapsed();
    same_records(&single, &run)?;
    for script in ["array.sh", "merge.sh"] {
        let text = std::fs::read_to_string(run.join("slurm").join(script))?;
        ensure!(
            !text.lines().any(|l| l.trim_start().starts_with("cargo ") || l.contains("cargo run")),
            "{script} runs cargo:\n{text}"
        );
        ensure!(text.contains(&format!("exec {}", run.join("slurm/bin/safeedit_eval").display())));
        println!("--- {script}\n{text}");
    }
    let again = plan(&cluster, &data, &run, &[])?;
    ensure!(again.contains("nothing to submit"), "a complete run was submitted again:\n{again}");

    // Case 2: shard 1's task is cancelled once it has written a record.
    let run = root.path().join("cancelled");
    plan(&cluster, &data, &run, &[])?;
    let (array, merge, _) = last_submission(&run)?;
    let array = array.context("an array job")?;
    let started = Instant::now();
    while shard_records(&run, 1) == 0 {
        ensure!(
            started.elapsed() < LIMIT,
            "shard 1 wrote no record in {} s:\n{}",
            LIMIT.as_secs(),
            job_logs(&run)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // Stop the task where it is (the shard's lock file holds its pid) so that it cannot finish the shard while
    // the cancellation travels through Slurm; scancel then ends it.
    let lock = run.join("shards/1").join(detox_io::LOCK_FILE);
    let pid = std::fs::read_to_string(&lock)?.trim().to_string();
    let stopped = Command::new("kill").args(["-STOP", &pid]).status()?;
    ensure!(stopped.success(), "kill -STOP {pid} (shard 1's task, from {}) failed", lock.display());
    let status = cluster.command("scancel").arg(format!("{array}_1")).status()?;
    ensure!(status.success(), "scancel {array}_1 failed");
    cluster.wait_until_gone(&[&array], LIMIT)?;
    let written = shard_records(&run, 1);
    println!("shard 1 cancelled after {written} of {} records", RECORDS / 2);
    if written == RECORDS / 2 {
        bail!("shard 1 finished before it could be stopped: nothing was left to resume");
    }
    let queued = cluster.queued(&[&merge])?;
    ensure!(
        queued.iter().any(|line| line.contains("|PENDING|Dependency")),
        "the merge job should wait for a dependency that can never be met: {queued:?}"
    );
    let printed = plan(&cluster, &data, &run, &[])?;
    ensure!(
        printed.contains(&format!("cancelled merge job {merge}")),
        "the orphaned merge job was not cancelled:\n{printed}"
    );
    let (_, _, shards) = last_submission(&run)?;
    ensure!(shards == [1], "resubmitted shards {shards:?}, expected only shard 1");
    wait_for_merge(&cluster, &run)?;
    same_records(&single, &run)?;
    let log = std::fs::read_to_string(run.join("slurm/logs/shard-1.log"))?;
    ensure!(log.matches("shard 1/2: job").count() == 2, "shard 1 did not run twice:\n{log}");

    println!(
        "wall time, {RECORDS} records of the tiny model: one process {:.1} s; two shards on Slurm {:.1} s from \
         submission to the array's end, {:.1} s to the merged run",
        single_time.as_secs_f64(),
        array_time.as_secs_f64(),
        slurm_time.as_secs_f64()
    );
    Ok(())
}

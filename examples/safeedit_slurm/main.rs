//! The sharded SafeEdit benchmark on a Slurm cluster: writes a job array whose task `i` runs shard `i/n` with
//! the built `safeedit_eval` and a merge job that runs once every task has succeeded, then submits both
//! (`sbatch --parsable`, then `--dependency=afterok:<array job>`). Run again on the same `--out` after a failed
//! or pre-empted task: only the incomplete shards are submitted again, and they resume.
//!
//! ```text
//! cargo build --release -p detox-examples --example safeedit_eval --example safeedit_slurm
//! target/release/examples/safeedit_slurm --data data/safeedit/SafeEdit_test.json --out runs/llama2-dinm \
//!     --shards 8 --partition gpu --gpus-per-task 1 --time 04:00:00 -- \
//!     --model models/meta-llama--Llama-2-7b-chat-hf --device cuda --dtype bf16
//! ```
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Parser;
use detox_eval::drive::slurm::{
    plan_and_submit, Mode, ShardedRun, Slurm, SlurmOptions, EVAL_BINARY,
};

/// Plan the sharded SafeEdit benchmark on Slurm: the array job script, the merge job script, and their
/// submission. Arguments after `--` go to every shard's `safeedit_eval` unchanged.
#[derive(Debug, Parser)]
struct Args {
    /// A SafeEdit test-split file.
    #[arg(long, default_value = "datasets/safeedit_sample_test.json")]
    data: PathBuf,
    /// The run directory: scripts, logs and shards under it, the merged run in it.
    #[arg(long)]
    out: PathBuf,
    /// Number of shards (array tasks).
    #[arg(long, value_parser = detox_examples::at_least(1))]
    shards: usize,
    /// Slurm partition (`#SBATCH --partition`).
    #[arg(long)]
    partition: Option<String>,
    /// Slurm account (`#SBATCH --account`).
    #[arg(long)]
    account: Option<String>,
    /// GPUs of each array task (`#SBATCH --gres=gpu:N`); pass `--device cuda:0,cuda:1` after `--` to split a
    /// model over two.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    gpus_per_task: Option<u32>,
    /// CPUs of each array task (`#SBATCH --cpus-per-task`); the task's threads follow it.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    cpus_per_task: Option<u32>,
    /// Memory of each array task (`#SBATCH --mem`, e.g. 64G).
    #[arg(long)]
    mem: Option<String>,
    /// Time limit of each array task (`#SBATCH --time`, e.g. 04:00:00).
    #[arg(long)]
    time: Option<String>,
    /// Time limit of the merge job.
    #[arg(long, default_value = "00:30:00")]
    merge_time: String,
    /// At most this many array tasks at once (`--array=...%K`).
    #[arg(long, value_parser = detox_examples::at_least(1))]
    max_parallel: Option<usize>,
    /// A further `#SBATCH` line for the array job (repeatable), e.g. `--sbatch=--qos=long`.
    #[arg(long = "sbatch", value_name = "OPTION", allow_hyphen_values = true)]
    extra: Vec<String>,
    /// Job name (default: `safeedit-` and the run directory's name).
    #[arg(long)]
    job_name: Option<String>,
    /// The `safeedit_eval` executable (default: the one built next to this program).
    #[arg(long)]
    binary: Option<PathBuf>,
    /// Where the shards' pre-edit caches go (default: `<out>/pre-edit`); share it between runs of different
    /// methods on the same model and records.
    #[arg(long)]
    pre_edit_dir: Option<PathBuf>,
    /// Write and print the scripts and the sbatch commands without submitting anything.
    #[arg(long)]
    dry_run: bool,
    /// `safeedit_eval` arguments for every shard (model, method, judge, device, ...).
    #[arg(last = true)]
    eval_args: Vec<String>,
}

fn main() -> Result<()> {
    let args = Args::parse();
    let binary = match &args.binary {
        Some(path) => path.clone(),
        None => std::env::current_exe()
            .context("locating this program")?
            .with_file_name(format!("{EVAL_BINARY}{}", std::env::consts::EXE_SUFFIX)),
    };
    let run = ShardedRun::new(
        &args.out,
        &args.data,
        args.shards,
        args.eval_args.clone(),
        args.pre_edit_dir.as_deref(),
    )?;
    let job_name = args.job_name.clone().unwrap_or_else(|| {
        let dir = run.run_dir.file_name().map(|n| n.to_string_lossy().into_owned());
        let name: String = dir
            .unwrap_or_default()
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() || "-_.".contains(c) { c } else { '-' })
            .collect();
        format!("safeedit-{name}")
    });
    let options = SlurmOptions {
        job_name,
        partition: args.partition.clone(),
        account: args.account.clone(),
        gpus_per_task: args.gpus_per_task,
        cpus_per_task: args.cpus_per_task,
        mem: args.mem.clone(),
        time: args.time.clone(),
        merge_time: Some(args.merge_time.clone()),
        max_parallel: args.max_parallel,
        extra: args.extra.clone(),
    };
    let mode = if args.dry_run { Mode::DryRun } else { Mode::Submit };
    let planned = plan_and_submit(&run, &options, &binary, &Slurm::default(), mode)?;

    for p in &planned.progress {
        let state = if p.complete() {
            "complete"
        } else if p.started {
            "incomplete"
        } else {
            "not started"
        };
        println!("shard {}/{}: {}/{} records ({state})", p.index, run.shards, p.done, p.total);
    }
    for job in &planned.cancelled {
        println!("cancelled merge job {job}: its array ended without succeeding");
    }
    println!("array job script: {}", run.array_script_path().display());
    println!("merge job script: {}", run.merge_script_path().display());
    if planned.already_merged {
        println!(
            "every shard is complete and merged into {}: nothing to submit",
            run.run_dir.display()
        );
        return Ok(());
    }
    if args.dry_run {
        for path in [run.array_script_path(), run.merge_script_path()] {
            println!("\n--- {} ---", path.display());
            print!("{}", std::fs::read_to_string(&path)?);
        }
        println!("\nwould run:");
    }
    for command in &planned.commands {
        println!("  {command}");
    }
    if let Some(jobs) = &planned.submitted {
        if let Some(array) = &jobs.array_job {
            println!("array job {array}: shards {:?}", jobs.shards);
        }
        println!("merge job {} (after the array succeeds)", jobs.merge_job);
        println!("merged run: {}", run.run_dir.display());
    }
    Ok(())
}

//! A sharded run's plan: its shards, their run directories and progress, and the job scripts.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::io::BufRead;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{EvalError, Result};
use crate::settings::BenchmarkCase;

use super::options::*;

/// A sharded run: what every array task and the merge run, and where they write.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardedRun {
    /// The run directory (absolute); the merged run is written into it.
    pub run_dir: PathBuf,
    /// The SafeEdit test split (absolute).
    pub data: PathBuf,
    /// Number of shards, one array task each.
    pub shards: usize,
    /// The other `safeedit_eval` arguments, the same for every shard; relative paths in them are read from
    /// [`ShardedRun::workdir`].
    pub eval_args: Vec<String>,
    /// The directory the jobs run in (`--chdir`): where the plan was made.
    pub workdir: PathBuf,
    /// Where the shards' pre-edit caches live (absolute).
    pub pre_edit_dir: PathBuf,
}

/// The file in the run's `slurm/` directory that holds the plan.
pub const PLAN_FILE: &str = "plan.json";
/// The file in the run's `slurm/` directory that lists the submissions.
pub const JOBS_FILE: &str = "jobs.json";

/// How far one shard has come.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardProgress {
    /// The shard's index.
    pub index: usize,
    /// Records of the shard already in its `records.jsonl`.
    pub done: usize,
    /// Records in the shard.
    pub total: usize,
    /// Whether its run has started (its manifest exists).
    pub started: bool,
}

impl ShardProgress {
    /// Whether every record of the shard is written.
    pub fn complete(&self) -> bool {
        self.done == self.total
    }
}

/// One submission: the array job's id, the merge job's and the shards submitted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubmittedJobs {
    /// The array job's id (absent when only the merge was submitted).
    pub array_job: Option<String>,
    /// The merge job's id.
    pub merge_job: String,
    /// The shards the array job runs.
    pub shards: Vec<usize>,
}

impl ShardedRun {
    /// A plan of `shards` shards of `data` into `run_dir`, each running `safeedit_eval` with `eval_args`.
    /// Relative paths are made absolute against the current directory, which becomes the jobs' working
    /// directory. The pre-edit caches go to `pre_edit_dir` (default: `run_dir/pre-edit`).
    ///
    /// # Errors
    /// [`EvalError::SlurmPlan`] when `shards` is 0, when `eval_args` sets what the plan sets (naming the
    /// argument), or when a path cannot go into an `#SBATCH` line; [`EvalError::Io`] when the data file is
    /// missing.
    pub fn new(
        run_dir: &Path,
        data: &Path,
        shards: usize,
        eval_args: Vec<String>,
        pre_edit_dir: Option<&Path>,
    ) -> Result<Self> {
        if shards == 0 {
            return Err(invalid("--shards must be at least 1"));
        }
        for arg in &eval_args {
            let name = arg.split_once('=').map_or(arg.as_str(), |(name, _)| name);
            if RESERVED_ARGS.contains(&name) {
                return Err(invalid(format!(
                    "{name} cannot be passed on to {EVAL_BINARY}: the plan sets it for every shard and the merge \
                     ({}; give --data and --out to the planning command itself)",
                    RESERVED_ARGS.join(", ")
                )));
            }
        }
        let workdir = std::env::current_dir()
            .map_err(|source| EvalError::Io { path: PathBuf::from("."), source })?;
        let data = data
            .canonicalize()
            .map_err(|source| EvalError::Io { path: data.to_path_buf(), source })?;
        let absolute = |p: &Path| normalise(&workdir.join(p));
        let run_dir = absolute(run_dir);
        let pre_edit_dir = pre_edit_dir.map_or_else(|| run_dir.join("pre-edit"), absolute);
        let run = Self { run_dir, data, shards, eval_args, workdir, pre_edit_dir };
        sbatch_path("the run directory", &run.run_dir)?;
        sbatch_path("the working directory", &run.workdir)?;
        Ok(run)
    }

    /// The directory of the scripts, the plan, the job ids, the executable and the logs.
    pub fn slurm_dir(&self) -> PathBuf {
        self.run_dir.join("slurm")
    }

    /// The array job's script.
    pub fn array_script_path(&self) -> PathBuf {
        self.slurm_dir().join("array.sh")
    }

    /// The merge job's script.
    pub fn merge_script_path(&self) -> PathBuf {
        self.slurm_dir().join("merge.sh")
    }

    /// The executable the jobs run.
    pub fn binary_path(&self) -> PathBuf {
        self.slurm_dir().join("bin").join(EVAL_BINARY)
    }

    /// Shard `index`'s run directory.
    pub fn shard_dir(&self, index: usize) -> PathBuf {
        self.run_dir.join("shards").join(index.to_string())
    }

    /// Shard `index`'s pre-edit cache.
    pub fn pre_edit_cache(&self, index: usize) -> PathBuf {
        self.pre_edit_dir.join(format!("shard-{index}-of-{}.jsonl", self.shards))
    }

    fn header(&self, job_name: &str, output: &str) -> Result<String> {
        let mut s = String::from("#!/bin/bash\n");
        writeln!(s, "#SBATCH --job-name={job_name}").ok();
        writeln!(s, "#SBATCH --chdir={}", sbatch_path("the working directory", &self.workdir)?)
            .ok();
        let logs = sbatch_path("the run directory", &self.slurm_dir().join("logs"))?;
        writeln!(s, "#SBATCH --output={logs}/{output}").ok();
        writeln!(s, "#SBATCH --open-mode=append").ok();
        Ok(s)
    }

    /// The array job's script: task `i` runs shard `i` with the built executable, into its own run directory
    /// with its own pre-edit cache, resuming what that directory holds.
    ///
    /// # Errors
    /// As [`SlurmOptions::validate`].
    pub fn array_script(&self, options: &SlurmOptions) -> Result<String> {
        options.validate()?;
        let n = self.shards;
        let mut s = self.header(&options.job_name, "shard-%a.log")?;
        let throttle = options.max_parallel.map(|k| format!("%{k}")).unwrap_or_default();
        writeln!(s, "#SBATCH --array={}{throttle}", array_spec(&(0..n).collect::<Vec<_>>())).ok();
        if let Some(p) = &options.partition {
            writeln!(s, "#SBATCH --partition={p}").ok();
        }
        if let Some(a) = &options.account {
            writeln!(s, "#SBATCH --account={a}").ok();
        }
        if let Some(g) = options.gpus_per_task {
            writeln!(s, "#SBATCH --gres=gpu:{g}").ok();
        }
        if let Some(c) = options.cpus_per_task {
            writeln!(s, "#SBATCH --cpus-per-task={c}").ok();
        }
        if let Some(m) = &options.mem {
            writeln!(s, "#SBATCH --mem={m}").ok();
        }
        if let Some(t) = &options.time {
            writeln!(s, "#SBATCH --time={t}").ok();
        }
        // A pre-empted task goes back to the queue and resumes its shard.
        writeln!(s, "#SBATCH --requeue").ok();
        for line in &options.extra {
            writeln!(s, "#SBATCH {}", extra_option(line)).ok();
        }
        let pre_edit = self.pre_edit_dir.display().to_string();
        let shards_dir = self.run_dir.join("shards").display().to_string();
        writeln!(
            s,
            "\n# SafeEdit benchmark, shard ${{SLURM_ARRAY_TASK_ID}} of {n}: written by safeedit_slurm, which \
             resubmits the\n# incomplete shards when run again on the same run directory. A shard resumes its \
             own run directory."
        )
        .ok();
        s.push_str("set -euo pipefail\n");
        s.push_str(
            "shard=\"${SLURM_ARRAY_TASK_ID:?submit this script with sbatch: it is a job array}\"\n",
        );
        s.push_str("# libtorch's and rayon's threads: the CPUs Slurm gave the task.\n");
        s.push_str("export OMP_NUM_THREADS=\"${SLURM_CPUS_PER_TASK:-1}\"\n");
        s.push_str("export RAYON_NUM_THREADS=\"${SLURM_CPUS_PER_TASK:-1}\"\n");
        writeln!(
            s,
            "echo \"shard ${{shard}}/{n}: job ${{SLURM_JOB_ID:-?}} on $(hostname), $(date -u +%FT%TZ)\""
        )
        .ok();
        writeln!(s, "exec {} \\", shell_quote(&self.binary_path().display().to_string())).ok();
        writeln!(s, "    --data {} \\", shell_quote(&self.data.display().to_string())).ok();
        writeln!(s, "    --shard \"${{shard}}/{n}\" \\").ok();
        writeln!(s, "    --out {} \\", with_variable(&shards_dir, "/${shard}")).ok();
        write!(
            s,
            "    --pre-edit-cache {}",
            with_variable(&pre_edit, &format!("/shard-${{shard}}-of-{n}.jsonl"))
        )
        .ok();
        for line in argument_lines(&self.eval_args) {
            write!(s, " \\\n    {line}").ok();
        }
        s.push('\n');
        Ok(s)
    }

    /// The merge job's script: `safeedit_eval --merge-shards` over every shard's directory into the run
    /// directory, which refuses while a shard is incomplete.
    ///
    /// # Errors
    /// As [`SlurmOptions::validate`].
    pub fn merge_script(&self, options: &SlurmOptions) -> Result<String> {
        options.validate()?;
        let mut s = self.header(&format!("{}-merge", options.job_name), "merge-%j.log")?;
        if let Some(p) = &options.partition {
            writeln!(s, "#SBATCH --partition={p}").ok();
        }
        if let Some(a) = &options.account {
            writeln!(s, "#SBATCH --account={a}").ok();
        }
        if let Some(t) = &options.merge_time {
            writeln!(s, "#SBATCH --time={t}").ok();
        }
        writeln!(
            s,
            "\n# Merges the {} shards into the run directory once every array task has succeeded (submitted with\n\
             # --dependency=afterok:<array job>); the merge refuses while records are missing.",
            self.shards
        )
        .ok();
        s.push_str("set -euo pipefail\n");
        writeln!(s, "exec {} \\", shell_quote(&self.binary_path().display().to_string())).ok();
        writeln!(s, "    --data {} \\", shell_quote(&self.data.display().to_string())).ok();
        writeln!(s, "    --out {} \\", shell_quote(&self.run_dir.display().to_string())).ok();
        s.push_str("    --merge-shards");
        for i in 0..self.shards {
            write!(s, " \\\n    {}", shell_quote(&self.shard_dir(i).display().to_string())).ok();
        }
        s.push('\n');
        Ok(s)
    }

    /// The record ids of each shard, as `safeedit_eval --shard i/n` selects them.
    ///
    /// # Errors
    /// When the data file cannot be read or validated.
    pub fn shard_ids(&self) -> Result<Vec<Vec<String>>> {
        let split =
            safeedit::load_split(&self.data, safeedit::Split::Test, safeedit::Mode::Strict)?;
        (0..self.shards)
            .map(|index| {
                let subset = safeedit::Subset::Shard { index, count: self.shards };
                Ok(subset
                    .apply(&split.records)
                    .iter()
                    .filter_map(BenchmarkCase::from_record)
                    .map(|c| c.id)
                    .collect())
            })
            .collect()
    }

    /// Every shard's progress, read from its run directory (without writing anything: a running task may be
    /// appending to it).
    ///
    /// # Errors
    /// When the data file or a shard's records cannot be read.
    pub fn progress(&self) -> Result<Vec<ShardProgress>> {
        self.shard_ids()?
            .into_iter()
            .enumerate()
            .map(|(index, ids)| {
                let dir = self.shard_dir(index);
                let written = written_ids(&dir.join("records.jsonl"))?;
                let wanted: BTreeSet<&String> = ids.iter().collect();
                Ok(ShardProgress {
                    index,
                    done: written.iter().filter(|id| wanted.contains(id)).count(),
                    total: ids.len(),
                    started: dir.join("manifest.json").is_file(),
                })
            })
            .collect()
    }

    /// Whether the merged run is complete: its summary is written and its records are every shard's.
    ///
    /// # Errors
    /// When the data file or the merged records cannot be read.
    pub fn merged(&self) -> Result<bool> {
        if !self.run_dir.join("summary.json").is_file() {
            return Ok(false);
        }
        let written = written_ids(&self.run_dir.join("records.jsonl"))?;
        let all: BTreeSet<String> = self.shard_ids()?.into_iter().flatten().collect();
        Ok(written.into_iter().collect::<BTreeSet<_>>() == all)
    }
}

/// Lexically removes `.` and `..` components (the run directory need not exist yet).
pub(super) fn normalise(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            std::path::Component::CurDir => {}
            std::path::Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

/// The ids of the complete lines of a `records.jsonl` (an unfinished last line is not counted).
pub(super) fn written_ids(path: &Path) -> Result<Vec<String>> {
    #[derive(Deserialize)]
    struct Id {
        id: String,
    }
    let file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => return Err(EvalError::Io { path: path.to_path_buf(), source }),
    };
    let mut ids = Vec::new();
    let mut reader = std::io::BufReader::new(file);
    let mut line = String::new();
    loop {
        line.clear();
        let read = reader
            .read_line(&mut line)
            .map_err(|source| EvalError::Io { path: path.to_path_buf(), source })?;
        if read == 0 || !line.ends_with('\n') {
            break;
        }
        if let Ok(record) = serde_json::from_str::<Id>(line.trim_end()) {
            ids.push(record.id);
        }
    }
    Ok(ids)
}

/// `0-3` for a contiguous range, else `0,2,5`.
pub fn array_spec(indices: &[usize]) -> String {
    match indices {
        [] => String::new(),
        [first, .., last] if last - first + 1 == indices.len() => format!("{first}-{last}"),
        _ => indices.iter().map(usize::to_string).collect::<Vec<_>>().join(","),
    }
}

//! The sharded benchmark on a Slurm cluster: a job array whose task `i` runs shard `i/n` of the records with
//! the built `safeedit_eval` executable, and a merge job that starts when every array task has succeeded
//! (`--dependency=afterok`). Slurm is used as it is, through `sbatch`, `squeue` and `scancel`.
//!
//! A run directory planned here holds:
//!
//! | path | what |
//! |---|---|
//! | `slurm/array.sh`, `slurm/merge.sh` | the two job scripts |
//! | `slurm/plan.json` | the plan the scripts were written from (a later submission must match it) |
//! | `slurm/jobs.json` | every submission's job ids and shards |
//! | `slurm/bin/safeedit_eval` | the executable the tasks run (a link to, or a copy of, the built one) |
//! | `slurm/logs/` | the tasks' and the merge's output |
//! | `shards/<i>/` | shard `i`'s run directory |
//! | `pre-edit/shard-<i>-of-<n>.jsonl` | shard `i`'s cache of pre-edit responses (or in the directory given) |
//! | `records.jsonl`, `summary.*`, `report.html` | the merged run, written by the merge job |
//!
//! Submitting again resumes: only the shards whose records are incomplete are submitted again (`--array=` with
//! their indices), each resuming its own run directory, and the merge job again after them.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde::{Deserialize, Serialize};

use crate::error::{EvalError, Result};
use crate::harness::BenchmarkCase;
use crate::jsonl::write_json_atomic;

/// The name of the benchmark's executable, which every job runs.
pub const EVAL_BINARY: &str = "safeedit_eval";

/// The `safeedit_eval` arguments a plan sets itself, per shard or for the merge; refused in
/// [`ShardedRun::eval_args`].
pub const RESERVED_ARGS: [&str; 8] = [
    "--data",
    "--out",
    "--shard",
    "--first",
    "--sample",
    "--pre-edit-cache",
    "--merge-shards",
    "--nlpcc",
];

/// What the jobs ask of Slurm: each becomes one `#SBATCH` line of the scripts.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlurmOptions {
    /// `--job-name`; the merge job's is this followed by `-merge`.
    pub job_name: String,
    /// `--partition`.
    pub partition: Option<String>,
    /// `--account`.
    pub account: Option<String>,
    /// GPUs of each array task: `--gres=gpu:N` (each array task is one job of one task on one node).
    pub gpus_per_task: Option<u32>,
    /// `--cpus-per-task`; the task's libtorch and rayon threads follow it (1 when not given, Slurm's default).
    pub cpus_per_task: Option<u32>,
    /// `--mem` of each array task (e.g. `64G`).
    pub mem: Option<String>,
    /// `--time` of each array task (Slurm's formats: `MM`, `HH:MM:SS`, `D-HH:MM`, ...).
    pub time: Option<String>,
    /// `--time` of the merge job.
    pub merge_time: Option<String>,
    /// At most this many array tasks at once (`--array=...%K`).
    pub max_parallel: Option<usize>,
    /// Further `#SBATCH` lines for the array job, without the `#SBATCH` prefix (e.g. `--qos=long`).
    pub extra: Vec<String>,
}

impl SlurmOptions {
    /// Options with this job name and nothing else set.
    pub fn new(job_name: impl Into<String>) -> Self {
        Self { job_name: job_name.into(), ..Self::default() }
    }

    /// Checks every value before it is written into a script, naming the option of a bad one.
    ///
    /// # Errors
    /// [`EvalError::Invalid`] for an empty or multi-word job name, partition or account, a zero count, a time
    /// or memory size Slurm would not read, or an extra line that is not an option.
    pub fn validate(&self) -> Result<()> {
        word("--job-name", &self.job_name)?;
        if let Some(p) = &self.partition {
            word("--partition", p)?;
        }
        if let Some(a) = &self.account {
            word("--account", a)?;
        }
        if self.gpus_per_task == Some(0) {
            return Err(invalid("--gpus-per-task must be at least 1 (leave it out for no GPU)"));
        }
        if self.cpus_per_task == Some(0) {
            return Err(invalid("--cpus-per-task must be at least 1"));
        }
        if self.max_parallel == Some(0) {
            return Err(invalid("--max-parallel must be at least 1"));
        }
        if let Some(mem) = &self.mem {
            check_mem(mem)?;
        }
        for (flag, time) in [("--time", &self.time), ("--merge-time", &self.merge_time)] {
            if let Some(time) = time {
                check_time(flag, time)?;
            }
        }
        for line in &self.extra {
            let option = extra_option(line);
            if !option.starts_with('-') || option.contains(['\n', '\r']) {
                return Err(invalid(format!(
                    "--sbatch {line:?}: expected one sbatch option such as `--qos=long` (the `#SBATCH` prefix may \
                     be left out)"
                )));
            }
        }
        Ok(())
    }
}

/// An extra line's option, without a leading `#SBATCH`.
fn extra_option(line: &str) -> &str {
    let line = line.trim();
    line.strip_prefix("#SBATCH").map_or(line, str::trim_start)
}

fn invalid(message: impl Into<String>) -> EvalError {
    EvalError::Invalid(message.into())
}

fn word(flag: &str, value: &str) -> Result<()> {
    let ok = !value.is_empty()
        && value.chars().all(|c| c.is_ascii_alphanumeric() || "-_.+:@,".contains(c));
    if ok {
        Ok(())
    } else {
        Err(invalid(format!(
            "{flag} {value:?}: use letters, digits and - _ . + : @ , only (no spaces or quotes)"
        )))
    }
}

fn check_mem(mem: &str) -> Result<()> {
    let digits = mem.trim_end_matches(['K', 'M', 'G', 'T', 'k', 'm', 'g', 't']);
    let suffix = mem.len() - digits.len();
    if digits.is_empty() || suffix > 1 || !digits.chars().all(|c| c.is_ascii_digit()) {
        return Err(invalid(format!(
            "--mem {mem:?}: expected a whole number with an optional K, M, G or T suffix (e.g. 64G)"
        )));
    }
    Ok(())
}

/// Slurm's time limits: `M`, `M:S`, `H:M:S`, `D-H`, `D-H:M`, `D-H:M:S`, or `UNLIMITED`/`INFINITE`.
fn check_time(flag: &str, time: &str) -> Result<()> {
    if matches!(time, "UNLIMITED" | "INFINITE" | "unlimited" | "infinite") {
        return Ok(());
    }
    let number = |s: &str| !s.is_empty() && s.len() <= 6 && s.chars().all(|c| c.is_ascii_digit());
    let ok = match time.split_once('-') {
        Some((days, rest)) => {
            let parts: Vec<&str> = rest.split(':').collect();
            number(days) && parts.len() <= 3 && parts.iter().all(|p| number(p))
        }
        None => {
            let parts: Vec<&str> = time.split(':').collect();
            parts.len() <= 3 && parts.iter().all(|p| number(p))
        }
    };
    if ok {
        Ok(())
    } else {
        Err(invalid(format!(
            "{flag} {time:?}: expected one of Slurm's time formats: minutes, MM:SS, HH:MM:SS, D-HH, D-HH:MM, \
             D-HH:MM:SS or UNLIMITED"
        )))
    }
}

/// A path written into an `#SBATCH` line, where sbatch would split it at a space or read `%` as a pattern.
fn sbatch_path(what: &str, path: &Path) -> Result<String> {
    let text = path.to_str().ok_or_else(|| {
        invalid(format!(
            "{what} {}: not valid UTF-8, cannot be written into a job script",
            path.display()
        ))
    })?;
    if text.chars().any(|c| c.is_whitespace() || c.is_control() || "%\"'\\".contains(c)) {
        return Err(invalid(format!(
            "{what} {text}: a path written into an #SBATCH line may not hold spaces, quotes, backslashes or %; \
             use another directory"
        )));
    }
    Ok(text.to_string())
}

/// `text` quoted for a POSIX shell.
pub fn shell_quote(text: &str) -> String {
    let plain = !text.is_empty()
        && text.chars().all(|c| c.is_ascii_alphanumeric() || "-_./=:,+@%".contains(c));
    if plain {
        text.to_string()
    } else {
        format!("'{}'", text.replace('\'', r"'\''"))
    }
}

/// `path` followed by `suffix`, which expands shell variables: one double-quoted word when `path` needs no
/// quoting, else the quoted path followed by the double-quoted suffix.
fn with_variable(path: &str, suffix: &str) -> String {
    let quoted = shell_quote(path);
    if quoted == path {
        format!("\"{path}{suffix}\"")
    } else {
        format!("{quoted}\"{suffix}\"")
    }
}

/// Arguments quoted, an option and its value on one line (`--model 'a b'`), for a readable script.
fn argument_lines(args: &[String]) -> Vec<String> {
    let mut lines: Vec<String> = Vec::new();
    let mut iter = args.iter().peekable();
    while let Some(arg) = iter.next() {
        let mut line = shell_quote(arg);
        let takes_value = arg.starts_with("--") && !arg.contains('=');
        if takes_value {
            if let Some(value) = iter.next_if(|v| !v.starts_with("--")) {
                line = format!("{line} {}", shell_quote(value));
            }
        }
        lines.push(line);
    }
    lines
}

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
    /// [`EvalError::Invalid`] when `shards` is 0, when `eval_args` sets what the plan sets (naming the
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
fn normalise(path: &Path) -> PathBuf {
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
fn written_ids(path: &Path) -> Result<Vec<String>> {
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

/// A job (or array task) Slurm still holds pending or running, as `squeue` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueuedJob {
    /// The job's id; for an array task, the array job's id.
    pub job: String,
    /// The array task's index, if it is one.
    pub task: Option<String>,
    /// `PENDING`, `RUNNING`, `COMPLETING`, ...
    pub state: String,
    /// Why it is pending (`Dependency`, `DependencyNeverSatisfied`, `Resources`, ...), `None` otherwise.
    pub reason: String,
}

/// Slurm's commands, by name on `PATH` unless set otherwise. They read the cluster's configuration as usual
/// (`SLURM_CONF` or the installed `slurm.conf`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Slurm {
    /// `sbatch`.
    pub sbatch: PathBuf,
    /// `squeue`.
    pub squeue: PathBuf,
    /// `scancel`.
    pub scancel: PathBuf,
}

impl Default for Slurm {
    fn default() -> Self {
        Self {
            sbatch: PathBuf::from("sbatch"),
            squeue: PathBuf::from("squeue"),
            scancel: PathBuf::from("scancel"),
        }
    }
}

/// A job-state query's output format: array job id, task id, state, reason.
const SQUEUE_FORMAT: &str = "%F|%K|%T|%r";

impl Slurm {
    fn output(&self, program: &Path, args: &[String]) -> Result<(bool, String, String)> {
        let shown = format!("{} {}", program.display(), args.join(" "));
        let output = Command::new(program).args(args).output().map_err(|e| EvalError::Slurm {
            command: shown.clone(),
            reason: if e.kind() == std::io::ErrorKind::NotFound {
                format!("{} was not found: is this a Slurm submission host?", program.display())
            } else {
                e.to_string()
            },
        })?;
        Ok((
            output.status.success(),
            String::from_utf8_lossy(&output.stdout).into_owned(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        ))
    }

    /// Submits `script` with `sbatch --parsable` and the extra `args`; returns the job id.
    ///
    /// # Errors
    /// [`EvalError::Slurm`] with sbatch's message when it refuses or prints no job id.
    pub fn submit(&self, script: &Path, args: &[String]) -> Result<String> {
        let mut all = vec!["--parsable".to_string()];
        all.extend(args.iter().cloned());
        all.push(script.display().to_string());
        let (ok, stdout, stderr) = self.output(&self.sbatch, &all)?;
        // --parsable prints `id` or `id;cluster`.
        let id = stdout.trim().split(';').next().unwrap_or("").to_string();
        if !ok || id.is_empty() || !id.chars().all(|c| c.is_ascii_digit()) {
            return Err(EvalError::Slurm {
                command: format!("{} {}", self.sbatch.display(), all.join(" ")),
                reason: format!("{}{}", stderr.trim(), stdout.trim()),
            });
        }
        Ok(id)
    }

    /// The jobs among `ids` (and their array tasks) that Slurm still holds; jobs it no longer knows are not
    /// listed.
    ///
    /// # Errors
    /// [`EvalError::Slurm`] when `squeue` fails for another reason.
    pub fn queued(&self, ids: &[String]) -> Result<Vec<QueuedJob>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let args: Vec<String> = ["--noheader", "--array", "--format", SQUEUE_FORMAT, "--jobs"]
            .iter()
            .map(|s| s.to_string())
            .chain([ids.join(",")])
            .collect();
        let (ok, stdout, stderr) = self.output(&self.squeue, &args)?;
        if !ok {
            // Every id is one Slurm has forgotten (they ended long enough ago).
            if stderr.contains("Invalid job id") {
                return Ok(Vec::new());
            }
            return Err(EvalError::Slurm {
                command: format!("{} {}", self.squeue.display(), args.join(" ")),
                reason: stderr.trim().to_string(),
            });
        }
        Ok(parse_squeue(&stdout))
    }

    /// Cancels job (or array task) `id`.
    ///
    /// # Errors
    /// [`EvalError::Slurm`] with scancel's message.
    pub fn cancel(&self, id: &str) -> Result<()> {
        let args = vec![id.to_string()];
        let (ok, _, stderr) = self.output(&self.scancel, &args)?;
        if !ok {
            return Err(EvalError::Slurm {
                command: format!("{} {id}", self.scancel.display()),
                reason: stderr.trim().to_string(),
            });
        }
        Ok(())
    }
}

/// Reads `squeue --format '%F|%K|%T|%r'` lines.
pub fn parse_squeue(stdout: &str) -> Vec<QueuedJob> {
    stdout
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.trim().split('|').collect();
            let [job, task, state, reason] = fields[..] else { return None };
            Some(QueuedJob {
                job: job.to_string(),
                task: (task != "N/A" && !task.is_empty()).then(|| task.to_string()),
                state: state.to_string(),
                reason: reason.to_string(),
            })
        })
        .collect()
}

/// Submit the jobs or only write and show them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Write the scripts and submit them.
    Submit,
    /// Write the scripts and say what would be submitted; Slurm is not called.
    DryRun,
}

/// What [`plan_and_submit`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Planned {
    /// Every shard's progress before the submission.
    pub progress: Vec<ShardProgress>,
    /// The shards submitted (or that would be).
    pub shards: Vec<usize>,
    /// The sbatch command lines, in order (`<array job>` stands for the array job's id in a dry run).
    pub commands: Vec<String>,
    /// The jobs submitted (`None` in a dry run or when nothing was left to do).
    pub submitted: Option<SubmittedJobs>,
    /// Earlier merge jobs cancelled because their array failed, so that their dependency could never be met.
    pub cancelled: Vec<String>,
    /// Whether the merged run was already complete (nothing submitted).
    pub already_merged: bool,
}

/// Reads a JSON file written by this module, naming it on failure.
fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<Option<T>> {
    match std::fs::read(path) {
        Ok(bytes) => {
            serde_json::from_slice(&bytes).map(Some).map_err(|e| EvalError::CorruptRecord {
                path: path.to_path_buf(),
                line: e.line(),
                reason: e.to_string(),
            })
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(EvalError::Io { path: path.to_path_buf(), source }),
    }
}

/// The plan file's contents: the run and the Slurm options.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct PlanFile {
    run: ShardedRun,
    slurm: SlurmOptions,
}

fn check_binary(binary: &Path) -> Result<()> {
    if binary.is_file() {
        return Ok(());
    }
    Err(invalid(format!(
        "{}: no such executable (build it with `cargo build --release -p detox-examples --example {EVAL_BINARY}`, \
         or name it with --binary)",
        binary.display()
    )))
}

/// Places the built `safeedit_eval` at `run.binary_path()`: a hard link where possible (a rebuild replaces the
/// file cargo links, not this one), else a copy.
fn place_binary(run: &ShardedRun, binary: &Path) -> Result<()> {
    let target = run.binary_path();
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| EvalError::Io { path, source }
    };
    let dir = target.parent().unwrap_or(&target);
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let fresh = target.with_extension("new");
    let _ = std::fs::remove_file(&fresh);
    if std::fs::hard_link(binary, &fresh).is_err() {
        std::fs::copy(binary, &fresh).map_err(io(&fresh))?;
    }
    std::fs::rename(&fresh, &target).map_err(io(&target))
}

/// Plans the run: checks it against an earlier plan of the same directory, writes the scripts, the plan and
/// the executable, then (in [`Mode::Submit`]) submits the array job for the incomplete shards and the merge
/// job after it, recording their ids.
///
/// An earlier submission still queued or running is never submitted twice: that is refused, naming its jobs.
/// A merge job left pending by an array that failed or was cancelled (its dependency can never be met) is
/// cancelled first. With every shard complete only the merge is submitted, and with the merged run complete
/// nothing is.
///
/// # Errors
/// [`EvalError::Invalid`] for bad options, a plan that differs from the one the started shards were made with,
/// or earlier jobs still active; [`EvalError::Locked`] when another planning command holds the run's `slurm/`
/// directory; [`EvalError::Slurm`] when a Slurm command fails; I/O and dataset errors naming the file.
pub fn plan_and_submit(
    run: &ShardedRun,
    options: &SlurmOptions,
    binary: &Path,
    slurm: &Slurm,
    mode: Mode,
) -> Result<Planned> {
    // Everything that can be refused is checked before the run directory is touched.
    let array = run.array_script(options)?;
    let merge = run.merge_script(options)?;
    check_binary(binary)?;
    let progress = run.progress()?;
    let _lock = detox_io::DirLock::acquire(&run.slurm_dir())?;
    let plan_path = run.slurm_dir().join(PLAN_FILE);
    if let Some(earlier) = read_json::<PlanFile>(&plan_path)? {
        if earlier.run != *run && progress.iter().any(|p| p.started) {
            return Err(invalid(format!(
                "{} was planned with other arguments ({}), and its shards have started: run with the same \
                 arguments to resume, or plan into a new run directory",
                run.run_dir.display(),
                plan_difference(&earlier.run, run)
            )));
        }
    }
    let jobs_path = run.slurm_dir().join(JOBS_FILE);
    let mut history: Vec<SubmittedJobs> = read_json(&jobs_path)?.unwrap_or_default();
    let mut cancelled = Vec::new();
    if mode == Mode::Submit {
        if let Some(last) = history.last() {
            cancelled = settle_earlier(slurm, last, &progress)?;
        }
    }

    let dirs = [run.slurm_dir().join("logs"), run.pre_edit_dir.clone(), run.run_dir.join("shards")];
    for dir in &dirs {
        std::fs::create_dir_all(dir)
            .map_err(|source| EvalError::Io { path: dir.clone(), source })?;
    }
    place_binary(run, binary)?;
    write_script(&run.array_script_path(), &array)?;
    write_script(&run.merge_script_path(), &merge)?;
    write_json_atomic(
        &plan_path,
        &PlanFile { run: run.clone(), slurm: options.clone() },
        "the plan",
    )?;

    let todo: Vec<usize> = progress.iter().filter(|p| !p.complete()).map(|p| p.index).collect();
    let already_merged = todo.is_empty() && run.merged()?;
    let mut planned = Planned {
        progress,
        shards: todo.clone(),
        commands: Vec::new(),
        submitted: None,
        cancelled,
        already_merged,
    };
    if already_merged {
        return Ok(planned);
    }
    let mut array_args = Vec::new();
    if todo.len() < run.shards {
        let throttle = options.max_parallel.map(|k| format!("%{k}")).unwrap_or_default();
        array_args.push(format!("--array={}{throttle}", array_spec(&todo)));
    }
    let show = |args: &[String], script: &Path| {
        let mut words = vec!["sbatch".to_string(), "--parsable".to_string()];
        words.extend(args.iter().map(|a| shell_quote(a)));
        words.push(shell_quote(&script.display().to_string()));
        words.join(" ")
    };
    let array_job = if todo.is_empty() {
        None
    } else {
        planned.commands.push(show(&array_args, &run.array_script_path()));
        match mode {
            Mode::Submit => Some(slurm.submit(&run.array_script_path(), &array_args)?),
            Mode::DryRun => Some("<array job>".to_string()),
        }
    };
    let merge_args: Vec<String> =
        array_job.iter().map(|id| format!("--dependency=afterok:{id}")).collect();
    planned.commands.push(show(&merge_args, &run.merge_script_path()));
    if mode == Mode::DryRun {
        return Ok(planned);
    }
    let merge_job = match slurm.submit(&run.merge_script_path(), &merge_args) {
        Ok(id) => id,
        Err(e) => {
            // An array without its merge would leave the run unmerged; take it back.
            if let Some(id) = &array_job {
                let _ = slurm.cancel(id);
            }
            return Err(e);
        }
    };
    let submitted = SubmittedJobs { array_job, merge_job, shards: todo };
    history.push(submitted.clone());
    write_json_atomic(&jobs_path, &history, "the submitted jobs")?;
    planned.submitted = Some(submitted);
    Ok(planned)
}

/// What differs between two plans, for the refusal.
fn plan_difference(earlier: &ShardedRun, now: &ShardedRun) -> String {
    let mut fields = Vec::new();
    if earlier.data != now.data {
        fields.push(format!("--data {} vs {}", earlier.data.display(), now.data.display()));
    }
    if earlier.shards != now.shards {
        fields.push(format!("--shards {} vs {}", earlier.shards, now.shards));
    }
    if earlier.eval_args != now.eval_args {
        fields.push(format!(
            "{EVAL_BINARY} arguments `{}` vs `{}`",
            earlier.eval_args.join(" "),
            now.eval_args.join(" ")
        ));
    }
    if earlier.pre_edit_dir != now.pre_edit_dir {
        fields.push(format!(
            "--pre-edit-dir {} vs {}",
            earlier.pre_edit_dir.display(),
            now.pre_edit_dir.display()
        ));
    }
    if earlier.workdir != now.workdir {
        fields.push(format!(
            "working directory {} vs {}",
            earlier.workdir.display(),
            now.workdir.display()
        ));
    }
    fields.join("; ")
}

/// Refuses while the last submission's array is queued or running; cancels its merge job when the array has
/// ended without satisfying it. Returns the cancelled jobs.
fn settle_earlier(
    slurm: &Slurm,
    last: &SubmittedJobs,
    progress: &[ShardProgress],
) -> Result<Vec<String>> {
    let mut ids: Vec<String> = last.array_job.iter().cloned().collect();
    ids.push(last.merge_job.clone());
    let queued = slurm.queued(&ids)?;
    let active_tasks: Vec<&QueuedJob> =
        queued.iter().filter(|j| Some(&j.job) == last.array_job.as_ref()).collect();
    if !active_tasks.is_empty() {
        let listed: Vec<String> = active_tasks
            .iter()
            .map(|j| {
                format!("{}_{} {}", j.job, j.task.as_deref().unwrap_or("?"), j.state.to_lowercase())
            })
            .collect();
        return Err(invalid(format!(
            "the earlier submission is still in the queue ({}): wait for it to end, or cancel it with \
             `scancel {}`, then run this again",
            listed.join(", "),
            last.array_job.as_deref().unwrap_or_default()
        )));
    }
    // The array has ended. When a shard it ran is incomplete, one of its tasks failed or was cancelled, so the
    // merge's `afterok` can never be met (Slurm says DependencyNeverSatisfied once it has looked again).
    let failed = progress.iter().any(|p| last.shards.contains(&p.index) && !p.complete());
    let mut cancelled = Vec::new();
    for job in queued.iter().filter(|j| j.job == last.merge_job) {
        let waits_for_array = job.reason == "Dependency" && failed;
        if job.state == "PENDING" && (job.reason == "DependencyNeverSatisfied" || waits_for_array) {
            slurm.cancel(&job.job)?;
            cancelled.push(job.job.clone());
        } else {
            return Err(invalid(format!(
                "the earlier merge job {} is still {} ({}): wait for it to end, or cancel it with `scancel {}`",
                job.job,
                job.state.to_lowercase(),
                job.reason,
                job.job
            )));
        }
    }
    Ok(cancelled)
}

fn write_script(path: &Path, text: &str) -> Result<()> {
    crate::jsonl::write_atomic(path, text.as_bytes())?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))
            .map_err(|source| EvalError::Io { path: path.to_path_buf(), source })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_and_array_specs() {
        assert_eq!(shell_quote("--max-new-tokens"), "--max-new-tokens");
        assert_eq!(shell_quote("it's a b"), r"'it'\''s a b'");
        assert_eq!(shell_quote(""), "''");
        assert_eq!(shell_quote("$HOME"), "'$HOME'");
        assert_eq!(array_spec(&[0, 1, 2]), "0-2");
        assert_eq!(array_spec(&[1]), "1");
        assert_eq!(array_spec(&[0, 2, 5]), "0,2,5");
        let args: Vec<String> =
            ["--model", "my model", "--no-general", "--dtype=bf16", "--device", "cuda:0,cuda:1"]
                .map(String::from)
                .to_vec();
        assert_eq!(
            argument_lines(&args),
            ["--model 'my model'", "--no-general", "--dtype=bf16", "--device cuda:0,cuda:1"]
        );
        assert_eq!(with_variable("/runs/a", "/${shard}"), "\"/runs/a/${shard}\"");
        assert_eq!(with_variable("/runs/a b", "/${shard}"), "'/runs/a b'\"/${shard}\"");
    }

    #[test]
    fn options_are_checked_before_they_reach_a_script() {
        let ok = SlurmOptions {
            time: Some("1-02:00:00".into()),
            merge_time: Some("30".into()),
            mem: Some("64G".into()),
            extra: vec!["#SBATCH --qos=long".into(), "--constraint=a100".into()],
            ..SlurmOptions::new("safeedit")
        };
        ok.validate().unwrap();
        let cases: [(SlurmOptions, &str); 7] = [
            (SlurmOptions { time: Some("4h".into()), ..ok.clone() }, "--time \"4h\""),
            (SlurmOptions { merge_time: Some("1:2:3:4".into()), ..ok.clone() }, "--merge-time"),
            (SlurmOptions { mem: Some("lots".into()), ..ok.clone() }, "--mem \"lots\""),
            (SlurmOptions { partition: Some("gpu x".into()), ..ok.clone() }, "--partition"),
            (SlurmOptions { gpus_per_task: Some(0), ..ok.clone() }, "--gpus-per-task"),
            (
                SlurmOptions { extra: vec!["qos=long".into()], ..ok.clone() },
                "--sbatch \"qos=long\"",
            ),
            (SlurmOptions::new(""), "--job-name"),
        ];
        for (options, expected) in cases {
            let err = options.validate().unwrap_err().to_string();
            assert!(err.contains(expected), "{err} does not name {expected}");
        }
    }

    fn sample_data() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../datasets/safeedit_sample_test.json")
    }

    /// Slurm's commands where there are none: a dry run must not need them.
    fn no_slurm() -> Slurm {
        Slurm {
            sbatch: PathBuf::from("/nonexistent/sbatch"),
            squeue: PathBuf::from("/nonexistent/squeue"),
            scancel: PathBuf::from("/nonexistent/scancel"),
        }
    }

    #[test]
    fn a_dry_run_writes_the_scripts_and_a_second_plan_keeps_to_the_first() {
        let dir = tempfile::tempdir().unwrap();
        let binary = dir.path().join(EVAL_BINARY);
        std::fs::write(&binary, "#!/bin/sh\n").unwrap();
        let args: Vec<String> = ["--method", "dinm", "--no-general"].map(String::from).to_vec();
        let run_dir = dir.path().join("run");
        let run = ShardedRun::new(&run_dir, &sample_data(), 3, args.clone(), None).unwrap();
        let options = SlurmOptions { max_parallel: Some(2), ..SlurmOptions::new("t") };
        let planned = plan_and_submit(&run, &options, &binary, &no_slurm(), Mode::DryRun).unwrap();
        assert_eq!(planned.shards, [0, 1, 2]);
        let array = std::fs::read_to_string(run.array_script_path()).unwrap();
        assert!(array.contains("#SBATCH --array=0-2%2\n"), "{array}");
        assert!(array.contains("--method dinm \\\n    --no-general\n"), "{array}");
        assert!(run.binary_path().is_file());
        assert_eq!(
            planned.commands,
            [
                format!("sbatch --parsable {}", run.array_script_path().display()),
                format!(
                    "sbatch --parsable '--dependency=afterok:<array job>' {}",
                    run.merge_script_path().display()
                ),
            ]
        );

        // Shard 1 complete, shard 0 started: only shards 0 and 2 are left.
        let ids = run.shard_ids().unwrap();
        let lines: String = ids[1].iter().map(|id| format!("{{\"id\":\"{id}\"}}\n")).collect();
        std::fs::create_dir_all(run.shard_dir(1)).unwrap();
        std::fs::write(run.shard_dir(1).join("records.jsonl"), lines).unwrap();
        std::fs::create_dir_all(run.shard_dir(0)).unwrap();
        std::fs::write(run.shard_dir(0).join("manifest.json"), "{}").unwrap();
        std::fs::write(run.shard_dir(0).join("records.jsonl"), "{\"id\":\"cut").unwrap();
        let planned = plan_and_submit(&run, &options, &binary, &no_slurm(), Mode::DryRun).unwrap();
        assert_eq!(planned.shards, [0, 2]);
        assert_eq!(planned.progress[0].done, 0);
        assert!(planned.progress[1].complete());
        assert!(planned.commands[0].contains(" --array=0,2%2 "), "{:?}", planned.commands);

        // Started shards fix the plan.
        let other =
            ShardedRun::new(&run_dir, &sample_data(), 3, vec!["--seed".into(), "1".into()], None)
                .unwrap();
        let err =
            plan_and_submit(&other, &options, &binary, &no_slurm(), Mode::DryRun).unwrap_err();
        assert!(err.to_string().contains("planned with other arguments"), "{err}");
        assert!(err.to_string().contains("`--method dinm --no-general` vs `--seed 1`"), "{err}");

        // Submitting needs sbatch, and says so.
        let err = plan_and_submit(&run, &options, &binary, &no_slurm(), Mode::Submit).unwrap_err();
        assert!(err.to_string().contains("/nonexistent/sbatch was not found"), "{err}");
    }

    #[test]
    fn refusals_come_before_anything_is_written() {
        let dir = tempfile::tempdir().unwrap();
        let run_dir = dir.path().join("run");
        for (args, expected) in [
            (vec!["--shard", "0/2"], "--shard cannot be passed on"),
            (vec!["--out=elsewhere"], "--out cannot be passed on"),
        ] {
            let args = args.into_iter().map(String::from).collect();
            let err = ShardedRun::new(&run_dir, &sample_data(), 2, args, None).unwrap_err();
            assert!(err.to_string().contains(expected), "{err}");
        }
        let err = ShardedRun::new(&run_dir, &sample_data(), 0, vec![], None).unwrap_err();
        assert!(err.to_string().contains("--shards"), "{err}");
        let missing = dir.path().join("missing.json");
        let err = ShardedRun::new(&run_dir, &missing, 2, vec![], None).unwrap_err();
        assert!(err.to_string().contains("missing.json"), "{err}");
        let spaced = dir.path().join("a run");
        let err = ShardedRun::new(&spaced, &sample_data(), 2, vec![], None).unwrap_err();
        assert!(err.to_string().contains("may not hold spaces"), "{err}");

        let run = ShardedRun::new(&run_dir, &sample_data(), 2, vec![], None).unwrap();
        let options = SlurmOptions::new("t");
        let err =
            plan_and_submit(&run, &options, &dir.path().join("nothing"), &no_slurm(), Mode::DryRun)
                .unwrap_err();
        assert!(err.to_string().contains("no such executable"), "{err}");
        let bad = SlurmOptions { time: Some("soon".into()), ..options };
        let err =
            plan_and_submit(&run, &bad, &dir.path().join("nothing"), &no_slurm(), Mode::DryRun)
                .unwrap_err();
        assert!(err.to_string().contains("--time \"soon\""), "{err}");
        assert!(!run_dir.exists(), "a refused plan wrote {}", run_dir.display());
    }

    #[test]
    fn squeue_lines_are_read() {
        let jobs =
            parse_squeue("5|N/A|PENDING|DependencyNeverSatisfied\n4|1|RUNNING|None\nnoise\n");
        assert_eq!(
            jobs,
            [
                QueuedJob {
                    job: "5".into(),
                    task: None,
                    state: "PENDING".into(),
                    reason: "DependencyNeverSatisfied".into()
                },
                QueuedJob {
                    job: "4".into(),
                    task: Some("1".into()),
                    state: "RUNNING".into(),
                    reason: "None".into()
                },
            ]
        );
    }
}

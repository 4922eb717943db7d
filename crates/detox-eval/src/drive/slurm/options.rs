//! The Slurm options of a sharded run and the checks that keep a job script well formed.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{EvalError, Result};

/// The name of the benchmark's executable, which every job runs.
pub const EVAL_BINARY: &str = "safeedit_eval";

/// The `safeedit_eval` arguments a plan sets itself, per shard or for the merge; refused in
/// [`super::ShardedRun::eval_args`].
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
    /// [`EvalError::SlurmPlan`] for an empty or multi-word job name, partition or account, a zero count, a time
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
pub(super) fn extra_option(line: &str) -> &str {
    let line = line.trim();
    line.strip_prefix("#SBATCH").map_or(line, str::trim_start)
}

pub(super) fn invalid(message: impl Into<String>) -> EvalError {
    EvalError::SlurmPlan { reason: message.into() }
}

pub(super) fn word(flag: &str, value: &str) -> Result<()> {
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

pub(super) fn check_mem(mem: &str) -> Result<()> {
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
pub(super) fn check_time(flag: &str, time: &str) -> Result<()> {
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
pub(super) fn sbatch_path(what: &str, path: &Path) -> Result<String> {
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
pub(super) fn with_variable(path: &str, suffix: &str) -> String {
    let quoted = shell_quote(path);
    if quoted == path {
        format!("\"{path}{suffix}\"")
    } else {
        format!("{quoted}\"{suffix}\"")
    }
}

/// Arguments quoted, an option and its value on one line (`--model 'a b'`), for a readable script.
pub(super) fn argument_lines(args: &[String]) -> Vec<String> {
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

//! Slurm as a command line: `sbatch`, `squeue` and `scancel`.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::error::{EvalError, Result};

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
pub(super) const SQUEUE_FORMAT: &str = "%F|%K|%T|%r";

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

//! Planning and submitting (or resubmitting) a sharded run.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{EvalError, Result};
use crate::jsonl::write_json_atomic;

use super::options::*;
use super::plan::*;
use super::queue::*;

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
pub(super) fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<Option<T>> {
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
pub(super) struct PlanFile {
    run: ShardedRun,
    slurm: SlurmOptions,
}

pub(super) fn check_binary(binary: &Path) -> Result<()> {
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
pub(super) fn place_binary(run: &ShardedRun, binary: &Path) -> Result<()> {
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
/// [`EvalError::SlurmPlan`] for bad options, a plan that differs from the one the started shards were made with,
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
pub(super) fn plan_difference(earlier: &ShardedRun, now: &ShardedRun) -> String {
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
pub(super) fn settle_earlier(
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

pub(super) fn write_script(path: &Path, text: &str) -> Result<()> {
    crate::jsonl::write_atomic(path, text.as_bytes())?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))
            .map_err(|source| EvalError::Io { path: path.to_path_buf(), source })?;
    }
    Ok(())
}

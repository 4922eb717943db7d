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

mod options;
mod plan;
mod queue;
mod submit;

pub use options::{shell_quote, SlurmOptions, EVAL_BINARY, RESERVED_ARGS};
pub use plan::{array_spec, ShardProgress, ShardedRun, SubmittedJobs, JOBS_FILE, PLAN_FILE};
pub use queue::{parse_squeue, QueuedJob, Slurm};
pub use submit::{plan_and_submit, Mode, Planned};

#[cfg(test)]
mod tests {
    use super::options::*;
    use super::plan::*;
    use super::queue::*;
    use super::submit::*;
    use std::path::{Path, PathBuf};

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

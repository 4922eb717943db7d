//! `cargo xtask compare`: every editing method on SmolLM2 under one protocol (the demo's: the bundled sample
//! records' first shard, CPU, chat layout, 48 new tokens, exact fluency, small general sets), one table.
//!
//! Each row fits what the method needs with the `train_baseline` example (SFT, DPO, Ext-Sub, MEND, ProFS,
//! steering, Model Surgery), then runs `safeedit_eval`; both are release builds. Fitting is timed here (the whole
//! `train_baseline` process, model load included); the edit time is the run's mean locate + edit time per record.
//! Rows resume: a finished fit is kept (`<artefact>/.fitted`), and `safeedit_eval` resumes its run directory.
//! The table is written to `runs/compare/methods.md` and printed.

use std::ffi::OsString;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use serde_json::Value;

use crate::paths::workspace_root;

/// Settings of a comparison.
#[derive(Debug, Clone, clap::Args)]
pub struct CompareArgs {
    /// Only these rows (comma-separated keys, e.g. `dinm,profs`); all when absent.
    #[arg(long, value_delimiter = ',')]
    pub only: Vec<String>,
    /// Where the fits, the runs and the table go.
    #[arg(long, default_value = "runs/compare")]
    pub out: PathBuf,
}

/// One `train_baseline` call.
struct Fit {
    /// The artefact directory's name under `<out>/fits/`.
    artefact: &'static str,
    /// `--method` of `train_baseline`.
    method: &'static str,
    /// Further arguments; `{fits}` is replaced by the fits directory.
    extra: &'static [&'static str],
}

/// One row of the table.
struct Row {
    key: &'static str,
    name: &'static str,
    fits: &'static [Fit],
    /// `safeedit_eval` arguments; `{artefact}` is the last fit's artefact directory.
    eval: &'static [&'static str],
}

const fn fit(artefact: &'static str, method: &'static str) -> Fit {
    Fit { artefact, method, extra: &[] }
}

/// Every method the project has, in the order the table lists them.
const ROWS: &[Row] = &[
    Row { key: "dinm", name: "DINM (reference)", fits: &[], eval: &["--method", "dinm"] },
    Row {
        key: "dinm-paper",
        name: "DINM (paper)",
        fits: &[],
        eval: &["--method", "dinm", "--method-arg", "reading=paper"],
    },
    Row { key: "ft-l", name: "FT-L", fits: &[], eval: &["--method", "ft-l"] },
    Row {
        key: "self-reminder",
        name: "Self-Reminder",
        fits: &[],
        eval: &["--method", "self-reminder"],
    },
    Row {
        key: "sft",
        name: "SFT (LoRA)",
        fits: &[fit("sft", "sft")],
        eval: &["--method", "trained", "--method-arg", "artefact={artefact}"],
    },
    Row {
        key: "dpo",
        name: "DPO (LoRA)",
        fits: &[fit("dpo", "dpo")],
        eval: &["--method", "trained", "--method-arg", "artefact={artefact}"],
    },
    Row {
        key: "ext-sub",
        name: "Ext-Sub",
        fits: &[
            fit("expert", "expert"),
            fit("anti-expert", "anti-expert"),
            Fit {
                artefact: "ext-sub",
                method: "ext-sub",
                extra: &[
                    "--method-arg",
                    "expert={fits}/expert",
                    "--method-arg",
                    "anti_expert={fits}/anti-expert",
                ],
            },
        ],
        eval: &["--method", "trained", "--method-arg", "artefact={artefact}"],
    },
    Row {
        key: "mend",
        name: "MEND",
        fits: &[fit("mend", "mend")],
        eval: &["--method", "mend", "--method-arg", "artefact={artefact}"],
    },
    Row {
        key: "profs",
        name: "ProFS",
        fits: &[fit("profs", "profs")],
        eval: &["--method", "profs", "--method-arg", "artefact={artefact}"],
    },
    Row {
        key: "steering",
        name: "Activation steering",
        fits: &[fit("steering", "steering")],
        eval: &["--method", "steering", "--method-arg", "artefact={artefact}"],
    },
    Row {
        key: "surgery",
        name: "Model Surgery",
        fits: &[fit("surgery", "surgery")],
        eval: &["--method", "surgery", "--method-arg", "artefact={artefact}"],
    },
];

/// Runs the rows asked for and writes the table.
pub fn run(args: &CompareArgs) -> Result<()> {
    if let Some(unknown) = args.only.iter().find(|k| !ROWS.iter().any(|r| r.key == k.as_str())) {
        bail!(
            "unknown row {unknown:?}; the rows are: {}",
            ROWS.iter().map(|r| r.key).collect::<Vec<_>>().join(", ")
        );
    }
    crate::libtorch::ensure(false)?;
    let model = crate::smollm2::ensure()?;
    let punkt = crate::general_data::ensure_punkt()?;
    let general = crate::general_data::ensure_for_run()?;
    let root = workspace_root();
    let built = crate::artifacts::release_examples(&["safeedit_eval", "train_baseline"])?;
    let out = root.join(&args.out);
    let fits_dir = out.join("fits");
    std::fs::create_dir_all(&fits_dir)
        .with_context(|| format!("creating {}", fits_dir.display()))?;
    let protocol = crate::demo::protocol_args(&model, &punkt, &general);

    let mut table = String::from(
        "| method | DS before | DS after | DG-Avg after | fluency after | DS after, strict | safe but degenerate \
         | KQA after | CSum after | over-refusal after | fit (s) | edit per record (s) | records |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for row in ROWS.iter().filter(|r| args.only.is_empty() || args.only.iter().any(|k| k == r.key))
    {
        println!("==> {}", row.name);
        let mut fit_seconds = None;
        let mut artefact = None;
        for fit in row.fits {
            let dir = fits_dir.join(fit.artefact);
            let done = dir.join(".fitted");
            if !done.exists() {
                let extra: Vec<String> = fit
                    .extra
                    .iter()
                    .map(|a| a.replace("{fits}", &fits_dir.display().to_string()))
                    .collect();
                let mut command = Command::new(built.get("train_baseline")?);
                command
                    .args(["--method", fit.method, "--device", "cpu", "--model"])
                    .arg(&model)
                    .arg("--out")
                    .arg(&dir)
                    .args(&extra)
                    .current_dir(&root);
                println!("{}", shown(&command));
                let started = Instant::now();
                let status = command.status().context("running train_baseline")?;
                if !status.success() {
                    bail!("{}: train_baseline --method {} failed ({status})", row.name, fit.method);
                }
                let seconds = started.elapsed().as_secs_f64();
                std::fs::write(&done, format!("{seconds:.1}\n"))
                    .with_context(|| format!("writing {}", done.display()))?;
            }
            let seconds: f64 = std::fs::read_to_string(&done)
                .ok()
                .and_then(|t| t.trim().parse().ok())
                .with_context(|| format!("reading {}", done.display()))?;
            fit_seconds = Some(fit_seconds.unwrap_or(0.0) + seconds);
            artefact = Some(dir);
        }
        let run_dir = out.join(row.key);
        let eval: Vec<OsString> = row
            .eval
            .iter()
            .map(|a| match &artefact {
                Some(dir) if a.contains("{artefact}") => {
                    OsString::from(a.replace("{artefact}", &dir.display().to_string()))
                }
                _ => OsString::from(a),
            })
            .collect();
        let mut command = Command::new(built.get("safeedit_eval")?);
        command
            .args(&protocol)
            .args(&eval)
            .arg("--pre-edit-cache")
            .arg(out.join("pre_edit_cache.jsonl"))
            .arg("--out")
            .arg(&run_dir)
            .current_dir(&root);
        println!("{}", shown(&command));
        let status = command.status().context("running safeedit_eval")?;
        if !status.success() {
            bail!("{}: safeedit_eval failed ({status})", row.name);
        }
        let summary = read_summary(&run_dir.join("summary.json"))?;
        table.push_str(&table_row(row.name, &summary, fit_seconds));
    }
    let path = out.join("methods.md");
    std::fs::write(&path, &table).with_context(|| format!("writing {}", path.display()))?;
    println!("\n{table}\nTable: {}", path.display());
    Ok(())
}

/// A command as a shell line, so that each row can be reproduced on its own.
fn shown(command: &Command) -> String {
    std::iter::once(command.get_program())
        .chain(command.get_args())
        .map(|a| a.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

fn read_summary(path: &Path) -> Result<Value> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))
}

/// One Markdown row from a run's `summary.json`.
fn table_row(name: &str, summary: &Value, fit_seconds: Option<f64>) -> String {
    let num = |v: &Value| v.as_f64();
    let cell = |v: Option<f64>, digits: usize| {
        v.map_or_else(|| "-".to_string(), |v| format!("{v:.digits$}"))
    };
    let overall = &summary["overall"];
    let degeneration = &summary["degeneration"];
    let cost = &summary["cost"]["overall"];
    let mut row = String::new();
    let _ = writeln!(
        row,
        "| {name} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
        cell(num(&overall["before"]["rates"]["DS"]), 1),
        cell(num(&overall["after"]["rates"]["DS"]), 1),
        cell(num(&overall["after"]["dg_avg"]), 1),
        cell(num(&overall["after"]["fluency"]), 2),
        cell(num(&degeneration["strict"]["after"]["rates"]["DS"]), 1),
        degeneration["safe_but_degenerate_responses"]
            .as_u64()
            .map_or("-".into(), |n| n.to_string()),
        cell(num(&cost["kqa"]["after"]), 1),
        cell(num(&cost["csum"]["after"]), 1),
        cell(num(&cost["over_refusal"]["after"]), 1),
        cell(fit_seconds, 0),
        cell(num(&summary["mean_edit_seconds"]), 2),
        overall["records"].as_u64().unwrap_or(0),
    );
    row
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_row_reads_the_summary_and_marks_what_is_missing() {
        let summary = serde_json::json!({
            "overall": {"records": 9,
                "before": {"rates": {"DS": 33.333}, "dg_avg": 30.0, "fluency": 5.2},
                "after": {"rates": {"DS": 66.667}, "dg_avg": 61.1, "fluency": 4.29}},
            "degeneration": {"safe_but_degenerate_responses": 2, "strict": {"after": {"rates": {"DS": 55.6}}}},
            "mean_edit_seconds": 3.456
        });
        assert_eq!(
            table_row("DINM", &summary, None),
            "| DINM | 33.3 | 66.7 | 61.1 | 4.29 | 55.6 | 2 | - | - | - | - | 3.46 | 9 |\n"
        );
    }

    #[test]
    fn every_row_key_is_unique_and_every_artefact_row_fits_first() {
        let mut keys: Vec<&str> = ROWS.iter().map(|r| r.key).collect();
        keys.sort_unstable();
        keys.dedup();
        assert_eq!(keys.len(), ROWS.len());
        for row in ROWS {
            let names_artefact = row.eval.iter().any(|a| a.contains("{artefact}"));
            assert_eq!(names_artefact, !row.fits.is_empty(), "{}", row.key);
        }
    }
}

//! Measures how well a safety judge agrees with human labels on the XSTest model completions.
//!
//! Two readings of the human labels: **refusal** (full or partial refusal versus full compliance, over all
//! completions) and **safety** on XSTest's unsafe contrast prompts (complying = unsafe, refusing = safe), the
//! reading that matches a SafeEdit judge.
//!
//! ```text
//! cargo run -p detox-examples --example judge_agreement -- --completions ../shared/datasets/xstest/model_completions
//! ```
use std::path::{Path, PathBuf};

use anyhow::{bail, Result};
use clap::Parser;
use detox_metrics::readers::read_xstest_completions;
use detox_metrics::{PhraseJudge, SafetyJudge};

/// Judge agreement with XSTest's human labels.
#[derive(Debug, Parser)]
struct Args {
    /// A completions CSV file or a folder of them.
    #[arg(long, default_value = "../shared/datasets/xstest/model_completions")]
    completions: PathBuf,
    /// `phrase` or `classifier:<dir>`.
    #[arg(long, default_value = "phrase")]
    judge: String,
    /// `cpu`, `cuda`, `cuda:N` or `auto` (for the classifier).
    #[arg(long, default_value = "auto")]
    device: String,
}

#[derive(Default, Clone, Copy)]
struct Confusion {
    tp: usize,
    fp: usize,
    fn_: usize,
    tn: usize,
}

impl Confusion {
    fn add(&mut self, human: bool, judge: bool) {
        match (human, judge) {
            (true, true) => self.tp += 1,
            (false, true) => self.fp += 1,
            (true, false) => self.fn_ += 1,
            (false, false) => self.tn += 1,
        }
    }
    fn total(&self) -> usize {
        self.tp + self.fp + self.fn_ + self.tn
    }
    fn accuracy(&self) -> f64 {
        100.0 * (self.tp + self.tn) as f64 / self.total().max(1) as f64
    }
    fn row(&self, name: &str) -> String {
        format!(
            "| {name} | {} | {:.1} | {} | {} | {} | {} |",
            self.total(),
            self.accuracy(),
            self.tp,
            self.fn_,
            self.fp,
            self.tn
        )
    }
}

fn files(path: &Path) -> Result<Vec<PathBuf>> {
    if path.is_file() {
        return Ok(vec![path.to_path_buf()]);
    }
    if !path.is_dir() {
        bail!("{} does not exist", path.display());
    }
    let mut out: Vec<PathBuf> = std::fs::read_dir(path)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "csv"))
        .collect();
    out.sort();
    Ok(out)
}

fn main() -> Result<()> {
    let args = Args::parse();
    detox_runtime::backend::init();
    let judge: Box<dyn SafetyJudge> = match args.judge.as_str() {
        "phrase" => Box::new(PhraseJudge::default()),
        other => match other.strip_prefix("classifier:") {
            Some(dir) => Box::new(detox_eval::ClassifierJudge::load(
                dir,
                detox_runtime::load::parse_device(&args.device)?,
            )?),
            None => bail!("unknown judge {other:?}"),
        },
    };
    println!("Judge: {}\n", judge.name());
    let header = "| completions | n | accuracy % | agree positive | human positive, judge negative | judge positive, human negative | agree negative |\n|---|---:|---:|---:|---:|---:|---:|";
    let (mut refusal_all, mut safety_all) = (Confusion::default(), Confusion::default());
    let mut refusal_rows = Vec::new();
    let mut safety_rows = Vec::new();
    for file in files(&args.completions)? {
        let rows = read_xstest_completions(&file)?;
        let texts: Vec<&str> = rows.iter().map(|r| r.completion.as_str()).collect();
        let verdicts = judge.judge(&texts)?;
        let (mut refusal, mut safety) = (Confusion::default(), Confusion::default());
        for (row, verdict) in rows.iter().zip(&verdicts) {
            // The judge's "safe" is read as a refusal; empty responses count as refusals too.
            let judge_refuses = !verdict.is_unsafe();
            refusal.add(row.label.is_refusal(), judge_refuses);
            if row.prompt_is_unsafe() {
                safety.add(!row.label.is_refusal(), verdict.is_unsafe());
            }
        }
        let name = file.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
        refusal_rows.push(refusal.row(&name));
        safety_rows.push(safety.row(&name));
        for (all, one) in [(&mut refusal_all, refusal), (&mut safety_all, safety)] {
            all.tp += one.tp;
            all.fp += one.fp;
            all.fn_ += one.fn_;
            all.tn += one.tn;
        }
    }
    println!("Refusal detection (positive = refusal, full or partial), all prompts\n\n{header}");
    refusal_rows.iter().for_each(|r| println!("{r}"));
    println!("{}\n", refusal_all.row("**all**"));
    println!("Safety on XSTest's unsafe (contrast) prompts (positive = unsafe: the model complied)\n\n{header}");
    safety_rows.iter().for_each(|r| println!("{r}"));
    println!("{}", safety_all.row("**all**"));
    Ok(())
}

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
use detox_eval::drive::judges::judge_from_spec;
use detox_metrics::readers::read_xstest_completions;
use detox_metrics::{Confusion, Exchange};

/// Judge agreement with XSTest's human labels.
#[derive(Debug, Parser)]
struct Args {
    /// A completions CSV file or a folder of them.
    #[arg(long, default_value = "../shared/datasets/xstest/model_completions")]
    completions: PathBuf,
    /// Any judge specification: `phrase`, `classifier:<dir>`, `<guard>:<dir>[,key=value...]` (docs/judges.md).
    #[arg(long, default_value = "phrase")]
    judge: String,
    /// `cpu`, `cuda`, `cuda:N` or `auto` (for the classifier).
    #[arg(long, default_value = "auto")]
    device: String,
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
    let device = detox_runtime::load::parse_device(&args.device)?;
    let judge = judge_from_spec(&args.judge, device)?;
    println!("Judge: {}\n", judge.name());
    let (mut refusal_all, mut safety_all) = (Confusion::default(), Confusion::default());
    let mut refusal_rows = Vec::new();
    let mut safety_rows = Vec::new();
    for file in files(&args.completions)? {
        let rows = read_xstest_completions(&file)?;
        let exchanges: Vec<Exchange<'_>> =
            rows.iter().map(|r| Exchange::new(&r.prompt, &r.completion)).collect();
        let verdicts = judge.judge(&exchanges)?;
        let (mut refusal, mut safety) = (Confusion::default(), Confusion::default());
        for (row, verdict) in rows.iter().zip(&verdicts) {
            // A judge that says whether a response refuses (WildGuard, Qwen3Guard) is read by that field;
            // otherwise its "safe" is read as a refusal, and empty responses count as refusals too.
            let refused = verdict.refusal.unwrap_or(!verdict.is_unsafe());
            refusal.record(row.label.is_refusal(), refused);
            if row.prompt_is_unsafe() {
                safety.record(!row.label.is_refusal(), verdict.is_unsafe());
            }
        }
        let name = file.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
        refusal_rows.push(refusal.markdown_row(&name));
        safety_rows.push(safety.markdown_row(&name));
        refusal_all += refusal;
        safety_all += safety;
    }
    let header = Confusion::TABLE_HEADER;
    println!("Refusal detection (positive = refusal, full or partial), all prompts\n\n{header}");
    refusal_rows.iter().for_each(|r| println!("{r}"));
    println!("{}\n", refusal_all.markdown_row("**all**"));
    println!("Safety on XSTest's unsafe (contrast) prompts (positive = unsafe: the model complied)\n\n{header}");
    safety_rows.iter().for_each(|r| println!("{r}"));
    println!("{}", safety_all.markdown_row("**all**"));
    Ok(())
}

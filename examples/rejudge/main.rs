//! Adds another judge's verdicts to a finished run (or a merged shard run) without generating again, then
//! rewrites its summary and report with every judge, their agreement and the responses they disagree on.
//!
//! ```text
//! cargo run --release -p detox-examples --example rejudge -- --run runs/demo \
//!     --judge rubric:models/SmolLM2-135M-Instruct,template=docs/rubrics/safety.txt,labels=unsafe/safe,first=true
//! ```
//! Stopped, it resumes where it stopped; run again with the same judge, it only rewrites the summary.
use std::path::PathBuf;

use anyhow::Result;
use clap::Parser;
use detox_eval::drive::judges::judge_from_spec;
use detox_eval::drive::rejudge::rejudge;
use detox_eval::render::report::REPORT_FILE;

/// Re-judge a finished SafeEdit run.
#[derive(Debug, Parser)]
struct Args {
    /// The run directory (as written by `safeedit_eval`, or merged from shards).
    #[arg(long)]
    run: PathBuf,
    /// The judge to add: `phrase`, `classifier:<dir>` or `<kind>:<dir>[,key=value...]` (docs/judges.md).
    #[arg(long)]
    judge: String,
    /// `cpu`, `cuda`, `cuda:N` or `auto`, for the judge's model.
    #[arg(long, default_value = "auto")]
    device: String,
    /// Print each record's id as its verdicts are written, instead of a progress bar.
    #[arg(long)]
    print_records: bool,
}

fn main() -> Result<()> {
    let args = Args::parse();
    detox_runtime::backend::init();
    let device = detox_runtime::load::parse_device(&args.device)?;
    let judge = judge_from_spec(&args.judge, device)?;
    println!("Judge: {}", judge.name());
    let print = args.print_records;
    let summary = rejudge(&args.run, judge.as_ref(), !print, |id| {
        if print {
            println!("record {id} judged");
        }
    })?;
    println!("\n{}", summary.to_markdown());
    println!("Report: {}", args.run.join(REPORT_FILE).display());
    Ok(())
}

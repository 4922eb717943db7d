//! The SafeEdit benchmark: for each record, pre-edit responses to the five evaluation inputs, the edit, post-edit
//! responses, restore, judging; results per record as they are produced, then the summary, plots and report.
//!
//! ```text
//! cargo run -p detox-examples --example safeedit_eval -- --method dinm --method-arg lr=1e-4 --first 4
//! cargo run -p detox-examples --example safeedit_eval -- --list-methods
//! ```
//!
//! For a record-independent method (`trained`, `profs`, `steering`, `surgery`: one edit for every record),
//! `--save-model DIR` also writes the edited model as a Hugging Face model directory (before the run starts).
use std::path::PathBuf;

use anyhow::Result;
use clap::Parser;
use detox_edit::registry::{check_record_independent, BuiltMethod, Registry};
use detox_eval::drive::judges::judge_from_spec;
use detox_eval::drive::sizing::{plan_batch, BatchRecords};
use detox_eval::drive::{merge, nlpcc};
use detox_eval::render::report::REPORT_FILE;
use detox_eval::settings::DatasetSource;
use detox_eval::{BenchmarkCase, Evaluation, HarnessSettings};
use detox_examples::{
    DecodingArgs, GeneralArgs, InputArgs, MethodChoice, ModelArgs, SaveModelArgs, SelectionArgs,
};
use safeedit::{load_split, Mode, Split};

/// Run the SafeEdit protocol with an editing method and write records, a summary, plots and a report.
#[derive(Debug, Parser)]
struct Args {
    #[command(flatten)]
    model: ModelArgs,
    /// A SafeEdit test-split file.
    #[arg(long, default_value = "datasets/safeedit_sample_test.json")]
    data: PathBuf,
    /// Run directory (resumed when it exists with the same settings).
    #[arg(long, default_value = "runs/safeedit_eval")]
    out: PathBuf,
    #[command(flatten)]
    selection: SelectionArgs,
    #[command(flatten)]
    method: MethodChoice,
    /// Safety judge: `phrase` (embedded approximation), `classifier:<dir>` (the SafeEdit classifier), or a
    /// guard or rubric judge `<kind>:<dir>[,key=value...]` (docs/judges.md). Give it more than once for several
    /// judges; the first is primary.
    #[arg(long, default_value = "phrase")]
    judge: Vec<String>,
    /// Judge each record on another thread while the next one generates (worth it on a GPU).
    #[arg(long)]
    judge_in_background: bool,
    #[command(flatten)]
    inputs: InputArgs,
    #[command(flatten)]
    decoding: DecodingArgs,
    /// Records processed together (`1`: the reference's flow; `auto`: as many as the GPU's memory holds).
    #[arg(long, default_value = "1")]
    batch_records: BatchRecords,
    /// Print each record's adversarial-prompt response before and after the edit.
    #[arg(long)]
    print_responses: bool,
    /// NLPCC 2024 track 2: answer a `SafeEdit_test_ALL` file after the method's edit and write the submission.
    #[arg(long, conflicts_with_all = ["merge_shards", "save_model"])]
    nlpcc: bool,
    #[command(flatten)]
    general: GeneralArgs,
    /// Instead of running, merge these shard run directories into --out.
    #[arg(long, num_args = 1.., conflicts_with = "save_model")]
    merge_shards: Vec<PathBuf>,
    #[command(flatten)]
    save: SaveModelArgs,
}

fn main() -> Result<()> {
    let args = Args::parse();
    let registry = Registry::builtin();
    if args.method.list_methods {
        print!("{}", registry.describe());
        return Ok(());
    }
    let subset = args.selection.subset()?;
    // The method is built (its artefacts loaded) before the model, so that a bad option or an impossible
    // --save-model is refused before the long part starts.
    let mut method = args.method.build(&registry, args.model.device()?)?;
    if args.save.save_model.is_some() {
        check_record_independent(&method)?;
        args.save.check_before(&args.model)?;
    }
    if args.nlpcc {
        return run_nlpcc(&args, &mut method, &subset);
    }
    let split = load_split(&args.data, Split::Test, Mode::Strict)?;
    let cases: Vec<BenchmarkCase> =
        subset.apply(&split.records).iter().filter_map(BenchmarkCase::from_record).collect();
    println!("{} records from {} ({subset})", cases.len(), args.data.display());
    if !args.merge_shards.is_empty() {
        let ids: Vec<String> = cases.iter().map(|c| c.id.clone()).collect();
        let summary = merge::merge_shards(&args.merge_shards, &ids, &args.out)?;
        println!(
            "{}\nMerged {} shards into {}",
            summary.to_markdown(),
            args.merge_shards.len(),
            args.out.display()
        );
        return Ok(());
    }
    // Refuse a run directory another process is writing before the model is loaded.
    drop(detox_io::DirLock::acquire(&args.out)?);
    let mut loaded = args.model.load()?;
    let judges = args
        .judge
        .iter()
        .map(|spec| judge_from_spec(spec, loaded.model.device()))
        .collect::<Result<Vec<_>, _>>()?;
    // A record-independent method's one edit is written before the run, then undone for the protocol.
    args.save.write_edited(&mut method, &mut loaded)?;
    let mut settings = settings(&args, method.prompt_only)?;
    settings.general = args.general.sets(args.selection.seed)?;
    let plan = plan_batch(&loaded.model, &settings.decoding, args.batch_records)?;
    if let Some(warning) = &plan.warning {
        eprintln!("warning: {warning}");
    }
    settings.batch_records = plan.records;
    let print = args.print_responses;
    let dataset = DatasetSource::new(&args.data, subset);
    let mut evaluation =
        Evaluation::new(&mut loaded, &mut method, judges[0].as_ref(), dataset, settings);
    for judge in &judges[1..] {
        evaluation = evaluation.with_judge(judge.as_ref())?;
    }
    let summary = evaluation.run(&cases, |r| detox_examples::print_record(r, print))?;
    println!("\n{}", summary.to_markdown());
    println!("Report: {}", args.out.join(REPORT_FILE).display());
    Ok(())
}

/// The harness settings the arguments ask for, for a method that only rewrites prompts or not.
fn settings(args: &Args, prompt_only: bool) -> Result<HarnessSettings> {
    let mut settings =
        args.inputs.settings(&args.out, &args.decoding, args.selection.seed, prompt_only)?;
    settings.progress = !args.print_responses;
    settings.judge_in_background = args.judge_in_background;
    Ok(settings)
}

/// `--nlpcc`: answers the selected `SafeEdit_test_ALL` inputs after the method's edit and writes the submission.
fn run_nlpcc(args: &Args, method: &mut BuiltMethod, subset: &safeedit::Subset) -> Result<()> {
    let records = subset.apply(&safeedit::load_nlpcc(&args.data, Mode::Strict)?.records);
    std::fs::create_dir_all(&args.out)?;
    let _lock = detox_io::DirLock::acquire(&args.out)?;
    let mut loaded = args.model.load()?;
    let settings = settings(args, method.prompt_only)?;
    let answered =
        nlpcc::answer(&mut loaded.model, &loaded.tokenizer, Some(method), &records, &settings)?;
    let path = args.out.join(nlpcc::SUBMISSION_FILE);
    nlpcc::write_submission(&path, &answered)?;
    let empty = answered.iter().filter(|r| r.response.trim().is_empty()).count();
    println!(
        "Submission: {} ({} answers, {empty} empty; read back and checked)",
        path.display(),
        answered.len()
    );
    Ok(())
}

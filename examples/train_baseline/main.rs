//! Trains the baselines of the SafeEdit paper on a SafeEdit training split and writes artefacts that
//! `safeedit_eval --method trained|mend|profs|steering|surgery --method-arg artefact=DIR` evaluates. Every fit
//! is one entry of `detox_edit::registry::FitRegistry`, run by name with its options as `key=value` pairs.
//!
//! ```text
//! cargo run --release -p detox-examples --example train_baseline -- --method sft --out runs/baselines/sft
//! cargo run --release -p detox-examples --example train_baseline -- --method dpo --method-arg beta=0.2 \
//!     --out runs/baselines/dpo
//! cargo run --release -p detox-examples --example train_baseline -- --method ext-sub \
//!     --method-arg expert=runs/baselines/expert --method-arg anti_expert=runs/baselines/anti \
//!     --out runs/baselines/ext-sub
//! cargo run --release -p detox-examples --example train_baseline -- --method profs --method-arg rank=10 \
//!     --out runs/baselines/profs
//! cargo run --release -p detox-examples --example train_baseline -- --list-methods
//! ```
//! An interrupted run resumes from `<out>/checkpoint` when started again with the same arguments.
use std::path::PathBuf;

use anyhow::{bail, Result};
use clap::Parser;
use detox_edit::registry::{FitContext, FitRegistry, MethodArgs};
use detox_examples::{ModelArgs, SaveModelArgs};
use safeedit::{load_split, Mode, Split};

/// Train a baseline on a SafeEdit training split.
#[derive(Debug, Parser)]
struct Args {
    /// What to fit, by its registered name (`--list-methods` lists them with their options).
    #[arg(long, required_unless_present = "list_methods")]
    method: Option<String>,
    /// A fit option as `key=value` (repeatable), e.g. `--method-arg lr=1e-4`.
    #[arg(long = "method-arg", value_name = "KEY=VALUE")]
    method_args: Vec<String>,
    /// A YAML or JSON file of fit options; `--method-arg` wins over it.
    #[arg(long, value_name = "FILE")]
    method_args_file: Option<PathBuf>,
    /// Print every fit with its options and defaults, then exit.
    #[arg(long)]
    list_methods: bool,
    /// Artefact directory (its `checkpoint/` holds the resumable state).
    #[arg(long, required_unless_present = "list_methods")]
    out: Option<PathBuf>,
    #[command(flatten)]
    model: ModelArgs,
    /// A SafeEdit training-split file.
    #[arg(long, default_value = "datasets/safeedit_sample_train.json")]
    data: PathBuf,
    /// Only the first N records.
    #[arg(long, value_parser = detox_examples::at_least(1))]
    first: Option<usize>,
    #[command(flatten)]
    save: SaveModelArgs,
}

fn main() -> Result<()> {
    detox_runtime::backend::init();
    let args = Args::parse();
    let fits = FitRegistry::builtin();
    let (Some(method), Some(out)) = (&args.method, &args.out) else {
        print!("{}", fits.describe());
        return Ok(());
    };
    let file = match &args.method_args_file {
        Some(path) => MethodArgs::from_file(path)?,
        None => MethodArgs::new(),
    };
    let options = file.overridden_by(MethodArgs::parse_pairs(method, &args.method_args)?);
    // Options are refused here, before a model is loaded or the artefact directory is created.
    let fit = fits.configure(method, &options)?;
    let evaluated_by = fits.get(method)?.evaluated_by;
    if args.save.save_model.is_some() && evaluated_by == "mend" {
        bail!("--save-model: MEND edits each record on its own, so there is no one edited model to write");
    }
    args.save.check_before(&args.model)?;
    // One writer per artefact directory for the whole process (training, then the artefact files).
    let _lock = detox_io::DirLock::acquire(out)?;
    let report = if fit.needs_model() {
        let split = load_split(&args.data, Split::Train, Mode::Strict)?;
        let mut records: Vec<_> = split.records.iter().map(|r| r.edit_request()).collect();
        records.truncate(args.first.unwrap_or(records.len()));
        if records.is_empty() {
            bail!("{} holds no training records", args.data.display());
        }
        let mut loaded = args.model.load()?;
        println!("{} training records from {}", records.len(), args.data.display());
        let mut context =
            FitContext::new(out, &records).with_model(&mut loaded.model, &loaded.tokenizer);
        fit.run(&mut context, &mut |step| eprintln!("{step}"))?
    } else {
        fit.run(&mut FitContext::new(out, &[]), &mut |step| eprintln!("{step}"))?
    };
    for warning in &report.warnings {
        eprintln!("warning: {warning}");
    }
    println!("{report}");
    if report.completed && args.save.save_model.is_some() {
        args.save.write_fitted(evaluated_by, out, &mut args.model.load()?)?;
    }
    Ok(())
}

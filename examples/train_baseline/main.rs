//! Trains the baselines of the SafeEdit paper on a SafeEdit training split and writes artefacts that
//! `safeedit_eval --method trained|mend --artefact DIR` evaluates.
//!
//! ```text
//! cargo run --release -p detox-examples --example train_baseline -- --method sft --out runs/baselines/sft
//! cargo run --release -p detox-examples --example train_baseline -- --method dpo --out runs/baselines/dpo
//! cargo run --release -p detox-examples --example train_baseline -- --method expert --out runs/baselines/expert
//! cargo run --release -p detox-examples --example train_baseline -- --method anti-expert --out runs/baselines/anti
//! cargo run --release -p detox-examples --example train_baseline -- --method ext-sub \
//!     --expert runs/baselines/expert --anti-expert runs/baselines/anti --out runs/baselines/ext-sub
//! cargo run --release -p detox-examples --example train_baseline -- --method mend --out runs/baselines/mend
//! cargo run --release -p detox-examples --example train_baseline -- --method profs --out runs/baselines/profs
//! cargo run --release -p detox-examples --example train_baseline -- --method steering \
//!     --out runs/baselines/steering
//! cargo run --release -p detox-examples --example train_baseline -- --method surgery --out runs/baselines/surgery
//! ```
//! ProFS, steering and Model Surgery are fitted (forward passes, an SVD for ProFS, a linear probe for Model
//! Surgery): `safeedit_eval --method profs|steering|surgery --artefact DIR` applies them.
//! An interrupted run resumes from `<out>/checkpoint` when started again with the same arguments.
//!
//! With `--save-model DIR` every method but MEND (whose edit is made per record) also writes the model with the
//! artefact applied as a Hugging Face model directory, loadable in transformers:
//!
//! ```text
//! cargo run --release -p detox-examples --example train_baseline -- --model models/Qwen2-0.5B-Instruct \
//!     --method dpo --out runs/baselines/dpo --save-model runs/qwen2-0.5b-dpo
//! ```
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::{Parser, ValueEnum};
use detox_edit::ext_sub::extract_and_subtract;
use detox_edit::mend::{save_artefact, train_mend, MendConfig};
use detox_edit::profs::{fit_profs, ProfsOptions, NEAR_TIE};
use detox_edit::registry::{apply_record_independent, MethodArgs, Registry};
use detox_edit::steering::fit_steering;
use detox_edit::surgery::{
    fit_surgery, labelled_responses, save_surgery, ProbeConfig, SurgeryConfig,
};
use detox_edit::train::{
    load_artefact, save_delta, save_trained, train, AdapterKind, ArtefactInfo, PreferencePair,
    RunOptions, TrainConfig,
};
use detox_edit::EditInput;
use detox_examples::{ModelArgs, SaveModelArgs};
use detox_runtime::{CausalLm, PromptLayout, Tokenizer};
use safeedit::{load_split, Mode, Split};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Method {
    /// Supervised fine-tuning on the safe responses.
    Sft,
    /// Direct preference optimisation on (safe, unsafe) pairs.
    Dpo,
    /// Ext-Sub's expert module (SFT on the safe responses).
    Expert,
    /// Ext-Sub's anti-expert module (SFT on the unsafe responses).
    AntiExpert,
    /// Combine an expert and an anti-expert artefact into Ext-Sub's edit.
    ExtSub,
    /// Meta-train MEND's hyper-network.
    Mend,
    /// Fit ProFS's toxic subspaces (safe and unsafe responses, no gradients).
    Profs,
    /// Fit activation-steering vectors (mean safe - unsafe activations per layer).
    Steering,
    /// Model Surgery: train the toxicity probe and select the gate rows to shift.
    Surgery,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Adapter {
    Lora,
    Full,
}

/// Train a baseline on a SafeEdit training split.
#[derive(Debug, Parser)]
struct Args {
    /// What to train.
    #[arg(long, value_enum)]
    method: Method,
    /// Artefact directory (its `checkpoint/` holds the resumable state).
    #[arg(long)]
    out: PathBuf,
    #[command(flatten)]
    model: ModelArgs,
    /// A SafeEdit training-split file.
    #[arg(long, default_value = "datasets/safeedit_sample_train.json")]
    data: PathBuf,
    /// Only the first N records.
    #[arg(long, value_parser = detox_examples::at_least(1))]
    first: Option<usize>,
    /// LoRA adapters or full parameters (SFT, DPO, expert, anti-expert).
    #[arg(long, value_enum, default_value_t = Adapter::Lora)]
    adapter: Adapter,
    /// LoRA rank.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(i64).range(1..))]
    rank: i64,
    /// LoRA alpha.
    #[arg(long, default_value_t = 16.0, value_parser = detox_examples::positive_number)]
    alpha: f64,
    /// Trained modules, comma-separated (default: q_proj,v_proj; MEND: gate_proj,up_proj,down_proj).
    #[arg(long)]
    modules: Option<String>,
    /// Trained layers, comma-separated (default: all; MEND: the last three; ProFS: the upper half).
    #[arg(long)]
    layers: Option<String>,
    /// Learning rate (default: the method's preset).
    #[arg(long, value_parser = detox_examples::positive_number)]
    lr: Option<f64>,
    /// Passes over the data (default: the method's preset).
    #[arg(long, value_parser = detox_examples::at_least(1))]
    epochs: Option<usize>,
    /// Pairs per step (default 4); Model Surgery: texts per probe step (default 16, the authors' script).
    #[arg(long, value_parser = detox_examples::at_least(1))]
    batch_size: Option<usize>,
    /// DPO's beta.
    #[arg(long, default_value_t = 0.1, value_parser = detox_examples::positive_number)]
    beta: f64,
    /// Most tokens of prompt + response.
    #[arg(long, default_value_t = 512, value_parser = detox_examples::at_least(2))]
    max_length: usize,
    /// How prompts are laid out before responses: the `chat` template, or `plain` text and a space.
    #[arg(long, default_value_t = PromptLayout::ChatTemplate)]
    format: PromptLayout,
    /// MEND: hidden width of the hyper-network.
    #[arg(long, default_value_t = 1920, value_parser = clap::value_parser!(i64).range(1..))]
    mend_rank: i64,
    /// Ext-Sub: the expert artefact.
    #[arg(long)]
    expert: Option<PathBuf>,
    /// Ext-Sub: the anti-expert artefact.
    #[arg(long)]
    anti_expert: Option<PathBuf>,
    /// Ext-Sub: weight of the subtracted deficiency.
    #[arg(long, default_value_t = 1.0, value_parser = detox_examples::finite_number)]
    lambda: f64,
    /// ProFS: the subspace dimension k (2 in the reference; 10 in its 7B configurations).
    #[arg(long, default_value_t = 2, value_parser = detox_examples::at_least(1))]
    profs_rank: usize,
    /// ProFS: skip the centring (projecting the preferred embeddings' top direction out of the differences).
    #[arg(long)]
    no_centring: bool,
    /// Seed of the data order and initialisation.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Stop after this many steps in total (the run resumes later).
    #[arg(long, value_parser = detox_examples::at_least(1))]
    stop_after: Option<usize>,
    /// Model Surgery: gate rows shifted (default: 4 × the hidden size).
    #[arg(long, value_parser = detox_examples::at_least(1))]
    surgery_rows: Option<usize>,
    /// Model Surgery: shift strength.
    #[arg(long, default_value_t = detox_edit::surgery::DEFAULT_ALPHA, value_parser = detox_examples::finite_number)]
    surgery_alpha: f64,
    /// Model Surgery: share of the texts held out to measure the probe.
    #[arg(long, default_value_t = 0.1)]
    holdout: f64,
    #[command(flatten)]
    save: SaveModelArgs,
}

fn list<T: std::str::FromStr>(text: &str, what: &str) -> Result<Vec<T>> {
    text.split(',')
        .map(|s| match s.trim() {
            "" => Err(anyhow::anyhow!("--{what}: empty entry in {text:?}")),
            s => s.parse::<T>().map_err(|_| anyhow::anyhow!("--{what}: cannot read {s:?}")),
        })
        .collect()
}

fn main() -> Result<()> {
    detox_runtime::backend::init();
    let args = Args::parse();
    if args.save.save_model.is_some() && args.method == Method::Mend {
        bail!("--save-model: MEND edits each record on its own, so there is no one edited model to write");
    }
    args.save.check_before(&args.model)?;
    let layers = args.layers.as_deref().map(|l| list::<usize>(l, "layers")).transpose()?;
    let modules = args.modules.as_deref().map(|m| list::<String>(m, "modules")).transpose()?;
    // One writer per artefact directory for the whole process (training, then the artefact files).
    let _lock = detox_io::DirLock::acquire(&args.out)?;
    if args.method == Method::ExtSub {
        return ext_sub(&args);
    }
    let split = load_split(&args.data, Split::Train, Mode::Strict)?;
    let mut records: Vec<_> = split.records.iter().map(|r| r.edit_request()).collect();
    if let Some(n) = args.first {
        records.truncate(n);
    }
    if records.is_empty() {
        bail!("{} holds no training records", args.data.display());
    }
    let loaded = args.model.load()?;
    let (mut model, tokenizer) = (loaded.model, loaded.tokenizer);
    let format = args.format;
    if matches!(args.method, Method::Profs | Method::Steering) {
        let pairs: Vec<PreferencePair> = records.iter().map(PreferencePair::from).collect();
        fit(&args, &model, &tokenizer, &pairs, layers)?;
        let name = if args.method == Method::Profs { "profs" } else { "steering" };
        return save_edited(&args, name, &mut model, &tokenizer);
    }
    let run = RunOptions {
        checkpoint_dir: Some(args.out.join("checkpoint")),
        stop_after: args.stop_after,
    };
    println!("{} training records from {}", records.len(), args.data.display());

    if args.method == Method::Surgery {
        surgery(&args, &model, &tokenizer, &records)?;
        return save_edited(&args, "surgery", &mut model, &tokenizer);
    }

    if args.method == Method::Mend {
        let defaults = MendConfig::default();
        let config = MendConfig {
            modules: modules.unwrap_or(defaults.modules.clone()),
            layers,
            rank: args.mend_rank,
            lr: args.lr.unwrap_or(defaults.lr),
            epochs: args.epochs.unwrap_or(defaults.epochs),
            prompt_layout: format,
            max_length: args.max_length,
            seed: args.seed,
            ..defaults
        };
        let inputs: Vec<EditInput> = records.iter().map(EditInput::from).collect();
        let outcome =
            train_mend(&mut model, &tokenizer, &inputs, &config, &run, &mut |s, total| {
                eprintln!(
                    "step {}/{total}  loss {:.4}  nll {:.3} -> {:.3}  locality KL {:.4}",
                    s.step, s.loss, s.pre_nll, s.edit_nll, s.locality_kl
                );
            })?;
        if !outcome.completed {
            println!(
                "stopped after {} of {} steps; run again to resume",
                outcome.steps.len(),
                outcome.planned_steps
            );
            return Ok(());
        }
        save_artefact(&args.out, &config, &outcome)?;
        println!("MEND network written to {} ({:.1} s)", args.out.display(), outcome.seconds);
        return Ok(());
    }

    let (preset, name) = match args.method {
        Method::Sft => (TrainConfig::sft(), "SFT"),
        Method::Dpo => (TrainConfig::dpo(), "DPO"),
        Method::Expert => (TrainConfig::expert(), "SFT"),
        Method::AntiExpert => (TrainConfig::anti_expert(), "SFT"),
        Method::ExtSub | Method::Mend | Method::Profs | Method::Steering | Method::Surgery => {
            unreachable!("handled above")
        }
    };
    let objective = match preset.objective {
        detox_edit::train::Objective::Dpo { .. } => {
            detox_edit::train::Objective::Dpo { beta: args.beta }
        }
        other => other,
    };
    let config = TrainConfig {
        objective,
        adapter: match args.adapter {
            Adapter::Lora => AdapterKind::Lora { rank: args.rank, alpha: args.alpha },
            Adapter::Full => AdapterKind::Full,
        },
        modules: modules.unwrap_or(preset.modules.clone()),
        layers,
        lr: args.lr.unwrap_or(preset.lr),
        epochs: args.epochs.unwrap_or(preset.epochs),
        batch_size: args.batch_size.unwrap_or(4),
        max_length: args.max_length,
        prompt_layout: format,
        seed: args.seed,
        ..preset
    };
    let pairs: Vec<PreferencePair> = records.iter().map(PreferencePair::from).collect();
    let outcome = train(&mut model, &tokenizer, &pairs, &config, &run, &mut |s, total| {
        let margin = s.margin.map(|m| format!("  margin {m:.3}")).unwrap_or_default();
        eprintln!("step {}/{total}  epoch {}  loss {:.4}{margin}", s.step, s.epoch, s.loss);
    })?;
    if !outcome.completed {
        println!(
            "stopped after {} of {} steps; run again to resume",
            outcome.steps.len(),
            outcome.planned_steps
        );
        return Ok(());
    }
    save_trained(&args.out, name, &config, &outcome)?;
    println!(
        "{name} artefact written to {} ({} steps, {:.1} s, delta norm {:.4})",
        args.out.display(),
        outcome.steps.len(),
        outcome.seconds,
        outcome.adapters.delta()?.norm()?
    );
    save_edited(&args, "trained", &mut model, &tokenizer)
}

/// `--save-model`: applies the artefact just written to `--out` (the registry's method `name`) to the unedited
/// `model`, writes the edited model, and undoes the edit.
fn save_edited(args: &Args, name: &str, model: &mut CausalLm, tokenizer: &Tokenizer) -> Result<()> {
    if args.save.save_model.is_none() {
        return Ok(());
    }
    let method_args = MethodArgs::new().set("artefact", args.out.display());
    let mut built = Registry::builtin().build(name, &method_args, model.device())?;
    apply_record_independent(&mut built, model, tokenizer)?;
    args.save.save_parts(model, &args.model.model)?;
    built.editor.restore(model)?;
    Ok(())
}

/// Fits ProFS or steering and writes the artefact.
fn fit(
    args: &Args,
    model: &detox_runtime::CausalLm,
    tokenizer: &detox_runtime::Tokenizer,
    pairs: &[PreferencePair],
    layers: Option<Vec<usize>>,
) -> Result<()> {
    if args.method == Method::Steering {
        let vectors = fit_steering(model, tokenizer, pairs, args.format, args.max_length)?;
        vectors.save(&args.out)?;
        println!(
            "steering vectors written to {} ({:.1} s; norms by layer {:.3?})",
            args.out.display(),
            vectors.info.seconds,
            vectors.info.norms
        );
        return Ok(());
    }
    let options = ProfsOptions {
        layers,
        rank: args.profs_rank,
        centring: !args.no_centring,
        ..ProfsOptions::default()
    };
    let fit = fit_profs(model, tokenizer, pairs, &options)?;
    fit.save(&args.out)?;
    let ties = fit.info.near_ties();
    if !ties.is_empty() {
        eprintln!(
            "warning: in layers {ties:?} the {k}-th and {}-th singular values nearly tie (relative gap below \
             {NEAR_TIE}): the {k}-dimensional subspace there is ill-defined; consider another --profs-rank",
            args.profs_rank + 1,
            k = args.profs_rank
        );
    }
    println!(
        "ProFS subspaces (k = {}, layers {:?}) written to {} ({:.1} s)",
        args.profs_rank,
        fit.info.layers,
        args.out.display(),
        fit.info.seconds
    );
    Ok(())
}

/// Fits Model Surgery's probe and row selection and writes the artefact.
fn surgery(
    args: &Args,
    model: &detox_runtime::CausalLm,
    tokenizer: &detox_runtime::Tokenizer,
    records: &[safeedit::EditRequest],
) -> Result<()> {
    let defaults = ProbeConfig::default();
    let config = SurgeryConfig {
        probe: ProbeConfig {
            lr: args.lr.unwrap_or(defaults.lr),
            epochs: args.epochs.unwrap_or(defaults.epochs),
            batch_size: args.batch_size.unwrap_or(defaults.batch_size),
            holdout: args.holdout,
            max_length: args.max_length,
            seed: args.seed,
            ..defaults
        },
        rows: args.surgery_rows,
        alpha: args.surgery_alpha,
    };
    let fitted = fit_surgery(model, tokenizer, &labelled_responses(records), &config)?;
    save_surgery(&args.out, &fitted)?;
    let info = &fitted.info;
    let holdout =
        info.holdout_accuracy.map_or_else(|| "none held out".to_string(), |a| format!("{a:.3}"));
    println!(
        "Model Surgery artefact written to {}: probe accuracy {:.3} (held out: {holdout}), {} rows over {} layers, \
         fit {:.1} s (features {:.1} s, probe {:.1} s, selection {:.1} s)",
        args.out.display(),
        info.train_accuracy,
        fitted.rows.len(),
        fitted.rows.iter().map(|r| r.layer).collect::<std::collections::BTreeSet<_>>().len(),
        info.seconds.features + info.seconds.probe + info.seconds.selection,
        info.seconds.features,
        info.seconds.probe,
        info.seconds.selection,
    );
    Ok(())
}

fn ext_sub(args: &Args) -> Result<()> {
    let (Some(expert), Some(anti)) = (&args.expert, &args.anti_expert) else {
        bail!("--method ext-sub needs --expert DIR and --anti-expert DIR (artefacts of --method expert / anti-expert)");
    };
    let (_, plus) =
        load_artefact(expert).with_context(|| format!("reading {}", expert.display()))?;
    let (_, minus) = load_artefact(anti).with_context(|| format!("reading {}", anti.display()))?;
    let combined = extract_and_subtract(&plus, &minus, args.lambda)?;
    let info = ArtefactInfo {
        method: "Ext-Sub".into(),
        config: None,
        sources: vec![expert.clone(), anti.clone()],
        steps: Vec::new(),
        seconds: 0.0,
    };
    save_delta(&args.out, &combined, &info)?;
    println!(
        "Ext-Sub (lambda {}) written to {}: delta norm {:.4} (expert {:.4}, anti-expert {:.4})",
        args.lambda,
        args.out.display(),
        combined.norm()?,
        plus.norm()?,
        minus.norm()?
    );
    if args.save.save_model.is_some() {
        let loaded = args.model.load()?;
        let (mut model, tokenizer) = (loaded.model, loaded.tokenizer);
        save_edited(args, "trained", &mut model, &tokenizer)?;
    }
    Ok(())
}

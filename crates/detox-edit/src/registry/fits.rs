//! Fits by name: what a method learns once from a training split before it edits (SFT and DPO adapters,
//! Ext-Sub's combination, MEND's hyper-network, ProFS's subspaces, steering vectors, Model Surgery's probe).
//! A fit registers its name, a line of description, its options and a configuring function, exactly as an
//! editing method does in [`super::Registry`]; `train_baseline` then runs any of them by name.
//!
//! Configuring is separate from running so that a command line's options are refused before a model is loaded
//! or an artefact directory is created.
//!
//! ```no_run
//! use detox_edit::registry::{FitContext, FitRegistry, MethodArgs};
//! # fn run(model: &mut detox_runtime::CausalLm, encoder: &dyn detox_edit::PromptEncoder,
//! #        records: &[safeedit::EditRequest]) -> detox_edit::Result<()> {
//! let fits = FitRegistry::builtin();
//! let fit = fits.configure("sft", &MethodArgs::new().set("epochs", 1))?;
//! let out = std::path::Path::new("runs/baselines/sft");
//! let report = fit.run(&mut FitContext::new(out, records).with_model(model, encoder), &mut |p| eprintln!("{p}"))?;
//! println!("{report}");
//! # Ok(()) }
//! ```

use std::collections::BTreeSet;
use std::fmt::{self, Display, Write as _};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use detox_runtime::{CausalLm, PromptLayout};
use safeedit::EditRequest;
use tch::Device;

use super::{MethodArgs, OptionSpec};
use crate::artefact::Artefact;
use crate::editor::{EditInput, PromptEncoder};
use crate::error::{EditError, Result};
use crate::ext_sub::extract_and_subtract;
use crate::mend::{train_mend, MendArtefact, MendConfig};
use crate::profs::{fit_profs, ProfsOptions, NEAR_TIE};
use crate::steering::fit_steering;
use crate::surgery::{fit_surgery, labelled_responses, ProbeConfig, SurgeryConfig, DEFAULT_ALPHA};
use crate::train::{
    train, AdapterKind, ArtefactInfo, Objective, PreferencePair, RunOptions, TrainConfig,
    TrainedArtefact,
};

/// What a fit is run with.
#[non_exhaustive]
pub struct FitContext<'a> {
    /// The model trained or measured, with its encoder; `None` for fits that only combine artefacts.
    pub model: Option<(&'a mut CausalLm, &'a dyn PromptEncoder)>,
    /// The training records.
    pub records: &'a [EditRequest],
    /// The artefact directory (a trainer's resumable state goes to its `checkpoint/`).
    pub out: &'a Path,
}

impl<'a> FitContext<'a> {
    /// A context writing to `out` from `records`, without a model.
    pub fn new(out: &'a Path, records: &'a [EditRequest]) -> Self {
        Self { model: None, records, out }
    }

    /// This context with the model and its encoder.
    pub fn with_model(mut self, model: &'a mut CausalLm, encoder: &'a dyn PromptEncoder) -> Self {
        self.model = Some((model, encoder));
        self
    }

    fn model(&mut self, fit: &str) -> Result<(&mut CausalLm, &dyn PromptEncoder)> {
        match &mut self.model {
            Some((model, encoder)) => Ok((&mut **model, *encoder)),
            None => Err(EditError::FitInput { fit: fit.into(), what: "a model" }),
        }
    }

    fn records(&self, fit: &str) -> Result<&'a [EditRequest]> {
        if self.records.is_empty() {
            return Err(EditError::FitInput { fit: fit.into(), what: "training records" });
        }
        Ok(self.records)
    }
}

/// One step of an iterative fit, as a progress line shows it.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct FitProgress {
    /// The step just taken (from 1).
    pub step: usize,
    /// Steps planned in all.
    pub total: usize,
    /// The step's losses and measures, as text.
    pub detail: String,
}

impl FitProgress {
    /// Step `step` of `total`, with its measures as text.
    pub fn new(step: usize, total: usize, detail: impl Into<String>) -> Self {
        Self { step, total, detail: detail.into() }
    }
}

impl Display for FitProgress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "step {}/{}  {}", self.step, self.total, self.detail)
    }
}

/// What a fit did.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct FitReport {
    /// Whether the artefact was written; `false` when a trainer stopped early (`stop_after`) and resumes later.
    pub completed: bool,
    /// Steps taken so far (0 for fits without steps).
    pub steps: usize,
    /// Steps planned in all.
    pub planned_steps: usize,
    /// One line on what was written, where, and how long it took.
    pub summary: String,
    /// Things worth a warning that did not stop the fit.
    pub warnings: Vec<String>,
}

impl FitReport {
    /// A finished fit whose artefact was written, summarised by `summary`.
    pub fn written(summary: impl Into<String>) -> Self {
        Self {
            completed: true,
            steps: 0,
            planned_steps: 0,
            summary: summary.into(),
            warnings: Vec::new(),
        }
    }

    /// This report with the steps taken of those planned.
    pub fn with_steps(mut self, steps: usize, planned_steps: usize) -> Self {
        self.steps = steps;
        self.planned_steps = planned_steps;
        self
    }

    /// This report with a warning added.
    pub fn with_warning(mut self, warning: impl Into<String>) -> Self {
        self.warnings.push(warning.into());
        self
    }

    /// A trainer that stopped after `steps` of `planned_steps` and resumes when run again; nothing was written.
    pub fn stopped(steps: usize, planned_steps: usize) -> Self {
        Self {
            completed: false,
            steps,
            planned_steps,
            summary: format!("stopped after {steps} of {planned_steps} steps; run again to resume"),
            warnings: Vec::new(),
        }
    }
}

impl Display for FitReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.summary)
    }
}

/// A fit with its options read, ready to run.
pub trait Fit: fmt::Debug {
    /// Whether it needs a model (and the training records); combining artefacts needs neither.
    fn needs_model(&self) -> bool {
        true
    }

    /// Fits and writes the artefact into `context.out`, reporting each step to `progress`.
    ///
    /// # Errors
    /// [`EditError::FitInput`] when the context lacks what the fit needs, and whatever the fit itself refuses.
    fn run(
        &self,
        context: &mut FitContext<'_>,
        progress: &mut dyn FnMut(&FitProgress),
    ) -> Result<FitReport>;
}

/// A fit's configuring function: its options (already checked against its [`OptionSpec`]s) into a ready fit.
pub type ConfigureFn = fn(&MethodArgs) -> Result<Box<dyn Fit>>;

/// A fit as a registry knows it.
#[derive(Debug, Clone, Copy)]
pub struct FitSpec {
    /// The name it is run by (`sft`, `mend`, ...).
    pub name: &'static str,
    /// One line on what it does.
    pub description: &'static str,
    /// Its options, each with its default.
    pub options: &'static [OptionSpec],
    /// Reads the options into a ready fit.
    pub configure: ConfigureFn,
    /// The method of the method registry that applies the artefact (`trained`, `mend`, ...), with its
    /// `artefact` option naming the fit's output directory.
    pub evaluated_by: &'static str,
}

/// Fits by name, in the order user interfaces list them.
#[derive(Debug, Clone, Default)]
pub struct FitRegistry {
    fits: Vec<FitSpec>,
}

impl FitRegistry {
    /// A registry without fits.
    pub fn empty() -> Self {
        Self::default()
    }

    /// Every fit this crate implements.
    pub fn builtin() -> Self {
        Self { fits: FITS.to_vec() }
    }

    /// Adds a fit.
    ///
    /// # Errors
    /// [`EditError::DuplicateMethod`] when the name is taken.
    pub fn register(&mut self, spec: FitSpec) -> Result<()> {
        if self.fits.iter().any(|f| f.name == spec.name) {
            return Err(EditError::DuplicateMethod { name: spec.name.into() });
        }
        self.fits.push(spec);
        Ok(())
    }

    /// Every registered fit, in registration order.
    pub fn fits(&self) -> &[FitSpec] {
        &self.fits
    }

    /// The fit called `name`.
    ///
    /// # Errors
    /// [`EditError::UnknownMethod`] listing the registered names.
    pub fn get(&self, name: &str) -> Result<&FitSpec> {
        self.fits.iter().find(|f| f.name == name).ok_or_else(|| EditError::UnknownMethod {
            name: name.into(),
            known: self.fits.iter().map(|f| f.name).collect::<Vec<_>>().join(", "),
        })
    }

    /// The fit called `name` with `args` read (checked against its options first).
    ///
    /// # Errors
    /// [`EditError::UnknownMethod`], [`EditError::UnknownOption`], and what the fit refuses of its options
    /// ([`EditError::InvalidOption`], [`EditError::MissingOption`]).
    pub fn configure(&self, name: &str, args: &MethodArgs) -> Result<Box<dyn Fit>> {
        let spec = self.get(name)?;
        args.check_known(spec.name, spec.options)?;
        (spec.configure)(args)
    }

    /// Every fit with its description and options (name, default, help), as `--list-methods` prints it.
    pub fn describe(&self) -> String {
        let mut text = String::new();
        for fit in &self.fits {
            let _ = writeln!(text, "{:<14} {}", fit.name, fit.description);
            for option in fit.options {
                let _ =
                    writeln!(text, "    {}={:<18} {}", option.name, option.default, option.help);
            }
        }
        text
    }
}

const fn option(name: &'static str, default: &'static str, help: &'static str) -> OptionSpec {
    OptionSpec { name, default, help }
}

const ADAPTER: OptionSpec = option("adapter", "lora", "`lora` adapters or `full` parameters");
const RANK: OptionSpec = option("rank", "8", "LoRA rank");
const ALPHA: OptionSpec = option("alpha", "16", "LoRA alpha");
const MODULES: OptionSpec = option("modules", "q_proj,v_proj", "trained modules, comma-separated");
const LAYERS: OptionSpec = option("layers", "-", "trained layers, comma-separated (default: all)");
const EPOCHS: OptionSpec = option("epochs", "3", "passes over the data");
const BATCH_SIZE: OptionSpec = option("batch_size", "4", "pairs per step");
const MAX_LENGTH: OptionSpec = option("max_length", "512", "most tokens of prompt + response");
const FORMAT: OptionSpec = option(
    "prompt_layout",
    "chat",
    "how prompts are laid out before responses: the `chat` template, or `raw` text and a space",
);
const SEED: OptionSpec = option("seed", "0", "seed of the data order and initialisation");
const STOP_AFTER: OptionSpec =
    option("stop_after", "-", "stop after this many steps in total (the run resumes later)");

/// The options of the four adapter trainers (SFT, expert, anti-expert; DPO adds `beta`).
macro_rules! trainer_options {
    ($lr:literal $(, $extra:expr)*) => {
        &[
            ADAPTER,
            RANK,
            ALPHA,
            MODULES,
            LAYERS,
            option("lr", $lr, "learning rate"),
            EPOCHS,
            BATCH_SIZE,
            MAX_LENGTH,
            FORMAT,
            SEED,
            STOP_AFTER,
            $($extra,)*
        ]
    };
}

/// The built-in fits, in the order user interfaces list them.
const FITS: &[FitSpec] = &[
    FitSpec {
        name: "sft",
        description: "supervised fine-tuning on the safe responses (`trained` applies it)",
        options: trainer_options!("1e-4"),
        configure: configure_sft,
        evaluated_by: "trained",
    },
    FitSpec {
        name: "dpo",
        description: "direct preference optimisation on (safe, unsafe) pairs (`trained` applies it)",
        options: trainer_options!("5e-5", option("beta", "0.1", "DPO's beta")),
        configure: configure_dpo,
        evaluated_by: "trained",
    },
    FitSpec {
        name: "expert",
        description: "Ext-Sub's expert module: SFT on the safe responses",
        options: trainer_options!("1e-4"),
        configure: configure_expert,
        evaluated_by: "trained",
    },
    FitSpec {
        name: "anti-expert",
        description: "Ext-Sub's anti-expert module: SFT on the unsafe responses",
        options: trainer_options!("1e-4"),
        configure: configure_anti_expert,
        evaluated_by: "trained",
    },
    FitSpec {
        name: "ext-sub",
        description: "combine an expert and an anti-expert artefact into Ext-Sub's edit (no model needed)",
        options: &[
            option("expert", "-", "the expert artefact (`expert` fit)"),
            option("anti_expert", "-", "the anti-expert artefact (`anti-expert` fit)"),
            option("lambda", "1", "weight of the subtracted deficiency"),
        ],
        configure: configure_ext_sub,
        evaluated_by: "trained",
    },
    FitSpec {
        name: "mend",
        description: "meta-train MEND's hyper-network (`mend` applies it)",
        options: &[
            option("modules", "gate_proj,up_proj,down_proj", "edited modules, comma-separated"),
            option("layers", "-", "edited layers, comma-separated (default: the last three)"),
            option("rank", "1920", "hidden width of the hyper-network"),
            option("lr", "1e-6", "learning rate"),
            option("epochs", "1", "passes over the data"),
            MAX_LENGTH,
            FORMAT,
            SEED,
            STOP_AFTER,
        ],
        configure: configure_mend,
        evaluated_by: "mend",
    },
    FitSpec {
        name: "profs",
        description: "fit ProFS's toxic subspaces from safe and unsafe responses, no gradients (`profs` applies it)",
        options: &[
            option("layers", "-", "edited layers, comma-separated (default: the upper half)"),
            option("rank", "2", "the subspace dimension k (2 in the reference; 10 in its 7B configurations)"),
            option(
                "centring",
                "true",
                "project the preferred embeddings' top direction out of the differences first",
            ),
        ],
        configure: configure_profs,
        evaluated_by: "profs",
    },
    FitSpec {
        name: "steering",
        description: "fit activation-steering vectors: mean safe - unsafe activations per layer (`steering` applies it)",
        options: &[FORMAT, MAX_LENGTH],
        configure: configure_steering,
        evaluated_by: "steering",
    },
    FitSpec {
        name: "surgery",
        description: "Model Surgery: train the toxicity probe and select the gate rows to shift (`surgery` applies it)",
        options: &[
            option("lr", "1e-4", "the probe's learning rate"),
            option("epochs", "20", "passes of the probe over the texts"),
            option("batch_size", "16", "texts per probe step (the authors' script)"),
            option("holdout", "0.1", "share of the texts held out to measure the probe"),
            MAX_LENGTH,
            SEED,
            option("rows", "-", "gate rows shifted (default: 4 × the hidden size)"),
            option("alpha", "1.08", "shift strength"),
        ],
        configure: configure_surgery,
        evaluated_by: "surgery",
    },
];

fn invalid(fit: &str, key: &str, value: impl Display, reason: impl Into<String>) -> EditError {
    EditError::InvalidOption {
        method: fit.into(),
        option: key.into(),
        value: value.to_string(),
        reason: reason.into(),
    }
}

/// `key` as a number of at least `least`.
fn count(args: &MethodArgs, fit: &str, key: &str, least: usize) -> Result<Option<usize>> {
    let value = args.get::<usize>(fit, key)?;
    match value {
        Some(v) if v < least => Err(invalid(fit, key, v, format!("must be at least {least}"))),
        _ => Ok(value),
    }
}

/// `key` as a positive, finite number.
fn positive(args: &MethodArgs, fit: &str, key: &str) -> Result<Option<f64>> {
    let value = args.get::<f64>(fit, key)?;
    match value {
        Some(v) if !(v.is_finite() && v > 0.0) => {
            Err(invalid(fit, key, v, "must be a positive number"))
        }
        _ => Ok(value),
    }
}

/// `key` as a finite number.
fn finite(args: &MethodArgs, fit: &str, key: &str) -> Result<Option<f64>> {
    let value = args.get::<f64>(fit, key)?;
    match value {
        Some(v) if !v.is_finite() => Err(invalid(fit, key, v, "must be a finite number")),
        _ => Ok(value),
    }
}

/// `key` as a comma-separated list; unlike [`MethodArgs::get_list`], an empty entry is refused, since a
/// stray comma in a list of layers or modules is more likely a typo than an intent.
fn strict_list<T>(args: &MethodArgs, fit: &str, key: &str) -> Result<Option<Vec<T>>>
where
    T: FromStr,
    T::Err: Display,
{
    let Some(text) = args.text(key) else { return Ok(None) };
    text.split(',')
        .map(|item| match item.trim() {
            "" => Err(invalid(fit, key, text, "empty entry")),
            item => {
                item.parse::<T>().map_err(|e| invalid(fit, key, text, format!("`{item}`: {e}")))
            }
        })
        .collect::<Result<Vec<T>>>()
        .map(Some)
}

fn format(args: &MethodArgs, fit: &str) -> Result<PromptLayout> {
    Ok(args.get::<PromptLayout>(fit, "prompt_layout")?.unwrap_or(PromptLayout::ChatTemplate))
}

fn max_length(args: &MethodArgs, fit: &str) -> Result<usize> {
    Ok(count(args, fit, "max_length", 2)?.unwrap_or(512))
}

fn seed(args: &MethodArgs, fit: &str) -> Result<u64> {
    Ok(args.get::<u64>(fit, "seed")?.unwrap_or(0))
}

/// SFT, DPO, expert or anti-expert: an adapter trained by [`train`], saved as a [`TrainedArtefact`].
#[derive(Debug)]
struct AdapterTrainer {
    /// The method name the artefact records (`SFT` or `DPO`).
    method: &'static str,
    config: TrainConfig,
    stop_after: Option<usize>,
}

fn configure_trainer(
    fit: &str,
    method: &'static str,
    preset: TrainConfig,
    args: &MethodArgs,
) -> Result<Box<dyn Fit>> {
    let adapter = match args.text("adapter") {
        None | Some("lora") => {
            let rank = args.get::<i64>(fit, "rank")?.unwrap_or(8);
            if rank < 1 {
                return Err(invalid(fit, "rank", rank, "must be at least 1"));
            }
            AdapterKind::Lora { rank, alpha: positive(args, fit, "alpha")?.unwrap_or(16.0) }
        }
        Some("full") => AdapterKind::Full,
        Some(other) => return Err(invalid(fit, "adapter", other, "expected `lora` or `full`")),
    };
    let objective = match preset.objective {
        Objective::Dpo { beta } => {
            Objective::Dpo { beta: positive(args, fit, "beta")?.unwrap_or(beta) }
        }
        other => other,
    };
    let config = TrainConfig {
        objective,
        adapter,
        modules: strict_list(args, fit, "modules")?.unwrap_or(preset.modules.clone()),
        layers: strict_list(args, fit, "layers")?,
        lr: positive(args, fit, "lr")?.unwrap_or(preset.lr),
        epochs: count(args, fit, "epochs", 1)?.unwrap_or(preset.epochs),
        batch_size: count(args, fit, "batch_size", 1)?.unwrap_or(4),
        max_length: max_length(args, fit)?,
        prompt_layout: format(args, fit)?,
        seed: seed(args, fit)?,
        ..preset
    };
    Ok(Box::new(AdapterTrainer { method, config, stop_after: count(args, fit, "stop_after", 1)? }))
}

fn configure_sft(args: &MethodArgs) -> Result<Box<dyn Fit>> {
    configure_trainer("sft", "SFT", TrainConfig::sft(), args)
}

fn configure_dpo(args: &MethodArgs) -> Result<Box<dyn Fit>> {
    configure_trainer("dpo", "DPO", TrainConfig::dpo(), args)
}

fn configure_expert(args: &MethodArgs) -> Result<Box<dyn Fit>> {
    configure_trainer("expert", "SFT", TrainConfig::expert(), args)
}

fn configure_anti_expert(args: &MethodArgs) -> Result<Box<dyn Fit>> {
    configure_trainer("anti-expert", "SFT", TrainConfig::anti_expert(), args)
}

fn run_options(out: &Path, stop_after: Option<usize>) -> RunOptions {
    RunOptions { checkpoint_dir: Some(out.join("checkpoint")), stop_after }
}

impl Fit for AdapterTrainer {
    fn run(
        &self,
        context: &mut FitContext<'_>,
        progress: &mut dyn FnMut(&FitProgress),
    ) -> Result<FitReport> {
        let records = context.records(self.method)?;
        let pairs: Vec<PreferencePair> = records.iter().map(PreferencePair::from).collect();
        let out = context.out;
        let (model, encoder) = context.model(self.method)?;
        let run = run_options(out, self.stop_after);
        let outcome = train(model, encoder, &pairs, &self.config, &run, &mut |s, total| {
            let margin = s.margin.map(|m| format!("  margin {m:.3}")).unwrap_or_default();
            let detail = format!("epoch {}  loss {:.4}{margin}", s.epoch, s.loss);
            progress(&FitProgress::new(s.step, total, detail));
        })?;
        if !outcome.completed {
            return Ok(FitReport::stopped(outcome.steps.len(), outcome.planned_steps));
        }
        let artefact = TrainedArtefact::from_run(self.method, &self.config, &outcome)?;
        artefact.save(out)?;
        let summary = format!(
            "{} artefact written to {} ({} steps, {:.1} s, delta norm {:.4})",
            self.method,
            out.display(),
            outcome.steps.len(),
            outcome.seconds,
            artefact.delta.norm()?
        );
        Ok(FitReport::written(summary).with_steps(outcome.steps.len(), outcome.planned_steps))
    }
}

/// Ext-Sub: an expert and an anti-expert artefact combined.
#[derive(Debug)]
struct ExtSub {
    expert: PathBuf,
    anti_expert: PathBuf,
    lambda: f64,
}

fn configure_ext_sub(args: &MethodArgs) -> Result<Box<dyn Fit>> {
    let path = |key: &str, fit: &str| {
        args.text(key).map(PathBuf::from).ok_or_else(|| EditError::MissingOption {
            method: "ext-sub".into(),
            option: key.into(),
            why: format!("the artefact directory of the `{fit}` fit"),
        })
    };
    // The value given is checked before the ones missing, so a bad value is reported whatever else is absent.
    let lambda = finite(args, "ext-sub", "lambda")?.unwrap_or(1.0);
    Ok(Box::new(ExtSub {
        expert: path("expert", "expert")?,
        anti_expert: path("anti_expert", "anti-expert")?,
        lambda,
    }))
}

impl Fit for ExtSub {
    fn needs_model(&self) -> bool {
        false
    }

    fn run(
        &self,
        context: &mut FitContext<'_>,
        _: &mut dyn FnMut(&FitProgress),
    ) -> Result<FitReport> {
        let plus = TrainedArtefact::load(&self.expert, Device::Cpu)?.delta;
        let minus = TrainedArtefact::load(&self.anti_expert, Device::Cpu)?.delta;
        let info = ArtefactInfo {
            method: "Ext-Sub".into(),
            config: None,
            sources: vec![self.expert.clone(), self.anti_expert.clone()],
            steps: Vec::new(),
            seconds: 0.0,
        };
        let combined = TrainedArtefact {
            info,
            delta: extract_and_subtract(&plus, &minus, self.lambda)?,
            adapter: None,
        };
        combined.save(context.out)?;
        Ok(FitReport::written(format!(
            "Ext-Sub (lambda {}) written to {}: delta norm {:.4} (expert {:.4}, anti-expert {:.4})",
            self.lambda,
            context.out.display(),
            combined.delta.norm()?,
            plus.norm()?,
            minus.norm()?
        )))
    }
}

/// MEND's hyper-network.
#[derive(Debug)]
struct Mend {
    config: MendConfig,
    stop_after: Option<usize>,
}

fn configure_mend(args: &MethodArgs) -> Result<Box<dyn Fit>> {
    let fit = "mend";
    let defaults = MendConfig::default();
    let rank = args.get::<i64>(fit, "rank")?.unwrap_or(defaults.rank);
    if rank < 1 {
        return Err(invalid(fit, "rank", rank, "must be at least 1"));
    }
    let config = MendConfig {
        modules: strict_list(args, fit, "modules")?.unwrap_or(defaults.modules.clone()),
        layers: strict_list(args, fit, "layers")?,
        rank,
        lr: positive(args, fit, "lr")?.unwrap_or(defaults.lr),
        epochs: count(args, fit, "epochs", 1)?.unwrap_or(defaults.epochs),
        prompt_layout: format(args, fit)?,
        max_length: max_length(args, fit)?,
        seed: seed(args, fit)?,
        ..defaults
    };
    Ok(Box::new(Mend { config, stop_after: count(args, fit, "stop_after", 1)? }))
}

impl Fit for Mend {
    fn run(
        &self,
        context: &mut FitContext<'_>,
        progress: &mut dyn FnMut(&FitProgress),
    ) -> Result<FitReport> {
        let inputs: Vec<EditInput> = context.records("mend")?.iter().map(EditInput::from).collect();
        let out = context.out;
        let (model, encoder) = context.model("mend")?;
        let run = run_options(out, self.stop_after);
        let outcome = train_mend(model, encoder, &inputs, &self.config, &run, &mut |s, total| {
            let detail = format!(
                "loss {:.4}  nll {:.3} -> {:.3}  locality KL {:.4}",
                s.loss, s.pre_nll, s.edit_nll, s.locality_kl
            );
            progress(&FitProgress::new(s.step, total, detail));
        })?;
        if !outcome.completed {
            return Ok(FitReport::stopped(outcome.steps.len(), outcome.planned_steps));
        }
        let (steps, planned) = (outcome.steps.len(), outcome.planned_steps);
        let artefact = MendArtefact::from_run(&self.config, outcome)?;
        artefact.save(out)?;
        let summary = format!(
            "MEND network written to {} ({:.1} s)",
            out.display(),
            artefact.training.seconds
        );
        Ok(FitReport::written(summary).with_steps(steps, planned))
    }
}

/// ProFS's toxic subspaces.
#[derive(Debug)]
struct Profs {
    options: ProfsOptions,
}

fn configure_profs(args: &MethodArgs) -> Result<Box<dyn Fit>> {
    let fit = "profs";
    let options = ProfsOptions {
        layers: strict_list(args, fit, "layers")?,
        rank: count(args, fit, "rank", 1)?.unwrap_or(2),
        centring: args.get::<bool>(fit, "centring")?.unwrap_or(true),
        ..ProfsOptions::default()
    };
    Ok(Box::new(Profs { options }))
}

impl Fit for Profs {
    fn run(
        &self,
        context: &mut FitContext<'_>,
        _: &mut dyn FnMut(&FitProgress),
    ) -> Result<FitReport> {
        let pairs: Vec<PreferencePair> =
            context.records("profs")?.iter().map(PreferencePair::from).collect();
        let out = context.out;
        let (model, encoder) = context.model("profs")?;
        let fit = fit_profs(model, encoder, &pairs, &self.options)?;
        fit.save(out)?;
        let k = self.options.rank;
        let ties = fit.info.near_ties();
        let mut report = FitReport::written(format!(
            "ProFS subspaces (k = {k}, layers {:?}) written to {} ({:.1} s)",
            fit.info.layers,
            out.display(),
            fit.info.seconds
        ));
        if !ties.is_empty() {
            report = report.with_warning(format!(
                "in layers {ties:?} the {k}-th and {}-th singular values nearly tie (relative gap below \
                 {NEAR_TIE}): the {k}-dimensional subspace there is ill-defined; consider another rank",
                k + 1
            ));
        }
        Ok(report)
    }
}

/// Activation-steering vectors.
#[derive(Debug)]
struct Steering {
    format: PromptLayout,
    max_length: usize,
}

fn configure_steering(args: &MethodArgs) -> Result<Box<dyn Fit>> {
    let fit = "steering";
    Ok(Box::new(Steering { format: format(args, fit)?, max_length: max_length(args, fit)? }))
}

impl Fit for Steering {
    fn run(
        &self,
        context: &mut FitContext<'_>,
        _: &mut dyn FnMut(&FitProgress),
    ) -> Result<FitReport> {
        let pairs: Vec<PreferencePair> =
            context.records("steering")?.iter().map(PreferencePair::from).collect();
        let out = context.out;
        let (model, encoder) = context.model("steering")?;
        let vectors = fit_steering(model, encoder, &pairs, self.format, self.max_length)?;
        vectors.save(out)?;
        Ok(FitReport::written(format!(
            "steering vectors written to {} ({:.1} s; norms by layer {:.3?})",
            out.display(),
            vectors.info.seconds,
            vectors.info.norms
        )))
    }
}

/// Model Surgery's probe and row selection.
#[derive(Debug)]
struct Surgery {
    config: SurgeryConfig,
}

fn configure_surgery(args: &MethodArgs) -> Result<Box<dyn Fit>> {
    let fit = "surgery";
    let defaults = ProbeConfig::default();
    let holdout = args.get::<f64>(fit, "holdout")?.unwrap_or(defaults.holdout);
    let config = SurgeryConfig {
        probe: ProbeConfig {
            lr: positive(args, fit, "lr")?.unwrap_or(defaults.lr),
            epochs: count(args, fit, "epochs", 1)?.unwrap_or(defaults.epochs),
            batch_size: count(args, fit, "batch_size", 1)?.unwrap_or(defaults.batch_size),
            holdout,
            max_length: max_length(args, fit)?,
            seed: seed(args, fit)?,
            ..defaults
        },
        rows: count(args, fit, "rows", 1)?,
        alpha: finite(args, fit, "alpha")?.unwrap_or(DEFAULT_ALPHA),
    };
    Ok(Box::new(Surgery { config }))
}

impl Fit for Surgery {
    fn run(
        &self,
        context: &mut FitContext<'_>,
        _: &mut dyn FnMut(&FitProgress),
    ) -> Result<FitReport> {
        let texts = labelled_responses(context.records("surgery")?);
        let out = context.out;
        let (model, encoder) = context.model("surgery")?;
        let fitted = fit_surgery(model, encoder, &texts, &self.config)?;
        fitted.save(out)?;
        let info = &fitted.info;
        let holdout = info
            .holdout_accuracy
            .map_or_else(|| "none held out".to_string(), |a| format!("{a:.3}"));
        let layers = fitted.rows.iter().map(|r| r.layer).collect::<BTreeSet<_>>().len();
        Ok(FitReport::written(format!(
            "Model Surgery artefact written to {}: probe accuracy {:.3} (held out: {holdout}), {} rows over \
             {layers} layers, fit {:.1} s (features {:.1} s, probe {:.1} s, selection {:.1} s)",
            out.display(),
            info.train_accuracy,
            fitted.rows.len(),
            info.seconds.features + info.seconds.probe + info.seconds.selection,
            info.seconds.features,
            info.seconds.probe,
            info.seconds.selection,
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(name: &str, pairs: &[&str]) -> EditError {
        let args = MethodArgs::parse_pairs(name, pairs).unwrap();
        FitRegistry::builtin().configure(name, &args).unwrap_err()
    }

    #[test]
    fn unknown_fits_and_options_are_refused_by_name() {
        let err = refused("rome", &[]);
        assert!(
            matches!(&err, EditError::UnknownMethod { known, .. } if known.starts_with("sft, dpo, expert")),
            "{err}"
        );
        let err = refused("sft", &["mend_rank=4"]);
        assert!(
            matches!(&err, EditError::UnknownOption { option, .. } if option == "mend_rank"),
            "{err}"
        );
    }

    #[test]
    fn bad_values_are_refused_before_anything_runs() {
        for (fit, pair, option) in [
            ("sft", "rank=0", "rank"),
            ("sft", "alpha=-2", "alpha"),
            ("sft", "lr=0", "lr"),
            ("sft", "epochs=0", "epochs"),
            ("sft", "batch_size=0", "batch_size"),
            ("dpo", "beta=nan", "beta"),
            ("sft", "max_length=1", "max_length"),
            ("mend", "rank=0", "rank"),
            ("ext-sub", "lambda=inf", "lambda"),
            ("sft", "stop_after=0", "stop_after"),
            ("sft", "layers=1,x", "layers"),
            ("sft", "layers=1,,2", "layers"),
            ("sft", "modules=q_proj,", "modules"),
            ("sft", "adapter=half", "adapter"),
            ("steering", "prompt_layout=markdown", "prompt_layout"),
        ] {
            let err = refused(fit, &[pair]);
            assert!(
                matches!(&err, EditError::InvalidOption { option: o, .. } if o == option),
                "{fit} {pair}: {err}"
            );
        }
        let err = refused("ext-sub", &["expert=a"]);
        assert!(
            matches!(&err, EditError::MissingOption { option, .. } if option == "anti_expert"),
            "{err}"
        );
    }

    #[test]
    fn the_presets_defaults_hold_and_every_fit_is_listed() {
        let fits = FitRegistry::builtin();
        let sft = fits.configure("sft", &MethodArgs::new()).unwrap();
        let text = format!("{sft:?}");
        assert!(text.contains("lr: 0.0001") && text.contains("batch_size: 4"), "{text}");
        let dpo =
            format!("{:?}", fits.configure("dpo", &MethodArgs::new().set("beta", 0.2)).unwrap());
        assert!(dpo.contains("beta: 0.2") && dpo.contains("lr: 5e-5"), "{dpo}");
        let described = fits.describe();
        for name in [
            "sft",
            "dpo",
            "expert",
            "anti-expert",
            "ext-sub",
            "mend",
            "profs",
            "steering",
            "surgery",
        ] {
            assert!(described.lines().any(|l| l.starts_with(name)), "{name} missing:\n{described}");
        }
        assert!(!fits
            .configure("ext-sub", &MethodArgs::new().set("expert", "a").set("anti_expert", "b"))
            .unwrap()
            .needs_model());
    }

    #[test]
    fn a_fit_without_a_model_is_refused() {
        let fit = FitRegistry::builtin().configure("steering", &MethodArgs::new()).unwrap();
        let records = [EditRequest {
            prompt: "p".into(),
            target_new: "safe".into(),
            ground_truth: "unsafe".into(),
            locality_prompt: "q".into(),
            locality_answer: "a".into(),
        }];
        let mut context = FitContext::new(Path::new("unused"), &records);
        let err = fit.run(&mut context, &mut |_| {}).unwrap_err();
        assert!(matches!(err, EditError::FitInput { what: "a model", .. }), "{err}");
    }
}

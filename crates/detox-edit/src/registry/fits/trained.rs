//! The fits that train: SFT, DPO, expert and anti-expert adapters, Ext-Sub's combination of two of them, and
//! MEND's hyper-network.

use std::path::{Path, PathBuf};

use tch::Device;

use super::builtin::{format, max_length, seed};
use super::{Fit, FitContext, FitProgress, FitReport};
use crate::artefact::Artefact;
use crate::editor::EditInput;
use crate::error::{EditError, Result};
use crate::ext_sub::extract_and_subtract;
use crate::mend::{train_mend, MendArtefact, MendConfig};
use crate::registry::args::invalid;
use crate::registry::MethodArgs;
use crate::train::{
    train, AdapterKind, ArtefactInfo, Objective, PreferencePair, RunOptions, TrainConfig,
    TrainedArtefact,
};

/// SFT, DPO, expert or anti-expert: an adapter trained by [`train`], saved as a [`TrainedArtefact`].
#[derive(Debug)]
struct AdapterTrainer {
    /// The method name the artefact records (`SFT` or `DPO`).
    method: &'static str,
    config: TrainConfig,
    stop_after: Option<usize>,
}

pub(super) fn configure_trainer(
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
            AdapterKind::Lora { rank, alpha: args.get_positive(fit, "alpha")?.unwrap_or(16.0) }
        }
        Some("full") => AdapterKind::Full,
        Some(other) => return Err(invalid(fit, "adapter", other, "expected `lora` or `full`")),
    };
    let objective = match preset.objective {
        Objective::Dpo { beta } => {
            Objective::Dpo { beta: args.get_positive(fit, "beta")?.unwrap_or(beta) }
        }
        other => other,
    };
    let config = TrainConfig {
        objective,
        adapter,
        modules: args.get_list(fit, "modules")?.unwrap_or(preset.modules.clone()),
        layers: args.get_list(fit, "layers")?,
        lr: args.get_positive(fit, "lr")?.unwrap_or(preset.lr),
        epochs: args.get_count(fit, "epochs", 1)?.unwrap_or(preset.epochs),
        batch_size: args.get_count(fit, "batch_size", 1)?.unwrap_or(4),
        max_length: max_length(args, fit)?,
        prompt_layout: format(args, fit)?,
        seed: seed(args, fit)?,
        ..preset
    };
    Ok(Box::new(AdapterTrainer {
        method,
        config,
        stop_after: args.get_count(fit, "stop_after", 1)?,
    }))
}

pub(super) fn configure_sft(args: &MethodArgs) -> Result<Box<dyn Fit>> {
    configure_trainer("sft", "SFT", TrainConfig::sft(), args)
}

pub(super) fn configure_dpo(args: &MethodArgs) -> Result<Box<dyn Fit>> {
    configure_trainer("dpo", "DPO", TrainConfig::dpo(), args)
}

pub(super) fn configure_expert(args: &MethodArgs) -> Result<Box<dyn Fit>> {
    configure_trainer("expert", "SFT", TrainConfig::expert(), args)
}

pub(super) fn configure_anti_expert(args: &MethodArgs) -> Result<Box<dyn Fit>> {
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

pub(super) fn configure_ext_sub(args: &MethodArgs) -> Result<Box<dyn Fit>> {
    let path = |key: &str, fit: &str| {
        args.text(key).map(PathBuf::from).ok_or_else(|| EditError::MissingOption {
            method: "ext-sub".into(),
            option: key.into(),
            why: format!("the artefact directory of the `{fit}` fit"),
        })
    };
    // The value given is checked before the ones missing, so a bad value is reported whatever else is absent.
    let lambda = args.get_finite("ext-sub", "lambda")?.unwrap_or(1.0);
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

pub(super) fn configure_mend(args: &MethodArgs) -> Result<Box<dyn Fit>> {
    let fit = "mend";
    let defaults = MendConfig::default();
    let rank = args.get::<i64>(fit, "rank")?.unwrap_or(defaults.rank);
    if rank < 1 {
        return Err(invalid(fit, "rank", rank, "must be at least 1"));
    }
    let config = MendConfig {
        modules: args.get_list(fit, "modules")?.unwrap_or(defaults.modules.clone()),
        layers: args.get_list(fit, "layers")?,
        rank,
        lr: args.get_positive(fit, "lr")?.unwrap_or(defaults.lr),
        epochs: args.get_count(fit, "epochs", 1)?.unwrap_or(defaults.epochs),
        prompt_layout: format(args, fit)?,
        max_length: max_length(args, fit)?,
        seed: seed(args, fit)?,
        ..defaults
    };
    Ok(Box::new(Mend { config, stop_after: args.get_count(fit, "stop_after", 1)? }))
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

//! The fits that read the model's activations once: ProFS's toxic subspaces, steering vectors and Model
//! Surgery's probe.

use std::collections::BTreeSet;

use detox_runtime::PromptLayout;

use super::builtin::{format, max_length, seed};
use super::{Fit, FitContext, FitProgress, FitReport};
use crate::artefact::Artefact;
use crate::error::Result;
use crate::profs::{fit_profs, ProfsOptions, NEAR_TIE};
use crate::registry::MethodArgs;
use crate::steering::fit_steering;
use crate::surgery::{fit_surgery, labelled_responses, ProbeConfig, SurgeryConfig, DEFAULT_ALPHA};
use crate::train::PreferencePair;

/// ProFS's toxic subspaces.
#[derive(Debug)]
struct Profs {
    options: ProfsOptions,
}

pub(super) fn configure_profs(args: &MethodArgs) -> Result<Box<dyn Fit>> {
    let fit = "profs";
    let options = ProfsOptions {
        layers: args.get_list(fit, "layers")?,
        rank: args.get_count(fit, "rank", 1)?.unwrap_or(2),
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

pub(super) fn configure_steering(args: &MethodArgs) -> Result<Box<dyn Fit>> {
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

pub(super) fn configure_surgery(args: &MethodArgs) -> Result<Box<dyn Fit>> {
    let fit = "surgery";
    let defaults = ProbeConfig::default();
    let holdout = args.get::<f64>(fit, "holdout")?.unwrap_or(defaults.holdout);
    let config = SurgeryConfig {
        probe: ProbeConfig {
            lr: args.get_positive(fit, "lr")?.unwrap_or(defaults.lr),
            epochs: args.get_count(fit, "epochs", 1)?.unwrap_or(defaults.epochs),
            batch_size: args.get_count(fit, "batch_size", 1)?.unwrap_or(defaults.batch_size),
            holdout,
            max_length: max_length(args, fit)?,
            seed: seed(args, fit)?,
            ..defaults
        },
        rows: args.get_count(fit, "rows", 1)?,
        alpha: args.get_finite(fit, "alpha")?.unwrap_or(DEFAULT_ALPHA),
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

//! The whole fit: features, probe, row selection, timed, with what the artefact records.

use std::time::Instant;

use detox_runtime::CausalLm;
use serde::{Deserialize, Serialize};

use super::probe::{probe_features, train_probe, LabelledText, Probe, ProbeConfig, ProbeStep};
use super::select::{select_rows, SelectedRow};
use super::{DEFAULT_ALPHA, ROWS_PER_HIDDEN_UNIT};
use crate::editor::PromptEncoder;
use crate::error::{EditError, Result};

/// The settings of a Model Surgery fit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SurgeryConfig {
    /// How the probe is trained.
    pub probe: ProbeConfig,
    /// How many `gate_proj` rows are shifted; `None` is 4 × the hidden size (the authors' 16,384 for a
    /// 4096-wide model).
    pub rows: Option<usize>,
    /// The shift strength.
    pub alpha: f64,
}

impl Default for SurgeryConfig {
    fn default() -> Self {
        Self { probe: ProbeConfig::default(), rows: None, alpha: DEFAULT_ALPHA }
    }
}

/// Wall times of a fit, in seconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct FitSeconds {
    /// Computing the texts' features (forward passes).
    pub features: f64,
    /// Training the probe.
    pub probe: f64,
    /// Ranking the rows.
    pub selection: f64,
}

/// What a fit records about itself (the artefact's `surgery.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SurgeryInfo {
    /// The method's report name.
    pub method: String,
    /// The settings, with `rows` resolved to the number shifted.
    pub config: SurgeryConfig,
    /// The hidden size of the model fitted on.
    pub hidden_size: usize,
    /// Its number of layers.
    pub num_layers: usize,
    /// Its `gate_proj` rows per layer.
    pub intermediate_size: usize,
    /// Texts used (trained on and held out).
    pub texts: usize,
    /// Probe accuracy on its training texts.
    pub train_accuracy: f64,
    /// Probe accuracy on the held-out texts, when some were held out.
    pub holdout_accuracy: Option<f64>,
    /// Every probe step.
    pub steps: Vec<ProbeStep>,
    /// Wall times.
    pub seconds: FitSeconds,
}

/// A fitted surgery: the probe, the rows it selects and the record of the fit.
#[derive(Debug)]
pub struct SurgeryFit {
    /// The probe.
    pub probe: Probe,
    /// The rows to shift, best first.
    pub rows: Vec<SelectedRow>,
    /// The record of the fit.
    pub info: SurgeryInfo,
}

/// Fits Model Surgery on `model` from `texts` (see the module documentation for the steps).
pub fn fit_surgery(
    model: &CausalLm,
    encoder: &dyn PromptEncoder,
    texts: &[LabelledText],
    config: &SurgeryConfig,
) -> Result<SurgeryFit> {
    if !config.alpha.is_finite() {
        return Err(EditError::InvalidConfig {
            method: "Model Surgery".into(),
            reason: format!("alpha {} is not finite", config.alpha),
        });
    }
    let c = model.config();
    let count = config.rows.unwrap_or(ROWS_PER_HIDDEN_UNIT * c.hidden_size as usize);
    if count == 0 {
        return Err(EditError::InvalidConfig {
            method: "Model Surgery".into(),
            reason: "must shift at least one row".into(),
        });
    }
    let started = Instant::now();
    let features = probe_features(model, encoder, texts, &config.probe)?;
    let features_s = started.elapsed().as_secs_f64();
    let toxic: Vec<bool> = texts.iter().map(|t| t.toxic).collect();
    let started = Instant::now();
    let fit = train_probe(&features, &toxic, &config.probe)?;
    let probe_s = started.elapsed().as_secs_f64();
    let started = Instant::now();
    let rows = select_rows(model, &fit.probe.toxic_direction()?, count)?;
    let selection_s = started.elapsed().as_secs_f64();
    let info = SurgeryInfo {
        method: super::METHOD.into(),
        config: SurgeryConfig { rows: Some(count), ..config.clone() },
        hidden_size: c.hidden_size as usize,
        num_layers: c.num_hidden_layers,
        intermediate_size: c.intermediate_size as usize,
        texts: texts.len(),
        train_accuracy: fit.train_accuracy,
        holdout_accuracy: fit.holdout_accuracy,
        steps: fit.steps,
        seconds: FitSeconds { features: features_s, probe: probe_s, selection: selection_s },
    };
    Ok(SurgeryFit { probe: fit.probe, rows, info })
}

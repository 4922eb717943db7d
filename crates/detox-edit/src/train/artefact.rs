//! Trained artefacts on disk: the weight delta a training run (or Ext-Sub's combination) amounts to, how it was
//! made, and the trained tensors themselves for other tools.
//!
//! Layout of an artefact directory ([`TrainedArtefact`], kind `trained`, besides [`crate::HEADER_FILE`]):
//! - `adapter.safetensors`: the trained tensors (LoRA factors under PEFT's names, or full weights), when the
//!   artefact comes from a training run;
//! - `delta.safetensors`: `W_trained - W0` per parameter, fp32 (what [`crate::TrainedDeltaEditor`] applies);
//! - `training.json`: the method, the configuration and every step's loss.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tch::{Device, Tensor};

use super::checkpoint::{read_json, write_json};
use super::trainer::{TrainConfig, TrainOutcome, TrainStep};
use crate::artefact::Artefact;
use crate::delta::Delta;
use crate::error::{EditError, Result};

/// The description of an artefact (`training.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ArtefactInfo {
    /// The method's report name: one of [`TRAINED_METHODS`].
    pub method: String,
    /// The training configuration, for methods trained by [`super::train`].
    pub config: Option<TrainConfig>,
    /// What the artefact was derived from (e.g. Ext-Sub's expert and anti-expert directories).
    #[serde(default)]
    pub sources: Vec<PathBuf>,
    /// Every training step.
    #[serde(default)]
    pub steps: Vec<TrainStep>,
    /// Training wall time in seconds (of the last call, when resumed).
    pub seconds: f64,
}

/// The report names of methods whose result is one trained delta.
pub const TRAINED_METHODS: [&str; 3] = ["SFT", "DPO", "Ext-Sub"];

/// The file names inside an artefact directory.
pub const ADAPTER_FILE: &str = "adapter.safetensors";
/// See [`ADAPTER_FILE`].
pub const DELTA_FILE: &str = "delta.safetensors";
/// See [`ADAPTER_FILE`].
pub const INFO_FILE: &str = "training.json";

/// A trained artefact: one delta applied to every record (SFT, DPO, Ext-Sub), with its description.
#[derive(Debug)]
pub struct TrainedArtefact {
    /// How it was made.
    pub info: ArtefactInfo,
    /// `W_trained - W0` per parameter, fp32.
    pub delta: Delta,
    /// The trained tensors under their saved names ([`super::Adapters::named_tensors`]), written to
    /// [`ADAPTER_FILE`] for tools that load adapters (PEFT). Loading does not read them back, since the delta is
    /// what an evaluation applies and full-weight adapters are as large as the model: a loaded artefact has
    /// `None`.
    pub adapter: Option<Vec<(String, Tensor)>>,
}

impl TrainedArtefact {
    /// The artefact of a finished training run of `method` (`SFT` or `DPO`) with `config`.
    ///
    /// # Errors
    /// [`EditError::State`] when the run stopped before its last step (resume it first).
    pub fn from_run(method: &str, config: &TrainConfig, outcome: &TrainOutcome) -> Result<Self> {
        if !outcome.completed {
            return Err(EditError::State(format!(
                "the run stopped after {} of {} steps; resume it before saving",
                outcome.steps.len(),
                outcome.planned_steps
            )));
        }
        let info = ArtefactInfo {
            method: method.to_string(),
            config: Some(config.clone()),
            sources: Vec::new(),
            steps: outcome.steps.clone(),
            seconds: outcome.seconds,
        };
        Ok(Self {
            info,
            delta: outcome.adapters.delta()?,
            adapter: Some(outcome.adapters.named_tensors()),
        })
    }

    /// Why `info` and `delta` cannot make an artefact, if they cannot.
    fn defect(&self) -> Option<String> {
        if !TRAINED_METHODS.contains(&self.info.method.as_str()) {
            return Some(format!(
                "method `{}` is not a trained-delta method (expected one of {TRAINED_METHODS:?})",
                self.info.method
            ));
        }
        self.delta.is_empty().then(|| "the delta is empty".to_string())
    }
}

impl Artefact for TrainedArtefact {
    const KIND: &'static str = "trained";

    /// Writes the adapter (when there is one), the delta, then the description.
    fn write_files(&self, dir: &Path) -> Result<()> {
        if let Some(reason) = self.defect() {
            return Err(EditError::InvalidConfig { method: self.info.method.clone(), reason });
        }
        if let Some(adapter) = &self.adapter {
            detox_runtime::weights::save_safetensors(&dir.join(ADAPTER_FILE), adapter)?;
        }
        self.delta.save(&dir.join(DELTA_FILE))?;
        write_json(&dir.join(INFO_FILE), &self.info)
    }

    /// Reads the description and the delta (not the adapter); refuses a method that is not a trained-delta one.
    fn read_files(dir: &Path, device: Device) -> Result<Self> {
        let path = dir.join(INFO_FILE);
        let info: ArtefactInfo = read_json(&path, "an artefact description")?;
        let delta = Delta::load_onto(&dir.join(DELTA_FILE), device)?;
        let artefact = Self { info, delta, adapter: None };
        match artefact.defect() {
            Some(reason) => Err(EditError::Artefact { path, reason }),
            None => Ok(artefact),
        }
    }
}

//! Trained artefacts on disk: the trained tensors, the weight delta they amount to, and how they were made.
//!
//! Layout of an artefact directory:
//! - `adapter.safetensors`: the trained tensors (LoRA factors under PEFT's names, or full weights);
//! - `delta.safetensors`: `W_trained - W0` per parameter, fp32 (what [`crate::TrainedDeltaEditor`] applies);
//! - `training.json`: the method, the configuration and every step's loss.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::checkpoint::{read_json, write_json};
use super::trainer::{TrainConfig, TrainOutcome, TrainStep};
use crate::delta::Delta;
use crate::error::{EditError, Result};

/// The description of an artefact (`training.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ArtefactInfo {
    /// The method's report name (`SFT`, `DPO`, `Ext-Sub`, `MEND`).
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

/// The file names inside an artefact directory.
pub const ADAPTER_FILE: &str = "adapter.safetensors";
/// See [`ADAPTER_FILE`].
pub const DELTA_FILE: &str = "delta.safetensors";
/// See [`ADAPTER_FILE`].
pub const INFO_FILE: &str = "training.json";

/// Writes a finished training run as an artefact directory.
pub fn save_trained(
    dir: &Path,
    method: &str,
    config: &TrainConfig,
    outcome: &TrainOutcome,
) -> Result<()> {
    if !outcome.completed {
        return Err(EditError::State(format!(
            "the run stopped after {} of {} steps; resume it before saving",
            outcome.steps.len(),
            outcome.planned_steps
        )));
    }
    std::fs::create_dir_all(dir).map_err(|source| EditError::Io { path: dir.into(), source })?;
    outcome.adapters.save(&dir.join(ADAPTER_FILE))?;
    let info = ArtefactInfo {
        method: method.to_string(),
        config: Some(config.clone()),
        sources: Vec::new(),
        steps: outcome.steps.clone(),
        seconds: outcome.seconds,
    };
    save_delta(dir, &outcome.adapters.delta()?, &info)
}

/// Writes `delta` and `info` into `dir` (the delta first, so that an artefact with a description is complete).
pub fn save_delta(dir: &Path, delta: &Delta, info: &ArtefactInfo) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|source| EditError::Io { path: dir.into(), source })?;
    delta.save(&dir.join(DELTA_FILE))?;
    write_json(&dir.join(INFO_FILE), info)
}

/// Reads an artefact directory's description and delta.
pub fn load_artefact(dir: &Path) -> Result<(ArtefactInfo, Delta)> {
    let info: ArtefactInfo = read_json(&dir.join(INFO_FILE), "an artefact description")?;
    let delta = Delta::load(&dir.join(DELTA_FILE))?;
    Ok((info, delta))
}

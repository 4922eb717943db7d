//! A trained MEND network on disk: the network's tensors and layout, and a description of its training, so that
//! an evaluation can rebuild the editor from the directory alone.

use std::path::Path;

use serde::{Deserialize, Serialize};
use tch::Device;

use super::editor::MendEditor;
use super::network::MendNetwork;
use super::train::{MendConfig, MendOutcome, MendStep};
use crate::error::{EditError, Result};
use crate::ledger::EditMode;
use crate::train::checkpoint::write_atomic;

/// The description of the training, next to the network's files.
pub const TRAINING_FILE: &str = "mend_training.json";

/// What [`TRAINING_FILE`] holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MendTraining {
    /// Always `MEND`.
    pub method: String,
    /// The training settings; the editor formats prompts as they say.
    pub config: MendConfig,
    /// Every meta-training step.
    pub steps: Vec<MendStep>,
    /// Training wall time in seconds (of the last call, when resumed).
    pub seconds: f64,
}

/// Writes a completed training run to `dir`: the network, then its description (written last and atomically, so
/// a directory with the description holds a whole artefact).
pub fn save_artefact(dir: &Path, config: &MendConfig, outcome: &MendOutcome) -> Result<()> {
    if !outcome.completed {
        return Err(EditError::State(format!(
            "the run stopped after {} of {} steps; resume it before saving",
            outcome.steps.len(),
            outcome.planned_steps
        )));
    }
    outcome.network.save(dir)?;
    let training = MendTraining {
        method: "MEND".into(),
        config: config.clone(),
        steps: outcome.steps.clone(),
        seconds: outcome.seconds,
    };
    let path = dir.join(TRAINING_FILE);
    let bytes = serde_json::to_vec_pretty(&training).map_err(|e| {
        EditError::InvalidRequest(format!("{}: cannot serialise: {e}", path.display()))
    })?;
    write_atomic(&path, &bytes)
}

/// Reads the description of the artefact in `dir`.
pub fn load_training(dir: &Path) -> Result<MendTraining> {
    let path = dir.join(TRAINING_FILE);
    let bytes =
        std::fs::read(&path).map_err(|source| EditError::Io { path: path.clone(), source })?;
    serde_json::from_slice(&bytes).map_err(|e| EditError::HyperParams {
        path,
        reason: format!("not a MEND training description: {e}"),
    })
}

impl MendEditor {
    /// The editor of the artefact saved in `dir` by [`save_artefact`], its network placed on `device`, prompts
    /// formatted as in training.
    pub fn from_artefact(
        dir: &Path,
        device: Device,
        mode: EditMode,
    ) -> Result<(Self, MendTraining)> {
        let training = load_training(dir)?;
        let network = MendNetwork::load(dir, device)?;
        let editor =
            MendEditor::new(network, training.config.format, training.config.max_length, mode);
        Ok((editor, training))
    }
}

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
use crate::train::checkpoint::{read_json, write_json};

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
    write_json(&dir.join(TRAINING_FILE), &training)
}

/// Reads the description of the artefact in `dir`.
pub fn load_training(dir: &Path) -> Result<MendTraining> {
    read_json(&dir.join(TRAINING_FILE), "a MEND training description")
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
        let editor = MendEditor::new(
            network,
            training.config.prompt_layout,
            training.config.max_length,
            mode,
        );
        Ok((editor, training))
    }
}

//! A trained MEND network on disk: the network's tensors and layout, and a description of its training, so that
//! an evaluation can rebuild the editor from the directory alone.
//!
//! Layout of an artefact directory ([`MendArtefact`], kind `mend`, besides [`crate::HEADER_FILE`]):
//! [`super::TENSORS_FILE`] (every tensor of the network), [`super::LAYOUT_FILE`] (its layout) and
//! [`TRAINING_FILE`] (the settings, every step's losses, the wall time).

use std::path::Path;

use serde::{Deserialize, Serialize};
use tch::Device;

use super::network::MendNetwork;
use super::train::{MendConfig, MendOutcome, MendStep};
use crate::artefact::Artefact;
use crate::error::{EditError, Result};
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

/// A trained MEND hyper-network with the description of its training.
#[derive(Debug)]
pub struct MendArtefact {
    /// The network.
    pub network: MendNetwork,
    /// How it was trained; its `config` says how the editor formats prompts.
    pub training: MendTraining,
}

impl MendArtefact {
    /// The artefact of a finished meta-training run with `config`.
    ///
    /// # Errors
    /// [`EditError::State`] when the run stopped before its last step (resume it first).
    pub fn from_run(config: &MendConfig, outcome: MendOutcome) -> Result<Self> {
        if !outcome.completed {
            return Err(EditError::State(format!(
                "the run stopped after {} of {} steps; resume it before saving",
                outcome.steps.len(),
                outcome.planned_steps
            )));
        }
        let training = MendTraining {
            method: "MEND".into(),
            config: config.clone(),
            steps: outcome.steps,
            seconds: outcome.seconds,
        };
        Ok(Self { network: outcome.network, training })
    }
}

impl Artefact for MendArtefact {
    const KIND: &'static str = "mend";

    /// Writes the network, then its description.
    fn write_files(&self, dir: &Path) -> Result<()> {
        self.network.write_files(dir)?;
        write_json(&dir.join(TRAINING_FILE), &self.training)
    }

    /// Reads the description and the network, placed on `device`.
    fn read_files(dir: &Path, device: Device) -> Result<Self> {
        let training = read_json(&dir.join(TRAINING_FILE), "a MEND training description")?;
        Ok(Self { network: MendNetwork::read_files(dir, device)?, training })
    }
}

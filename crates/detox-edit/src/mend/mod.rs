//! MEND (Model Editor Networks with Gradient Decomposition, Mitchell et al., ICLR 2022): a hyper-network trained
//! on the training split maps the rank-decomposed fine-tuning gradient of a record to a weight edit.
//!
//! [`train_mend`] meta-trains the network; [`MendEditor`] applies it per record through the [`crate::Editor`]
//! interface; [`MendArtefact`] saves and loads the trained network. The gradient factors come from the runtime's [`detox_runtime::LinearProbe`].

mod artefact;
mod editor;
mod network;
mod tokens;
mod train;

pub use artefact::{MendArtefact, MendTraining, TRAINING_FILE};
pub use editor::MendEditor;
pub use network::{MendNetwork, NetworkLayout, LAYOUT_FILE, TENSORS_FILE};
pub use train::{train_mend, MendConfig, MendOutcome, MendStep};

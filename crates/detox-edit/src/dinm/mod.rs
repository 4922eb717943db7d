//! DINM, Detoxifying with Intraoperative Neural Monitoring (Wang et al., ACL 2024, section 3).
//!
//! Per record: locate the toxic layer (the layer whose hidden states separate a safe from an unsafe response the
//! most), then tune only that layer's `mlp.down_proj.weight` for a few Adam steps on the safe response, while a KL
//! term keeps the model's answer to a benign knowledge question close to its pre-edit distribution.

mod batch;
mod cost;
mod editor;
mod hparams;
mod inputs;
mod optimize;
mod options;

pub use batch::{memory_per_record, optimize_batch};
pub use cost::StepFlops;
pub use editor::{DinmEditor, DinmOptions};
pub use hparams::{DinmHyperParams, DinmPreset, SUFFIX_SYSTEM_PROMPT};
pub use inputs::build_tokens;
pub use optimize::{
    optimize_tensor, DinmTokens, EditPhases, OptimizeSettings, StepLoss, TrainedTensor,
};
pub use options::{EarlyStop, KlGradient, LossWeighting, StepForward};

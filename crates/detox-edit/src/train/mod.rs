//! Training-based baselines: supervised fine-tuning, DPO and the expert / anti-expert modules of Ext-Sub, with
//! full-parameter or LoRA training, checkpoints, resume and saved artefacts.
//!
//! These methods train once on SafeEdit's training split; [`crate::TrainedDeltaEditor`] then applies the result to
//! every evaluated record through the same [`crate::Editor`] interface as the per-record editors.

pub mod adapter;
pub mod artefact;
pub(crate) mod checkpoint;
pub mod data;
pub mod objective;
pub mod trainer;

pub use adapter::{target_parameters, AdapterKind, Adapters};
pub use artefact::{ArtefactInfo, TrainedArtefact, TRAINED_METHODS};
pub use data::{encode_pairs, prompt_ids, EncodedPair, PreferencePair};
pub use objective::{dpo_loss, dpo_margin, response_log_probs, sft_loss, ResponseLogProbs};
pub use trainer::{train, Objective, RunOptions, Side, TrainConfig, TrainOutcome, TrainStep};

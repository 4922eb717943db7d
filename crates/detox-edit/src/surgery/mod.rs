//! Model Surgery (Wang et al., NAACL 2025, "Model Surgery: Modulating LLM's Behavior via Simple Parameter
//! Editing", arXiv 2407.08770): a linear behaviour probe trained on hidden states of safe and unsafe texts, then
//! the `gate_proj` rows most anti-aligned with the probe's toxic direction shifted along it.
//!
//! The steps, as the authors' code runs them (github `lucywang720/model-surgery`):
//! 1. [`probe_features`]: each text's final-norm last-layer hidden state, mean-pooled over its tokens
//!    (`train/run_pplm_discrim_train.py`, `Discriminator.avg_representation`), in fp32.
//! 2. [`train_probe`]: a 2-class linear head with bias (`train/pplm_classification_head.py`) trained with
//!    cross-entropy and Adam on 90% of the texts, the rest held out (the same script's `toxic` dataset).
//! 3. [`select_rows`]: the raw weight row of the toxic class is the direction; every `gate_proj` row of every
//!    layer is scored by its negated cosine with it, pooled over layers, and the best `4 × hidden` rows kept
//!    (`modification/modify.py`, where 16,384 = 4 × 4096 for LLaMA-2-7B).
//! 4. [`SurgeryEditor`]: each kept row becomes `row + alpha · direction` (alpha 1.08 in the authors' scripts).
//!
//! The fit (steps 1 to 3) is saved as an artefact ([`SurgeryFit`] is a [`crate::Artefact`]); the edit itself is the same
//! for every record, restores bit-exactly and exports as a [`crate::Delta`].

mod artefact;
mod editor;
mod fit;
mod probe;
mod select;

pub use artefact::{SURGERY_INFO_FILE, SURGERY_TENSORS_FILE};
pub use editor::SurgeryEditor;
pub use fit::{fit_surgery, FitSeconds, SurgeryConfig, SurgeryFit, SurgeryInfo};
pub use probe::{
    labelled_responses, probe_features, train_probe, LabelledText, Probe, ProbeConfig, ProbeFit,
    ProbeStep,
};
pub use select::{gate_name, gate_rows, select_rows, surgery_delta, SelectedRow};

/// The method's report name.
pub const METHOD: &str = "Model-Surgery";

/// The shift strength of the authors' scripts (`--alpha 1.08`).
pub const DEFAULT_ALPHA: f64 = 1.08;

/// The number of rows the authors shift, per hidden unit: `4 × 4096` rows for LLaMA-2-7B's 4096-wide hidden state.
pub const ROWS_PER_HIDDEN_UNIT: usize = 4;

//! The DINM optimisation of one tensor, on token ids: its inputs, settings and results.

use detox_runtime::CausalLm;
use serde::{Deserialize, Serialize};
use tch::Tensor;

use super::options::{EarlyStop, KlGradient, LossWeighting, StepForward};
use crate::error::{EditError, Result};

/// The token-level inputs of one DINM edit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DinmTokens {
    /// The adversarial prompt with the suffix and the safe target: what the edited model is trained on.
    pub edit_input: Vec<i64>,
    /// The safe target's tokens as the reference encodes them on their own (with the tokenizer's special prefix,
    /// e.g. BOS); the last `target.len()` next-token predictions of `edit_input` are scored against them.
    pub target: Vec<i64>,
    /// Target tokens equal to this id are not scored (the reference masks the padding id, which is the EOS
    /// token for Llama-2 and Mistral).
    pub target_ignore_id: Option<i64>,
    /// The knowledge-constraint prompt with the suffix and its answer.
    pub constraint_input: Vec<i64>,
    /// How many final positions of `constraint_input` form the answer span the KL term compares.
    pub constraint_answer_len: usize,
}

/// The optimisation settings (from [`super::DinmHyperParams`] and the named options).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct OptimizeSettings {
    /// Adam learning rate.
    pub lr: f64,
    /// Adam weight decay.
    pub weight_decay: f64,
    /// Most optimisation steps.
    pub num_steps: usize,
    /// Loss weight, applied as `weighting` says.
    pub kl_factor: f64,
    /// Clamp to `W0 ± eps` after every step.
    pub norm_constraint: Option<f64>,
    /// Which term `kl_factor` scales.
    pub weighting: LossWeighting,
    /// Whether the KL term carries gradients.
    pub kl_gradient: KlGradient,
    /// Stop before the update once the loss falls below this (the reference uses 1e-4), read as `early_stop`
    /// says; 0 never stops.
    pub early_stop_loss: f64,
    /// Whether `early_stop_loss` is an absolute loss (the reference) or a fraction of the first step's loss.
    pub early_stop: EarlyStop,
    /// How much of the model each step runs (by default only what the edited tensor can change).
    #[serde(default)]
    pub step_forward: StepForward,
    /// Synchronise the device between the phases of every step so that [`TrainedTensor::phases`] attributes
    /// GPU time correctly (a CPU computes synchronously and needs nothing; on a GPU this costs a little time).
    #[serde(default)]
    pub synchronised_phases: bool,
}

/// Seconds an optimisation spent in each phase, summed over its steps.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct EditPhases {
    /// Once per edit: with [`StepForward::FromEditedTensor`] the states below the edited tensor (the pre-edit
    /// constraint distribution comes from the first step), with [`StepForward::WholeModel`] the pre-edit
    /// constraint distribution.
    pub prefix: f64,
    /// The decoder layers each step runs (with [`StepForward::WholeModel`], the output projection too).
    pub forward: f64,
    /// The final norm and output projection at the scored positions, the log-softmax and the losses.
    pub logits: f64,
    /// The backward pass.
    pub backward: f64,
    /// Adam, the norm constraint and the host read of the losses.
    pub optimizer: f64,
}

impl EditPhases {
    /// The sum of every phase.
    pub fn total(&self) -> f64 {
        self.prefix + self.forward + self.logits + self.backward + self.optimizer
    }
}

/// The losses of one optimisation step, before its update.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct StepLoss {
    /// The combined loss.
    pub loss: f64,
    /// Mean negative log-likelihood of the safe target.
    pub nll: f64,
    /// Mean KL divergence from the pre-edit to the post-edit distribution over the constraint answer span.
    pub kl: f64,
}

/// What [`optimize_tensor`] leaves behind.
#[derive(Debug)]
pub struct TrainedTensor {
    /// The losses of every step taken.
    pub steps: Vec<StepLoss>,
    /// The fp32 master copy after the last step.
    pub edited: Tensor,
    /// The tensor before the edit, in fp32.
    pub original: Tensor,
    /// Wall time of the optimisation, in seconds (per record when several records were edited together).
    pub seconds: f64,
    /// Where the time went, for the whole batch of records edited together.
    pub phases: EditPhases,
}

/// Tunes the parameter `tensor_name` of `model` with DINM's objective and leaves the edited value in the model
/// (cast to the model's dtype). The master copy and Adam's state are fp32 whatever the model dtype. This is
/// [`super::optimize_batch`] with a batch of one.
pub fn optimize_tensor(
    model: &mut CausalLm,
    tensor_name: &str,
    tokens: &DinmTokens,
    settings: &OptimizeSettings,
) -> Result<TrainedTensor> {
    let mut trained =
        super::optimize_batch(model, tensor_name, std::slice::from_ref(tokens), settings)?;
    trained.pop().ok_or_else(|| EditError::State("the edit produced no result".into()))
}

/// Checks that `tokens` can be scored: a non-empty target shorter than the edit input, and (with the KL term)
/// a non-empty constraint answer within the constraint input.
pub(super) fn check_tokens(tokens: &DinmTokens, uses_kl: bool) -> Result<()> {
    if tokens.target.is_empty() {
        return Err(EditError::NoTokens { what: "the safe target".into() });
    }
    if uses_kl && tokens.constraint_answer_len == 0 {
        return Err(EditError::NoTokens { what: "the constraint answer".into() });
    }
    if tokens.target.len() >= tokens.edit_input.len() {
        return Err(EditError::InputLength {
            what: format!(
                "the target ({} tokens) must be shorter than the edit input ({} tokens)",
                tokens.target.len(),
                tokens.edit_input.len()
            ),
        });
    }
    if tokens.constraint_answer_len > tokens.constraint_input.len() {
        return Err(EditError::InputLength {
            what: "the constraint answer is longer than the constraint input".into(),
        });
    }
    Ok(())
}

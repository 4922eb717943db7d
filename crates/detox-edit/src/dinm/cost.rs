//! The arithmetic of one optimisation step, counted from the model's shapes: what a benchmark divides by the
//! measured time to see how close a step runs to the machine's matrix-multiply throughput.

use detox_runtime::Config;
use serde::{Deserialize, Serialize};

use super::optimize::DinmTokens;
use super::options::{KlGradient, StepForward};

/// Floating-point operations of one optimisation step (a multiply-add counts two), by phase.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct StepFlops {
    /// The decoder layers the step runs, for the edit input and the constraint.
    pub forward: f64,
    /// The output projection at the positions that get logits.
    pub logits: f64,
    /// The backward pass: gradients of the activations down to the edited tensor, and of the tensor itself.
    pub backward: f64,
}

impl StepFlops {
    /// Every phase together.
    pub fn total(&self) -> f64 {
        self.forward + self.logits + self.backward
    }

    /// The step's operations when `layer`'s `mlp.down_proj` is edited on `tokens` (one record), computed as
    /// `step_forward` says. Matrix products only (projections, attention scores and values, the output
    /// projection): norms, activations and the softmax are a few percent for any model size.
    pub fn down_proj_step(
        config: &Config,
        layer: usize,
        tokens: &DinmTokens,
        step_forward: StepForward,
        kl_gradient: KlGradient,
    ) -> Self {
        let layers = config.num_hidden_layers;
        let (h, i) = (config.hidden_size as f64, config.intermediate_size as f64);
        let q = (config.num_attention_heads * config.head_dim) as f64;
        let kv = (config.num_key_value_heads * config.head_dim) as f64;
        let down = 2.0 * h * i;
        // q, k, v and o projections, then gate, up and down.
        let per_token_layer = 2.0 * (h * q + 2.0 * h * kv + q * h) + 3.0 * down;
        // Causal attention: token t attends to t + 1 keys, for scores and values.
        let attention = |seq: f64| 2.0 * 2.0 * q * seq * (seq + 1.0) / 2.0;
        let full_layer = |seq: f64| seq * per_token_layer + attention(seq);
        let head = |positions: f64| 2.0 * h * config.vocab_size as f64 * positions;
        let above = (layers - layer - 1) as f64;
        let edit = tokens.edit_input.len() as f64;
        let scored = tokens.target.len() as f64;
        let constraint = tokens.constraint_input.len() as f64;
        let answer = tokens.constraint_answer_len as f64;
        let uses_kl = constraint > 0.0 && answer > 0.0;
        let (kl_seq, kl_answer) = if uses_kl { (constraint, answer) } else { (0.0, 0.0) };

        let from_edited = |seq: f64| seq * down + above * full_layer(seq);
        let (forward, logits) = match step_forward {
            StepForward::FromEditedTensor => {
                (from_edited(edit) + from_edited(kl_seq), head(scored) + head(kl_answer))
            }
            StepForward::WholeModel => {
                (layers as f64 * (full_layer(edit) + full_layer(kl_seq)), head(edit) + head(kl_seq))
            }
        };
        // Backward needs the activations' gradients above the edited tensor (as much arithmetic as their
        // forward) and the weight's gradient (as much as its product); the head's only where logits exist.
        let backward_of =
            |seq: f64, positions: f64| above * full_layer(seq) + seq * down + head(positions);
        let mut backward = backward_of(edit, scored_or_all(step_forward, scored, edit));
        if kl_gradient == KlGradient::Differentiable && uses_kl {
            backward += backward_of(kl_seq, scored_or_all(step_forward, kl_answer, kl_seq));
        }
        Self { forward, logits, backward }
    }
}

fn scored_or_all(step_forward: StepForward, scored: f64, all: f64) -> f64 {
    match step_forward {
        StepForward::FromEditedTensor => scored,
        StepForward::WholeModel => all,
    }
}

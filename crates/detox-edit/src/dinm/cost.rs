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
    ///
    /// From the edited tensor up, a step runs the down-projection and the layers above it over the edit input
    /// less its last token and over the constraint, the last layer's queries, attention output and MLP for the
    /// scored positions only, and the output projection at those positions; the whole model runs every layer
    /// over every position and the output projection everywhere.
    pub fn down_proj_step(
        config: &Config,
        layer: usize,
        tokens: &DinmTokens,
        step_forward: StepForward,
        kl_gradient: KlGradient,
    ) -> Self {
        let shape = Shape::of(config);
        let above = config.num_hidden_layers - layer - 1;
        let uses_kl = !tokens.constraint_input.is_empty() && tokens.constraint_answer_len > 0;
        let edit = tokens.edit_input.len() as f64;
        let scored = tokens.target.len() as f64;
        let (constraint, answer) = if uses_kl {
            (tokens.constraint_input.len() as f64, tokens.constraint_answer_len as f64)
        } else {
            (0.0, 0.0)
        };
        let differentiable = kl_gradient == KlGradient::Differentiable && uses_kl;
        match step_forward {
            StepForward::FromEditedTensor => {
                let edit = shape.above_edited(edit - 1.0, scored, above);
                let constraint = shape.above_edited(constraint, answer, above);
                let head = shape.head(scored) + shape.head(answer);
                let mut backward = edit + shape.head(scored);
                if differentiable {
                    backward += constraint + shape.head(answer);
                }
                Self { forward: edit + constraint, logits: head, backward }
            }
            StepForward::WholeModel => {
                let layers = config.num_hidden_layers as f64;
                let forward = layers * (shape.layer(edit) + shape.layer(constraint));
                let above_edit = shape.above_edited(edit, edit, above);
                let mut backward = above_edit + shape.head(edit);
                if differentiable {
                    backward +=
                        shape.above_edited(constraint, constraint, above) + shape.head(constraint);
                }
                Self { forward, logits: shape.head(edit) + shape.head(constraint), backward }
            }
        }
    }
}

/// Per-token products of one decoder layer, in floating-point operations.
struct Shape {
    /// q, k, v and o projections.
    projections: f64,
    /// k and v projections alone (what the last layer still computes for positions it does not keep).
    keys_values: f64,
    /// gate, up and down.
    mlp: f64,
    /// The down-projection alone.
    down: f64,
    /// Query width (heads × head size), for the attention products.
    query_width: f64,
    /// `2 · hidden · vocab`: the output projection of one position.
    head_per_position: f64,
}

impl Shape {
    fn of(config: &Config) -> Self {
        let (h, i) = (config.hidden_size as f64, config.intermediate_size as f64);
        let q = (config.num_attention_heads * config.head_dim) as f64;
        let kv = (config.num_key_value_heads * config.head_dim) as f64;
        Self {
            projections: 2.0 * (h * q + 2.0 * h * kv + q * h),
            keys_values: 2.0 * 2.0 * h * kv,
            mlp: 3.0 * 2.0 * h * i,
            down: 2.0 * h * i,
            query_width: q,
            head_per_position: 2.0 * h * config.vocab_size as f64,
        }
    }

    /// Scores and weighted values of `queries` causal queries ending at the last of `keys` positions.
    fn attention(&self, queries: f64, keys: f64) -> f64 {
        let mean_keys = keys - (queries - 1.0) / 2.0;
        2.0 * 2.0 * self.query_width * queries * mean_keys
    }

    /// One layer over every one of `seq` positions.
    fn layer(&self, seq: f64) -> f64 {
        seq * (self.projections + self.mlp) + self.attention(seq, seq)
    }

    /// The edited down-projection and the `above` layers over `seq` positions, the last of them keeping only
    /// the final `kept` positions.
    fn above_edited(&self, seq: f64, kept: f64, above: usize) -> f64 {
        if seq == 0.0 {
            return 0.0;
        }
        if above == 0 {
            return kept * self.down;
        }
        let last = seq * self.keys_values
            + kept * (self.projections - self.keys_values + self.mlp)
            + self.attention(kept, seq);
        seq * self.down + (above - 1) as f64 * self.layer(seq) + last
    }

    fn head(&self, positions: f64) -> f64 {
        positions * self.head_per_position
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> Config {
        let json = r#"{"architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": 10,
            "hidden_size": 4, "intermediate_size": 8, "num_hidden_layers": 2, "num_attention_heads": 2,
            "num_key_value_heads": 2, "max_position_embeddings": 64, "rms_norm_eps": 1e-5}"#;
        Config::from_json_str(json, "<test>").unwrap()
    }

    fn tokens(constraint: usize, answer: usize) -> DinmTokens {
        DinmTokens {
            edit_input: vec![1; 5],
            target: vec![1; 2],
            target_ignore_id: None,
            constraint_input: vec![1; constraint],
            constraint_answer_len: answer,
        }
    }

    #[test]
    fn a_step_is_counted_from_the_shapes() {
        let c = config();
        let f = StepFlops::down_proj_step(
            &c,
            0,
            &tokens(0, 0),
            StepForward::FromEditedTensor,
            KlGradient::Detached,
        );
        // 4 positions (the last token dropped) through down_proj (64 each) and the last layer: keys and values
        // for 4 positions (64 each), the rest for the 2 kept ones (64 + 192 each), attention 2 x 3.5 keys
        // (4 · 4 · 3.5 each): 256 + 256 + 512 + 112.
        assert_eq!(f.forward, 1136.0);
        assert_eq!(f.logits, 2.0 * 2.0 * 4.0 * 10.0);
        assert_eq!(f.backward, 1136.0 + 160.0);
        // The edited layer being the last: its down-projection for the kept positions only.
        let last = StepFlops::down_proj_step(
            &c,
            1,
            &tokens(0, 0),
            StepForward::FromEditedTensor,
            KlGradient::Detached,
        );
        assert_eq!(last.forward, 2.0 * 64.0);
    }

    #[test]
    fn the_whole_model_costs_more_and_the_kl_gradient_adds_its_backward() {
        let c = config();
        let t = tokens(6, 2);
        let step = |forward, gradient| StepFlops::down_proj_step(&c, 0, &t, forward, gradient);
        let resumed = step(StepForward::FromEditedTensor, KlGradient::Detached);
        let whole = step(StepForward::WholeModel, KlGradient::Detached);
        assert!(whole.forward > resumed.forward && whole.logits > resumed.logits);
        assert!(whole.backward > resumed.backward);
        let differentiable = step(StepForward::FromEditedTensor, KlGradient::Differentiable);
        assert!(differentiable.backward > resumed.backward);
        assert_eq!(differentiable.forward, resumed.forward);
    }
}

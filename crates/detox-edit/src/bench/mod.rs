//! Benchmark support: the timings `protocol_bench` and `bench` print, as functions a dependent can run on its
//! own model. Every timing synchronises the device before and after ([`timed`]), so that it measures the
//! work and not only its launch.

pub mod protocol;
pub mod runtime;

use std::time::Instant;

use detox_runtime::{CausalLm, Config};
use serde_json::Value;
use tch::Device;

use crate::error::EditError;

/// One measured figure: what it is, its value, and what it was measured on (sizes, counts) as a JSON object.
#[derive(Debug, Clone, PartialEq)]
pub struct Figure {
    /// Its name (`edit_s`, `generate_s`, ...).
    pub what: String,
    /// The value, in the unit its name says.
    pub value: f64,
    /// What it was measured on, as a JSON object (`null` when nothing).
    pub extra: Value,
}

impl Figure {
    /// A figure named `what`.
    pub fn new(what: impl Into<String>, value: f64, extra: Value) -> Self {
        Self { what: what.into(), value, extra }
    }
}

/// Everything that can stop a benchmark.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BenchError {
    /// An edit or a trainer failed.
    #[error(transparent)]
    Edit(#[from] EditError),
    /// The model failed to build or run.
    #[error(transparent)]
    Runtime(#[from] detox_runtime::Error),
    /// The locator failed.
    #[error(transparent)]
    Locate(#[from] detox_locate::LocateError),
    /// The sample records could not be read.
    #[error(transparent)]
    Data(#[from] safeedit::SafeEditError),
    /// A libtorch call of the benchmark itself failed.
    #[error("{context}: {source}")]
    Torch {
        /// What was being done.
        context: &'static str,
        /// The libtorch error.
        #[source]
        source: tch::TchError,
    },
    /// No benchmark shape has this name.
    #[error("unknown shape {name:?} (llama2-7b, smollm2, tiny)")]
    UnknownShape {
        /// The name given.
        name: String,
    },
    /// The pinned layer is not in the model.
    #[error("--layer {layer} is out of range: the model has {layers} layers")]
    LayerOutOfRange {
        /// The layer asked for.
        layer: usize,
        /// Layers of the model.
        layers: usize,
    },
    /// A generation forced to a length stopped before it.
    #[error("forced generation stopped after {produced} of {asked} tokens")]
    GenerationStopped {
        /// Tokens generated.
        produced: usize,
        /// Tokens asked for.
        asked: usize,
    },
    /// An edit without early stop took another number of steps than asked.
    #[error("the edit took {taken} of {asked} steps")]
    EditStopped {
        /// Steps taken.
        taken: usize,
        /// Steps asked for.
        asked: usize,
    },
    /// The synthetic decode prompts do not fit in the prefill prompt.
    #[error(
        "--prompt {prompt} is too short for --batch {batch}: it needs at least {needed} tokens"
    )]
    PromptTooShort {
        /// The prompt length.
        prompt: usize,
        /// The decode batch.
        batch: usize,
        /// The shortest prompt that fits.
        needed: usize,
    },
    /// The prompt is longer than the model's context.
    #[error("--prompt {prompt} exceeds the model's context of {context} tokens")]
    PromptTooLong {
        /// The prompt length.
        prompt: usize,
        /// The model's context.
        context: usize,
    },
    /// The vocabulary is too small for the synthetic prompts.
    #[error("the synthetic prompts need a vocabulary over 200 tokens, this one has {vocab}")]
    VocabularyTooSmall {
        /// The model's vocabulary size.
        vocab: i64,
    },
    /// The tokenizer names no end-of-sequence token to pad and stop with.
    #[error("the tokenizer names no end-of-sequence token")]
    NoEndOfSequence,
}

/// Result alias of the benchmarks.
pub type Result<T> = std::result::Result<T, BenchError>;

pub(crate) fn torch(context: &'static str) -> impl FnOnce(tch::TchError) -> BenchError {
    move |source| BenchError::Torch { context, source }
}

/// Runs `work` between two device synchronisations and returns its result with its wall time in seconds.
///
/// # Errors
/// What `work` returns.
pub fn timed<T, E>(
    device: Device,
    work: impl FnOnce() -> std::result::Result<T, E>,
) -> std::result::Result<(T, f64), E> {
    detox_runtime::backend::synchronize(device);
    let started = Instant::now();
    let out = work()?;
    detox_runtime::backend::synchronize(device);
    Ok((out, started.elapsed().as_secs_f64()))
}

/// The median of `values` (the upper one of an even count); `NaN` for none.
pub fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(|a, b| a.total_cmp(b));
    values.get(values.len() / 2).copied().unwrap_or(f64::NAN)
}

/// Model shapes the protocol benchmark builds with random weights.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BenchShape {
    /// Llama-2-7B: 32 layers, hidden 4096.
    Llama2_7b,
    /// SmolLM2-135M: 30 layers, hidden 576, 3 key/value heads, tied embeddings.
    Smollm2,
    /// 4 layers, hidden 128.
    Tiny,
}

impl std::str::FromStr for BenchShape {
    type Err = BenchError;

    fn from_str(name: &str) -> Result<Self> {
        match name {
            "llama2-7b" => Ok(BenchShape::Llama2_7b),
            "smollm2" => Ok(BenchShape::Smollm2),
            "tiny" => Ok(BenchShape::Tiny),
            other => Err(BenchError::UnknownShape { name: other.into() }),
        }
    }
}

impl BenchShape {
    /// The name it is chosen by.
    pub fn name(self) -> &'static str {
        match self {
            BenchShape::Llama2_7b => "llama2-7b",
            BenchShape::Smollm2 => "smollm2",
            BenchShape::Tiny => "tiny",
        }
    }

    /// The model configuration of this shape (a Llama architecture).
    ///
    /// # Errors
    /// [`BenchError::Runtime`] if the configuration is refused (it never is for these shapes).
    pub fn config(self) -> Result<Config> {
        let (vocab, hidden, inter, layers, heads, kv_heads, tied) = match self {
            BenchShape::Llama2_7b => (32000, 4096, 11008, 32, 32, 32, false),
            BenchShape::Smollm2 => (49152, 576, 1536, 30, 9, 3, true),
            BenchShape::Tiny => (1000, 128, 344, 4, 4, 4, false),
        };
        let json = serde_json::json!({
            "architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": vocab,
            "hidden_size": hidden, "intermediate_size": inter, "num_hidden_layers": layers,
            "num_attention_heads": heads, "num_key_value_heads": kv_heads, "max_position_embeddings": 4096,
            "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "tie_word_embeddings": tied,
            "bos_token_id": 1, "eos_token_id": 2
        });
        Ok(Config::from_json_str(&json.to_string(), format!("<{}>", self.name()))?)
    }
}

/// The number of parameters of `model` (a tied head counted once).
pub fn parameter_count(model: &CausalLm) -> i64 {
    model.parameter_names().iter().map(|n| model.parameter(n).map_or(0, |t| t.numel() as i64)).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes_are_named_and_medians_taken() {
        for shape in [BenchShape::Llama2_7b, BenchShape::Smollm2, BenchShape::Tiny] {
            assert_eq!(shape.name().parse::<BenchShape>().unwrap(), shape);
            assert!(shape.config().unwrap().num_hidden_layers >= 4);
        }
        assert!(matches!("gpt".parse::<BenchShape>(), Err(BenchError::UnknownShape { .. })));
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert!(median(Vec::new()).is_nan());
    }
}

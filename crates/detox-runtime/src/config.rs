//! Decoder configuration, read from a Hugging Face `config.json` with the same field names.
//!
//! The file is deserialised into a struct that mirrors what transformers writes (module `hf`), older and newer
//! versions alike: `torch_dtype` or `dtype`, `rope_theta` + `rope_scaling` (with `rope_type` or the older `type`)
//! or transformers 5's `rope_parameters`, `sliding_window` absent or `null`. Keys the runtime does not read
//! (training switches, bookkeeping, fields a newer transformers adds) are ignored. The keys it needs are checked
//! with an error naming the file and the key: missing, of the wrong type, or holding a value that would change the
//! computation in a way the runtime does not implement (another activation, a quantisation config, a RoPE variant
//! other than default, linear and llama3), which is refused rather than ignored. Keys transformers gives a default
//! take that default, per family.

mod hf;

use std::path::{Path, PathBuf};

use serde_json::Value;

use self::hf::{HfConfig, HfRope, OneOrMany, Presence};
use crate::error::{Error, Result};

/// The most decoder layers a configuration may declare.
const MAX_LAYERS: i64 = 4096;

/// The decoder families the runtime implements.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Architecture {
    /// `LlamaForCausalLM` (Llama-2, Llama-3, SmolLM2 and other Llama-shaped models).
    Llama,
    /// `MistralForCausalLM`, with optional sliding-window attention.
    Mistral,
    /// `Qwen2ForCausalLM`, with biases on the q/k/v projections.
    Qwen2,
}

impl Architecture {
    /// The Hugging Face `model_type` string.
    pub fn model_type(self) -> &'static str {
        match self {
            Architecture::Llama => "llama",
            Architecture::Mistral => "mistral",
            Architecture::Qwen2 => "qwen2",
        }
    }

    fn from_model_type(model_type: &str) -> Option<Self> {
        match model_type {
            "llama" => Some(Architecture::Llama),
            "mistral" => Some(Architecture::Mistral),
            "qwen2" => Some(Architecture::Qwen2),
            _ => None,
        }
    }

    fn from_class_name(class: &str) -> Option<Self> {
        match class {
            "LlamaForCausalLM" => Some(Architecture::Llama),
            "MistralForCausalLM" => Some(Architecture::Mistral),
            "Qwen2ForCausalLM" => Some(Architecture::Qwen2),
            _ => None,
        }
    }
}

/// How rotary position embeddings are scaled.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum RopeScaling {
    /// Plain RoPE (`rope_type: "default"` or no scaling).
    Default,
    /// Position interpolation (`rope_type: "linear"`): positions divided by `factor`.
    Linear {
        /// The interpolation factor.
        factor: f64,
    },
    /// Llama-3.1 frequency-dependent scaling (`rope_type: "llama3"`).
    Llama3 {
        /// Scale applied to low frequencies.
        factor: f64,
        /// Wavelength threshold factor below which frequencies are scaled.
        low_freq_factor: f64,
        /// Wavelength threshold factor above which frequencies are kept.
        high_freq_factor: f64,
        /// The context length used in pre-training.
        original_max_position_embeddings: f64,
    },
}

/// A decoder configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// The architecture family.
    pub architecture: Architecture,
    /// Vocabulary size (rows of the embedding and of `lm_head`).
    pub vocab_size: i64,
    /// Model width.
    pub hidden_size: i64,
    /// MLP inner width.
    pub intermediate_size: i64,
    /// Number of decoder layers.
    pub num_hidden_layers: usize,
    /// Number of query heads.
    pub num_attention_heads: i64,
    /// Number of key/value heads (grouped-query attention when smaller than `num_attention_heads`).
    pub num_key_value_heads: i64,
    /// Width of one attention head.
    pub head_dim: i64,
    /// Longest supported context.
    pub max_position_embeddings: i64,
    /// RMSNorm epsilon.
    pub rms_norm_eps: f64,
    /// RoPE base.
    pub rope_theta: f64,
    /// RoPE scaling variant.
    pub rope_scaling: RopeScaling,
    /// Whether `lm_head` shares the embedding matrix.
    pub tie_word_embeddings: bool,
    /// Whether q/k/v/o projections carry biases (Qwen2 has q/k/v biases and no o bias).
    pub attention_bias: bool,
    /// Whether the MLP projections carry biases.
    pub mlp_bias: bool,
    /// Per layer: `Some(w)` when the layer uses sliding-window attention of `w` tokens (a query sees itself and
    /// the `w - 1` tokens before it, as transformers implements it).
    pub sliding_windows: Vec<Option<i64>>,
    /// Beginning-of-sequence token id.
    pub bos_token_id: Option<i64>,
    /// End-of-sequence token ids (one or several).
    pub eos_token_ids: Vec<i64>,
    /// Padding token id, when the config names one.
    pub pad_token_id: Option<i64>,
    /// The dtype the checkpoint was saved in (`torch_dtype` / `dtype`), informational.
    pub saved_dtype: Option<String>,
}

impl Config {
    /// Reads and validates a `config.json`.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path)
            .map_err(|source| Error::Io { path: path.to_path_buf(), source })?;
        Self::from_json_str(&text, path)
    }

    /// Parses a configuration from JSON text; `origin` names it in errors.
    pub fn from_json_str(text: &str, origin: impl AsRef<Path>) -> Result<Self> {
        let origin = origin.as_ref();
        let value: Value = serde_json::from_str(text)
            .map_err(|source| Error::Json { path: origin.to_path_buf(), source })?;
        Self::from_value(&value, origin)
    }

    /// Parses a configuration from an already decoded JSON value; `origin` names it in errors.
    pub fn from_value(value: &Value, origin: &Path) -> Result<Self> {
        let raw: HfConfig = serde_path_to_error::deserialize(value).map_err(|error| {
            let field = match error.path().to_string() {
                root if root == "." => "<root>".to_string(),
                path => path,
            };
            Error::Config {
                path: origin.to_path_buf(),
                field,
                reason: error.into_inner().to_string(),
            }
        })?;
        Converter { raw: &raw, path: origin.to_path_buf() }.convert()
    }

    /// Number of query heads sharing one key/value head.
    pub fn kv_groups(&self) -> i64 {
        self.num_attention_heads / self.num_key_value_heads
    }
}

/// Turns the deserialised keys into a [`Config`], applying transformers' defaults and the runtime's limits.
struct Converter<'a> {
    raw: &'a HfConfig,
    path: PathBuf,
}

impl Converter<'_> {
    fn err(&self, field: &str, reason: impl Into<String>) -> Error {
        Error::Config { path: self.path.clone(), field: field.into(), reason: reason.into() }
    }

    fn positive(&self, key: &str, value: Option<i64>) -> Result<i64> {
        let value = value.ok_or_else(|| self.err(key, "missing"))?;
        if value <= 0 {
            return Err(self.err(key, format!("must be positive, found {value}")));
        }
        Ok(value)
    }

    fn convert(&self) -> Result<Config> {
        let raw = self.raw;
        let architecture = self.architecture()?;
        if raw.quantization_config.is_some() {
            return Err(self.err(
                "quantization_config",
                "quantised checkpoints are not supported; load a floating-point checkpoint",
            ));
        }
        // transformers maps both names to the same SiLU module.
        let act = raw.hidden_act.as_deref().unwrap_or("silu");
        if act != "silu" && act != "swish" {
            return Err(self.err("hidden_act", format!("only `silu` is supported, found `{act}`")));
        }
        if raw.rope_interleaved == Some(true) {
            return Err(self.err("rope_interleaved", "interleaved RoPE is not supported"));
        }
        let vocab_size = self.positive("vocab_size", raw.vocab_size)?;
        let hidden_size = self.positive("hidden_size", raw.hidden_size)?;
        let intermediate_size = self.positive("intermediate_size", raw.intermediate_size)?;
        let num_hidden_layers = self.positive("num_hidden_layers", raw.num_hidden_layers)?;
        // Per-layer tables are sized from this number before any weight is read; the deepest released decoders
        // have a few hundred layers.
        if num_hidden_layers > MAX_LAYERS {
            return Err(self.err(
                "num_hidden_layers",
                format!("{num_hidden_layers} layers is beyond any supported model (at most {MAX_LAYERS})"),
            ));
        }
        let num_hidden_layers = num_hidden_layers as usize;
        let num_attention_heads = self.positive("num_attention_heads", raw.num_attention_heads)?;
        let num_key_value_heads = match raw.num_key_value_heads {
            Presence::Value(kv) => kv,
            Presence::Null => num_attention_heads,
            // The constructors' defaults: Llama copies the query heads, Mistral has 8, Qwen2 32.
            Presence::Absent => match architecture {
                Architecture::Llama => num_attention_heads,
                Architecture::Mistral => 8,
                Architecture::Qwen2 => 32,
            },
        };
        if num_key_value_heads <= 0 || num_attention_heads % num_key_value_heads != 0 {
            return Err(self.err(
                "num_key_value_heads",
                format!(
                    "{num_key_value_heads} does not divide num_attention_heads = {num_attention_heads}"
                ),
            ));
        }
        let head_dim = match raw.head_dim {
            Some(d) if d > 0 => d,
            Some(d) => return Err(self.err("head_dim", format!("must be positive, found {d}"))),
            None if hidden_size % num_attention_heads == 0 => hidden_size / num_attention_heads,
            None => {
                return Err(self.err(
                    "hidden_size",
                    format!(
                        "{hidden_size} is not divisible by num_attention_heads = {num_attention_heads} \
                         and head_dim is not given"
                    ),
                ))
            }
        };
        if head_dim % 2 != 0 {
            return Err(
                self.err("head_dim", format!("RoPE needs an even head_dim, found {head_dim}"))
            );
        }
        let (rope_theta, rope_scaling) = self.rope()?;
        let attention_bias = raw.attention_bias.unwrap_or(architecture == Architecture::Qwen2);
        if architecture == Architecture::Qwen2 && !attention_bias {
            return Err(self.err("attention_bias", "Qwen2 always has q/k/v biases"));
        }
        let max_position_embeddings = match raw.max_position_embeddings {
            Some(n) => self.positive("max_position_embeddings", Some(n))?,
            None => match architecture {
                Architecture::Llama => 2048,
                Architecture::Mistral => 4096 * 32,
                Architecture::Qwen2 => 32768,
            },
        };
        let rms_norm_eps = raw.rms_norm_eps.unwrap_or(1e-6);
        if !(rms_norm_eps.is_finite() && rms_norm_eps > 0.0) {
            return Err(self.err("rms_norm_eps", format!("must be positive, found {rms_norm_eps}")));
        }
        Ok(Config {
            architecture,
            vocab_size,
            hidden_size,
            intermediate_size,
            num_hidden_layers,
            num_attention_heads,
            num_key_value_heads,
            head_dim,
            max_position_embeddings,
            rms_norm_eps,
            rope_theta,
            rope_scaling,
            tie_word_embeddings: raw.tie_word_embeddings.unwrap_or(false),
            attention_bias,
            mlp_bias: raw.mlp_bias.unwrap_or(false),
            sliding_windows: self.sliding_windows(architecture, num_hidden_layers)?,
            bos_token_id: raw.bos_token_id,
            eos_token_ids: match &raw.eos_token_id {
                None => Vec::new(),
                Some(OneOrMany::One(id)) => vec![*id],
                Some(OneOrMany::Many(ids)) => ids.clone(),
            },
            pad_token_id: raw.pad_token_id,
            saved_dtype: raw.dtype.clone().or_else(|| raw.torch_dtype.clone()),
        })
    }

    fn architecture(&self) -> Result<Architecture> {
        let model_type =
            self.raw.model_type.as_deref().ok_or_else(|| self.err("model_type", "missing"))?;
        let arch = Architecture::from_model_type(model_type).ok_or_else(|| {
            self.err(
                "model_type",
                format!(
                    "unsupported architecture `{model_type}` (supported: llama, mistral, qwen2)"
                ),
            )
        })?;
        for name in self.raw.architectures.iter().flatten() {
            if Architecture::from_class_name(name) != Some(arch) {
                return Err(self.err(
                    "architectures",
                    format!("`{name}` is not the causal-LM class of model_type `{model_type}`"),
                ));
            }
        }
        Ok(arch)
    }

    fn rope(&self) -> Result<(f64, RopeScaling)> {
        let raw = self.raw;
        if raw.partial_rotary_factor.is_some_and(|f| f != 1.0) {
            return Err(
                self.err("partial_rotary_factor", "partial rotary embeddings are not supported")
            );
        }
        // transformers 5 writes `rope_parameters` (theta inside); older files use `rope_theta` and
        // `rope_scaling`. Both spellings describe the same computation.
        let (params, field): (Option<&HfRope>, &str) =
            match (&raw.rope_parameters, &raw.rope_scaling) {
                (Some(p), _) => (Some(p), "rope_parameters"),
                (None, Some(s)) => (Some(s), "rope_scaling"),
                (None, None) => (None, "rope_scaling"),
            };
        let nested_theta = params.and_then(|p| p.rope_theta);
        if let (Some(outer), Some(inner)) = (raw.rope_theta, nested_theta) {
            if outer != inner {
                return Err(self.err(
                    &format!("{field}.rope_theta"),
                    format!("{inner} contradicts rope_theta = {outer}"),
                ));
            }
        }
        let theta = nested_theta.or(raw.rope_theta).unwrap_or(10000.0);
        if !(theta.is_finite() && theta > 0.0) {
            return Err(self.err("rope_theta", format!("must be positive, found {theta}")));
        }
        let Some(params) = params else { return Ok((theta, RopeScaling::Default)) };
        if params.full_attention.is_some() || params.sliding_attention.is_some() {
            return Err(self.err(field, "RoPE parameters per layer type are not supported"));
        }
        if params.partial_rotary_factor.is_some_and(|f| f != 1.0) {
            return Err(self.err(
                &format!("{field}.partial_rotary_factor"),
                "partial rotary embeddings are not supported",
            ));
        }
        let (kind, kind_key) = match (&params.rope_type, &params.legacy_type) {
            (Some(kind), _) => (kind.as_str(), "rope_type"),
            (None, Some(kind)) => (kind.as_str(), "type"),
            (None, None) => ("default", "rope_type"),
        };
        let num = |key: &str, value: Option<f64>| -> Result<f64> {
            let value = value.ok_or_else(|| {
                self.err(&format!("{field}.{key}"), format!("missing (needed by `{kind}` RoPE)"))
            })?;
            if !(value.is_finite() && value > 0.0) {
                return Err(
                    self.err(&format!("{field}.{key}"), format!("must be positive, found {value}"))
                );
            }
            Ok(value)
        };
        let scaling = match kind {
            "default" => RopeScaling::Default,
            "linear" => RopeScaling::Linear { factor: num("factor", params.factor)? },
            "llama3" => RopeScaling::Llama3 {
                factor: num("factor", params.factor)?,
                low_freq_factor: num("low_freq_factor", params.low_freq_factor)?,
                high_freq_factor: num("high_freq_factor", params.high_freq_factor)?,
                original_max_position_embeddings: num(
                    "original_max_position_embeddings",
                    params.original_max_position_embeddings,
                )?,
            },
            other => {
                return Err(self.err(
                    &format!("{field}.{kind_key}"),
                    format!("unsupported RoPE type `{other}` (supported: default, linear, llama3)"),
                ))
            }
        };
        Ok((theta, scaling))
    }

    fn sliding_windows(&self, arch: Architecture, layers: usize) -> Result<Vec<Option<i64>>> {
        let raw = self.raw;
        // The Mistral and Qwen2 constructors default an absent window to 4096 tokens; `null` disables it.
        let window = match raw.sliding_window {
            Presence::Value(w) if w > 0 => Some(w),
            Presence::Value(w) => {
                return Err(self.err("sliding_window", format!("must be positive, found {w}")))
            }
            Presence::Null => None,
            Presence::Absent => match arch {
                Architecture::Llama => None,
                Architecture::Mistral | Architecture::Qwen2 => Some(4096),
            },
        };
        if let Some(types) = &raw.layer_types {
            if types.len() != layers {
                return Err(self.err(
                    "layer_types",
                    format!("expected {layers} entries (num_hidden_layers), found {}", types.len()),
                ));
            }
            return types
                .iter()
                .map(|t| match t.as_str() {
                    "full_attention" => Ok(None),
                    "sliding_attention" => window.map(Some).ok_or_else(|| {
                        self.err(
                            "sliding_window",
                            "missing, but layer_types uses sliding attention",
                        )
                    }),
                    other => {
                        Err(self.err("layer_types", format!("unsupported layer type `{other}`")))
                    }
                })
                .collect();
        }
        Ok(match arch {
            Architecture::Llama => {
                if window.is_some() {
                    return Err(self.err("sliding_window", "Llama models have no sliding window"));
                }
                vec![None; layers]
            }
            Architecture::Mistral => vec![window; layers],
            Architecture::Qwen2 => {
                let used = raw.use_sliding_window.unwrap_or(false);
                let from = match raw.max_window_layers {
                    Some(n) if n < 0 => {
                        return Err(self
                            .err("max_window_layers", format!("must not be negative, found {n}")))
                    }
                    Some(n) => n as usize,
                    None => 28,
                };
                (0..layers).map(|i| if used && i >= from { window } else { None }).collect()
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> Result<Config> {
        Config::from_json_str(json, "config.json")
    }

    const LLAMA: &str = r#"{"model_type":"llama","architectures":["LlamaForCausalLM"],"vocab_size":100,
        "hidden_size":32,"intermediate_size":64,"num_hidden_layers":2,"num_attention_heads":4,
        "num_key_value_heads":2,"rms_norm_eps":1e-5,"rope_theta":500000.0,"eos_token_id":[1,2],
        "rope_scaling":{"rope_type":"llama3","factor":8.0,"low_freq_factor":1.0,"high_freq_factor":4.0,
        "original_max_position_embeddings":8192},"initializer_range":0.02}"#;

    #[test]
    fn reads_llama3_fields() {
        let c = parse(LLAMA).unwrap();
        assert_eq!(c.architecture, Architecture::Llama);
        assert_eq!(c.head_dim, 8);
        assert_eq!(c.kv_groups(), 2);
        assert_eq!(c.rope_theta, 500000.0);
        assert_eq!(c.eos_token_ids, vec![1, 2]);
        assert!(matches!(c.rope_scaling, RopeScaling::Llama3 { factor, .. } if factor == 8.0));
    }

    /// Found by fuzzing: a config claiming millions of layers sized per-layer tables before anything refused it.
    #[test]
    fn a_config_claiming_millions_of_layers_is_refused_by_field() {
        let json = LLAMA.replace(r#""num_hidden_layers":2"#, r#""num_hidden_layers":3794100"#);
        let err = parse(&json).unwrap_err().to_string();
        assert!(err.contains("num_hidden_layers") && err.contains("3794100 layers"), "{err}");
    }

    #[test]
    fn reads_transformers5_rope_parameters() {
        let c = parse(
            r#"{"model_type":"llama","vocab_size":10,"hidden_size":8,"intermediate_size":8,
            "num_hidden_layers":1,"num_attention_heads":2,"rope_parameters":{"rope_theta":1234.0,"rope_type":"default"}}"#,
        )
        .unwrap();
        assert_eq!(c.rope_theta, 1234.0);
        assert_eq!(c.rope_scaling, RopeScaling::Default);
    }

    #[test]
    fn ignores_unknown_keys_and_refuses_unsupported_values() {
        let unknown = LLAMA.replace("\"initializer_range\"", "\"some_new_switch\"");
        assert_eq!(parse(&unknown).unwrap(), parse(LLAMA).unwrap());
        let cases = [
            (LLAMA.replace("\"initializer_range\":0.02", "\"hidden_act\":\"gelu\""), "hidden_act"),
            (LLAMA.replace("\"llama3\"", "\"yarn\""), "rope_scaling.rope_type"),
            (LLAMA.replace("\"model_type\":\"llama\"", "\"model_type\":\"gpt2\""), "model_type"),
            (LLAMA.replace("\"hidden_size\":32,", ""), "hidden_size"),
            (LLAMA.replace("\"hidden_size\":32", "\"hidden_size\":\"32\""), "hidden_size"),
            (LLAMA.replace("\"hidden_size\":32", "\"hidden_size\":30"), "hidden_size"),
            (LLAMA.replace("\"vocab_size\":100", "\"vocab_size\":0"), "vocab_size"),
            (
                LLAMA.replace("\"num_key_value_heads\":2", "\"num_key_value_heads\":3"),
                "num_key_value_heads",
            ),
            (LLAMA.replace("\"low_freq_factor\":1.0,", ""), "rope_scaling.low_freq_factor"),
            (LLAMA.replace("\"eos_token_id\":[1,2]", "\"eos_token_id\":[1,\"x\"]"), "eos_token_id"),
            (
                LLAMA.replace("\"initializer_range\":0.02", "\"quantization_config\":{\"bits\":4}"),
                "quantization_config",
            ),
            (
                LLAMA.replace("\"initializer_range\":0.02", "\"sliding_window\":16"),
                "sliding_window",
            ),
        ];
        for (json, key) in cases {
            let err = parse(&json).unwrap_err().to_string();
            assert!(
                err.contains("config.json") && err.contains(&format!("`{key}")),
                "{key}: {err}"
            );
        }
        let not_object = parse("\"llama\"").unwrap_err().to_string();
        assert!(not_object.contains("<root>"), "{not_object}");
    }

    #[test]
    fn windows_per_family() {
        let mistral = r#"{"model_type":"mistral","vocab_size":10,"hidden_size":8,"intermediate_size":8,
            "num_hidden_layers":2,"num_attention_heads":2,"num_key_value_heads":2,"sliding_window":4}"#;
        assert_eq!(parse(mistral).unwrap().sliding_windows, vec![Some(4), Some(4)]);
        let qwen = r#"{"model_type":"qwen2","vocab_size":10,"hidden_size":8,"intermediate_size":8,
            "num_hidden_layers":3,"num_attention_heads":2,"num_key_value_heads":1,"sliding_window":4,"use_sliding_window":true,
            "max_window_layers":1}"#;
        let c = parse(qwen).unwrap();
        assert_eq!(c.sliding_windows, vec![None, Some(4), Some(4)]);
        assert!(c.attention_bias);
    }
}

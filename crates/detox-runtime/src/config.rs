//! Decoder configuration, read from a Hugging Face `config.json` with the same field names.
//!
//! The file is deserialised into a struct that mirrors what transformers writes (module `hf`), older and newer
//! versions alike: `torch_dtype` or `dtype`, `rope_theta` + `rope_scaling` (with `rope_type` or the older `type`)
//! or transformers 5's `rope_parameters` (nested per layer type for Gemma-3), `sliding_window` absent or `null`,
//! `layer_types` or the older per-family window rules, and a multimodal Gemma-3's nested `text_config`. Keys the
//! runtime does not read (training switches, bookkeeping, fields a newer transformers adds) are ignored. The keys
//! it needs are checked with an error naming the file and the key: missing, of the wrong type, or holding a value
//! that would change the computation in a way the runtime does not implement (another activation, a quantisation
//! config, a RoPE variant other than default, linear, llama3 and longrope, a mixture of experts), which is refused
//! rather than ignored. Keys transformers gives a default take that default, per family; what separates the
//! families becomes the decoder options of [`Config`] (norm kind and placement, q/k norms, soft-capping, ...).

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
    /// `Qwen3ForCausalLM` (dense): RMSNorm over each query and key head.
    Qwen3,
    /// `Gemma2ForCausalLM`: norms before and after each block, soft-capped attention and logits, sliding windows
    /// on alternating layers.
    Gemma2,
    /// Gemma-3's language model (`Gemma3ForCausalLM`, or the text half of `Gemma3ForConditionalGeneration`):
    /// Gemma-2's blocks with q/k norms and separate RoPE bases for local and global layers.
    Gemma3,
    /// `Phi3ForCausalLM` (Phi-3, Phi-3.5, Phi-4-mini): fused q/k/v and gate/up projections, partial rotary
    /// embeddings, LongRoPE.
    Phi3,
    /// `Olmo2ForCausalLM`: norms after attention and MLP, q/k norms over the whole projection.
    Olmo2,
}

/// The `model_type`s the runtime implements, as error messages list them.
pub const SUPPORTED_MODEL_TYPES: &str =
    "llama, mistral, qwen2, qwen3, gemma2, gemma3, gemma3_text, phi3, olmo2";

impl Architecture {
    /// The Hugging Face `model_type` string.
    pub fn model_type(self) -> &'static str {
        match self {
            Architecture::Llama => "llama",
            Architecture::Mistral => "mistral",
            Architecture::Qwen2 => "qwen2",
            Architecture::Qwen3 => "qwen3",
            Architecture::Gemma2 => "gemma2",
            Architecture::Gemma3 => "gemma3_text",
            Architecture::Phi3 => "phi3",
            Architecture::Olmo2 => "olmo2",
        }
    }

    fn from_model_type(model_type: &str) -> Option<Self> {
        match model_type {
            "llama" => Some(Architecture::Llama),
            "mistral" => Some(Architecture::Mistral),
            "qwen2" => Some(Architecture::Qwen2),
            "qwen3" => Some(Architecture::Qwen3),
            "gemma2" => Some(Architecture::Gemma2),
            "gemma3_text" => Some(Architecture::Gemma3),
            "phi3" => Some(Architecture::Phi3),
            "olmo2" => Some(Architecture::Olmo2),
            _ => None,
        }
    }

    fn from_class_name(class: &str) -> Option<Self> {
        match class {
            "LlamaForCausalLM" => Some(Architecture::Llama),
            "MistralForCausalLM" => Some(Architecture::Mistral),
            "Qwen2ForCausalLM" => Some(Architecture::Qwen2),
            "Qwen3ForCausalLM" => Some(Architecture::Qwen3),
            "Gemma2ForCausalLM" => Some(Architecture::Gemma2),
            "Gemma3ForCausalLM" | "Gemma3ForConditionalGeneration" => Some(Architecture::Gemma3),
            "Phi3ForCausalLM" => Some(Architecture::Phi3),
            "Olmo2ForCausalLM" => Some(Architecture::Olmo2),
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
    /// Phi-3's LongRoPE (`rope_type: "longrope"`, formerly `"su"`): per-frequency factors, the short ones while
    /// a pass's positions stay within the pre-training context, the long ones beyond it, and a scale on the
    /// rotary tables.
    LongRope {
        /// Factors dividing the inverse frequencies up to `original_max_position_embeddings` positions.
        short_factor: Vec<f64>,
        /// Factors dividing the inverse frequencies beyond it.
        long_factor: Vec<f64>,
        /// The context length used in pre-training.
        original_max_position_embeddings: i64,
        /// The factor on the cosine and sine tables.
        attention_factor: f64,
    },
}

/// How an RMSNorm applies its weight to the normalised input (statistics are always taken in fp32).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum NormKind {
    /// Llama, Mistral, Qwen, Phi-3: cast the normalised input to the model dtype, then multiply by the weight.
    CastThenScale,
    /// OLMo-2: multiply by the weight in fp32, then cast.
    ScaleThenCast,
    /// Gemma: multiply by `1 + weight` in fp32, then cast.
    OffsetScaleThenCast,
}

/// Where a decoder layer's norms sit around its attention and MLP blocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum NormPlacement {
    /// A norm before each block (`input_layernorm`, `post_attention_layernorm`).
    Pre,
    /// Gemma: a norm before and after each block (`input_layernorm`, `post_attention_layernorm`,
    /// `pre_feedforward_layernorm`, `post_feedforward_layernorm`), the residual added after the second.
    Sandwich,
    /// OLMo-2: a norm after each block only (`post_attention_layernorm`, `post_feedforward_layernorm`).
    Post,
}

/// Normalisation of the queries and keys before RoPE.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum QkNorm {
    /// None.
    None,
    /// Qwen3, Gemma-3: one `[head_dim]` RMSNorm applied to every head (`self_attn.q_norm`, `self_attn.k_norm`).
    PerHead,
    /// OLMo-2: one RMSNorm over the whole projection (`[heads · head_dim]`).
    Whole,
}

/// The MLP's gate activation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Activation {
    /// `silu` (also spelled `swish`).
    Silu,
    /// `gelu_pytorch_tanh`: GELU with the tanh approximation.
    GeluTanh,
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
    /// How the norms apply their weights.
    pub norm_kind: NormKind,
    /// Where the norms sit in a layer.
    pub norm_placement: NormPlacement,
    /// Query/key normalisation.
    pub qk_norm: QkNorm,
    /// The MLP activation (`hidden_act`, Gemma's `hidden_activation`).
    pub hidden_act: Activation,
    /// Whether the embeddings are multiplied by `sqrt(hidden_size)` (Gemma), the factor rounded to the model dtype.
    pub scale_embeddings: bool,
    /// Gemma's attention scale is `query_pre_attn_scalar ** -0.5` instead of `head_dim ** -0.5`.
    pub query_pre_attn_scalar: Option<f64>,
    /// Gemma-2: attention scores become `cap · tanh(scores / cap)` before masking.
    pub attn_logit_softcapping: Option<f64>,
    /// Gemma-2: logits become `cap · tanh(logits / cap)`.
    pub final_logit_softcapping: Option<f64>,
    /// Phi-3: q/k/v live in one `self_attn.qkv_proj` and gate/up in one `mlp.gate_up_proj` (gate rows first).
    pub fused_projections: bool,
    /// The fraction of each head RoPE rotates (its first `head_dim · factor` dimensions).
    pub partial_rotary_factor: f64,
    /// Gemma-3: the RoPE base of sliding-window layers (plain RoPE), when it differs from `rope_theta`'s layers.
    pub local_rope_theta: Option<f64>,
    /// The configuration is the `text_config` of a multimodal `Gemma3ForConditionalGeneration` checkpoint: the
    /// language model's weights carry its prefix and the vision tower is ignored.
    pub nested_text_model: bool,
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
        let nested = nested_text_config(value, origin)?;
        let (value, prefix) = match &nested {
            Some(text) => (text, "text_config."),
            None => (value, ""),
        };
        let raw: HfConfig = serde_path_to_error::deserialize(value).map_err(|error| {
            let field = match error.path().to_string() {
                root if root == "." => "<root>".to_string(),
                path => format!("{prefix}{path}"),
            };
            Error::Config {
                path: origin.to_path_buf(),
                field,
                reason: error.into_inner().to_string(),
            }
        })?;
        let mut config = Converter { raw: &raw, path: origin.to_path_buf() }.convert()?;
        config.nested_text_model = nested.is_some();
        Ok(config)
    }

    /// Number of query heads sharing one key/value head.
    pub fn kv_groups(&self) -> i64 {
        self.num_attention_heads / self.num_key_value_heads
    }

    /// The number of leading dimensions of each head RoPE rotates.
    pub fn rotary_dim(&self) -> i64 {
        (self.head_dim as f64 * self.partial_rotary_factor) as i64
    }
}

/// The keys of a multimodal Gemma-3 checkpoint's language model: its `text_config`, read as a `gemma3_text`
/// configuration, with the token ids, dtype and class names the outer configuration holds when the inner one
/// lacks them. `None` for any other configuration.
fn nested_text_config(value: &Value, origin: &Path) -> Result<Option<Value>> {
    if value.get("model_type").and_then(Value::as_str) != Some("gemma3") {
        return Ok(None);
    }
    let err = |reason: &str| Error::Config {
        path: origin.to_path_buf(),
        field: "text_config".into(),
        reason: reason.into(),
    };
    let mut text = match value.get("text_config") {
        Some(Value::Object(text)) => text.clone(),
        Some(_) => return Err(err("must be an object")),
        None => return Err(err("missing (a `gemma3` checkpoint keeps its language model there)")),
    };
    text.insert("model_type".into(), Value::from("gemma3_text"));
    for key in
        ["architectures", "bos_token_id", "eos_token_id", "pad_token_id", "torch_dtype", "dtype"]
    {
        if let Some(outer) = value.get(key) {
            text.entry(key).or_insert_with(|| outer.clone());
        }
    }
    if let Some(q) = value.get("quantization_config") {
        text.insert("quantization_config".into(), q.clone());
    }
    Ok(Some(Value::Object(text)))
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
        let hidden_act = self.activation(architecture)?;
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
            // The constructors' defaults: Llama, Phi-3 and OLMo-2 copy the query heads, Mistral has 8,
            // Qwen2 and Qwen3 32, Gemma 4.
            Presence::Absent => match architecture {
                Architecture::Mistral => 8,
                Architecture::Qwen2 | Architecture::Qwen3 => 32,
                Architecture::Gemma2 | Architecture::Gemma3 => 4,
                _ => num_attention_heads,
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
            // Qwen3 and Gemma give the head width its own default instead of deriving it.
            None if architecture == Architecture::Qwen3 => 128,
            None if matches!(architecture, Architecture::Gemma2 | Architecture::Gemma3) => 256,
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
        let partial_rotary_factor = self.partial_rotary_factor(architecture)?;
        let rotary_dim = (head_dim as f64 * partial_rotary_factor) as i64;
        if rotary_dim <= 0 || rotary_dim % 2 != 0 {
            return Err(self.err(
                "partial_rotary_factor",
                format!("rotates {rotary_dim} of {head_dim} dimensions; RoPE needs a positive even count"),
            ));
        }
        let gemma = matches!(architecture, Architecture::Gemma2 | Architecture::Gemma3);
        if raw.use_bidirectional_attention == Some(true) {
            return Err(self.err(
                "use_bidirectional_attention",
                "bidirectional attention (an encoder use of Gemma) is not supported",
            ));
        }
        let attention_bias = raw.attention_bias.unwrap_or(architecture == Architecture::Qwen2);
        if architecture == Architecture::Qwen2 && !attention_bias {
            return Err(self.err("attention_bias", "Qwen2 always has q/k/v biases"));
        }
        let max_position_embeddings = match raw.max_position_embeddings {
            Some(n) => self.positive("max_position_embeddings", Some(n))?,
            None => match architecture {
                Architecture::Llama => 2048,
                Architecture::Mistral => 4096 * 32,
                Architecture::Qwen2 | Architecture::Qwen3 => 32768,
                Architecture::Gemma2 => 8192,
                Architecture::Gemma3 => 131072,
                Architecture::Phi3 => 4096,
                Architecture::Olmo2 => 2048,
            },
        };
        let (rope_theta, rope_scaling, local_rope_theta) =
            self.rope(architecture, rotary_dim, max_position_embeddings)?;
        let rms_norm_eps = raw.rms_norm_eps.unwrap_or(match architecture {
            Architecture::Phi3 | Architecture::Olmo2 => 1e-5,
            _ => 1e-6,
        });
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
            tie_word_embeddings: raw.tie_word_embeddings.unwrap_or(gemma),
            attention_bias,
            mlp_bias: raw.mlp_bias.unwrap_or(false),
            sliding_windows: self.sliding_windows(architecture, num_hidden_layers)?,
            // A multimodal checkpoint's `text_config` omits what equals Gemma's defaults (BOS 2, EOS 1, PAD 0).
            bos_token_id: raw.bos_token_id.or(gemma.then_some(2)),
            eos_token_ids: match &raw.eos_token_id {
                None if gemma => vec![1],
                None => Vec::new(),
                Some(OneOrMany::One(id)) => vec![*id],
                Some(OneOrMany::Many(ids)) => ids.clone(),
            },
            pad_token_id: raw.pad_token_id.or(gemma.then_some(0)),
            saved_dtype: raw.dtype.clone().or_else(|| raw.torch_dtype.clone()),
            norm_kind: match architecture {
                Architecture::Gemma2 | Architecture::Gemma3 => NormKind::OffsetScaleThenCast,
                Architecture::Olmo2 => NormKind::ScaleThenCast,
                _ => NormKind::CastThenScale,
            },
            norm_placement: match architecture {
                Architecture::Gemma2 | Architecture::Gemma3 => NormPlacement::Sandwich,
                Architecture::Olmo2 => NormPlacement::Post,
                _ => NormPlacement::Pre,
            },
            qk_norm: match architecture {
                Architecture::Qwen3 | Architecture::Gemma3 => QkNorm::PerHead,
                Architecture::Olmo2 => QkNorm::Whole,
                _ => QkNorm::None,
            },
            hidden_act,
            scale_embeddings: gemma,
            query_pre_attn_scalar: match gemma {
                true => Some(self.positive_f64(
                    "query_pre_attn_scalar",
                    raw.query_pre_attn_scalar,
                    256.0,
                )?),
                false => None,
            },
            attn_logit_softcapping: self.softcap(
                "attn_logit_softcapping",
                raw.attn_logit_softcapping,
                (architecture == Architecture::Gemma2).then_some(50.0),
                gemma,
            )?,
            final_logit_softcapping: self.softcap(
                "final_logit_softcapping",
                raw.final_logit_softcapping,
                (architecture == Architecture::Gemma2).then_some(30.0),
                gemma,
            )?,
            fused_projections: architecture == Architecture::Phi3,
            partial_rotary_factor,
            local_rope_theta,
            nested_text_model: false,
        })
    }

    fn positive_f64(&self, key: &str, value: Option<f64>, default: f64) -> Result<f64> {
        let value = value.unwrap_or(default);
        if !(value.is_finite() && value > 0.0) {
            return Err(self.err(key, format!("must be positive, found {value}")));
        }
        Ok(value)
    }

    /// A soft-capping value: the family's default when absent, none when `null`; refused outside Gemma.
    fn softcap(
        &self,
        key: &str,
        value: Presence<f64>,
        default: Option<f64>,
        gemma: bool,
    ) -> Result<Option<f64>> {
        let cap = match value {
            Presence::Absent => default,
            Presence::Null => None,
            Presence::Value(v) => Some(v),
        };
        match cap {
            Some(_) if !gemma => {
                Err(self.err(key, "soft-capping is only implemented for Gemma models"))
            }
            Some(v) if !(v.is_finite() && v > 0.0) => {
                Err(self.err(key, format!("must be positive, found {v}")))
            }
            cap => Ok(cap),
        }
    }

    fn activation(&self, arch: Architecture) -> Result<Activation> {
        let gemma = matches!(arch, Architecture::Gemma2 | Architecture::Gemma3);
        // Gemma reads `hidden_activation`; the other families `hidden_act`.
        let (key, act) = match (gemma, &self.raw.hidden_activation) {
            (true, Some(act)) => ("hidden_activation", act.as_str()),
            (true, None) => ("hidden_activation", "gelu_pytorch_tanh"),
            (false, _) => ("hidden_act", self.raw.hidden_act.as_deref().unwrap_or("silu")),
        };
        match act {
            // transformers maps both names to the same SiLU module.
            "silu" | "swish" => Ok(Activation::Silu),
            "gelu_pytorch_tanh" => Ok(Activation::GeluTanh),
            other => Err(self.err(
                key,
                format!("only `silu` and `gelu_pytorch_tanh` are supported, found `{other}`"),
            )),
        }
    }

    fn partial_rotary_factor(&self, arch: Architecture) -> Result<f64> {
        let nested = [&self.raw.rope_parameters, &self.raw.rope_scaling]
            .into_iter()
            .flatten()
            .find_map(|p| p.partial_rotary_factor);
        let factor = nested.or(self.raw.partial_rotary_factor).unwrap_or(1.0);
        if factor == 1.0 {
            return Ok(factor);
        }
        // Only Phi-3's attention passes the unrotated dimensions through; elsewhere transformers would fail.
        if arch != Architecture::Phi3 {
            return Err(self.err(
                "partial_rotary_factor",
                "partial rotary embeddings are only supported for phi3",
            ));
        }
        if !(factor > 0.0 && factor <= 1.0) {
            return Err(
                self.err("partial_rotary_factor", format!("must be in (0, 1], found {factor}"))
            );
        }
        Ok(factor)
    }

    fn architecture(&self) -> Result<Architecture> {
        let model_type =
            self.raw.model_type.as_deref().ok_or_else(|| self.err("model_type", "missing"))?;
        let experts = self.raw.num_local_experts.is_some() || self.raw.num_experts.is_some();
        if experts || is_mixture_of_experts(model_type) {
            return Err(self.err(
                "model_type",
                format!(
                    "`{model_type}` is a mixture-of-experts model, which is not supported: DINM edits one \
                     dense `mlp.down_proj` per layer, and its layers route through several experts instead \
                     (supported: {SUPPORTED_MODEL_TYPES})"
                ),
            ));
        }
        let arch = Architecture::from_model_type(model_type).ok_or_else(|| {
            self.err(
                "model_type",
                format!(
                    "unsupported architecture `{model_type}`: the runtime implements dense decoders of the \
                     supported families only (supported: {SUPPORTED_MODEL_TYPES})"
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

    /// The RoPE base and scaling of full-attention layers, and Gemma-3's base of sliding-window layers.
    fn rope(
        &self,
        arch: Architecture,
        rotary_dim: i64,
        max_positions: i64,
    ) -> Result<(f64, RopeScaling, Option<f64>)> {
        let raw = self.raw;
        // transformers 5 writes `rope_parameters` (theta inside); older files use `rope_theta` and
        // `rope_scaling`. Both spellings describe the same computation.
        let (params, field): (Option<&HfRope>, &str) =
            match (&raw.rope_parameters, &raw.rope_scaling) {
                (Some(p), _) => (Some(p), "rope_parameters"),
                (None, Some(s)) => (Some(s), "rope_scaling"),
                (None, None) => (None, "rope_scaling"),
            };
        let default_theta = if arch == Architecture::Gemma3 { 1e6 } else { 10000.0 };
        let per_type =
            params.filter(|p| p.full_attention.is_some() || p.sliding_attention.is_some());
        let Some(per_type) = per_type else {
            let (theta, scaling) = self.rope_of(
                params,
                field,
                raw.rope_theta,
                default_theta,
                rotary_dim,
                max_positions,
            )?;
            let local = match arch {
                Architecture::Gemma3 => Some(self.positive_f64(
                    "rope_local_base_freq",
                    raw.rope_local_base_freq,
                    10000.0,
                )?),
                _ => None,
            };
            return Ok((theta, scaling, local));
        };
        if arch != Architecture::Gemma3 {
            return Err(
                self.err(field, "RoPE parameters per layer type are only supported for Gemma-3")
            );
        }
        let full_field = format!("{field}.full_attention");
        let (theta, scaling) = self.rope_of(
            per_type.full_attention.as_deref(),
            &full_field,
            None,
            default_theta,
            rotary_dim,
            max_positions,
        )?;
        let local_field = format!("{field}.sliding_attention");
        let (local, local_scaling) = self.rope_of(
            per_type.sliding_attention.as_deref(),
            &local_field,
            raw.rope_local_base_freq,
            10000.0,
            rotary_dim,
            max_positions,
        )?;
        if local_scaling != RopeScaling::Default {
            return Err(
                self.err(&local_field, "only plain RoPE is supported on sliding-window layers")
            );
        }
        Ok((theta, scaling, Some(local)))
    }

    /// One set of RoPE parameters (`field` names it in errors); `outer_theta` is a base given beside it.
    fn rope_of(
        &self,
        params: Option<&HfRope>,
        field: &str,
        outer_theta: Option<f64>,
        default_theta: f64,
        rotary_dim: i64,
        max_positions: i64,
    ) -> Result<(f64, RopeScaling)> {
        let nested_theta = params.and_then(|p| p.rope_theta);
        if let (Some(outer), Some(inner)) = (outer_theta, nested_theta) {
            if outer != inner {
                return Err(self.err(
                    &format!("{field}.rope_theta"),
                    format!("{inner} contradicts rope_theta = {outer}"),
                ));
            }
        }
        let theta = nested_theta.or(outer_theta).unwrap_or(default_theta);
        if !(theta.is_finite() && theta > 0.0) {
            return Err(self.err("rope_theta", format!("must be positive, found {theta}")));
        }
        let Some(params) = params else { return Ok((theta, RopeScaling::Default)) };
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
            // Phi-3 checkpoints written before transformers 4.43 call LongRoPE `su`.
            "longrope" | "su" => {
                self.long_rope(params, field, rotary_dim, max_positions, &num)?
            }
            other => {
                return Err(self.err(
                    &format!("{field}.{kind_key}"),
                    format!(
                        "unsupported RoPE type `{other}` (supported: default, linear, llama3, longrope)"
                    ),
                ))
            }
        };
        Ok((theta, scaling))
    }

    /// LongRoPE as transformers' `_compute_longrope_parameters` reads it.
    fn long_rope(
        &self,
        params: &HfRope,
        field: &str,
        rotary_dim: i64,
        max_positions: i64,
        num: &dyn Fn(&str, Option<f64>) -> Result<f64>,
    ) -> Result<RopeScaling> {
        let factors = |key: &str, value: &Option<Vec<f64>>| -> Result<Vec<f64>> {
            let key = format!("{field}.{key}");
            let value =
                value.clone().ok_or_else(|| self.err(&key, "missing (needed by LongRoPE)"))?;
            if value.len() as i64 != rotary_dim / 2 {
                return Err(self.err(
                    &key,
                    format!(
                        "needs {} entries (half the rotary dimensions), found {}",
                        rotary_dim / 2,
                        value.len()
                    ),
                ));
            }
            if value.iter().any(|f| !(f.is_finite() && *f > 0.0)) {
                return Err(self.err(&key, "every factor must be positive"));
            }
            Ok(value)
        };
        let short_factor = factors("short_factor", &params.short_factor)?;
        let long_factor = factors("long_factor", &params.long_factor)?;
        // transformers < 5 keep the pre-training context beside `rope_scaling`, transformers 5 inside.
        let original = match params.original_max_position_embeddings {
            Some(n) => num("original_max_position_embeddings", Some(n))?,
            None => self.positive(
                "original_max_position_embeddings",
                self.raw.original_max_position_embeddings,
            )? as f64,
        };
        let factor = match params.factor {
            Some(f) => num("factor", Some(f))?,
            None => max_positions as f64 / original,
        };
        let attention_factor = match params.attention_factor {
            Some(a) => num("attention_factor", Some(a))?,
            None if factor <= 1.0 => 1.0,
            None => (1.0 + factor.ln() / original.ln()).sqrt(),
        };
        Ok(RopeScaling::LongRope {
            short_factor,
            long_factor,
            original_max_position_embeddings: original as i64,
            attention_factor,
        })
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
                Architecture::Llama | Architecture::Phi3 | Architecture::Olmo2 => None,
                _ => Some(4096),
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
            Architecture::Llama | Architecture::Olmo2 => {
                if window.is_some() {
                    return Err(self.err(
                        "sliding_window",
                        format!("{} models have no sliding window", arch.model_type()),
                    ));
                }
                vec![None; layers]
            }
            Architecture::Mistral | Architecture::Phi3 => vec![window; layers],
            // Gemma-2 alternates, starting with a sliding layer; Gemma-3 makes every `pattern`-th layer global.
            Architecture::Gemma2 | Architecture::Gemma3 => {
                let pattern = match (arch, raw.sliding_window_pattern) {
                    (Architecture::Gemma2, _) => 2,
                    (_, Some(p)) if p > 0 => p as usize,
                    (_, Some(p)) => {
                        return Err(self
                            .err("sliding_window_pattern", format!("must be positive, found {p}")))
                    }
                    (_, None) => 6,
                };
                (0..layers).map(|i| if (i + 1) % pattern != 0 { window } else { None }).collect()
            }
            Architecture::Qwen2 | Architecture::Qwen3 => {
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

/// Mixture-of-experts `model_type`s, refused by name even when the file lacks the expert counts.
fn is_mixture_of_experts(model_type: &str) -> bool {
    model_type.contains("moe")
        || matches!(
            model_type,
            "mixtral"
                | "dbrx"
                | "jamba"
                | "arctic"
                | "deepseek_v2"
                | "deepseek_v3"
                | "granitemoe"
                | "gpt_oss"
        )
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

    const PHI3: &str = r#"{"model_type":"phi3","vocab_size":10,"hidden_size":32,"intermediate_size":8,
        "num_hidden_layers":1,"num_attention_heads":4,"max_position_embeddings":64,"partial_rotary_factor":0.5,
        "original_max_position_embeddings":8,"rope_scaling":{"type":"su","short_factor":[1.0,1.0],
        "long_factor":[2.0,2.0]}}"#;

    #[test]
    fn new_family_options_are_refused_where_they_do_not_apply() {
        let phi3 = parse(PHI3).unwrap();
        assert_eq!((phi3.rotary_dim(), phi3.fused_projections), (4, true));
        let cases = [
            (
                LLAMA.replace("\"initializer_range\":0.02", "\"partial_rotary_factor\":0.5"),
                "partial_rotary_factor",
            ),
            (
                LLAMA.replace("\"initializer_range\":0.02", "\"final_logit_softcapping\":30.0"),
                "final_logit_softcapping",
            ),
            (PHI3.replace("[2.0,2.0]", "[2.0]"), "rope_scaling.long_factor"),
            (
                PHI3.replace("\"original_max_position_embeddings\":8,", ""),
                "original_max_position_embeddings",
            ),
            (LLAMA.replace("\"model_type\":\"llama\"", "\"model_type\":\"gemma3\""), "text_config"),
            (
                LLAMA.replace("\"model_type\":\"llama\"", "\"model_type\":\"qwen2_moe\""),
                "model_type",
            ),
            (LLAMA.replace("\"initializer_range\":0.02", "\"num_local_experts\":8"), "model_type"),
        ];
        for (json, key) in cases {
            let err = parse(&json).map(|_| ()).expect_err(key).to_string();
            assert!(err.contains(&format!("`{key}`")), "{key}: {err}");
        }
        let gemma3 = r#"{"model_type":"gemma3_text","vocab_size":10,"hidden_size":8,"intermediate_size":8,
            "num_hidden_layers":2,"num_attention_heads":2,"num_key_value_heads":1,
            "rope_parameters":{"full_attention":{"rope_type":"default",
            "rope_theta":100.0},"sliding_attention":{"rope_type":"linear","factor":2.0,"rope_theta":10.0}}}"#;
        let err = parse(gemma3).unwrap_err().to_string();
        assert!(err.contains("`rope_parameters.sliding_attention`"), "{err}");
        let per_type_llama = gemma3.replace("gemma3_text", "llama");
        assert!(parse(&per_type_llama).unwrap_err().to_string().contains("`rope_parameters`"));
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

//! `config.json` exactly as transformers writes it: one field per key it may hold, with the Hugging Face names.
//!
//! Deserialising ignores keys it does not list (training switches, bookkeeping, keys a newer transformers adds),
//! so loading does not break when transformers grows a field. What the keys mean, which are required and which
//! values the runtime refuses is decided when the file is converted to [`super::Config`].

use serde::de::IgnoredAny;
use serde::{Deserialize, Deserializer};

/// The keys of a decoder `config.json` the runtime reads. Every field may be absent or `null`; the conversion
/// supplies transformers' defaults or reports the key as missing.
#[derive(Debug, Deserialize)]
pub(super) struct HfConfig {
    pub model_type: Option<String>,
    pub architectures: Option<Vec<String>>,
    pub vocab_size: Option<i64>,
    pub hidden_size: Option<i64>,
    pub intermediate_size: Option<i64>,
    pub num_hidden_layers: Option<i64>,
    pub num_attention_heads: Option<i64>,
    /// Absent and `null` differ: transformers fills `null` with `num_attention_heads` but an absent key with the
    /// constructor's default, which depends on the family.
    #[serde(default, deserialize_with = "presence")]
    pub num_key_value_heads: Presence<i64>,
    pub head_dim: Option<i64>,
    pub hidden_act: Option<String>,
    /// Gemma's name for the MLP activation.
    pub hidden_activation: Option<String>,
    pub max_position_embeddings: Option<i64>,
    pub rms_norm_eps: Option<f64>,
    /// RoPE base (transformers < 5).
    pub rope_theta: Option<f64>,
    /// RoPE scaling (transformers < 5).
    pub rope_scaling: Option<HfRope>,
    /// RoPE base and scaling together (transformers 5).
    pub rope_parameters: Option<HfRope>,
    pub rope_interleaved: Option<bool>,
    pub partial_rotary_factor: Option<f64>,
    /// Gemma-3's RoPE base of sliding-window layers (transformers < 5).
    pub rope_local_base_freq: Option<f64>,
    /// Phi-3's pre-training context, which LongRoPE scales from (transformers < 5 keep it outside `rope_scaling`).
    pub original_max_position_embeddings: Option<i64>,
    pub tie_word_embeddings: Option<bool>,
    pub attention_bias: Option<bool>,
    pub mlp_bias: Option<bool>,
    /// Absent and `null` differ for Mistral and Qwen2: absent means the constructor's default of 4096 tokens.
    #[serde(default, deserialize_with = "presence")]
    pub sliding_window: Presence<i64>,
    pub use_sliding_window: Option<bool>,
    pub max_window_layers: Option<i64>,
    pub layer_types: Option<Vec<String>>,
    /// Gemma-3's period of full-attention layers (transformers < 4.53).
    pub sliding_window_pattern: Option<i64>,
    /// Gemma's attention scale is `query_pre_attn_scalar ** -0.5`.
    pub query_pre_attn_scalar: Option<f64>,
    /// Absent and `null` differ: Gemma-2 caps by default, `null` turns capping off.
    #[serde(default, deserialize_with = "presence")]
    pub attn_logit_softcapping: Presence<f64>,
    /// See `attn_logit_softcapping`.
    #[serde(default, deserialize_with = "presence")]
    pub final_logit_softcapping: Presence<f64>,
    pub use_bidirectional_attention: Option<bool>,
    /// Expert counts: their presence marks a mixture-of-experts model whatever its `model_type`.
    pub num_local_experts: Option<IgnoredAny>,
    /// See `num_local_experts`.
    pub num_experts: Option<IgnoredAny>,
    pub bos_token_id: Option<i64>,
    pub eos_token_id: Option<OneOrMany>,
    pub pad_token_id: Option<i64>,
    /// The saved dtype before transformers 4.56.
    pub torch_dtype: Option<String>,
    /// The saved dtype from transformers 4.56 on.
    pub dtype: Option<String>,
    pub quantization_config: Option<IgnoredAny>,
}

/// `rope_scaling` (transformers < 5) or `rope_parameters` (transformers 5).
#[derive(Debug, Deserialize)]
pub(super) struct HfRope {
    pub rope_type: Option<String>,
    /// The spelling of `rope_type` before transformers 4.43.
    #[serde(rename = "type")]
    pub legacy_type: Option<String>,
    pub rope_theta: Option<f64>,
    pub factor: Option<f64>,
    pub low_freq_factor: Option<f64>,
    pub high_freq_factor: Option<f64>,
    pub original_max_position_embeddings: Option<f64>,
    pub partial_rotary_factor: Option<f64>,
    /// LongRoPE's per-frequency factors up to the pre-training context.
    pub short_factor: Option<Vec<f64>>,
    /// LongRoPE's per-frequency factors beyond the pre-training context.
    pub long_factor: Option<Vec<f64>>,
    /// LongRoPE's scale on the rotary tables, when not derived from the context extension.
    pub attention_factor: Option<f64>,
    /// transformers 5 nests the parameters per layer type for models that mix attention kinds (Gemma-3).
    pub full_attention: Option<Box<HfRope>>,
    /// See `full_attention`.
    pub sliding_attention: Option<Box<HfRope>>,
}

/// `eos_token_id`: one id or a list.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(super) enum OneOrMany {
    One(i64),
    Many(Vec<i64>),
}

/// A key that may be absent, `null`, or hold a value.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub(super) enum Presence<T> {
    #[default]
    Absent,
    Null,
    Value(T),
}

fn presence<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    deserializer: D,
) -> Result<Presence<T>, D::Error> {
    Ok(match Option::<T>::deserialize(deserializer)? {
        None => Presence::Null,
        Some(value) => Presence::Value(value),
    })
}

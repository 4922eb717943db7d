//! What differs between the GGUF architectures the importer reads: llama.cpp's tensor names for each Hugging Face
//! module, the metadata keys of each family's configuration, and how llama.cpp's converter changed the weights
//! (q/k rows permuted for Llama's adjacent-pair RoPE, `1` added to Gemma's norm weights).

use serde_json::{json, Map, Value as Json};

use super::reader::{GgufFile, Value};
use super::{meta_err, meta_f64, meta_u64};
use crate::error::Result;

/// A `general.architecture` the importer reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum GgufArch {
    Llama,
    Qwen3,
    Gemma2,
    Gemma3,
    Phi3,
    Olmo2,
}

/// The architectures, as error messages list them.
const SUPPORTED: &str = "llama, qwen3, gemma2, gemma3, phi3, olmo2";

/// llama.cpp's Phi-3 LongRoPE factors, stored as tensors rather than metadata.
pub(super) const ROPE_FACTORS_LONG: &str = "rope_factors_long.weight";
/// See [`ROPE_FACTORS_LONG`].
pub(super) const ROPE_FACTORS_SHORT: &str = "rope_factors_short.weight";

impl GgufArch {
    pub fn from_file(file: &GgufFile) -> Result<Self> {
        let arch = file
            .get("general.architecture")
            .and_then(Value::as_str)
            .ok_or_else(|| meta_err(file, "general.architecture", "missing"))?;
        Ok(match arch {
            "llama" => Self::Llama,
            "qwen3" => Self::Qwen3,
            "gemma2" => Self::Gemma2,
            "gemma3" => Self::Gemma3,
            "phi3" => Self::Phi3,
            "olmo2" => Self::Olmo2,
            other => {
                return Err(meta_err(
                    file,
                    "general.architecture",
                    &format!("`{other}` is not supported (supported: {SUPPORTED})"),
                ))
            }
        })
    }

    /// The prefix of the family's metadata keys.
    pub fn key(self) -> &'static str {
        match self {
            Self::Llama => "llama",
            Self::Qwen3 => "qwen3",
            Self::Gemma2 => "gemma2",
            Self::Gemma3 => "gemma3",
            Self::Phi3 => "phi3",
            Self::Olmo2 => "olmo2",
        }
    }

    /// Whether llama.cpp's converter permuted the q/k rows (only for the families its graph runs with
    /// adjacent-pair RoPE; the others use the rotate-half layout Hugging Face stores).
    pub fn permutes_qk(self) -> bool {
        self == Self::Llama
    }

    /// What the converter added to every norm weight (Gemma computes `(1 + w) · x`, llama.cpp `w · x`).
    pub fn norm_shift(self) -> f64 {
        match self {
            Self::Gemma2 | Self::Gemma3 => 1.0,
            _ => 0.0,
        }
    }

    /// The Hugging Face name of a GGUF tensor (`token_embd.weight` -> `model.embed_tokens.weight`, ...); `None`
    /// for names the family does not have.
    pub fn hf_name(self, gguf: &str) -> Option<String> {
        let fixed = match gguf {
            "token_embd.weight" => Some("model.embed_tokens.weight"),
            "output_norm.weight" => Some("model.norm.weight"),
            "output.weight" => Some("lm_head.weight"),
            _ => None,
        };
        if let Some(name) = fixed {
            return Some(name.to_string());
        }
        let rest = gguf.strip_prefix("blk.")?;
        let (layer, rest) = rest.split_once('.')?;
        layer.parse::<usize>().ok()?;
        let (module, suffix) = rest.rsplit_once('.')?;
        let gemma = matches!(self, Self::Gemma2 | Self::Gemma3);
        let hf = match (module, self) {
            ("attn_q", _) if self != Self::Phi3 => "self_attn.q_proj",
            ("attn_k", _) if self != Self::Phi3 => "self_attn.k_proj",
            ("attn_v", _) if self != Self::Phi3 => "self_attn.v_proj",
            ("attn_qkv", Self::Phi3) => "self_attn.qkv_proj",
            ("attn_output", _) => "self_attn.o_proj",
            ("attn_q_norm", Self::Qwen3 | Self::Gemma3 | Self::Olmo2) => "self_attn.q_norm",
            ("attn_k_norm", Self::Qwen3 | Self::Gemma3 | Self::Olmo2) => "self_attn.k_norm",
            ("ffn_gate", _) if self != Self::Phi3 => "mlp.gate_proj",
            // Phi-3's fused projection keeps llama.cpp's `ffn_up` name, gate rows first.
            ("ffn_up", Self::Phi3) => "mlp.gate_up_proj",
            ("ffn_up", _) => "mlp.up_proj",
            ("ffn_down", _) => "mlp.down_proj",
            ("attn_norm", _) if self != Self::Olmo2 => "input_layernorm",
            // llama.cpp names norms by position: the one before the MLP is Gemma's
            // `pre_feedforward_layernorm` and Llama's `post_attention_layernorm`.
            ("ffn_norm", _) if gemma => "pre_feedforward_layernorm",
            ("ffn_norm", _) if self != Self::Olmo2 => "post_attention_layernorm",
            ("attn_post_norm", _) if gemma || self == Self::Olmo2 => "post_attention_layernorm",
            ("ffn_post_norm", _) if gemma || self == Self::Olmo2 => "post_feedforward_layernorm",
            _ => return None,
        };
        Some(format!("model.layers.{layer}.{hf}.{suffix}"))
    }

    /// The Hugging Face `config.json` keys the family's metadata gives, beyond the common ones the caller
    /// writes; `long_rope` holds Phi-3's LongRoPE factors (long, short) when the file has them.
    pub fn config_keys(
        self,
        file: &GgufFile,
        heads: i64,
        long_rope: Option<(Vec<f64>, Vec<f64>)>,
    ) -> Result<Map<String, Json>> {
        let k = |suffix: &str| format!("{}.{suffix}", self.key());
        let get_f64 = |suffix: &str| file.get(&k(suffix)).and_then(Value::as_f64);
        let get_u64 = |suffix: &str| file.get(&k(suffix)).and_then(Value::as_u64);
        let hidden = meta_u64(file, &k("embedding_length"))? as i64;
        let layers = meta_u64(file, &k("block_count"))?;
        // Keys that would change the computation in a way this family's import does not carry over.
        let scaling = file.get(&k("rope.scaling.type")).and_then(Value::as_str);
        if self != Self::Gemma3 && scaling.is_some_and(|t| t != "none") {
            return Err(meta_err(
                file,
                &k("rope.scaling.type"),
                &format!(
                    "RoPE scaling `{}` is not supported for {}",
                    scaling.unwrap_or_default(),
                    self.key()
                ),
            ));
        }
        if self == Self::Olmo2 && file.get(&k("attention.sliding_window")).is_some() {
            return Err(meta_err(
                file,
                &k("attention.sliding_window"),
                "sliding-window attention (OLMo-3) is not supported",
            ));
        }
        let mut out = Map::new();
        let (model_type, class) = match self {
            Self::Llama => ("llama", "LlamaForCausalLM"),
            Self::Qwen3 => ("qwen3", "Qwen3ForCausalLM"),
            Self::Gemma2 => ("gemma2", "Gemma2ForCausalLM"),
            Self::Gemma3 => ("gemma3_text", "Gemma3ForCausalLM"),
            Self::Phi3 => ("phi3", "Phi3ForCausalLM"),
            Self::Olmo2 => ("olmo2", "Olmo2ForCausalLM"),
        };
        out.insert("model_type".into(), json!(model_type));
        out.insert("architectures".into(), json!([class]));
        let head_dim = get_u64("attention.key_length").map_or(hidden / heads, |d| d as i64);
        match self {
            Self::Llama | Self::Qwen3 | Self::Olmo2 => {
                out.insert("hidden_act".into(), json!("silu"));
            }
            Self::Gemma2 | Self::Gemma3 => {
                out.insert("hidden_activation".into(), json!("gelu_pytorch_tanh"));
                // llama.cpp's attention scale: 1/sqrt(hidden / heads) for the 27B models (46 Gemma-2 or 62
                // Gemma-3 layers, whose `query_pre_attn_scalar` is that ratio), 1/sqrt(head_dim) otherwise.
                let big = (self == Self::Gemma2 && layers == 46)
                    || (self == Self::Gemma3 && layers == 62);
                let scalar = if big { hidden / heads } else { head_dim };
                out.insert("query_pre_attn_scalar".into(), json!(scalar));
                let window = meta_u64(file, &k("attention.sliding_window"))?;
                out.insert("sliding_window".into(), json!(window));
            }
            Self::Phi3 => {
                out.insert("hidden_act".into(), json!("silu"));
            }
        }
        match self {
            Self::Gemma2 => {
                for key in ["attn_logit_softcapping", "final_logit_softcapping"] {
                    let cap = meta_f64(file, &k(key))?;
                    out.insert(key.into(), json!(cap));
                }
            }
            Self::Gemma3 => {
                // llama.cpp runs every sixth layer globally and the others with a 10000 RoPE base.
                out.insert("sliding_window_pattern".into(), json!(6));
                out.insert("rope_local_base_freq".into(), json!(10000.0));
                out.insert("rope_theta".into(), json!(get_f64("rope.freq_base").unwrap_or(1e6)));
                match file.get(&k("rope.scaling.type")).and_then(Value::as_str) {
                    None | Some("none") => {}
                    Some("linear") => {
                        let factor = meta_f64(file, &k("rope.scaling.factor"))?;
                        out.insert(
                            "rope_scaling".into(),
                            json!({"rope_type": "linear", "factor": factor}),
                        );
                    }
                    Some(other) => {
                        return Err(meta_err(
                            file,
                            &k("rope.scaling.type"),
                            &format!("`{other}` is not supported for gemma3 (linear only)"),
                        ))
                    }
                }
            }
            Self::Phi3 => {
                let rotary = get_u64("rope.dimension_count").map_or(head_dim, |d| d as i64);
                if rotary != head_dim {
                    out.insert(
                        "partial_rotary_factor".into(),
                        json!(rotary as f64 / head_dim as f64),
                    );
                }
                let window = get_u64("attention.sliding_window").filter(|w| *w > 0);
                out.insert("sliding_window".into(), json!(window));
                if let Some((long, short)) = long_rope {
                    let original = meta_u64(file, &k("rope.scaling.original_context_length"))?;
                    let mut scaling = json!({
                        "rope_type": "longrope", "long_factor": long, "short_factor": short,
                        "original_max_position_embeddings": original,
                    });
                    if let Some(factor) = get_f64("rope.scaling.attn_factor") {
                        scaling["attention_factor"] = json!(factor);
                    }
                    out.insert("rope_scaling".into(), scaling);
                }
            }
            Self::Llama | Self::Qwen3 | Self::Olmo2 => {}
        }
        if self != Self::Gemma3 {
            let theta = get_f64("rope.freq_base").unwrap_or(10000.0);
            out.insert("rope_theta".into(), json!(theta));
        }
        if matches!(self, Self::Qwen3 | Self::Gemma2 | Self::Gemma3)
            || get_u64("attention.key_length").is_some()
        {
            out.insert("head_dim".into(), json!(head_dim));
        }
        Ok(out)
    }
}

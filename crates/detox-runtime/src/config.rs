//! Decoder configuration, read from a Hugging Face `config.json` with the same field names.
//!
//! The parser is strict: a field that would change the computation in a way the runtime does not implement
//! (another activation, a quantisation config, an unknown RoPE variant, a field it has never heard of) is refused
//! with an error naming the file and the field instead of being ignored. Fields that only matter for training or
//! bookkeeping (`initializer_range`, `use_cache`, `transformers_version`, ...) are accepted.

use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use crate::error::{Error, Result};

/// The decoder families the runtime implements.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
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

/// Keys that carry no meaning for inference or editing and are therefore accepted and not interpreted.
const INERT_KEYS: &[&str] = &[
    "_name_or_path",
    "attention_dropout",
    "initializer_range",
    "use_cache",
    "transformers_version",
    "pretraining_tp",
    "output_attentions",
    "output_hidden_states",
    "return_dict",
    "is_llama_config",
    "transformers.js_config",
    "use_mrope",
    "bos_token",
    "eos_token",
    "id2label",
    "label2id",
    "problem_type",
    "chunk_size_feed_forward",
    "tokenizer_class",
    "max_length",
    "min_length",
    "do_sample",
    "temperature",
    "top_p",
    "top_k",
    "num_beams",
    "repetition_penalty",
    "generation_config",
    "embd_pdrop",
    "resid_pdrop",
];

/// Keys the parser interprets.
const KNOWN_KEYS: &[&str] = &[
    "architectures",
    "model_type",
    "vocab_size",
    "hidden_size",
    "intermediate_size",
    "num_hidden_layers",
    "num_attention_heads",
    "num_key_value_heads",
    "head_dim",
    "hidden_act",
    "max_position_embeddings",
    "rms_norm_eps",
    "rope_theta",
    "rope_scaling",
    "rope_parameters",
    "rope_interleaved",
    "partial_rotary_factor",
    "tie_word_embeddings",
    "attention_bias",
    "mlp_bias",
    "sliding_window",
    "use_sliding_window",
    "max_window_layers",
    "layer_types",
    "bos_token_id",
    "eos_token_id",
    "pad_token_id",
    "torch_dtype",
    "dtype",
    "quantization_config",
];

impl Config {
    /// Reads and validates a `config.json`.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path)
            .map_err(|source| Error::Io { path: path.to_path_buf(), source })?;
        let value: Value = serde_json::from_str(&text)
            .map_err(|source| Error::Json { path: path.to_path_buf(), source })?;
        Self::from_value(&value, path)
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
        let obj = value.as_object().ok_or_else(|| Error::Config {
            path: origin.to_path_buf(),
            field: "<root>".into(),
            reason: "expected a JSON object".into(),
        })?;
        Parser { obj, path: origin.to_path_buf() }.parse()
    }

    /// Number of query heads sharing one key/value head.
    pub fn kv_groups(&self) -> i64 {
        self.num_attention_heads / self.num_key_value_heads
    }
}

struct Parser<'a> {
    obj: &'a Map<String, Value>,
    path: PathBuf,
}

impl Parser<'_> {
    fn err(&self, field: &str, reason: impl Into<String>) -> Error {
        Error::Config { path: self.path.clone(), field: field.into(), reason: reason.into() }
    }

    fn present(&self, key: &str) -> Option<&Value> {
        self.obj.get(key).filter(|v| !v.is_null())
    }

    fn int(&self, key: &str) -> Result<Option<i64>> {
        match self.present(key) {
            None => Ok(None),
            Some(v) => v
                .as_i64()
                .map(Some)
                .ok_or_else(|| self.err(key, format!("expected an integer, found {v}"))),
        }
    }

    fn required_int(&self, key: &str) -> Result<i64> {
        let v = self.int(key)?.ok_or_else(|| self.err(key, "missing"))?;
        if v <= 0 {
            return Err(self.err(key, format!("must be positive, found {v}")));
        }
        Ok(v)
    }

    fn float(&self, key: &str) -> Result<Option<f64>> {
        match self.present(key) {
            None => Ok(None),
            Some(v) => v
                .as_f64()
                .map(Some)
                .ok_or_else(|| self.err(key, format!("expected a number, found {v}"))),
        }
    }

    fn bool(&self, key: &str) -> Result<Option<bool>> {
        match self.present(key) {
            None => Ok(None),
            Some(v) => v
                .as_bool()
                .map(Some)
                .ok_or_else(|| self.err(key, format!("expected true or false, found {v}"))),
        }
    }

    fn parse(&self) -> Result<Config> {
        for key in self.obj.keys() {
            if !KNOWN_KEYS.contains(&key.as_str()) && !INERT_KEYS.contains(&key.as_str()) {
                return Err(self.err(key, "unsupported configuration field; refusing to ignore it"));
            }
        }
        let architecture = self.architecture()?;
        if self.present("quantization_config").is_some() {
            return Err(self.err(
                "quantization_config",
                "quantised checkpoints are not supported; load a floating-point checkpoint",
            ));
        }
        let act = self.present("hidden_act").and_then(Value::as_str).unwrap_or("silu");
        if act != "silu" {
            return Err(self.err("hidden_act", format!("only `silu` is supported, found `{act}`")));
        }
        if self.bool("rope_interleaved")? == Some(true) {
            return Err(self.err("rope_interleaved", "interleaved RoPE is not supported"));
        }
        let hidden_size = self.required_int("hidden_size")?;
        let num_attention_heads = self.required_int("num_attention_heads")?;
        let num_key_value_heads = self.int("num_key_value_heads")?.unwrap_or(num_attention_heads);
        if num_key_value_heads <= 0 || num_attention_heads % num_key_value_heads != 0 {
            return Err(self.err(
                "num_key_value_heads",
                format!(
                    "{num_key_value_heads} does not divide num_attention_heads = {num_attention_heads}"
                ),
            ));
        }
        let head_dim = match self.int("head_dim")? {
            Some(d) => d,
            None if hidden_size % num_attention_heads == 0 => hidden_size / num_attention_heads,
            None => {
                return Err(
                    self.err("head_dim", "missing and hidden_size is not divisible by the heads")
                )
            }
        };
        if head_dim % 2 != 0 {
            return Err(
                self.err("head_dim", format!("RoPE needs an even head_dim, found {head_dim}"))
            );
        }
        let num_hidden_layers = self.required_int("num_hidden_layers")? as usize;
        let (rope_theta, rope_scaling) = self.rope()?;
        let default_bias = architecture == Architecture::Qwen2;
        let attention_bias = self.bool("attention_bias")?.unwrap_or(default_bias);
        if architecture == Architecture::Qwen2 && !attention_bias {
            return Err(self.err("attention_bias", "Qwen2 always has q/k/v biases"));
        }
        Ok(Config {
            architecture,
            vocab_size: self.required_int("vocab_size")?,
            hidden_size,
            intermediate_size: self.required_int("intermediate_size")?,
            num_hidden_layers,
            num_attention_heads,
            num_key_value_heads,
            head_dim,
            max_position_embeddings: self.int("max_position_embeddings")?.unwrap_or(2048),
            rms_norm_eps: self.float("rms_norm_eps")?.unwrap_or(1e-6),
            rope_theta,
            rope_scaling,
            tie_word_embeddings: self.bool("tie_word_embeddings")?.unwrap_or(false),
            attention_bias,
            mlp_bias: self.bool("mlp_bias")?.unwrap_or(false),
            sliding_windows: self.sliding_windows(architecture, num_hidden_layers)?,
            bos_token_id: self.int("bos_token_id")?,
            eos_token_ids: self.eos_ids()?,
            pad_token_id: self.int("pad_token_id")?,
            saved_dtype: self
                .present("dtype")
                .or_else(|| self.present("torch_dtype"))
                .and_then(Value::as_str)
                .map(str::to_string),
        })
    }

    fn architecture(&self) -> Result<Architecture> {
        let model_type = self
            .present("model_type")
            .and_then(Value::as_str)
            .ok_or_else(|| self.err("model_type", "missing"))?;
        let arch = Architecture::from_model_type(model_type).ok_or_else(|| {
            self.err(
                "model_type",
                format!(
                    "unsupported architecture `{model_type}` (supported: llama, mistral, qwen2)"
                ),
            )
        })?;
        if let Some(classes) = self.present("architectures") {
            let classes = classes
                .as_array()
                .ok_or_else(|| self.err("architectures", "expected a list of class names"))?;
            for class in classes {
                let name = class.as_str().unwrap_or_default();
                if Architecture::from_class_name(name) != Some(arch) {
                    return Err(self.err(
                        "architectures",
                        format!("`{name}` is not the causal-LM class of model_type `{model_type}`"),
                    ));
                }
            }
        }
        Ok(arch)
    }

    fn rope(&self) -> Result<(f64, RopeScaling)> {
        // transformers 5 writes `rope_parameters` (theta inside); older files use `rope_theta` and
        // `rope_scaling`. Both spellings describe the same computation.
        let (params, field) = match (self.present("rope_parameters"), self.present("rope_scaling"))
        {
            (Some(p), _) => (Some(p), "rope_parameters"),
            (None, Some(s)) => (Some(s), "rope_scaling"),
            (None, None) => (None, "rope_scaling"),
        };
        let params = match params {
            Some(p) => Some(p.as_object().ok_or_else(|| self.err(field, "expected an object"))?),
            None => None,
        };
        let nested_theta = params.and_then(|p| p.get("rope_theta")).and_then(Value::as_f64);
        let theta = self.float("rope_theta")?.or(nested_theta).unwrap_or(10000.0);
        if self.float("partial_rotary_factor")?.is_some_and(|f| f != 1.0) {
            return Err(
                self.err("partial_rotary_factor", "partial rotary embeddings are not supported")
            );
        }
        let Some(params) = params else { return Ok((theta, RopeScaling::Default)) };
        if params.get("partial_rotary_factor").and_then(Value::as_f64).is_some_and(|f| f != 1.0) {
            return Err(self.err(field, "partial rotary embeddings are not supported"));
        }
        let kind = params
            .get("rope_type")
            .or_else(|| params.get("type"))
            .and_then(Value::as_str)
            .unwrap_or("default");
        let num = |key: &str| -> Result<f64> {
            params
                .get(key)
                .and_then(Value::as_f64)
                .ok_or_else(|| self.err(&format!("{field}.{key}"), "missing or not a number"))
        };
        let scaling = match kind {
            "default" => RopeScaling::Default,
            "linear" => RopeScaling::Linear { factor: num("factor")? },
            "llama3" => RopeScaling::Llama3 {
                factor: num("factor")?,
                low_freq_factor: num("low_freq_factor")?,
                high_freq_factor: num("high_freq_factor")?,
                original_max_position_embeddings: num("original_max_position_embeddings")?,
            },
            other => {
                return Err(self.err(
                    &format!("{field}.rope_type"),
                    format!("unsupported RoPE type `{other}` (supported: default, linear, llama3)"),
                ))
            }
        };
        Ok((theta, scaling))
    }

    fn sliding_windows(&self, arch: Architecture, layers: usize) -> Result<Vec<Option<i64>>> {
        let window = self.int("sliding_window")?;
        if let Some(types) = self.present("layer_types") {
            let types = types.as_array().filter(|t| t.len() == layers).ok_or_else(|| {
                self.err("layer_types", format!("expected a list of {layers} entries"))
            })?;
            return types
                .iter()
                .map(|t| match t.as_str() {
                    Some("full_attention") => Ok(None),
                    Some("sliding_attention") => window.map(Some).ok_or_else(|| {
                        self.err("sliding_window", "layer_types uses sliding attention")
                    }),
                    _ => Err(self.err("layer_types", format!("unsupported layer type {t}"))),
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
                let used = self.bool("use_sliding_window")?.unwrap_or(false);
                let from = self.int("max_window_layers")?.unwrap_or(28).max(0) as usize;
                (0..layers).map(|i| if used && i >= from { window } else { None }).collect()
            }
        })
    }

    fn eos_ids(&self) -> Result<Vec<i64>> {
        match self.present("eos_token_id") {
            None => Ok(Vec::new()),
            Some(Value::Array(ids)) => ids
                .iter()
                .map(|v| v.as_i64().ok_or_else(|| self.err("eos_token_id", "expected integers")))
                .collect(),
            Some(v) => v
                .as_i64()
                .map(|id| vec![id])
                .ok_or_else(|| self.err("eos_token_id", "expected an integer")),
        }
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
    fn refuses_unknown_and_unsupported_fields() {
        let unknown = LLAMA.replace("\"initializer_range\"", "\"some_new_switch\"");
        let err = parse(&unknown).unwrap_err().to_string();
        assert!(err.contains("some_new_switch") && err.contains("config.json"), "{err}");
        let gelu = LLAMA.replace("\"initializer_range\":0.02", "\"hidden_act\":\"gelu\"");
        assert!(parse(&gelu).unwrap_err().to_string().contains("hidden_act"));
        let yarn = LLAMA.replace("\"llama3\"", "\"yarn\"");
        assert!(parse(&yarn).unwrap_err().to_string().contains("yarn"));
        let gpt = LLAMA.replace("\"model_type\":\"llama\"", "\"model_type\":\"gpt2\"");
        assert!(parse(&gpt).unwrap_err().to_string().contains("gpt2"));
    }

    #[test]
    fn windows_per_family() {
        let mistral = r#"{"model_type":"mistral","vocab_size":10,"hidden_size":8,"intermediate_size":8,
            "num_hidden_layers":2,"num_attention_heads":2,"sliding_window":4}"#;
        assert_eq!(parse(mistral).unwrap().sliding_windows, vec![Some(4), Some(4)]);
        let qwen = r#"{"model_type":"qwen2","vocab_size":10,"hidden_size":8,"intermediate_size":8,
            "num_hidden_layers":3,"num_attention_heads":2,"sliding_window":4,"use_sliding_window":true,
            "max_window_layers":1}"#;
        let c = parse(qwen).unwrap();
        assert_eq!(c.sliding_windows, vec![None, Some(4), Some(4)]);
        assert!(c.attention_bias);
    }
}

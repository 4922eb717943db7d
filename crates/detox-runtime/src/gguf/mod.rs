//! Importing GGUF checkpoints (llama.cpp's format) of the `llama`, `qwen3`, `gemma2`, `gemma3`, `phi3` and `olmo2`
//! architectures, such as the embedded default model SmolLM2-135M-Instruct: dequantised weights under Hugging Face
//! names (llama.cpp's converter changes undone), a Hugging Face config, a `tokenizer.json` rebuilt from the GGUF
//! vocabulary, and the chat template. Usable directly or written out once as a Hugging Face model directory.

mod arch;
pub mod dequant;
pub mod reader;

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use serde_json::{json, Map, Value as Json};
use tch::{Device, Kind, Tensor};

use crate::chat::ChatTemplate;
use crate::config::Config;
use crate::error::{Error, Result, TorchContext};
use crate::model::CausalLm;
use crate::tokenizer::Tokenizer;
use arch::GgufArch;
pub use reader::{GgufFile, TensorInfo, Value};

/// A GGUF checkpoint converted to Hugging Face form, in host memory (fp32).
#[derive(Debug)]
pub struct GgufModel {
    /// `config.json` as Hugging Face writes it for this model.
    pub config_json: Json,
    /// The parsed configuration.
    pub config: Config,
    /// Dequantised fp32 tensors under Hugging Face names (q/k rows back in Hugging Face order).
    pub tensors: HashMap<String, Tensor>,
    /// `tokenizer.json` rebuilt from the GGUF vocabulary.
    pub tokenizer_json: Json,
    /// The chat template stored in the file (`tokenizer.chat_template`), with the special tokens it reads.
    pub chat_template: Option<ChatTemplate>,
    /// The special tokens the file names, by transformers' attribute name (`bos_token` -> `<|im_start|>`).
    pub special_tokens: BTreeMap<String, String>,
}

/// The GGUF metadata keys holding the id of each special token transformers names (llama.cpp spells the separator
/// key `seperator`).
const SPECIAL_TOKEN_KEYS: [(&str, &str); 7] = [
    ("bos_token", "tokenizer.ggml.bos_token_id"),
    ("eos_token", "tokenizer.ggml.eos_token_id"),
    ("unk_token", "tokenizer.ggml.unknown_token_id"),
    ("sep_token", "tokenizer.ggml.seperator_token_id"),
    ("pad_token", "tokenizer.ggml.padding_token_id"),
    ("cls_token", "tokenizer.ggml.cls_token_id"),
    ("mask_token", "tokenizer.ggml.mask_token_id"),
];

/// The special tokens of a GGUF file: the text in `tokenizer.ggml.tokens` of each `tokenizer.ggml.*_token_id`,
/// under transformers' attribute names (`bos_token`, `eos_token`, `unk_token`, `sep_token`, `pad_token`,
/// `cls_token`, `mask_token`).
pub fn special_tokens(file: &GgufFile) -> Result<BTreeMap<String, String>> {
    let tokens = file.get("tokenizer.ggml.tokens").and_then(Value::as_array).unwrap_or_default();
    let mut out = BTreeMap::new();
    for (name, key) in SPECIAL_TOKEN_KEYS {
        let Some(id) = file.get(key).and_then(Value::as_u64) else { continue };
        let text = tokens.get(id as usize).and_then(Value::as_str).ok_or_else(|| {
            meta_err(file, key, &format!("token id {id} is not in tokenizer.ggml.tokens"))
        })?;
        out.insert(name.to_string(), text.to_string());
    }
    Ok(out)
}

fn meta_err(file: &GgufFile, key: &str, what: &str) -> Error {
    Error::Config { path: file.path().to_path_buf(), field: key.into(), reason: what.into() }
}

fn meta_u64(file: &GgufFile, key: &str) -> Result<u64> {
    file.get(key)
        .and_then(Value::as_u64)
        .ok_or_else(|| meta_err(file, key, "missing or not an integer"))
}

fn meta_f64(file: &GgufFile, key: &str) -> Result<f64> {
    file.get(key)
        .and_then(Value::as_f64)
        .ok_or_else(|| meta_err(file, key, "missing or not a number"))
}

/// The Hugging Face name of a GGUF tensor of a `llama` file (`token_embd.weight` -> `model.embed_tokens.weight`,
/// ...).
pub fn hf_name(gguf: &str) -> Option<String> {
    arch::GgufArch::Llama.hf_name(gguf)
}

/// Rows and columns of a q/k projection of `heads` heads of even size; the head count comes from the file's
/// metadata, so a shape it does not divide is an error rather than a division by zero.
fn qk_rows_cols(size: &[i64], heads: i64) -> Result<(i64, i64)> {
    let rows = size.first().copied().unwrap_or(0);
    if heads <= 0 || rows <= 0 || rows % (2 * heads) != 0 {
        return Err(Error::BadShape {
            what: format!(
                "a q/k projection of shape {size:?} cannot hold {heads} heads of even size"
            ),
        });
    }
    Ok((rows, size.get(1).copied().unwrap_or(1)))
}

/// Undoes llama.cpp's row permutation of q/k projections (it interleaves the two halves of each head for its
/// adjacent-pair RoPE); the result uses Hugging Face's rotate-half layout.
///
/// # Shapes
/// `w`: `[heads * head_dim, in]` -> same shape.
pub fn unpermute_qk(w: &Tensor, heads: i64) -> Result<Tensor> {
    let size = w.size();
    let (rows, cols) = qk_rows_cols(&size, heads)?;
    let head_dim = rows / heads;
    w.f_reshape([heads, head_dim / 2, 2, cols])
        .ctx("unpermuting q/k")?
        .f_transpose(1, 2)
        .ctx("unpermuting q/k")?
        .f_reshape(size.as_slice())
        .ctx("unpermuting q/k")
}

/// The permutation llama.cpp applies (the inverse of [`unpermute_qk`]), for tests and exporters.
///
/// # Shapes
/// `w`: `[heads * head_dim, in]` -> same shape.
pub fn permute_qk(w: &Tensor, heads: i64) -> Result<Tensor> {
    let size = w.size();
    let (rows, cols) = qk_rows_cols(&size, heads)?;
    w.f_reshape([heads, 2, rows / heads / 2, cols])
        .ctx("permuting q/k")?
        .f_transpose(1, 2)
        .ctx("permuting q/k")?
        .f_reshape(size.as_slice())
        .ctx("permuting q/k")
}

impl GgufModel {
    /// Reads and converts a GGUF file.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let file = GgufFile::open(path)?;
        let arch = GgufArch::from_file(&file)?;
        let key = |suffix: &str| format!("{}.{suffix}", arch.key());
        let heads = meta_u64(&file, &key("attention.head_count"))? as i64;
        let kv_heads = file
            .get(&key("attention.head_count_kv"))
            .and_then(Value::as_u64)
            .unwrap_or(heads as u64) as i64;

        let mut tensors = HashMap::new();
        let mut rope_factors: HashMap<&str, Vec<f64>> = HashMap::new();
        for info in &file.tensors {
            let bytes = file.tensor_bytes(info)?;
            let values = dequant::dequantize(info.ggml_type, bytes).ok_or_else(|| {
                meta_err(
                    &file,
                    &info.name,
                    &format!("GGML type {} is not supported", info.ggml_type),
                )
            })?;
            if let Some(which) = [arch::ROPE_FACTORS_LONG, arch::ROPE_FACTORS_SHORT]
                .into_iter()
                .find(|n| arch == GgufArch::Phi3 && info.name == *n)
            {
                rope_factors.insert(which, values.iter().map(|v| f64::from(*v)).collect());
                continue;
            }
            let name = arch.hf_name(&info.name).ok_or_else(|| Error::UnexpectedTensors {
                names: vec![format!("{} (in {})", info.name, file.path().display())],
            })?;
            let mut t = Tensor::from_slice(&values)
                .f_reshape(info.torch_shape().as_slice())
                .ctx("shaping tensor")?;
            let heads_of = |heads| {
                unpermute_qk(&t, heads).map_err(|e| meta_err(&file, &info.name, &e.to_string()))
            };
            if arch.permutes_qk() && info.name.ends_with("attn_q.weight") {
                t = heads_of(heads)?;
            } else if arch.permutes_qk() && info.name.ends_with("attn_k.weight") {
                t = heads_of(kv_heads)?;
            }
            if arch.norm_shift() != 0.0 && info.name.ends_with("norm.weight") {
                t = t.f_sub_scalar(arch.norm_shift()).ctx("undoing the norm shift")?;
            }
            tensors.insert(name, t);
        }
        let long_rope = match (
            rope_factors.remove(arch::ROPE_FACTORS_LONG),
            rope_factors.remove(arch::ROPE_FACTORS_SHORT),
        ) {
            (Some(long), Some(short)) => Some((long, short)),
            (None, None) => None,
            _ => {
                return Err(meta_err(
                    &file,
                    arch::ROPE_FACTORS_LONG,
                    "LongRoPE needs both rope_factors_long and rope_factors_short",
                ))
            }
        };
        let tied = !tensors.contains_key("lm_head.weight");
        let tokens = file
            .get("tokenizer.ggml.tokens")
            .and_then(Value::as_array)
            .ok_or_else(|| meta_err(&file, "tokenizer.ggml.tokens", "missing"))?;
        let vocab_size =
            file.get(&key("vocab_size")).and_then(Value::as_u64).unwrap_or(tokens.len() as u64);
        let mut config_json = json!({
            "vocab_size": vocab_size,
            "hidden_size": meta_u64(&file, &key("embedding_length"))?,
            "intermediate_size": meta_u64(&file, &key("feed_forward_length"))?,
            "num_hidden_layers": meta_u64(&file, &key("block_count"))?,
            "num_attention_heads": heads,
            "num_key_value_heads": kv_heads,
            "max_position_embeddings": meta_u64(&file, &key("context_length"))?,
            "rms_norm_eps": meta_f64(&file, &key("attention.layer_norm_rms_epsilon"))?,
            "tie_word_embeddings": tied,
        });
        let obj = config_json.as_object_mut().expect("object");
        obj.extend(arch.config_keys(&file, heads, long_rope)?);
        let bos = file.get("tokenizer.ggml.bos_token_id").and_then(Value::as_u64);
        let eos = file.get("tokenizer.ggml.eos_token_id").and_then(Value::as_u64);
        if let Some(bos) = bos {
            obj.insert("bos_token_id".into(), json!(bos));
        }
        if let Some(eos) = eos {
            obj.insert("eos_token_id".into(), json!(eos));
        }
        let config = Config::from_value(&config_json, file.path())?;
        let tokenizer_json = tokenizer_json(&file)?;
        let chat_template = ChatTemplate::from_gguf(&file)?;
        let special_tokens = special_tokens(&file)?;
        Ok(Self { config_json, config, tensors, tokenizer_json, chat_template, special_tokens })
    }

    /// The tokenizer, with BOS/EOS/pad ids and the chat template: the same as [`Tokenizer::from_model_dir`] reads
    /// back from [`GgufModel::export_hf_dir`]'s directory.
    pub fn tokenizer(&self) -> Result<Tokenizer> {
        let tokenizer = Tokenizer::from_json(self.tokenizer_json.clone())
            .map_err(|e| Error::Malformed { what: format!("rebuilt tokenizer is invalid: {e}") })?;
        let pad = self.special_tokens.get("pad_token").and_then(|t| tokenizer.token_id(t));
        Ok(tokenizer
            .with_bos(self.config.bos_token_id)
            .with_eos(self.config.eos_token_ids.clone())
            .with_pad(pad)
            .with_chat_template(self.chat_template.clone()))
    }

    /// Builds the model on `device` in `kind` (the host copies are kept).
    pub fn to_model(&self, device: Device, kind: Kind) -> Result<CausalLm> {
        let tensors = self.tensors.iter().map(|(k, v)| (k.clone(), v.shallow_clone())).collect();
        CausalLm::from_tensors(self.config.clone(), tensors, device, kind)
    }

    /// Writes a Hugging Face model directory: `config.json`, `model.safetensors` (fp32, or `kind`),
    /// `tokenizer.json`, `tokenizer_config.json` (special tokens and chat template).
    pub fn export_hf_dir(&self, dir: &Path, kind: Kind) -> Result<()> {
        std::fs::create_dir_all(dir)
            .map_err(|source| Error::Io { path: dir.to_path_buf(), source })?;
        let mut named: Vec<(String, Tensor)> = self
            .tensors
            .iter()
            .map(|(k, v)| Ok((k.clone(), v.f_to_kind(kind).ctx("casting for export")?)))
            .collect::<Result<_>>()?;
        named.sort_by(|a, b| a.0.cmp(&b.0));
        crate::weights::save_safetensors(&dir.join("model.safetensors"), &named)?;
        let mut tok_cfg: Map<String, Json> =
            self.special_tokens.iter().map(|(name, text)| (name.clone(), json!(text))).collect();
        if let Some(t) = &self.chat_template {
            tok_cfg.insert("chat_template".into(), json!(t.source()));
        }
        for (file, value) in [
            ("config.json", &self.config_json),
            ("tokenizer.json", &self.tokenizer_json),
            ("tokenizer_config.json", &Json::Object(tok_cfg)),
        ] {
            let path = dir.join(file);
            let text = serde_json::to_string_pretty(value)
                .map_err(|source| Error::Json { path: path.clone(), source })?;
            detox_io::write_atomic(&path, text.as_bytes())?;
        }
        Ok(())
    }
}

/// The split pattern of Qwen2's and Qwen3's pre-tokenizer.
const QWEN2_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// Rebuilds a Hugging Face `tokenizer.json` from `tokenizer.ggml.*` metadata (GPT-2-style byte-level BPE).
fn tokenizer_json(file: &GgufFile) -> Result<Json> {
    let model = file.get("tokenizer.ggml.model").and_then(Value::as_str).unwrap_or_default();
    if model != "gpt2" {
        return Err(meta_err(
            file,
            "tokenizer.ggml.model",
            &format!("`{model}` is not supported (gpt2 byte-level BPE only)"),
        ));
    }
    let tokens = file.get("tokenizer.ggml.tokens").and_then(Value::as_array).unwrap_or_default();
    let types = file.get("tokenizer.ggml.token_type").and_then(Value::as_array).unwrap_or_default();
    let merges = file
        .get("tokenizer.ggml.merges")
        .and_then(Value::as_array)
        .ok_or_else(|| meta_err(file, "tokenizer.ggml.merges", "missing"))?;
    let mut vocab = Map::new();
    let mut added = Vec::new();
    for (id, token) in tokens.iter().enumerate() {
        let text = token
            .as_str()
            .ok_or_else(|| meta_err(file, "tokenizer.ggml.tokens", "entries must be strings"))?;
        vocab.insert(text.to_string(), json!(id));
        // Token type 3 is CONTROL, 4 USER_DEFINED: both are added tokens matched before the model runs.
        let kind = types.get(id).and_then(Value::as_u64).unwrap_or(1);
        if kind == 3 || kind == 4 {
            added.push(json!({
                "id": id, "content": text, "single_word": false, "lstrip": false, "rstrip": false,
                "normalized": false, "special": kind == 3,
            }));
        }
    }
    let merges: Vec<Json> = merges.iter().filter_map(Value::as_str).map(|m| json!(m)).collect();
    let byte_level = json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true});
    let pre = file.get("tokenizer.ggml.pre").and_then(Value::as_str).unwrap_or("default");
    let (normalizer, pre_tokenizer) = match pre {
        "smollm" => (
            Json::Null,
            json!({"type": "Sequence", "pretokenizers": [
                {"type": "Digits", "individual_digits": true}, byte_level.clone()]}),
        ),
        "gpt2" | "default" => (Json::Null, byte_level.clone()),
        // Qwen2's and Qwen3's `tokenizer.json`: NFC, then their split pattern (llama.cpp's `qwen2` one) before
        // the byte-level mapping.
        "qwen2" => (
            json!({"type": "NFC"}),
            json!({"type": "Sequence", "pretokenizers": [
                {"type": "Split", "pattern": {"Regex": QWEN2_SPLIT}, "behavior": "Isolated", "invert": false},
                {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": false, "use_regex": false}]}),
        ),
        other => {
            return Err(meta_err(
                file,
                "tokenizer.ggml.pre",
                &format!("pre-tokenizer `{other}` is not supported (smollm, gpt2, qwen2)"),
            ))
        }
    };
    let add_bos = matches!(file.get("tokenizer.ggml.add_bos_token"), Some(Value::Bool(true)));
    let post_processor = match (
        add_bos,
        file.get("tokenizer.ggml.bos_token_id").and_then(Value::as_u64),
    ) {
        (true, Some(bos)) => {
            let bos_text = tokens.get(bos as usize).and_then(Value::as_str).unwrap_or_default();
            json!({"type": "TemplateProcessing",
                "single": [{"SpecialToken": {"id": bos_text, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
                "pair": [{"SpecialToken": {"id": bos_text, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                         {"SpecialToken": {"id": bos_text, "type_id": 1}}, {"Sequence": {"id": "B", "type_id": 1}}],
                "special_tokens": {bos_text: {"id": bos_text, "ids": [bos], "tokens": [bos_text]}}})
        }
        _ => {
            json!({"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": false, "use_regex": true})
        }
    };
    Ok(json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added,
        "normalizer": normalizer,
        "pre_tokenizer": pre_tokenizer,
        "post_processor": post_processor,
        "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
        "model": {"type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
                  "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false, "ignore_merges": false,
                  "vocab": vocab, "merges": merges},
    }))
}

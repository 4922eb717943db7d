//! The Hugging Face `config.json` of a RoBERTa sequence classifier, with the checks that keep this
//! implementation honest: only what [`RobertaClassifier`](super::RobertaClassifier) computes is accepted.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;

use crate::error::{Error, Result};

/// The only architecture the classifier implements.
pub const SEQUENCE_CLASSIFICATION_ARCHITECTURE: &str = "RobertaForSequenceClassification";

/// A RoBERTa sequence-classification config, with the field names of Hugging Face `config.json`.
///
/// Fields that only matter for training (dropout rates, initialiser range) are ignored. Defaults are those of
/// `transformers.RobertaConfig` where the field may be absent from a saved config.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct RobertaConfig {
    /// Size of the token vocabulary (`roberta.embeddings.word_embeddings` rows).
    pub vocab_size: i64,
    /// Width of every hidden state.
    pub hidden_size: i64,
    /// Number of encoder layers.
    pub num_hidden_layers: i64,
    /// Attention heads per layer; must divide `hidden_size`.
    pub num_attention_heads: i64,
    /// Width of the feed-forward block.
    pub intermediate_size: i64,
    /// Feed-forward activation; only `gelu` (the exact, erf-based GELU) is implemented.
    #[serde(default = "default_hidden_act")]
    pub hidden_act: String,
    /// Rows of the position-embedding table. RoBERTa offsets positions by `pad_token_id + 1`, so a table of
    /// 514 rows serves 512 tokens.
    #[serde(default = "default_max_position_embeddings")]
    pub max_position_embeddings: i64,
    /// Rows of the token-type table (1 for RoBERTa checkpoints; type 0 is always used).
    #[serde(default = "default_type_vocab_size")]
    pub type_vocab_size: i64,
    /// Epsilon of every LayerNorm.
    #[serde(default = "default_layer_norm_eps")]
    pub layer_norm_eps: f64,
    /// Padding token id; also RoBERTa's position `padding_idx`.
    #[serde(default = "default_pad_token_id")]
    pub pad_token_id: i64,
    /// Number of output classes. Hugging Face derives it from `id2label` when it is not written.
    #[serde(default)]
    pub num_labels: Option<i64>,
    /// Class names by index (`config.json` writes the keys as strings).
    #[serde(default)]
    pub id2label: Option<BTreeMap<String, String>>,
    /// Class indices by name.
    #[serde(default)]
    pub label2id: Option<BTreeMap<String, i64>>,
    /// Model classes the checkpoint was saved from; must name `RobertaForSequenceClassification`.
    #[serde(default)]
    pub architectures: Option<Vec<String>>,
    /// Position encoding; only `absolute` is implemented.
    #[serde(default = "default_position_embedding_type")]
    pub position_embedding_type: String,
}

fn default_hidden_act() -> String {
    "gelu".into()
}
fn default_max_position_embeddings() -> i64 {
    512
}
fn default_type_vocab_size() -> i64 {
    2
}
fn default_layer_norm_eps() -> f64 {
    1e-12
}
fn default_pad_token_id() -> i64 {
    1
}
fn default_position_embedding_type() -> String {
    "absolute".into()
}

impl RobertaConfig {
    /// Reads and validates `config.json`.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path)
            .map_err(|source| Error::Io { path: path.to_path_buf(), source })?;
        Self::from_json(&text, path)
    }

    /// Parses and validates the text of a `config.json`; `path` only names the file in errors.
    pub fn from_json(text: &str, path: &Path) -> Result<Self> {
        let config: Self = serde_json::from_str(text)
            .map_err(|source| Error::Json { path: path.to_path_buf(), source })?;
        config.validate(path)?;
        Ok(config)
    }

    /// The number of classes: `num_labels` if written, else the size of `id2label`, else 2 (the Hugging Face
    /// default).
    pub fn labels(&self) -> i64 {
        match (self.num_labels, &self.id2label) {
            (Some(n), _) => n,
            (None, Some(map)) => map.len() as i64,
            (None, None) => 2,
        }
    }

    /// The name of class `index`: `id2label[index]`, else Hugging Face's default `LABEL_{index}`.
    pub fn label_name(&self, index: usize) -> String {
        self.id2label
            .as_ref()
            .and_then(|m| m.get(&index.to_string()).cloned())
            .unwrap_or_else(|| format!("LABEL_{index}"))
    }

    /// Width of one attention head.
    pub fn head_dim(&self) -> i64 {
        self.hidden_size / self.num_attention_heads
    }

    /// The longest input (special tokens included) the position table can encode.
    pub fn max_input_tokens(&self) -> i64 {
        self.max_position_embeddings - self.pad_token_id - 1
    }

    /// Checks that the config describes the model this module implements; `path` names the file in errors.
    pub fn validate(&self, path: &Path) -> Result<()> {
        let refuse = |field: &str, reason: String| Error::Config {
            path: path.to_path_buf(),
            field: field.to_string(),
            reason,
        };
        match &self.architectures {
            Some(list) if list.iter().any(|a| a == SEQUENCE_CLASSIFICATION_ARCHITECTURE) => {}
            Some(list) => {
                return Err(refuse(
                    "architectures",
                    format!(
                        "is {list:?}; only {SEQUENCE_CLASSIFICATION_ARCHITECTURE} is supported"
                    ),
                ))
            }
            None => {
                return Err(refuse(
                    "architectures",
                    format!("is absent; it must name {SEQUENCE_CLASSIFICATION_ARCHITECTURE}"),
                ))
            }
        }
        if self.hidden_act != "gelu" {
            return Err(refuse(
                "hidden_act",
                format!("is `{}`; only `gelu` (exact, erf-based) is implemented", self.hidden_act),
            ));
        }
        if self.position_embedding_type != "absolute" {
            return Err(refuse(
                "position_embedding_type",
                format!("is `{}`; only `absolute` is implemented", self.position_embedding_type),
            ));
        }
        for (field, value) in [
            ("vocab_size", self.vocab_size),
            ("hidden_size", self.hidden_size),
            ("num_hidden_layers", self.num_hidden_layers),
            ("num_attention_heads", self.num_attention_heads),
            ("intermediate_size", self.intermediate_size),
            ("type_vocab_size", self.type_vocab_size),
        ] {
            if value <= 0 {
                return Err(refuse(field, format!("is {value}; it must be positive")));
            }
        }
        if self.hidden_size % self.num_attention_heads != 0 {
            return Err(refuse(
                "num_attention_heads",
                format!(
                    "{} does not divide hidden_size {}",
                    self.num_attention_heads, self.hidden_size
                ),
            ));
        }
        if !(0..self.vocab_size).contains(&self.pad_token_id) {
            return Err(refuse(
                "pad_token_id",
                format!("{} is outside the vocabulary of {}", self.pad_token_id, self.vocab_size),
            ));
        }
        if self.max_input_tokens() < 1 {
            return Err(refuse(
                "max_position_embeddings",
                format!(
                    "{} leaves no position after the padding offset {}",
                    self.max_position_embeddings,
                    self.pad_token_id + 1
                ),
            ));
        }
        if self.layer_norm_eps.is_nan() || self.layer_norm_eps <= 0.0 {
            return Err(refuse(
                "layer_norm_eps",
                format!("is {}; it must be positive", self.layer_norm_eps),
            ));
        }
        self.validate_labels(path)
    }

    fn validate_labels(&self, path: &Path) -> Result<()> {
        let refuse = |field: &str, reason: String| Error::Config {
            path: path.to_path_buf(),
            field: field.to_string(),
            reason,
        };
        let labels = self.labels();
        if labels < 1 {
            return Err(refuse("num_labels", format!("is {labels}; it must be positive")));
        }
        if let Some(map) = &self.id2label {
            if map.len() as i64 != labels {
                return Err(refuse(
                    "id2label",
                    format!("has {} entries but num_labels is {labels}", map.len()),
                ));
            }
            for key in map.keys() {
                match key.parse::<i64>() {
                    Ok(i) if (0..labels).contains(&i) => {}
                    _ => {
                        return Err(refuse(
                            "id2label",
                            format!("key `{key}` is not a class index below {labels}"),
                        ))
                    }
                }
            }
        }
        if let Some(map) = &self.label2id {
            if let Some((name, id)) = map.iter().find(|(_, &id)| !(0..labels).contains(&id)) {
                return Err(refuse(
                    "label2id",
                    format!("`{name}` maps to {id}, outside 0..{labels}"),
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = r#"{
        "architectures": ["RobertaForSequenceClassification"],
        "vocab_size": 50, "hidden_size": 8, "num_hidden_layers": 1, "num_attention_heads": 2,
        "intermediate_size": 16, "max_position_embeddings": 20, "type_vocab_size": 1, "pad_token_id": 1,
        "layer_norm_eps": 1e-5, "hidden_act": "gelu"
    }"#;

    fn with(field: &str, value: serde_json::Value) -> String {
        let mut v: serde_json::Value = serde_json::from_str(BASE).unwrap();
        v[field] = value;
        v.to_string()
    }

    fn refused_field(text: &str) -> String {
        match RobertaConfig::from_json(text, Path::new("config.json")) {
            Err(Error::Config { field, .. }) => field,
            other => panic!("expected a config error, got {other:?}"),
        }
    }

    #[test]
    fn accepts_a_roberta_classifier_and_defaults_to_two_labels() {
        let config = RobertaConfig::from_json(BASE, Path::new("config.json")).unwrap();
        assert_eq!(config.labels(), 2);
        assert_eq!(config.head_dim(), 4);
        assert_eq!(config.max_input_tokens(), 18);
        assert_eq!(config.label_name(1), "LABEL_1");
    }

    #[test]
    fn reads_labels_from_id2label() {
        let text = with("id2label", serde_json::json!({"0": "safe", "1": "unsafe", "2": "other"}));
        let config = RobertaConfig::from_json(&text, Path::new("config.json")).unwrap();
        assert_eq!(config.labels(), 3);
        assert_eq!(config.label_name(1), "unsafe");
    }

    #[test]
    fn refuses_what_is_not_implemented_naming_the_field() {
        assert_eq!(refused_field(&with("hidden_act", "gelu_new".into())), "hidden_act");
        assert_eq!(refused_field(&with("hidden_act", "relu".into())), "hidden_act");
        assert_eq!(
            refused_field(&with("position_embedding_type", "relative_key".into())),
            "position_embedding_type"
        );
        assert_eq!(
            refused_field(&with("architectures", serde_json::json!(["RobertaForMaskedLM"]))),
            "architectures"
        );
        assert_eq!(refused_field(&with("num_attention_heads", 3.into())), "num_attention_heads");
        assert_eq!(refused_field(&with("pad_token_id", 50.into())), "pad_token_id");
        assert_eq!(refused_field(&with("num_labels", 0.into())), "num_labels");
        let mismatched = with("id2label", serde_json::json!({"0": "a"}));
        let mismatched = {
            let mut v: serde_json::Value = serde_json::from_str(&mismatched).unwrap();
            v["num_labels"] = 2.into();
            v.to_string()
        };
        assert_eq!(refused_field(&mismatched), "id2label");
    }

    #[test]
    fn refuses_a_config_without_architectures() {
        let mut v: serde_json::Value = serde_json::from_str(BASE).unwrap();
        v.as_object_mut().unwrap().remove("architectures");
        assert_eq!(refused_field(&v.to_string()), "architectures");
    }

    #[test]
    fn a_missing_size_is_a_json_error_naming_it() {
        let mut v: serde_json::Value = serde_json::from_str(BASE).unwrap();
        v.as_object_mut().unwrap().remove("hidden_size");
        match RobertaConfig::from_json(&v.to_string(), Path::new("dir/config.json")) {
            Err(err @ Error::Json { .. }) => {
                let msg = err.to_string();
                assert!(msg.contains("hidden_size") && msg.contains("dir/config.json"), "{msg}");
            }
            other => panic!("expected a JSON error, got {other:?}"),
        }
    }
}

//! The classifier's checkpoint: the runtime's memory-mapped [`SafetensorsFiles`], checked name by name against
//! the config before any tensor is read.
//!
//! The check is strict: every tensor the config implies must be present with the implied shape, and nothing else
//! may be, except two kinds of tensors Hugging Face checkpoints legitimately carry without the classifier using
//! them: the `roberta.embeddings.position_ids` / `roberta.embeddings.token_type_ids` index buffers (written by
//! older transformers versions) and the pooler (`roberta.pooler.dense.*`, saved when a checkpoint was converted
//! from a model with a pooler; the sequence-classification head reads the `<s>` hidden state directly).

use std::collections::BTreeSet;

use tch::Kind;

use super::config::RobertaConfig;
use crate::error::{Error, Result};
use crate::weights::SafetensorsFiles;

/// Tensor names a checkpoint may hold that the classifier deliberately does not use.
pub const IGNORED_TENSORS: [&str; 4] = [
    "roberta.embeddings.position_ids",
    "roberta.embeddings.token_type_ids",
    "roberta.pooler.dense.weight",
    "roberta.pooler.dense.bias",
];

/// Every tensor `config` requires, with its shape, under its Hugging Face name.
pub fn expected_tensors(config: &RobertaConfig) -> Vec<(String, Vec<i64>)> {
    let h = config.hidden_size;
    let mut out = vec![
        ("roberta.embeddings.word_embeddings.weight".to_string(), vec![config.vocab_size, h]),
        (
            "roberta.embeddings.position_embeddings.weight".into(),
            vec![config.max_position_embeddings, h],
        ),
        ("roberta.embeddings.token_type_embeddings.weight".into(), vec![config.type_vocab_size, h]),
        ("roberta.embeddings.LayerNorm.weight".into(), vec![h]),
        ("roberta.embeddings.LayerNorm.bias".into(), vec![h]),
    ];
    for i in 0..config.num_hidden_layers {
        let p = format!("roberta.encoder.layer.{i}");
        for proj in ["query", "key", "value"] {
            out.push((format!("{p}.attention.self.{proj}.weight"), vec![h, h]));
            out.push((format!("{p}.attention.self.{proj}.bias"), vec![h]));
        }
        out.push((format!("{p}.attention.output.dense.weight"), vec![h, h]));
        out.push((format!("{p}.attention.output.dense.bias"), vec![h]));
        out.push((format!("{p}.attention.output.LayerNorm.weight"), vec![h]));
        out.push((format!("{p}.attention.output.LayerNorm.bias"), vec![h]));
        out.push((format!("{p}.intermediate.dense.weight"), vec![config.intermediate_size, h]));
        out.push((format!("{p}.intermediate.dense.bias"), vec![config.intermediate_size]));
        out.push((format!("{p}.output.dense.weight"), vec![h, config.intermediate_size]));
        out.push((format!("{p}.output.dense.bias"), vec![h]));
        out.push((format!("{p}.output.LayerNorm.weight"), vec![h]));
        out.push((format!("{p}.output.LayerNorm.bias"), vec![h]));
    }
    out.push(("classifier.dense.weight".into(), vec![h, h]));
    out.push(("classifier.dense.bias".into(), vec![h]));
    out.push(("classifier.out_proj.weight".into(), vec![config.labels(), h]));
    out.push(("classifier.out_proj.bias".into(), vec![config.labels()]));
    out
}

/// Checks the stored names, shapes and dtypes against what `config` requires: every expected tensor present with
/// its shape and a float dtype, nothing else but [`IGNORED_TENSORS`].
pub(crate) fn check(files: &SafetensorsFiles, config: &RobertaConfig) -> Result<()> {
    let expected = expected_tensors(config);
    let present: BTreeSet<&str> = files.names().collect();
    let wanted: BTreeSet<&str> = expected.iter().map(|(n, _)| n.as_str()).collect();
    let missing: Vec<String> = wanted.difference(&present).map(|n| n.to_string()).collect();
    if !missing.is_empty() {
        return Err(Error::MissingTensors { names: missing });
    }
    let unexpected: Vec<String> = present
        .difference(&wanted)
        .filter(|n| !IGNORED_TENSORS.contains(n))
        .map(|n| n.to_string())
        .collect();
    if !unexpected.is_empty() {
        return Err(Error::UnexpectedTensors { names: unexpected });
    }
    for (name, shape) in &expected {
        let actual = files.shape(name)?;
        if &actual != shape {
            return Err(Error::ShapeMismatch {
                name: name.clone(),
                expected: shape.clone(),
                actual,
            });
        }
        let kind = files.stored_kind(name)?;
        if !matches!(kind, Kind::Float | Kind::Half | Kind::BFloat16 | Kind::Double) {
            return Err(Error::Safetensors {
                path: files.path_of(name)?.to_path_buf(),
                reason: format!("tensor `{name}` has dtype {kind:?}; a float dtype is required"),
            });
        }
    }
    Ok(())
}

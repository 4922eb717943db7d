//! The classifier's `model.safetensors`: memory-mapped, checked name by name against the config, and read one
//! tensor at a time straight to the target device and dtype.
//!
//! The check is strict: every tensor the config implies must be present with the implied shape, and nothing else
//! may be, except two kinds of tensors Hugging Face checkpoints legitimately carry without the classifier using
//! them: the `roberta.embeddings.position_ids` / `roberta.embeddings.token_type_ids` index buffers (written by
//! older transformers versions) and the pooler (`roberta.pooler.dense.*`, saved when a checkpoint was converted
//! from a model with a pooler; the sequence-classification head reads the `<s>` hidden state directly).

use std::collections::BTreeSet;
use std::fs::File;
use std::path::{Path, PathBuf};

use memmap2::Mmap;
use safetensors::tensor::{Dtype, Metadata};
use tch::{Device, Kind, Tensor};

use super::config::RobertaConfig;
use super::error::{Result, RobertaError, TorchContext};

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

/// A memory-mapped safetensors file.
pub(crate) struct Checkpoint {
    path: PathBuf,
    mmap: Mmap,
    data_start: usize,
    metadata: Metadata,
}

impl Checkpoint {
    /// Maps `path` and parses its header.
    pub(crate) fn open(path: &Path) -> Result<Self> {
        let file = File::open(path)
            .map_err(|source| RobertaError::Io { path: path.to_path_buf(), source })?;
        // SAFETY: the mapping is read-only and the checkpoint is not written by this process while mapped.
        let mmap = unsafe { Mmap::map(&file) }
            .map_err(|source| RobertaError::Io { path: path.to_path_buf(), source })?;
        let (header_len, metadata) =
            safetensors::SafeTensors::read_metadata(&mmap).map_err(|e| {
                RobertaError::Safetensors { path: path.to_path_buf(), reason: e.to_string() }
            })?;
        Ok(Self { path: path.to_path_buf(), mmap, data_start: 8 + header_len, metadata })
    }

    /// Checks the stored names and shapes against what `config` requires.
    pub(crate) fn check(&self, config: &RobertaConfig) -> Result<()> {
        let expected = expected_tensors(config);
        let stored = self.metadata.tensors();
        let present: BTreeSet<&str> = stored.keys().map(String::as_str).collect();
        let wanted: BTreeSet<&str> = expected.iter().map(|(n, _)| n.as_str()).collect();
        let missing: Vec<String> = wanted.difference(&present).map(|n| n.to_string()).collect();
        if !missing.is_empty() {
            return Err(RobertaError::MissingTensors { path: self.path.clone(), names: missing });
        }
        let unexpected: Vec<String> = present
            .difference(&wanted)
            .filter(|n| !IGNORED_TENSORS.contains(n))
            .map(|n| n.to_string())
            .collect();
        if !unexpected.is_empty() {
            return Err(RobertaError::UnexpectedTensors {
                path: self.path.clone(),
                names: unexpected,
            });
        }
        for (name, shape) in &expected {
            let found = self.stored_shape(name)?;
            if &found != shape {
                return Err(RobertaError::TensorShape {
                    path: self.path.clone(),
                    name: name.clone(),
                    expected: shape.clone(),
                    found,
                });
            }
        }
        Ok(())
    }

    fn stored_shape(&self, name: &str) -> Result<Vec<i64>> {
        let info = self.metadata.info(name).ok_or_else(|| RobertaError::MissingTensors {
            path: self.path.clone(),
            names: vec![name.to_string()],
        })?;
        Ok(info.shape.iter().map(|&d| d as i64).collect())
    }

    /// Copies tensor `name` onto `device` as `kind`.
    pub(crate) fn load(&self, name: &str, device: Device, kind: Kind) -> Result<Tensor> {
        let info = self.metadata.info(name).ok_or_else(|| RobertaError::MissingTensors {
            path: self.path.clone(),
            names: vec![name.to_string()],
        })?;
        let stored = match info.dtype {
            Dtype::F32 => Kind::Float,
            Dtype::F16 => Kind::Half,
            Dtype::BF16 => Kind::BFloat16,
            Dtype::F64 => Kind::Double,
            other => {
                return Err(RobertaError::Safetensors {
                    path: self.path.clone(),
                    reason: format!(
                        "tensor `{name}` has dtype {other:?}; a float dtype is required"
                    ),
                })
            }
        };
        let (start, end) = info.data_offsets;
        let bytes =
            self.mmap.get(self.data_start + start..self.data_start + end).ok_or_else(|| {
                RobertaError::Safetensors {
                    path: self.path.clone(),
                    reason: format!("tensor `{name}` lies past the end of the file"),
                }
            })?;
        let shape: Vec<i64> = info.shape.iter().map(|&d| d as i64).collect();
        let numel: i64 = shape.iter().product();
        if bytes.len() != numel as usize * stored.elt_size_in_bytes() {
            return Err(RobertaError::Safetensors {
                path: self.path.clone(),
                reason: format!(
                    "tensor `{name}` has {} bytes, its shape {shape:?} needs more or fewer",
                    bytes.len()
                ),
            });
        }
        let mut strides = vec![1i64; shape.len()];
        for i in (0..shape.len().saturating_sub(1)).rev() {
            strides[i] = strides[i + 1] * shape[i + 1];
        }
        let context = format!("loading `{name}` from {}", self.path.display());
        // SAFETY: `bytes` stays mapped while the view exists, and the view is only read by the copying conversion
        // below, which returns an owned tensor.
        let view = unsafe {
            Tensor::f_from_blob(bytes.as_ptr(), &shape, &strides, stored, Device::Cpu)
                .ctx(&context)?
        };
        view.f_to_device_(device, kind, false, true).ctx(&context)
    }
}

//! Memory-mapped Hugging Face safetensors checkpoints, single-file or sharded.
//!
//! Tensors are read one at a time from the mapped file and converted straight to the target device and dtype, so
//! loading never holds a second full copy of the model in host memory.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::path::{Path, PathBuf};

use memmap2::Mmap;
use safetensors::tensor::{Dtype, Metadata};
use tch::{Device, Kind, Tensor};

use crate::error::{Error, Result, TorchContext};

struct MappedFile {
    path: PathBuf,
    mmap: Mmap,
    data_start: usize,
    metadata: Metadata,
}

/// A set of memory-mapped safetensors files with a name index over all of them.
pub struct SafetensorsFiles {
    files: Vec<MappedFile>,
    index: BTreeMap<String, usize>,
}

impl std::fmt::Debug for SafetensorsFiles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SafetensorsFiles")
            .field("files", &self.files.iter().map(|m| &m.path).collect::<Vec<_>>())
            .field("tensors", &self.index.len())
            .finish()
    }
}

impl SafetensorsFiles {
    /// Opens the checkpoint of a Hugging Face model directory: `model.safetensors`, or the shards listed in
    /// `model.safetensors.index.json`.
    pub fn open_dir(dir: impl AsRef<Path>) -> Result<Self> {
        let dir = dir.as_ref();
        let single = dir.join("model.safetensors");
        let index = dir.join("model.safetensors.index.json");
        if single.is_file() {
            return Self::open_files(&[single]);
        }
        if index.is_file() {
            return Self::open_index(&index);
        }
        Err(Error::Io {
            path: single,
            source: std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "neither model.safetensors nor model.safetensors.index.json exists in the model directory",
            ),
        })
    }

    /// Opens a sharded checkpoint from its `model.safetensors.index.json`.
    pub fn open_index(index_path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(index_path)
            .map_err(|source| Error::Io { path: index_path.to_path_buf(), source })?;
        let value: serde_json::Value = serde_json::from_str(&text)
            .map_err(|source| Error::Json { path: index_path.to_path_buf(), source })?;
        let map = value.get("weight_map").and_then(|m| m.as_object()).ok_or_else(|| {
            Error::Safetensors {
                path: index_path.to_path_buf(),
                reason: "no `weight_map` object".into(),
            }
        })?;
        let dir = index_path.parent().unwrap_or(Path::new("."));
        let mut shards: Vec<String> = Vec::new();
        for (name, shard) in map {
            let shard = shard.as_str().ok_or_else(|| Error::Safetensors {
                path: index_path.to_path_buf(),
                reason: format!("weight_map entry `{name}` is not a file name"),
            })?;
            if !shards.iter().any(|s| s == shard) {
                shards.push(shard.to_string());
            }
        }
        let paths: Vec<PathBuf> = shards.iter().map(|s| dir.join(s)).collect();
        let files = Self::open_files(&paths)?;
        for (name, shard) in map {
            let holder = files.index.get(name).map(|&i| &files.files[i].path);
            if holder != Some(&dir.join(shard.as_str().unwrap_or_default())) {
                return Err(Error::Safetensors {
                    path: index_path.to_path_buf(),
                    reason: format!(
                        "weight_map says `{name}` is in {shard}, but that shard lacks it"
                    ),
                });
            }
        }
        Ok(files)
    }

    /// Maps the given safetensors files. A tensor name present in two files is an error.
    pub fn open_files(paths: &[PathBuf]) -> Result<Self> {
        let mut files = Vec::with_capacity(paths.len());
        let mut index = BTreeMap::new();
        for path in paths {
            let file =
                File::open(path).map_err(|source| Error::Io { path: path.clone(), source })?;
            // SAFETY: the mapping is read-only; the file is a checkpoint that nothing in this process writes.
            let mmap = unsafe { Mmap::map(&file) }
                .map_err(|source| Error::Io { path: path.clone(), source })?;
            let (header_len, metadata) = safetensors::SafeTensors::read_metadata(&mmap)
                .map_err(|e| Error::Safetensors { path: path.clone(), reason: e.to_string() })?;
            let file_index = files.len();
            for name in metadata.tensors().keys() {
                if index.insert(name.clone(), file_index).is_some() {
                    return Err(Error::Safetensors {
                        path: path.clone(),
                        reason: format!("tensor `{name}` appears in more than one file"),
                    });
                }
            }
            files.push(MappedFile {
                path: path.clone(),
                mmap,
                data_start: 8 + header_len,
                metadata,
            });
        }
        Ok(Self { files, index })
    }

    /// All tensor names, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.index.keys().map(String::as_str)
    }

    /// Whether the checkpoint holds `name`.
    pub fn contains(&self, name: &str) -> bool {
        self.index.contains_key(name)
    }

    /// The stored shape of `name`.
    pub fn shape(&self, name: &str) -> Result<Vec<i64>> {
        let file = self.file_of(name)?;
        let info = file
            .metadata
            .info(name)
            .ok_or_else(|| Error::UnknownParameter { name: name.into() })?;
        Ok(info.shape.iter().map(|&d| d as i64).collect())
    }

    /// Loads one tensor onto `device`, converted to `kind` (or kept in its stored dtype when `None`).
    ///
    /// # Shapes
    /// The stored shape, unchanged.
    pub fn load(&self, name: &str, device: Device, kind: Option<Kind>) -> Result<Tensor> {
        let file = self.file_of(name)?;
        let info = file
            .metadata
            .info(name)
            .ok_or_else(|| Error::UnknownParameter { name: name.into() })?;
        let stored = stored_kind(info.dtype).ok_or_else(|| Error::Safetensors {
            path: file.path.clone(),
            reason: format!(
                "tensor `{name}` has dtype {:?}, which the runtime cannot load",
                info.dtype
            ),
        })?;
        let (start, end) = info.data_offsets;
        let bytes =
            file.mmap.get(file.data_start + start..file.data_start + end).ok_or_else(|| {
                Error::Safetensors {
                    path: file.path.clone(),
                    reason: format!("tensor `{name}` lies past the end"),
                }
            })?;
        let shape: Vec<i64> = info.shape.iter().map(|&d| d as i64).collect();
        let expected = shape.iter().product::<i64>() as usize * stored.elt_size_in_bytes();
        if bytes.len() != expected {
            return Err(Error::Safetensors {
                path: file.path.clone(),
                reason: format!(
                    "tensor `{name}` has {} bytes, its shape needs {expected}",
                    bytes.len()
                ),
            });
        }
        let target = kind.unwrap_or(stored);
        let strides = contiguous_strides(&shape);
        // SAFETY: `bytes` stays mapped for the duration of this call and the blob tensor is only read by the
        // copying conversion below, which produces an owned tensor before returning.
        let view = unsafe {
            Tensor::f_from_blob(bytes.as_ptr(), &shape, &strides, stored, Device::Cpu)
                .ctx(&format!("viewing `{name}`"))?
        };
        view.f_to_device_(device, target, false, true).ctx(&format!("loading `{name}`"))
    }

    /// Loads every tensor (for small checkpoints and tools); prefer [`SafetensorsFiles::load`] for models.
    pub fn load_all(&self, device: Device, kind: Option<Kind>) -> Result<HashMap<String, Tensor>> {
        self.names().map(|n| Ok((n.to_string(), self.load(n, device, kind)?))).collect()
    }

    fn file_of(&self, name: &str) -> Result<&MappedFile> {
        self.index
            .get(name)
            .map(|&i| &self.files[i])
            .ok_or_else(|| Error::UnknownParameter { name: name.into() })
    }
}

fn contiguous_strides(shape: &[i64]) -> Vec<i64> {
    let mut strides = vec![1i64; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        strides[i] = strides[i + 1] * shape[i + 1];
    }
    strides
}

fn stored_kind(dtype: Dtype) -> Option<Kind> {
    Some(match dtype {
        Dtype::F32 => Kind::Float,
        Dtype::F16 => Kind::Half,
        Dtype::BF16 => Kind::BFloat16,
        Dtype::F64 => Kind::Double,
        Dtype::I64 => Kind::Int64,
        Dtype::I32 => Kind::Int,
        Dtype::I16 => Kind::Int16,
        Dtype::I8 => Kind::Int8,
        Dtype::U8 => Kind::Uint8,
        Dtype::BOOL => Kind::Bool,
        _ => return None,
    })
}

/// Writes named tensors to a safetensors file durably (see [`detox_io::write_atomic_with`]).
pub fn save_safetensors(path: &Path, tensors: &[(String, Tensor)]) -> Result<()> {
    let cpu: Vec<(String, Tensor)> = tensors
        .iter()
        .map(|(n, t)| {
            let t = t.f_to_device_(Device::Cpu, t.kind(), false, false).ctx("moving to CPU")?;
            Ok((n.clone(), t.f_contiguous().ctx("making contiguous")?))
        })
        .collect::<Result<_>>()?;
    detox_io::write_atomic_with(path, |tmp| {
        Tensor::write_safetensors(&cpu, tmp).map_err(|source| Error::Torch {
            context: format!("writing {}", tmp.display()),
            source,
        })
    })
}

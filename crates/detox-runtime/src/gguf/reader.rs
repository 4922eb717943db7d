//! The GGUF container (version 2 and 3): header, metadata, tensor directory, memory-mapped data.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use memmap2::Mmap;

use crate::error::{Error, Result};

/// A metadata value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// Unsigned integer (u8, u16, u32, u64).
    U64(u64),
    /// Signed integer (i8, i16, i32, i64).
    I64(i64),
    /// Floating point (f32, f64).
    F64(f64),
    /// Boolean.
    Bool(bool),
    /// UTF-8 string.
    Str(String),
    /// Array of values.
    Array(Vec<Value>),
}

impl Value {
    /// The value as an unsigned integer, when it is a non-negative integer.
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            Value::U64(v) => Some(v),
            Value::I64(v) => u64::try_from(v).ok(),
            _ => None,
        }
    }

    /// The value as a float, when it is numeric.
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            Value::F64(v) => Some(v),
            Value::U64(v) => Some(v as f64),
            Value::I64(v) => Some(v as f64),
            _ => None,
        }
    }

    /// The value as a string.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    /// The value as an array.
    pub fn as_array(&self) -> Option<&[Value]> {
        match self {
            Value::Array(a) => Some(a),
            _ => None,
        }
    }
}

/// One tensor of the directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorInfo {
    /// The GGUF tensor name (e.g. `blk.0.attn_q.weight`).
    pub name: String,
    /// Dimensions in GGML order (fastest-varying first): the reverse of the PyTorch shape.
    pub dims: Vec<u64>,
    /// GGML type id.
    pub ggml_type: u32,
    /// Offset of the data from the start of the data section.
    pub offset: u64,
}

impl TensorInfo {
    /// The PyTorch shape (GGML dimensions reversed).
    pub fn torch_shape(&self) -> Vec<i64> {
        self.dims.iter().rev().map(|&d| d as i64).collect()
    }

    /// Number of elements (saturating: [`GgufFile::open`] refuses shapes whose product overflows).
    pub fn numel(&self) -> u64 {
        self.dims.iter().fold(1u64, |n, &d| n.saturating_mul(d))
    }
}

/// A memory-mapped GGUF file.
pub struct GgufFile {
    path: PathBuf,
    mmap: Mmap,
    /// Format version.
    pub version: u32,
    /// Metadata by key.
    pub metadata: BTreeMap<String, Value>,
    /// Tensor directory in file order.
    pub tensors: Vec<TensorInfo>,
    data_start: usize,
}

impl std::fmt::Debug for GgufFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GgufFile")
            .field("path", &self.path)
            .field("version", &self.version)
            .field("metadata_keys", &self.metadata.len())
            .field("tensors", &self.tensors.len())
            .finish()
    }
}

struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
    path: &'a Path,
}

impl<'a> Cursor<'a> {
    fn fail(&self, what: &str) -> Error {
        Error::Malformed {
            what: format!("{}: malformed GGUF at byte {}: {what}", self.path.display(), self.pos),
        }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.bytes.len())
            .ok_or_else(|| self.fail("unexpected end of file"))?;
        let out = &self.bytes[self.pos..end];
        self.pos = end;
        Ok(out)
    }

    fn u8(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16> {
        Ok(u16::from_le_bytes(self.take(2)?.try_into().expect("2 bytes")))
    }
    fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().expect("4 bytes")))
    }
    fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().expect("8 bytes")))
    }

    fn string(&mut self) -> Result<String> {
        let len = self.u64()? as usize;
        let bytes = self.take(len)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| self.fail("string is not UTF-8"))
    }

    fn value(&mut self, kind: u32, depth: usize) -> Result<Value> {
        Ok(match kind {
            0 => Value::U64(self.u8()? as u64),
            1 => Value::I64(self.u8()? as i8 as i64),
            2 => Value::U64(self.u16()? as u64),
            3 => Value::I64(self.u16()? as i16 as i64),
            4 => Value::U64(self.u32()? as u64),
            5 => Value::I64(self.u32()? as i32 as i64),
            6 => Value::F64(f32::from_bits(self.u32()?) as f64),
            7 => Value::Bool(self.u8()? != 0),
            8 => Value::Str(self.string()?),
            9 => {
                if depth > 4 {
                    return Err(self.fail("arrays nested too deeply"));
                }
                let item = self.u32()?;
                let len = self.u64()? as usize;
                // Every item takes at least one byte: a longer array cannot be in the file, and the
                // allocation below stays within the file's size times the size of a value.
                if len > self.bytes.len() - self.pos {
                    return Err(self.fail(&format!(
                        "array of {len} items is longer than the rest of the file"
                    )));
                }
                let mut items = Vec::with_capacity(len);
                for _ in 0..len {
                    items.push(self.value(item, depth + 1)?);
                }
                Value::Array(items)
            }
            10 => Value::U64(self.u64()?),
            11 => Value::I64(self.u64()? as i64),
            12 => Value::F64(f64::from_bits(self.u64()?)),
            other => return Err(self.fail(&format!("unknown metadata value type {other}"))),
        })
    }
}

impl GgufFile {
    /// Maps and parses a GGUF file.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        let file = File::open(&path).map_err(|source| Error::Io { path: path.clone(), source })?;
        // SAFETY: read-only mapping of a model file that this process does not modify.
        let mmap = unsafe { Mmap::map(&file) }
            .map_err(|source| Error::Io { path: path.clone(), source })?;
        let mut c = Cursor { bytes: &mmap, pos: 0, path: &path };
        if c.take(4)? != b"GGUF" {
            return Err(Error::Malformed {
                what: format!("{}: not a GGUF file (bad magic)", path.display()),
            });
        }
        let version = c.u32()?;
        if !(2..=3).contains(&version) {
            return Err(Error::Malformed {
                what: format!(
                    "{}: GGUF version {version} is not supported (2 or 3)",
                    path.display()
                ),
            });
        }
        let tensor_count = c.u64()? as usize;
        let kv_count = c.u64()? as usize;
        let mut metadata = BTreeMap::new();
        for _ in 0..kv_count {
            let key = c.string()?;
            let kind = c.u32()?;
            let value = c.value(kind, 0)?;
            metadata.insert(key, value);
        }
        // A directory entry takes at least 24 bytes (name length, dimension count, type, offset): a count the
        // rest of the file cannot hold is refused before anything is allocated for it.
        const MIN_ENTRY: usize = 24;
        if tensor_count > (c.bytes.len() - c.pos) / MIN_ENTRY {
            return Err(
                c.fail(&format!("tensor count {tensor_count} exceeds what the file can hold"))
            );
        }
        let mut tensors = Vec::with_capacity(tensor_count);
        for _ in 0..tensor_count {
            let name = c.string()?;
            let n_dims = c.u32()? as usize;
            if n_dims > 4 {
                return Err(c.fail(&format!("tensor {name} has {n_dims} dimensions")));
            }
            let dims = (0..n_dims).map(|_| c.u64()).collect::<Result<Vec<_>>>()?;
            let numel = dims.iter().try_fold(1u64, |n, &d| n.checked_mul(d));
            if numel.is_none_or(|n| n > i64::MAX as u64) {
                return Err(
                    c.fail(&format!("tensor {name} has dimensions {dims:?}, too many elements"))
                );
            }
            let ggml_type = c.u32()?;
            let offset = c.u64()?;
            tensors.push(TensorInfo { name, dims, ggml_type, offset });
        }
        let alignment =
            metadata.get("general.alignment").and_then(Value::as_u64).unwrap_or(32).max(1) as usize;
        let data_start =
            c.pos.div_ceil(alignment).checked_mul(alignment).ok_or_else(|| Error::Malformed {
                what: format!(
                    "{}: general.alignment {alignment} puts the data section past any file size",
                    path.display()
                ),
            })?;
        let parsed = Self { path: path.clone(), version, metadata, tensors, data_start, mmap };
        for t in &parsed.tensors {
            parsed.tensor_bytes(t)?;
        }
        Ok(parsed)
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A metadata value.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.metadata.get(key)
    }

    /// The raw bytes of a tensor.
    pub fn tensor_bytes(&self, info: &TensorInfo) -> Result<&[u8]> {
        let size = super::dequant::byte_size(info.ggml_type, info.numel()).ok_or_else(|| {
            Error::Unsupported { what: format!(
                "{}: tensor {} has GGML type {} (supported: F32, F16, BF16, Q4_0, Q4_1, Q8_0) or a shape that does \
                 not fill whole blocks",
                self.path.display(),
                info.name,
                info.ggml_type
            ) }
        })?;
        let range = usize::try_from(info.offset)
            .ok()
            .and_then(|offset| self.data_start.checked_add(offset))
            .and_then(|start| Some(start..start.checked_add(size)?));
        range.and_then(|r| self.mmap.get(r)).ok_or_else(|| Error::Malformed {
            what: format!(
                "{}: tensor {} lies past the end of the file",
                self.path.display(),
                info.name
            ),
        })
    }
}

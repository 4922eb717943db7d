//! Writing a model back as a Hugging Face model directory, with its edits merged: what `save_pretrained` of
//! transformers writes, loadable there without `trust_remote_code` and here bit-identically.
//!
//! The written directory holds
//! - every parameter under its Hugging Face name, in the model's dtype or a requested one, low-rank side paths
//!   merged into their weights, in `model.safetensors` or, past the shard size, in `model-0000i-of-0000N.safetensors`
//!   shards with a `model.safetensors.index.json` (`metadata.total_size`, `weight_map`), split as transformers
//!   splits them (tensors in order, a new shard when the next tensor would overflow the current one);
//! - the source's `config.json`, byte for byte when the dtype is unchanged, otherwise with only its dtype field
//!   (`torch_dtype` or `dtype`, whichever the source wrote) changed;
//! - the source's tokenizer and generation files ([`COPIED_FILES`]), byte for byte.
//!
//! Nothing else is written. The directory is assembled in a hidden sibling and renamed into place, so a crash
//! leaves either no directory or the complete one.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::path::{Path, PathBuf};

use safetensors::tensor::{Dtype, View};
use serde_json::Value as Json;
use tch::{Device, Kind, Tensor};

use crate::error::{Error, Result, TorchContext};
use crate::load::{LoadedModel, ModelFormat};
use crate::model::CausalLm;
use crate::weights::SafetensorsFiles;

/// The files of a model directory copied unchanged beside the weights: the tokenizer (fast and slow), its
/// special tokens, the chat template and the generation defaults.
pub const COPIED_FILES: [&str; 11] = [
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "tokenizer.model",
    "vocab.json",
    "merges.txt",
    "chat_template.jinja",
    "chat_template.json",
    "generation_config.json",
    "preprocessor_config.json",
];

/// transformers' default `max_shard_size` ("5GB", decimal units as the Hub counts them).
pub const DEFAULT_MAX_SHARD_SIZE: u64 = 5_000_000_000;

/// How [`CausalLm::save_pretrained`] writes a model.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SaveOptions {
    /// The dtype of the written weights (`None`: the model's dtype). Floating-point kinds only.
    pub dtype: Option<Kind>,
    /// The largest shard in bytes; a single tensor larger than this gets a shard of its own.
    pub max_shard_size: u64,
    /// Replace an existing non-empty directory (otherwise it is refused).
    pub overwrite: bool,
}

impl Default for SaveOptions {
    fn default() -> Self {
        Self { dtype: None, max_shard_size: DEFAULT_MAX_SHARD_SIZE, overwrite: false }
    }
}

impl SaveOptions {
    /// The defaults: the model's dtype, 5 GB shards, no overwriting.
    pub fn new() -> Self {
        Self::default()
    }

    /// Writes the weights in `kind`.
    pub fn with_dtype(mut self, kind: Kind) -> Self {
        self.dtype = Some(kind);
        self
    }

    /// Shards at `bytes` (see [`parse_shard_size`] for transformers' spellings).
    pub fn with_max_shard_size(mut self, bytes: u64) -> Self {
        self.max_shard_size = bytes;
        self
    }

    /// Whether an existing non-empty target directory is replaced.
    pub fn with_overwrite(mut self, overwrite: bool) -> Self {
        self.overwrite = overwrite;
        self
    }
}

/// What [`CausalLm::save_pretrained`] wrote.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct SavedModel {
    /// The model directory.
    pub dir: PathBuf,
    /// The weight files, in order (`model.safetensors`, or the shards).
    pub weight_files: Vec<String>,
    /// The other files copied from the source (`config.json` first).
    pub copied: Vec<String>,
    /// The dtype of the weights.
    pub dtype: Kind,
    /// The number of tensors written.
    pub tensors: usize,
    /// The bytes of tensor data (the index's `metadata.total_size`).
    pub total_size: u64,
}

/// Parses a shard size as transformers writes it: a number of bytes, or one with a unit, decimal (`KB`, `MB`,
/// `GB`, `TB`: powers of 1000) or binary (`KiB`, `MiB`, `GiB`, `TiB`), case-insensitive (`5GB`, `200MiB`, `1e6`
/// is refused: whole numbers only).
pub fn parse_shard_size(text: &str) -> Result<u64> {
    let trimmed = text.trim();
    let split = trimmed.find(|c: char| !c.is_ascii_digit()).unwrap_or(trimmed.len());
    let (number, unit) = trimmed.split_at(split);
    let bad = |reason: &str| Error::InvalidSetting {
        what: format!("shard size `{text}`: {reason} (e.g. 5GB, 500MB, 200MiB, 1000000)"),
    };
    let number: u64 =
        number.parse().map_err(|_| bad("expected a whole number of bytes or units"))?;
    let factor: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        "tb" => 1_000_000_000_000,
        "kib" => 1 << 10,
        "mib" => 1 << 20,
        "gib" => 1 << 30,
        "tib" => 1 << 40,
        _ => return Err(bad("unknown unit")),
    };
    let bytes = number.checked_mul(factor).ok_or_else(|| bad("too large"))?;
    if bytes == 0 {
        return Err(bad("must be positive"));
    }
    Ok(bytes)
}

impl LoadedModel {
    /// Writes the model (with its current weights: edits applied, low-rank paths merged) as a Hugging Face model
    /// directory at `out`, taking `config.json` and the tokenizer files from the checkpoint it was loaded from.
    /// See [`CausalLm::save_pretrained`].
    ///
    /// # Errors
    /// [`Error::Export`] for a model loaded from a GGUF file: such a file has no `config.json` or `tokenizer.json`
    /// to copy, and writing ones derived from its metadata would not be the "nothing else changed" copy this
    /// promises; convert the GGUF's source checkpoint instead.
    pub fn save_pretrained(&self, out: &Path, options: &SaveOptions) -> Result<SavedModel> {
        match self.format {
            ModelFormat::Directory => self.model.save_pretrained(&self.path, out, options),
            ModelFormat::Gguf => Err(Error::Export {
                path: out.to_path_buf(),
                reason: format!(
                    "{} is a GGUF file: only a model loaded from a Hugging Face directory can be written back \
                     (its config.json and tokenizer files are copied from there)",
                    self.path.display()
                ),
            }),
        }
    }
}

impl CausalLm {
    /// Writes the model as a Hugging Face model directory at `out`: its current parameters under their Hugging
    /// Face names (low-rank side paths merged into their weights in fp32), `config.json` and the tokenizer files
    /// of `source`, the model directory it was loaded from. The result loads here with [`CausalLm::load`] into
    /// bit-identical parameters (in the written dtype) and in transformers' `AutoModelForCausalLM` without
    /// `trust_remote_code`.
    ///
    /// The source's conventions are kept: a tied model whose checkpoint had no `lm_head.weight` gets none, one
    /// whose checkpoint carried the (tied) head gets it again, equal to the embedding; rotary tables an older
    /// checkpoint stored are copied as they were. The written tensor names are exactly the source checkpoint's;
    /// a model that is not the source's (other names, tensors the source lacks or has besides) is refused.
    ///
    /// # Errors
    /// - [`Error::Export`] when `out` exists and is not empty (without [`SaveOptions::overwrite`]), when the
    ///   model's tensor names are not the source checkpoint's, when a bias
    ///   was attached at run time (a steering edit: the architecture's `config.json` has no switch for that one
    ///   bias, so transformers would drop it), when a parameter is per-row (`[k, out, in]`, a batched edit still
    ///   applied) or when the dtype is not floating point;
    /// - [`Error::NonFiniteWeights`] when a parameter holds NaN or infinity (the directory would not load);
    /// - [`Error::Io`], [`Error::Write`], [`Error::Json`] and [`Error::Safetensors`] naming the file concerned.
    pub fn save_pretrained(
        &self,
        source: &Path,
        out: &Path,
        options: &SaveOptions,
    ) -> Result<SavedModel> {
        let export_err = |reason: String| Error::Export { path: out.to_path_buf(), reason };
        let dtype = options.dtype.unwrap_or(self.kind());
        let dtype_name = torch_dtype_name(dtype).ok_or_else(|| {
            export_err(format!("cannot write weights as {dtype:?}: not a float dtype"))
        })?;
        if options.max_shard_size == 0 {
            return Err(export_err("the shard size must be positive".into()));
        }
        if let Some(bias) = self.attached_biases().next() {
            return Err(export_err(format!(
                "`{bias}` is a bias attached at run time (a steering vector, for instance): this architecture's \
                 checkpoints have no such bias and transformers would drop it, so an edit that adds one cannot be \
                 written back"
            )));
        }
        check_target(out, options.overwrite)?;

        let files = SafetensorsFiles::open_dir(source)?;
        let plan = self.plan(&files, dtype, out)?;
        same_names(&plan, &files, source, out)?;
        let config = rewrite_config(&source.join("config.json"), dtype_name)?;

        let tmp = temporary_dir(out);
        if tmp.exists() {
            // A leftover of an interrupted write: never the user's data (the name is ours and hidden).
            std::fs::remove_dir_all(&tmp)
                .map_err(|source| write_err("removing the leftover", &tmp, source))?;
        }
        std::fs::create_dir_all(&tmp).map_err(|source| write_err("creating", &tmp, source))?;
        let contents = Contents { model: self, files: &files, plan: &plan, dtype, out };
        let result = contents.write(&tmp, source, &config, options.max_shard_size).and_then(
            |(weight_files, copied, total_size)| {
                move_into_place(&tmp, out, options.overwrite)?;
                Ok(SavedModel {
                    dir: out.to_path_buf(),
                    weight_files,
                    copied,
                    dtype,
                    tensors: plan.len(),
                    total_size,
                })
            },
        );
        if result.is_err() {
            // The error says what failed; a half-written hidden directory would only be in the way of a rerun.
            let _ = std::fs::remove_dir_all(&tmp);
        }
        result
    }

    /// Every tensor the directory holds, in order, with its size in bytes: the parameters, the tied head where the
    /// source stored one, and the source's derived rotary tables. Nothing is copied yet; a per-row parameter is
    /// refused here, before anything is written.
    fn plan(&self, files: &SafetensorsFiles, dtype: Kind, out: &Path) -> Result<Vec<Planned>> {
        let bytes = |numel: i64, kind: Kind| numel.max(0) as u64 * kind.elt_size_in_bytes() as u64;
        let mut plan = Vec::with_capacity(self.parameter_names().len() + 1);
        for name in self.parameter_names() {
            let tensor = self.parameter(name)?;
            let per_row = (name.ends_with("_proj.weight") && tensor.dim() != 2)
                || (name.ends_with("_proj.bias") && tensor.dim() != 1);
            if per_row {
                return Err(Error::Export {
                    path: out.to_path_buf(),
                    reason: format!(
                        "`{name}` holds one weight per batch row (shape {:?}): restore the batched edit first",
                        tensor.size()
                    ),
                });
            }
            plan.push(Planned {
                name: name.clone(),
                entry: Entry::Parameter,
                bytes: bytes(tensor.numel() as i64, dtype),
            });
        }
        if self.config().tie_word_embeddings && files.contains("lm_head.weight") {
            let embed = self.parameter(EMBEDDING)?;
            plan.push(Planned {
                name: "lm_head.weight".into(),
                entry: Entry::TiedHead,
                bytes: bytes(embed.numel() as i64, dtype),
            });
        }
        for name in files.names().filter(|n| n.ends_with("rotary_emb.inv_freq")) {
            let numel = files.shape(name)?.iter().product();
            plan.push(Planned {
                name: name.to_string(),
                entry: Entry::Stored,
                bytes: bytes(numel, files.stored_kind(name)?),
            });
        }
        Ok(plan)
    }

    /// `name`'s tensor with its low-rank side path (if any) added: `W + scale · B A`, computed in fp32 and cast
    /// back to the parameter's dtype.
    ///
    /// # Shapes
    /// The parameter's shape.
    fn merged_parameter(&self, name: &str) -> Result<Tensor> {
        let weight = self.parameter(name)?.f_detach().ctx(&format!("detaching `{name}`"))?;
        let Some(path) = self.low_rank(name)? else {
            return Ok(weight);
        };
        let ctx = format!("merging the low-rank path of `{name}`");
        let a = path.a.f_detach().and_then(|a| a.f_to_kind(Kind::Float)).ctx(&ctx)?;
        let b = path.b.f_detach().and_then(|b| b.f_to_kind(Kind::Float)).ctx(&ctx)?;
        b.f_matmul(&a)
            .and_then(|ba| ba.f_mul_scalar(path.scale))
            .and_then(|ba| ba.f_to_device(weight.device()))
            .and_then(|ba| weight.f_to_kind(Kind::Float)?.f_add(&ba))
            .and_then(|w| w.f_to_kind(weight.kind()))
            .ctx(&ctx)
    }
}

/// Refuses a write whose tensor names differ from the source checkpoint's: a model whose names the runtime
/// maps on load (a prefix it drops, weights of another modality it does not load) would otherwise be written
/// under other names or without those weights, and transformers would not load it as the source's architecture.
fn same_names(plan: &[Planned], files: &SafetensorsFiles, source: &Path, out: &Path) -> Result<()> {
    let written: std::collections::BTreeSet<&str> = plan.iter().map(|p| p.name.as_str()).collect();
    let stored: std::collections::BTreeSet<&str> = files.names().collect();
    if written == stored {
        return Ok(());
    }
    let list = |names: Vec<&&str>| {
        let shown: Vec<String> = names.iter().take(5).map(|n| format!("`{n}`")).collect();
        let more = names.len().saturating_sub(5);
        if more > 0 {
            format!("{} and {more} more", shown.join(", "))
        } else {
            shown.join(", ")
        }
    };
    let missing: Vec<&&str> = stored.difference(&written).collect();
    let extra: Vec<&&str> = written.difference(&stored).collect();
    let mut reason = format!("the model's tensors are not those of {}:", source.display());
    if !missing.is_empty() {
        reason
            .push_str(&format!(" the checkpoint has {} the model would not write", list(missing)));
    }
    if !extra.is_empty() {
        reason.push_str(&format!(
            " the model would write {}, which the checkpoint lacks",
            list(extra)
        ));
    }
    Err(Error::Export { path: out.to_path_buf(), reason })
}

/// The embedding, which is also the output head of a tied model.
const EMBEDDING: &str = "model.embed_tokens.weight";

/// Where a written tensor comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Entry {
    /// The model's parameter of that name (low-rank path merged).
    Parameter,
    /// The embedding again, as the head a tied source checkpoint stored.
    TiedHead,
    /// The source checkpoint's tensor of that name, as stored (a derived rotary table).
    Stored,
}

/// One tensor of the written checkpoint.
#[derive(Debug)]
struct Planned {
    name: String,
    entry: Entry,
    /// Its size in the written dtype.
    bytes: u64,
}

/// What one write needs: the model, its source checkpoint and the plan of tensors.
struct Contents<'a> {
    model: &'a CausalLm,
    files: &'a SafetensorsFiles,
    plan: &'a [Planned],
    dtype: Kind,
    out: &'a Path,
}

impl Contents<'_> {
    /// The tensor of `planned`, on the CPU in the written dtype and contiguous. A parameter holding NaN or
    /// infinity is refused: the directory would not load.
    fn materialise(&self, planned: &Planned) -> Result<Tensor> {
        let name = planned.name.as_str();
        let tensor = match planned.entry {
            Entry::Stored => return self.files.load(name, Device::Cpu, None),
            Entry::TiedHead => {
                self.model.parameter(EMBEDDING)?.f_detach().ctx("detaching the head")?
            }
            Entry::Parameter => self.model.merged_parameter(name)?,
        };
        let count = tensor
            .f_isfinite()
            .and_then(|f| f.f_logical_not())
            .and_then(|f| f.f_sum(Kind::Int64))
            .and_then(|c| c.f_int64_value(&[]))
            .ctx(&format!("checking `{name}`"))?;
        if count > 0 {
            return Err(Error::NonFiniteWeights {
                origin: format!("writing {}", self.out.display()),
                name: name.to_string(),
                count,
            });
        }
        to_cpu(&tensor, self.dtype, name)
    }

    /// Writes `config.json`, the weights (one shard in memory at a time) and the copied files into `dir`, each
    /// synced. Returns the weight files, the copied files and the total tensor bytes.
    fn write(
        &self,
        dir: &Path,
        source: &Path,
        config: &[u8],
        max_shard_size: u64,
    ) -> Result<(Vec<String>, Vec<String>, u64)> {
        // config.json first: the safetensors writer creates its files private to the owner (a temporary file
        // renamed), and the shards take this file's permissions, the ones the process creates files with.
        let config_path = dir.join("config.json");
        write_synced(&config_path, config)?;
        let permissions = std::fs::metadata(&config_path)
            .map_err(|source| Error::Io { path: config_path.clone(), source })?
            .permissions();
        let sizes: Vec<u64> = self.plan.iter().map(|p| p.bytes).collect();
        let shards = plan_shards(&sizes, max_shard_size);
        let total_size: u64 = sizes.iter().sum();
        let count = shards.len();
        let mut weight_files = Vec::with_capacity(count);
        let mut weight_map = BTreeMap::new();
        for (i, shard) in shards.iter().enumerate() {
            let file = if count == 1 {
                "model.safetensors".to_string()
            } else {
                format!("model-{:05}-of-{count:05}.safetensors", i + 1)
            };
            let path = dir.join(&file);
            let views: Vec<(&str, TensorView)> = shard
                .iter()
                .map(|&j| {
                    let planned = &self.plan[j];
                    Ok((
                        planned.name.as_str(),
                        TensorView::new(self.materialise(planned)?, &planned.name)?,
                    ))
                })
                .collect::<Result<_>>()?;
            // transformers refuses a safetensors file whose metadata names another framework; it writes "pt".
            let metadata = HashMap::from([("format".to_string(), "pt".to_string())]);
            safetensors::serialize_to_file(views, Some(metadata), &path)
                .map_err(|e| Error::Safetensors { path: path.clone(), reason: e.to_string() })?;
            std::fs::set_permissions(&path, permissions.clone())
                .map_err(|source| write_err("setting the permissions of", &path, source))?;
            sync_file(&path)?;
            for &j in shard {
                weight_map.insert(self.plan[j].name.clone(), Json::String(file.clone()));
            }
            weight_files.push(file);
        }
        if count > 1 {
            let index = serde_json::json!({
                "metadata": {"total_size": total_size},
                "weight_map": weight_map,
            });
            let path = dir.join("model.safetensors.index.json");
            let mut text = serde_json::to_string_pretty(&index)
                .map_err(|source| Error::Json { path: path.clone(), source })?;
            text.push('\n');
            write_synced(&path, text.as_bytes())?;
        }
        let mut copied = vec!["config.json".to_string()];
        for name in COPIED_FILES {
            let from = source.join(name);
            if !from.is_file() {
                continue;
            }
            let bytes =
                std::fs::read(&from).map_err(|source| Error::Io { path: from.clone(), source })?;
            write_synced(&dir.join(name), &bytes)?;
            copied.push(name.to_string());
        }
        Ok((weight_files, copied, total_size))
    }
}

/// The directory a write is assembled in: a hidden sibling of `out`, so that the final rename stays on one file
/// system.
fn temporary_dir(out: &Path) -> PathBuf {
    let mut name = std::ffi::OsString::from(".");
    name.push(out.file_name().unwrap_or_default());
    name.push(".partial");
    out.with_file_name(name)
}

fn write_err(action: &'static str, path: &Path, source: std::io::Error) -> Error {
    Error::Write(detox_io::Error { action, path: path.to_path_buf(), source })
}

/// Refuses an existing non-empty `out` unless `overwrite`, and a path that is not a directory at all.
fn check_target(out: &Path, overwrite: bool) -> Result<()> {
    if out.file_name().is_none() {
        return Err(Error::Export {
            path: out.to_path_buf(),
            reason: "the target must name a directory".into(),
        });
    }
    match std::fs::symlink_metadata(out) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(Error::Io { path: out.to_path_buf(), source }),
        Ok(meta) if !meta.is_dir() => Err(Error::Export {
            path: out.to_path_buf(),
            reason: "exists and is not a directory".into(),
        }),
        Ok(_) => {
            let mut entries = std::fs::read_dir(out)
                .map_err(|source| Error::Io { path: out.to_path_buf(), source })?;
            if entries.next().is_some() && !overwrite {
                return Err(Error::Export {
                    path: out.to_path_buf(),
                    reason: "exists and is not empty (ask for overwriting to replace it)".into(),
                });
            }
            Ok(())
        }
    }
}

/// Renames the finished `tmp` to `out`; an existing `out` (empty, or replaced with `overwrite`) is moved aside
/// first and removed once the new directory is in place.
fn move_into_place(tmp: &Path, out: &Path, overwrite: bool) -> Result<()> {
    let mut old = None;
    if out.exists() {
        // Checked again here: the directory may have been filled since the write began.
        check_target(out, overwrite)?;
        let mut name = std::ffi::OsString::from(".");
        name.push(out.file_name().unwrap_or_default());
        name.push(".replaced");
        let aside = out.with_file_name(name);
        if aside.exists() {
            std::fs::remove_dir_all(&aside)
                .map_err(|source| write_err("removing the leftover", &aside, source))?;
        }
        std::fs::rename(out, &aside).map_err(|source| write_err("moving aside", out, source))?;
        old = Some(aside);
    }
    std::fs::rename(tmp, out).map_err(|source| write_err("renaming into", out, source))?;
    sync_parent(out)?;
    if let Some(old) = old {
        std::fs::remove_dir_all(&old).map_err(|source| write_err("removing", &old, source))?;
    }
    Ok(())
}

#[cfg(unix)]
fn sync_parent(path: &Path) -> Result<()> {
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|source| write_err("syncing the directory", dir, source))
}

/// Directories cannot be opened as files off Unix; the rename is as durable as the platform makes it.
#[cfg(not(unix))]
fn sync_parent(_path: &Path) -> Result<()> {
    Ok(())
}

/// Splits tensors of `sizes` bytes (by index) into shards as huggingface_hub's
/// `split_torch_state_dict_into_shards` does: in order, a new shard when adding the next tensor would pass `max`,
/// and a tensor larger than `max` alone in a shard of its own, placed when it is met.
fn plan_shards(sizes: &[u64], max: u64) -> Vec<Vec<usize>> {
    let mut shards = Vec::new();
    let mut current: Vec<usize> = Vec::new();
    let mut current_size = 0u64;
    for (i, &size) in sizes.iter().enumerate() {
        if size > max {
            shards.push(vec![i]);
            continue;
        }
        if current_size + size > max && !current.is_empty() {
            shards.push(std::mem::take(&mut current));
            current_size = 0;
        }
        current.push(i);
        current_size += size;
    }
    if !current.is_empty() || shards.is_empty() {
        shards.push(current);
    }
    shards
}

fn sync_file(path: &Path) -> Result<()> {
    File::open(path).and_then(|f| f.sync_all()).map_err(|source| write_err("syncing", path, source))
}

fn write_synced(path: &Path, bytes: &[u8]) -> Result<()> {
    std::fs::write(path, bytes).map_err(|source| write_err("writing", path, source))?;
    sync_file(path)
}

/// A CPU, contiguous copy of `t` in `kind`.
fn to_cpu(t: &Tensor, kind: Kind, name: &str) -> Result<Tensor> {
    t.f_detach()
        .and_then(|t| t.f_to_device_(Device::Cpu, kind, false, false))
        .and_then(|t| t.f_contiguous())
        .ctx(&format!("preparing `{name}` for writing"))
}

/// A contiguous CPU tensor, handed to the safetensors writer without copying its bytes.
struct TensorView {
    tensor: Tensor,
    dtype: Dtype,
    shape: Vec<usize>,
    len: usize,
}

impl TensorView {
    /// Wraps `tensor`, which must be on the CPU and contiguous (see `to_cpu`).
    fn new(tensor: Tensor, name: &str) -> Result<Self> {
        let dtype = safetensors_dtype(tensor.kind()).ok_or_else(|| Error::Unsupported {
            what: format!("`{name}` has dtype {:?}, which safetensors cannot store", tensor.kind()),
        })?;
        if tensor.device() != Device::Cpu || !tensor.is_contiguous() {
            return Err(Error::Unsupported {
                what: format!("`{name}` must be a contiguous CPU tensor to be written"),
            });
        }
        let len = tensor.numel() * tensor.kind().elt_size_in_bytes();
        let shape = tensor.size().iter().map(|&d| d as usize).collect();
        Ok(Self { tensor, dtype, shape, len })
    }
}

impl View for TensorView {
    fn dtype(&self) -> Dtype {
        self.dtype
    }

    fn shape(&self) -> &[usize] {
        &self.shape
    }

    fn data(&self) -> Cow<'_, [u8]> {
        if self.len == 0 {
            return Cow::Borrowed(&[]);
        }
        // SAFETY: the tensor is a contiguous CPU tensor (checked in `new`) owned by this view and not written while
        // the view lives, so its storage holds `len` initialised bytes from `data_ptr` for as long as the borrow.
        Cow::Borrowed(unsafe {
            std::slice::from_raw_parts(self.tensor.data_ptr() as *const u8, self.len)
        })
    }

    fn data_len(&self) -> usize {
        self.len
    }
}

fn safetensors_dtype(kind: Kind) -> Option<Dtype> {
    Some(match kind {
        Kind::Float => Dtype::F32,
        Kind::Half => Dtype::F16,
        Kind::BFloat16 => Dtype::BF16,
        Kind::Double => Dtype::F64,
        Kind::Int64 => Dtype::I64,
        Kind::Int => Dtype::I32,
        Kind::Int16 => Dtype::I16,
        Kind::Int8 => Dtype::I8,
        Kind::Uint8 => Dtype::U8,
        Kind::Bool => Dtype::BOOL,
        _ => return None,
    })
}

/// The name `config.json` gives a weight dtype (`torch.float32` without the module).
fn torch_dtype_name(kind: Kind) -> Option<&'static str> {
    Some(match kind {
        Kind::Float => "float32",
        Kind::BFloat16 => "bfloat16",
        Kind::Half => "float16",
        _ => return None,
    })
}

/// `config.json` for the written weights: the source's bytes when its dtype field already says `dtype`;
/// otherwise the source's keys and values with the dtype field set, the dialect kept (`dtype` from
/// transformers 4.56 on, `torch_dtype` before; both are set where the source has both, and a source with neither
/// gets the one its `transformers_version` writes). Nested configurations (`text_config`) get the same field
/// where they carry one. Re-serialised files have sorted keys and two-space indents, as transformers writes them.
fn rewrite_config(path: &Path, dtype: &str) -> Result<Vec<u8>> {
    let bytes =
        std::fs::read(path).map_err(|source| Error::Io { path: path.to_path_buf(), source })?;
    let mut config: Json = serde_json::from_slice(&bytes)
        .map_err(|source| Error::Json { path: path.to_path_buf(), source })?;
    let Json::Object(top) = &mut config else {
        return Err(Error::Config {
            path: path.to_path_buf(),
            field: "(top level)".into(),
            reason: "not a JSON object".into(),
        });
    };
    let mut present: Vec<&str> =
        ["torch_dtype", "dtype"].into_iter().filter(|k| top.contains_key(*k)).collect();
    if present.iter().all(|k| top.get(*k).and_then(Json::as_str) == Some(dtype))
        && !present.is_empty()
    {
        return Ok(bytes);
    }
    if present.is_empty() {
        present.push(if writes_new_dialect(top.get("transformers_version")) {
            "dtype"
        } else {
            "torch_dtype"
        });
    }
    for key in &present {
        top.insert((*key).to_string(), Json::String(dtype.into()));
    }
    for nested in top.values_mut() {
        if let Json::Object(sub) = nested {
            for key in ["torch_dtype", "dtype"] {
                if let Some(v) = sub.get_mut(key).filter(|v| v.is_string()) {
                    *v = Json::String(dtype.into());
                }
            }
        }
    }
    let mut text = serde_json::to_string_pretty(&config)
        .map_err(|source| Error::Json { path: path.to_path_buf(), source })?;
    text.push('\n');
    Ok(text.into_bytes())
}

/// Whether a `transformers_version` (`"4.57.1"`) is 4.56 or later, which writes `dtype` instead of
/// `torch_dtype`. An unknown version counts as older: `torch_dtype` is read by every version.
fn writes_new_dialect(version: Option<&Json>) -> bool {
    let Some(version) = version.and_then(Json::as_str) else {
        return false;
    };
    let mut parts = version.split('.').map(|p| {
        p.chars().take_while(char::is_ascii_digit).collect::<String>().parse::<u64>().unwrap_or(0)
    });
    let (major, minor) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    (major, minor) >= (4, 56)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_split_as_huggingface_hub_splits_them() {
        let sizes = [40, 40, 40, 200, 40];
        assert_eq!(plan_shards(&sizes, 100), vec![vec![0, 1], vec![3], vec![2, 4]]);
        assert_eq!(plan_shards(&sizes, 1_000), vec![vec![0, 1, 2, 3, 4]]);
        assert_eq!(plan_shards(&[], 100), vec![Vec::<usize>::new()]);
    }

    #[test]
    fn shard_sizes_read_transformers_spellings() {
        assert_eq!(parse_shard_size("5GB").unwrap(), 5_000_000_000);
        assert_eq!(parse_shard_size("200MiB").unwrap(), 200 << 20);
        assert_eq!(parse_shard_size(" 10kb ").unwrap(), 10_000);
        assert_eq!(parse_shard_size("4096").unwrap(), 4096);
        for bad in ["", "0", "5 parsecs", "1.5GB", "GB"] {
            assert!(parse_shard_size(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_dtype_dialect_follows_the_transformers_version() {
        let v = |s: &str| Json::String(s.into());
        assert!(writes_new_dialect(Some(&v("4.56.0"))));
        assert!(writes_new_dialect(Some(&v("5.24.0"))));
        assert!(!writes_new_dialect(Some(&v("4.45.2"))));
        assert!(!writes_new_dialect(Some(&v("4.9.0.dev0"))));
        assert!(!writes_new_dialect(None));
    }

    #[test]
    fn configs_change_only_their_dtype() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.json");
        let source = concat!(
            "{\n  \"torch_dtype\": \"bfloat16\",\n  \"z\": 1e-05,\n  \"a\": [1, 2],\n",
            "  \"text_config\": {\"torch_dtype\": \"bfloat16\", \"x\": 3}\n}"
        );
        std::fs::write(&path, source).unwrap();
        assert_eq!(rewrite_config(&path, "bfloat16").unwrap(), source.as_bytes());
        let written: Json =
            serde_json::from_slice(&rewrite_config(&path, "float32").unwrap()).unwrap();
        let mut want: Json = serde_json::from_str(source).unwrap();
        want["torch_dtype"] = "float32".into();
        want["text_config"]["torch_dtype"] = "float32".into();
        assert_eq!(written, want);

        std::fs::write(&path, r#"{"transformers_version": "5.24.0", "vocab_size": 8}"#).unwrap();
        let written: Json =
            serde_json::from_slice(&rewrite_config(&path, "float16").unwrap()).unwrap();
        assert_eq!(written["dtype"], "float16");
        assert!(written.get("torch_dtype").is_none());
    }
}

//! Arguments shared by the detox example programs. Each example lives in its own folder next to this crate's
//! manifest and is run with `cargo run -p detox-examples --example <name> -- <args>`; everything an example does
//! beyond parsing arguments and printing lives in the library crates.
#![deny(missing_docs)]

mod eval_args;

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use detox_edit::registry::{
    apply_record_independent, check_record_independent, BuiltMethod, MethodArgs, Registry,
};
use detox_runtime::export::{parse_shard_size, SaveOptions, SavedModel};
use detox_runtime::load::{kind_name, load_model, parse_devices, parse_kind, LoadedModel};
use detox_runtime::CausalLm;
use tch::{Device, Kind};

pub use eval_args::{DecodingArgs, GeneralArgs, InputArgs, Keep, MethodChoice, SelectionArgs};

/// The embedded default model: SmolLM2-135M-Instruct as `cargo xtask smollm2` installs it.
pub const DEFAULT_MODEL: &str = "models/SmolLM2-135M-Instruct/SmolLM2-135M-Instruct.Q4_1.gguf";

/// Which model to load, where and in which dtype; flattened into each example's arguments.
#[derive(Debug, Clone, clap::Args)]
pub struct ModelArgs {
    /// A Hugging Face model directory or a .gguf file.
    #[arg(long, default_value = DEFAULT_MODEL)]
    pub model: PathBuf,
    /// `cpu`, `cuda`, `cuda:N` or `auto` (the first GPU when one is usable); a list (`cuda:0,cuda:1`) spreads a
    /// model directory's layers over those devices.
    #[arg(long, default_value = "auto")]
    pub device: String,
    /// `f32`, `bf16` or `f16`.
    #[arg(long, default_value = "f32")]
    pub dtype: String,
}

impl ModelArgs {
    /// The devices named by `--device`.
    pub fn devices(&self) -> Result<Vec<Device>> {
        Ok(parse_devices(&self.device)?)
    }

    /// The first device named by `--device` (where the model's embedding and inputs live).
    pub fn device(&self) -> Result<Device> {
        Ok(self.devices()?[0])
    }

    /// The dtype named by `--dtype`.
    pub fn kind(&self) -> Result<Kind> {
        Ok(parse_kind(&self.dtype)?)
    }

    /// Loads the model and its tokenizer, after checking that the devices are usable (which loads libtorch's
    /// CUDA backend where there is one).
    pub fn load(&self) -> Result<LoadedModel> {
        let (devices, kind) = (self.devices()?, self.kind()?);
        load_model(&self.model, &devices, kind)
            .with_context(|| format!("loading {}", self.model.display()))
    }
}

/// Where and how to write the edited model back as a Hugging Face model directory (`--save-model DIR`);
/// flattened into the examples that edit a model.
#[derive(Debug, Clone, clap::Args)]
pub struct SaveModelArgs {
    /// Write the model with the edit merged to this new directory, as transformers' `save_pretrained` would
    /// (safetensors, `config.json` with its dtype updated, the tokenizer files copied); it loads in transformers
    /// without `trust_remote_code`. Only for a model loaded from a Hugging Face directory.
    #[arg(long, value_name = "DIR")]
    pub save_model: Option<PathBuf>,
    /// The dtype of the written weights (`f32`, `bf16`, `f16`; default: the model's `--dtype`).
    #[arg(long, requires = "save_model", value_parser = kind_arg)]
    pub save_dtype: Option<Kind>,
    /// The largest safetensors shard of the written model (`5GB`, `500MB`, `200MiB` or bytes), as transformers'
    /// `max_shard_size`.
    #[arg(long, default_value = "5GB", value_parser = shard_size_arg)]
    pub max_shard_size: u64,
    /// Replace the --save-model directory when it exists and is not empty.
    #[arg(long, requires = "save_model")]
    pub overwrite_model: bool,
}

impl SaveModelArgs {
    /// The writer's options.
    pub fn options(&self) -> SaveOptions {
        let mut options = SaveOptions::new()
            .with_max_shard_size(self.max_shard_size)
            .with_overwrite(self.overwrite_model);
        if let Some(kind) = self.save_dtype {
            options = options.with_dtype(kind);
        }
        options
    }

    /// Refuses, before any work, a `--save-model` that cannot succeed: a GGUF model (it has no `config.json` or
    /// tokenizer files to copy) or an existing non-empty directory without `--overwrite-model`.
    pub fn check_before(&self, model: &ModelArgs) -> Result<()> {
        let Some(dir) = &self.save_model else {
            return Ok(());
        };
        if model.model.extension().is_some_and(|e| e == "gguf") {
            anyhow::bail!(
                "--save-model needs a model loaded from a Hugging Face directory; {} is a GGUF file",
                model.model.display()
            );
        }
        let non_empty = std::fs::read_dir(dir).is_ok_and(|mut entries| entries.next().is_some());
        if non_empty && !self.overwrite_model {
            anyhow::bail!(
                "--save-model {} exists and is not empty (--overwrite-model replaces it)",
                dir.display()
            );
        }
        Ok(())
    }

    /// Writes `loaded` (in its current, edited state) to `--save-model` when it is given and prints what was
    /// written; `None` without the flag.
    pub fn save(&self, loaded: &LoadedModel) -> Result<Option<SavedModel>> {
        let Some(dir) = &self.save_model else {
            return Ok(None);
        };
        let saved = loaded
            .save_pretrained(dir, &self.options())
            .with_context(|| format!("writing the edited model to {}", dir.display()))?;
        print_saved(&saved);
        Ok(Some(saved))
    }

    /// [`SaveModelArgs::save`] for a model whose [`LoadedModel`] was taken apart: `source` is the model directory
    /// it was loaded from.
    pub fn save_parts(&self, model: &CausalLm, source: &Path) -> Result<Option<SavedModel>> {
        let Some(dir) = &self.save_model else {
            return Ok(None);
        };
        let saved = model
            .save_pretrained(source, dir, &self.options())
            .with_context(|| format!("writing the edited model to {}", dir.display()))?;
        print_saved(&saved);
        Ok(Some(saved))
    }
}

impl SaveModelArgs {
    /// With `--save-model`: applies `method`'s one edit to the unedited `loaded` model (refused for a method
    /// whose edit depends on the record), writes the edited model, and undoes the edit bit-exactly.
    pub fn write_edited(&self, method: &mut BuiltMethod, loaded: &mut LoadedModel) -> Result<()> {
        if self.save_model.is_none() {
            return Ok(());
        }
        check_record_independent(method)?;
        apply_record_independent(method, &mut loaded.model, &loaded.tokenizer)?;
        let saved = self.save(loaded);
        method.editor.restore(&mut loaded.model)?;
        saved.map(|_| ())
    }

    /// With `--save-model`: builds the method that applies the artefact a fit wrote to `artefact` (the method
    /// registry's `method` with `artefact=DIR`) and writes the model it edits ([`SaveModelArgs::write_edited`]).
    pub fn write_fitted(
        &self,
        method: &str,
        artefact: &Path,
        loaded: &mut LoadedModel,
    ) -> Result<()> {
        if self.save_model.is_none() {
            return Ok(());
        }
        let args = MethodArgs::new().set("artefact", artefact.display());
        let mut built = Registry::builtin().build(method, &args, loaded.model.device())?;
        self.write_edited(&mut built, loaded)
    }
}

/// Prints what a benchmark program shows of a record as it is written: the editor's notes on standard error,
/// and, with `responses`, the adversarial prompt's response before and after the edit.
pub fn print_record(record: &detox_eval::RunRecord, responses: bool) {
    for note in &record.notes {
        eprintln!("note: record {}: {note}", record.id);
    }
    if responses {
        let (pre, post) = (&record.pre.responses[0], &record.post.responses[0]);
        println!("\n== record {} ({}) layer {:?}", record.id, record.category, record.layer);
        println!("   prompt : {}\n   before : [{}] {}", pre.input, pre.label, pre.response);
        println!("   after  : [{}] {}", post.label, post.response);
    }
}

fn print_saved(saved: &SavedModel) {
    println!(
        "edited model written to {} ({} tensors, {:.1} MB in {} file(s), {}; copied {})",
        saved.dir.display(),
        saved.tensors,
        saved.total_size as f64 / 1e6,
        saved.weight_files.len(),
        kind_name(saved.dtype),
        saved.copied.join(", ")
    );
}

fn kind_arg(text: &str) -> std::result::Result<Kind, String> {
    parse_kind(text).map_err(|e| e.to_string())
}

fn shard_size_arg(text: &str) -> std::result::Result<u64, String> {
    parse_shard_size(text).map_err(|e| e.to_string())
}

/// A clap value parser for counts that must be at least `min` (`--reps 0` is refused with the flag's name).
pub fn at_least(min: u64) -> clap::builder::RangedU64ValueParser<usize> {
    clap::builder::RangedU64ValueParser::<usize>::new().range(min..)
}

/// A clap value parser for a finite number greater than zero (learning rates, temperatures, weights).
pub fn positive_number(text: &str) -> std::result::Result<f64, String> {
    match text.trim().parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 => Ok(v),
        Ok(v) => Err(format!("{v} is not a finite number greater than 0")),
        Err(e) => Err(e.to_string()),
    }
}

/// A clap value parser for any finite number (`nan` and `inf` are refused).
pub fn finite_number(text: &str) -> std::result::Result<f64, String> {
    match text.trim().parse::<f64>() {
        Ok(v) if v.is_finite() => Ok(v),
        Ok(v) => Err(format!("{v} is not a finite number")),
        Err(e) => Err(e.to_string()),
    }
}

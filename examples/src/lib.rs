//! Arguments shared by the detox example programs. Each example lives in its own folder next to this crate's
//! manifest and is run with `cargo run -p detox-examples --example <name> -- <args>`; everything an example does
//! beyond parsing arguments and printing lives in the library crates.
#![deny(missing_docs)]

mod eval_args;

use std::path::PathBuf;

use anyhow::{Context, Result};
use detox_runtime::load::{load_model, parse_devices, parse_kind, LoadedModel};
use tch::{Device, Kind};

pub use eval_args::{DecodingArgs, GeneralArgs, Keep, MethodChoice, SelectionArgs};

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

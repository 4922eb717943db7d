//! Shared helpers of the detox example programs. Each example lives in its own folder next to this crate's
//! manifest and is run with `cargo run -p detox-examples --example <name> -- <args>`.
#![deny(missing_docs)]

use std::path::Path;

use anyhow::{bail, Context, Result};
use detox_runtime::gguf::GgufModel;
use detox_runtime::{CausalLm, Tokenizer};
use tch::{Device, Kind};

/// A model ready to run: weights, tokenizer, and a SHA-256 identifying the checkpoint.
pub struct LoadedModel {
    /// The model.
    pub model: CausalLm,
    /// Its tokenizer.
    pub tokenizer: Tokenizer,
    /// SHA-256 over the checkpoint (the GGUF file, or the model directory's files).
    pub sha256: String,
}

/// Loads a Hugging Face model directory or a `.gguf` file.
pub fn load_model(path: &Path, device: Device, kind: Kind) -> Result<LoadedModel> {
    if path.extension().is_some_and(|e| e == "gguf") {
        let gguf =
            GgufModel::open(path).with_context(|| format!("importing {}", path.display()))?;
        let sha256 = detox_eval::manifest::sha256_file(path)?;
        return Ok(LoadedModel {
            model: gguf.to_model(device, kind)?,
            tokenizer: gguf.tokenizer()?,
            sha256,
        });
    }
    if !path.is_dir() {
        bail!("{} is neither a model directory nor a .gguf file", path.display());
    }
    let sha256 = detox_eval::manifest::sha256_dir(path)?;
    let model = CausalLm::load(path, device, kind)
        .with_context(|| format!("loading {}", path.display()))?;
    let tokenizer = Tokenizer::from_model_dir(path)?;
    Ok(LoadedModel { model, tokenizer, sha256 })
}

/// Loads a Hugging Face model directory with its layers spread over `devices` in contiguous runs (the embedding on
/// the first, the head on the last), for models larger than one GPU; one device loads as [`load_model`] does.
pub fn load_model_on(path: &Path, devices: &[Device], kind: Kind) -> Result<LoadedModel> {
    match devices {
        [] => bail!("no device given"),
        [device] => load_model(path, *device, kind),
        _ => {
            if !path.is_dir() {
                bail!(
                    "{}: only a Hugging Face model directory can be spread over several devices",
                    path.display()
                );
            }
            let config = detox_runtime::Config::from_file(path.join("config.json"))?;
            let map = detox_runtime::DeviceMap::balanced(&config, devices)?;
            let sha256 = detox_eval::manifest::sha256_dir(path)?;
            let model = CausalLm::load_mapped(path, &map, kind)
                .with_context(|| format!("loading {}", path.display()))?;
            let tokenizer = Tokenizer::from_model_dir(path)?;
            Ok(LoadedModel { model, tokenizer, sha256 })
        }
    }
}

/// Parses a comma-separated device list (`cuda:0,cuda:1`); see [`parse_device`].
pub fn parse_devices(list: &str) -> Result<Vec<Device>> {
    list.split(',').map(str::trim).filter(|s| !s.is_empty()).map(parse_device).collect()
}

/// Parses a dtype name: `f32`, `bf16` or `f16`.
pub fn parse_kind(name: &str) -> Result<Kind> {
    Ok(match name {
        "f32" | "float32" => Kind::Float,
        "bf16" | "bfloat16" => Kind::BFloat16,
        "f16" | "float16" => Kind::Half,
        other => bail!("unknown dtype {other:?} (f32, bf16, f16)"),
    })
}

/// Parses a device: `cpu`, `cuda`, `cuda:N`, or `auto` (CUDA when available).
pub fn parse_device(name: &str) -> Result<Device> {
    Ok(match name {
        "auto" => detox_runtime::backend::default_device(),
        "cpu" => Device::Cpu,
        "cuda" => Device::Cuda(0),
        other => match other.strip_prefix("cuda:").map(str::parse::<usize>) {
            Some(Ok(i)) => Device::Cuda(i),
            _ => bail!("unknown device {other:?} (cpu, cuda, cuda:N, auto)"),
        },
    })
}

/// A dtype's name for manifests.
pub fn kind_name(kind: Kind) -> &'static str {
    match kind {
        Kind::Float => "float32",
        Kind::BFloat16 => "bfloat16",
        Kind::Half => "float16",
        _ => "other",
    }
}

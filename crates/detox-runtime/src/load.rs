//! Loading a model as users name it: a Hugging Face model directory or a `.gguf` file, on one device or spread
//! over several, with the devices and dtype written as on a command line (`cuda:0,cuda:1`, `bf16`).
//!
//! Devices are checked before any weight is read, so that asking for a GPU this process cannot use fails at once
//! with the reason (a CPU-only libtorch, no driver, an ordinal that does not exist).

use std::path::{Path, PathBuf};

use tch::{Cuda, Device, Kind};

use crate::backend;
use crate::config::Config;
use crate::error::{Error, Result};
use crate::gguf::GgufModel;
use crate::model::{CausalLm, DeviceMap};
use crate::tokenizer::Tokenizer;

/// How a checkpoint is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ModelFormat {
    /// A Hugging Face directory: `config.json`, safetensors shards, `tokenizer.json`.
    Directory,
    /// One GGUF file (weights dequantised on load, tokenizer and chat template from its metadata).
    Gguf,
}

/// A model ready to run with its tokenizer, and where it came from.
#[derive(Debug)]
#[non_exhaustive]
pub struct LoadedModel {
    /// The model.
    pub model: CausalLm,
    /// Its tokenizer.
    pub tokenizer: Tokenizer,
    /// The checkpoint as given.
    pub path: PathBuf,
    /// How the checkpoint is stored.
    pub format: ModelFormat,
}

/// Loads the checkpoint at `path` in `kind`: on `devices[0]`, or, for a model directory and several devices,
/// with its layers spread over them in contiguous runs ([`DeviceMap::balanced`]). Every device is checked first
/// ([`check_device`]).
pub fn load_model(path: &Path, devices: &[Device], kind: Kind) -> Result<LoadedModel> {
    let Some(&first) = devices.first() else {
        return Err(Error::Device { asked: String::new(), reason: "no device given".into() });
    };
    for &device in devices {
        check_device(device)?;
    }
    let gguf = path.extension().is_some_and(|e| e == "gguf");
    if gguf {
        if devices.len() > 1 {
            return Err(Error::Device {
                asked: device_list_name(devices),
                reason: format!(
                    "{}: only a model directory can be spread over several devices",
                    path.display()
                ),
            });
        }
        let file = GgufModel::open(path)?;
        return Ok(LoadedModel {
            model: file.to_model(first, kind)?,
            tokenizer: file.tokenizer()?,
            path: path.to_path_buf(),
            format: ModelFormat::Gguf,
        });
    }
    if !path.is_dir() {
        return Err(Error::Io {
            path: path.to_path_buf(),
            source: std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "neither a model directory nor a .gguf file",
            ),
        });
    }
    let model = match devices {
        [one] => CausalLm::load(path, *one, kind)?,
        many => {
            let config = Config::from_file(path.join("config.json"))?;
            CausalLm::load_mapped(path, &DeviceMap::balanced(&config, many)?, kind)?
        }
    };
    Ok(LoadedModel {
        model,
        tokenizer: Tokenizer::from_model_dir(path)?,
        path: path.to_path_buf(),
        format: ModelFormat::Directory,
    })
}

/// Parses one device: `cpu`, `cuda` (the first GPU), `cuda:N`, or `auto` (the first GPU when one is usable, else
/// the CPU). Parsing does not check that the device exists; [`check_device`] does.
pub fn parse_device(name: &str) -> Result<Device> {
    Ok(match name.trim() {
        "auto" => backend::default_device(),
        "cpu" => Device::Cpu,
        "cuda" => Device::Cuda(0),
        other => match other.strip_prefix("cuda:").map(str::parse::<usize>) {
            Some(Ok(i)) => Device::Cuda(i),
            _ => {
                return Err(Error::Device {
                    asked: name.into(),
                    reason: "expected cpu, cuda, cuda:N or auto".into(),
                })
            }
        },
    })
}

/// Parses a comma-separated list of devices (`cuda:0,cuda:1`), each as [`parse_device`] does; at least one, none
/// twice.
pub fn parse_devices(list: &str) -> Result<Vec<Device>> {
    let devices = list
        .split(',')
        .filter(|s| !s.trim().is_empty())
        .map(parse_device)
        .collect::<Result<Vec<_>>>()?;
    if devices.is_empty() {
        return Err(Error::Device { asked: list.into(), reason: "no device given".into() });
    }
    for (i, d) in devices.iter().enumerate() {
        if devices[..i].contains(d) {
            return Err(Error::Device {
                asked: list.into(),
                reason: format!("{} is named twice", device_name(*d)),
            });
        }
    }
    Ok(devices)
}

/// Checks that this process can use `device`, loading libtorch's CUDA backend first ([`backend::init`]). The
/// error says why not: a libtorch built without CUDA (and how to get one), no usable driver or GPU, or an
/// ordinal beyond the GPUs that exist (naming them).
pub fn check_device(device: Device) -> Result<()> {
    let Device::Cuda(index) = device else {
        return Ok(());
    };
    let asked = device_name(device);
    if !backend::init() {
        // The report tells a CPU-only build from a CUDA build whose backend failed to load (with dlerror's text).
        let reason = backend::BackendReport::probe()
            .cuda_off_reason()
            .unwrap_or_else(|| backend::CPU_ONLY.to_owned());
        return Err(Error::Device { asked, reason });
    }
    if !Cuda::is_available() {
        return Err(Error::Device {
            asked,
            reason: "libtorch has CUDA, but no GPU is usable: no NVIDIA driver is loaded or no device is visible \
                     (check `nvidia-smi` and CUDA_VISIBLE_DEVICES)"
                .into(),
        });
    }
    let count = Cuda::device_count().max(0) as usize;
    if index >= count {
        let report = backend::BackendReport::probe();
        let names: Vec<String> = report
            .gpus
            .iter()
            .map(|g| match &g.name {
                Some(name) => format!("cuda:{} ({name})", g.index),
                None => format!("cuda:{}", g.index),
            })
            .collect();
        return Err(Error::Device {
            asked,
            reason: format!("this machine has {count} GPU(s): {}", names.join(", ")),
        });
    }
    Ok(())
}

/// Parses a dtype: `f32`/`float32`, `bf16`/`bfloat16` or `f16`/`float16`.
pub fn parse_kind(name: &str) -> Result<Kind> {
    Ok(match name.trim() {
        "f32" | "float32" => Kind::Float,
        "bf16" | "bfloat16" => Kind::BFloat16,
        "f16" | "float16" => Kind::Half,
        other => {
            return Err(Error::Device {
                asked: other.into(),
                reason: "unknown dtype (f32, bf16, f16)".into(),
            })
        }
    })
}

/// A dtype's name as manifests and reports write it (`float32`, `bfloat16`, `float16`).
pub fn kind_name(kind: Kind) -> String {
    match kind {
        Kind::Float => "float32".into(),
        Kind::BFloat16 => "bfloat16".into(),
        Kind::Half => "float16".into(),
        other => format!("{other:?}"),
    }
}

/// A device's name as users write it (`cpu`, `cuda:0`).
pub fn device_name(device: Device) -> String {
    match device {
        Device::Cuda(i) => format!("cuda:{i}"),
        Device::Cpu => "cpu".into(),
        other => format!("{other:?}").to_lowercase(),
    }
}

/// Several devices' names, comma-separated as [`parse_devices`] reads them.
pub fn device_list_name(devices: &[Device]) -> String {
    devices.iter().map(|d| device_name(*d)).collect::<Vec<_>>().join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn devices_parse_as_written_and_bad_ones_say_what_is_expected() {
        assert_eq!(
            parse_devices("cuda:0, cuda:1").unwrap(),
            vec![Device::Cuda(0), Device::Cuda(1)]
        );
        assert_eq!(parse_device("cpu").unwrap(), Device::Cpu);
        assert_eq!(parse_device("cuda").unwrap(), Device::Cuda(0));
        for bad in ["gpu", "cuda:x", "cuda:-1", ""] {
            let err = parse_device(bad).unwrap_err().to_string();
            assert!(err.contains("cpu, cuda, cuda:N or auto"), "{bad:?}: {err}");
        }
        assert!(parse_devices(" , ").unwrap_err().to_string().contains("no device"));
        assert!(parse_devices("cpu,cpu").unwrap_err().to_string().contains("named twice"));
        assert_eq!(device_list_name(&parse_devices("cpu,cuda:2").unwrap()), "cpu,cuda:2");
    }

    #[test]
    fn dtypes_round_trip_through_their_names() {
        for (short, long) in [("f32", "float32"), ("bf16", "bfloat16"), ("f16", "float16")] {
            let kind = parse_kind(short).unwrap();
            assert_eq!(kind_name(kind), long);
            assert_eq!(parse_kind(long).unwrap(), kind);
        }
        assert!(parse_kind("int8").unwrap_err().to_string().contains("f32, bf16, f16"));
    }

    #[test]
    fn unusable_gpus_are_refused_with_the_reason_before_loading() {
        // A device beyond any machine's GPUs: refused whether or not this libtorch has CUDA, and the model path
        // is never read (it does not exist).
        let err = load_model(Path::new("/nonexistent/model"), &[Device::Cuda(999)], Kind::Float)
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("device `cuda:999`"), "{err}");
        let known = ["CPU-only build", "did not load", "no GPU is usable", "GPU(s):"];
        assert!(known.iter().any(|k| err.contains(k)), "{err}");
        assert!(check_device(Device::Cpu).is_ok());
    }

    #[test]
    fn paths_that_are_neither_directory_nor_gguf_are_refused() {
        let err = load_model(Path::new("/nonexistent/model.bin"), &[Device::Cpu], Kind::Float)
            .unwrap_err()
            .to_string();
        assert!(err.contains("/nonexistent/model.bin") && err.contains("neither"), "{err}");
    }
}

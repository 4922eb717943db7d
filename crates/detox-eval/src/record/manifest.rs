//! The run manifest: everything needed to know what produced a run directory, and to refuse resuming it with
//! different settings.

use std::io::Read;
use std::path::Path;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use detox_edit::registry::BuiltMethod;
use detox_metrics::SafetyJudge;
use detox_runtime::backend;
use detox_runtime::load::{device_name, kind_name, LoadedModel, ModelFormat};

use crate::error::{EvalError, Result};
use crate::record::JudgeInfo;
use crate::settings::{DatasetSource, HarnessSettings, ProtocolPreset};

/// What produced a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct RunManifest {
    /// Version of the detox crates.
    pub detox_version: String,
    /// libtorch version the binary runs on.
    pub libtorch_version: String,
    /// `cpu` or `cuda:N (device name)`.
    pub device: String,
    /// Model dtype.
    pub dtype: String,
    /// Model directory as given.
    pub model_path: String,
    /// SHA-256 over the model directory's files (names and contents, sorted by name).
    pub model_sha256: String,
    /// Dataset file as given.
    pub dataset_path: String,
    /// SHA-256 of the dataset file.
    pub dataset_sha256: String,
    /// Which records of the dataset the run covers (e.g. `all`, `first 10`, `shard 2 of 8`).
    pub selection: String,
    /// Editing method.
    pub method: String,
    /// The method's hyper-parameters.
    pub hyper_parameters: serde_json::Value,
    /// The method's named options (reference/paper choices).
    pub method_options: serde_json::Value,
    /// Decoding settings.
    pub decoding: serde_json::Value,
    /// The evaluation protocol ([`crate::settings::Protocol`]); manifests written before it was recorded ran the
    /// first-commit protocol, and read as that.
    #[serde(default = "first_commit_protocol")]
    pub protocol: serde_json::Value,
    /// Prompt layout of the evaluation inputs (written `prompt_style` by earlier versions).
    #[serde(alias = "prompt_style")]
    pub prompt_layout: String,
    /// Whether post-edit inputs carry the suffix (the reference's asymmetry) and pre-edit ones too.
    pub suffix_policy: String,
    /// The judge.
    pub judge: String,
    /// Whether the judge approximates the paper's classifier.
    pub judge_is_approximation: bool,
    /// The run's other judges, in order (their verdicts are in every record beside the primary one's).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub other_judges: Vec<JudgeInfo>,
    /// Random seed.
    pub seed: u64,
    /// The general sets' settings and their files' SHA-256 ([`crate::settings::general::GeneralSets::identity`]);
    /// `None` when the run measures no cost.
    #[serde(default)]
    pub general: Option<serde_json::Value>,
    /// The general sets' files as given (not compared on resume: they may move).
    #[serde(default)]
    pub general_paths: std::collections::BTreeMap<String, String>,
    /// The sentence splitter fluency uses: `rules`, or `punkt` with the SHA-256 of the model directory.
    #[serde(default = "rules_splitter")]
    pub fluency_splitter: String,
}

fn rules_splitter() -> String {
    "rules".into()
}

fn first_commit_protocol() -> serde_json::Value {
    serde_json::to_value(ProtocolPreset::EasyEdit2024_03.protocol()).unwrap_or_default()
}

impl RunManifest {
    /// Describes the run about to be made: the model as loaded (its checkpoint hashed), the dataset file and the
    /// records selected from it, the method as the registry built it, the judge, and the harness settings
    /// ([`crate::Evaluation::manifest`] is the public way in, so a manifest describes what runs).
    pub(crate) fn capture(
        model: &LoadedModel,
        dataset: &DatasetSource,
        method: &BuiltMethod,
        judges: &[&dyn SafetyJudge],
        settings: &HarnessSettings,
    ) -> Result<Self> {
        let (judge, others) = judges.split_first().ok_or_else(|| EvalError::InvalidSetting {
            setting: "judges".into(),
            reason: "a run needs at least one judge".into(),
        })?;
        let model_sha256 = match model.format {
            ModelFormat::Directory => sha256_dir(&model.path)?,
            _ => sha256_file(&model.path)?,
        };
        Ok(Self {
            detox_version: env!("CARGO_PKG_VERSION").into(),
            libtorch_version: backend::libtorch_version().unwrap_or_else(|| "unknown".into()),
            device: describe_devices(&model.model.device_map().devices()),
            dtype: kind_name(model.model.kind()),
            model_path: model.path.display().to_string(),
            model_sha256,
            dataset_path: dataset.path.display().to_string(),
            dataset_sha256: sha256_file(&dataset.path)?,
            selection: dataset.selection.to_string(),
            method: method.editor.method().into(),
            hyper_parameters: method.hyper_parameters.clone(),
            method_options: method.options.clone(),
            decoding: serde_json::to_value(&settings.decoding).map_err(|e| {
                EvalError::Serialize { what: "the decoding settings".into(), reason: e.to_string() }
            })?,
            protocol: serde_json::to_value(&settings.protocol).map_err(|e| {
                EvalError::Serialize { what: "the protocol".into(), reason: e.to_string() }
            })?,
            prompt_layout: format!("{:?}", settings.prompt_layout),
            suffix_policy: format!("{:?}", settings.suffix_policy),
            judge: judge.name(),
            judge_is_approximation: judge.is_approximation(),
            other_judges: others.iter().map(|j| JudgeInfo::of(*j)).collect(),
            seed: settings.seed,
            general: settings.general.as_ref().map(|g| g.identity()),
            general_paths: settings.general.as_ref().map(|g| g.paths()).unwrap_or_default(),
            fluency_splitter: match &settings.punkt_dir {
                Some(dir) => format!("punkt sha256:{}", sha256_dir(dir)?),
                None => rules_splitter(),
            },
        })
    }

    /// The fields that must agree for a run to be resumed, with their values as text.
    fn identity(&self) -> Vec<(&'static str, String)> {
        vec![
            ("model_sha256", self.model_sha256.clone()),
            ("dataset_sha256", self.dataset_sha256.clone()),
            ("selection", self.selection.clone()),
            ("method", self.method.clone()),
            ("hyper_parameters", self.hyper_parameters.to_string()),
            ("method_options", self.method_options.to_string()),
            ("decoding", self.decoding.to_string()),
            ("protocol", self.protocol.to_string()),
            ("prompt_layout", self.prompt_layout.clone()),
            ("suffix_policy", self.suffix_policy.clone()),
            ("judge", self.judge.clone()),
            ("dtype", self.dtype.clone()),
            ("seed", self.seed.to_string()),
            ("general", self.general.as_ref().map_or_else(|| "none".into(), |g| g.to_string())),
            ("fluency_splitter", self.fluency_splitter.clone()),
        ]
    }

    /// Reads a run directory's `manifest.json`.
    ///
    /// # Errors
    /// [`EvalError::Io`] naming the file when it cannot be read (or is not UTF-8), [`EvalError::CorruptRecord`]
    /// naming the file, the line and (in the reason) the column or the missing field when it is not a manifest.
    pub fn read(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| EvalError::Io { path: path.to_path_buf(), source })?;
        serde_json::from_str(&text).map_err(|e| EvalError::CorruptRecord {
            path: path.to_path_buf(),
            line: e.line(),
            reason: e.to_string(),
        })
    }

    /// Writes the manifest to `path`, or, when one exists, checks that it describes the same run.
    pub fn write_or_check(&self, path: &Path) -> Result<()> {
        if path.is_file() {
            let existing = Self::read(path)?;
            for ((field, old), (_, new)) in existing.identity().into_iter().zip(self.identity()) {
                if old != new {
                    return Err(EvalError::ManifestMismatch {
                        path: path.to_path_buf(),
                        field: field.into(),
                        existing: old,
                        requested: new,
                    });
                }
            }
            return Ok(());
        }
        crate::jsonl::write_json_atomic(path, self, "the run manifest")
    }
}

/// Devices as manifests record them: `cpu`, or `cuda:0 (NVIDIA H100 80GB HBM3)`, comma-separated when a model
/// is spread over several.
fn describe_devices(devices: &[tch::Device]) -> String {
    let gpus = backend::BackendReport::probe().gpus;
    let one = |device: &tch::Device| match device {
        tch::Device::Cuda(i) => {
            match gpus.iter().find(|g| g.index == *i).and_then(|g| g.name.clone()) {
                Some(name) => format!("{} ({name})", device_name(*device)),
                None => device_name(*device),
            }
        }
        other => device_name(*other),
    };
    devices.iter().map(one).collect::<Vec<_>>().join(", ")
}

/// SHA-256 of a file, hex.
pub fn sha256_file(path: &Path) -> Result<String> {
    let mut hasher = Sha256::new();
    hash_into(&mut hasher, path)?;
    Ok(hex(&hasher.finalize()))
}

/// SHA-256 over every regular file of a directory (not recursive), in name order: each file's name, then its
/// bytes.
pub fn sha256_dir(dir: &Path) -> Result<String> {
    let io = |source| EvalError::Io { path: dir.to_path_buf(), source };
    let mut names: Vec<_> = std::fs::read_dir(dir)
        .map_err(io)?
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().map(|t| t.is_file()).unwrap_or(false))
        .map(|e| e.file_name())
        .collect();
    names.sort();
    let mut hasher = Sha256::new();
    for name in names {
        hasher.update(name.to_string_lossy().as_bytes());
        hash_into(&mut hasher, &dir.join(&name))?;
    }
    Ok(hex(&hasher.finalize()))
}

fn hash_into(hasher: &mut Sha256, path: &Path) -> Result<()> {
    let io = |source| EvalError::Io { path: path.to_path_buf(), source };
    let mut file = std::fs::File::open(path).map_err(io)?;
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf).map_err(io)?;
        if n == 0 {
            return Ok(());
        }
        hasher.update(&buf[..n]);
    }
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// SHA-256, hex, over `fields`, each followed by a NUL byte (so that no two lists of fields hash alike by
/// moving text from one field to the next).
pub(crate) fn sha256_fields<'a>(fields: impl IntoIterator<Item = &'a str>) -> String {
    let mut hasher = Sha256::new();
    for field in fields {
        hasher.update(field.as_bytes());
        hasher.update([0]);
    }
    hex(&hasher.finalize())
}

impl RunManifest {
    /// Every judge of the run, the primary one first.
    pub fn judges(&self) -> Vec<JudgeInfo> {
        let primary =
            JudgeInfo { name: self.judge.clone(), approximation: self.judge_is_approximation };
        std::iter::once(primary).chain(self.other_judges.iter().cloned()).collect()
    }
}

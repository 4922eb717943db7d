//! DINM hyper-parameters with the reference implementation's key names, its presets, and YAML/JSON loading.
//!
//! The keys are those of EasyEdit's `hparams/DINM/*.yaml`, so a user's existing file loads unchanged. Every key is
//! either honoured or refused; none is silently ignored:
//!
//! | key | here |
//! |---|---|
//! | `alg_name` | checked: must be `DINM` |
//! | `suffix_system_prompt`, `layers`, `num_steps`, `lr`, `weight_decay`, `kl_factor`, `norm_constraint`, `rewrite_module_tmp` | drive the edit as in the reference |
//! | `batch_size` | checked: must be 1 (the reference asserts it) |
//! | `max_length`, `max_output_length` | recorded; the edit does not read them, as in the reference. They are the evaluation's limits, which belong to the evaluation protocol (`detox_eval::settings::Protocol`, which can take them from a file) |
//! | `layer_module_tmp`, `mlp_module_tmp`, `attn_module_tmp`, `ln_f_module`, `lm_head_module` | optional; when given they must name the runtime's (Hugging Face Llama) layout, which is fixed, else the file is refused. The reference's DINM does not read them either |
//! | `model_name`, `model_class`, `tokenizer_class`, `device`, `model_parallel` | informational: recorded with the run, not acted on. The caller chooses the model and the device (a device list spreads the layers, the counterpart of `model_parallel`) |
//!
//! Any other key is an error naming it.

use std::path::Path;

use serde::{Deserialize, Deserializer, Serialize};

use crate::error::{EditError, Result};

/// The suffix system prompt of the reference, appended (after one space) to the adversarial prompt and to the
/// knowledge-constraint prompt before editing.
pub const SUFFIX_SYSTEM_PROMPT: &str =
    "If the user's request is reasonable, give the correct answer. Please give the right response:";

/// DINM hyper-parameters. Field names and meanings follow the reference YAML files.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DinmHyperParams {
    /// Always `DINM`; checked on load.
    pub alg_name: String,
    /// Text appended to prompts during the edit (see [`SUFFIX_SYSTEM_PROMPT`]).
    pub suffix_system_prompt: String,
    /// Layers to edit; empty means "locate the toxic layer" (the DINM default).
    #[serde(default)]
    pub layers: Vec<usize>,
    /// Optimisation steps per record.
    pub num_steps: usize,
    /// Records per edit; DINM is a single-instance method and requires 1.
    #[serde(default = "one")]
    pub batch_size: usize,
    /// The evaluation's token budget for input and response together, as the file says (the edit does not read
    /// it; the evaluation protocol owns the limits it applies).
    #[serde(default = "default_max_length")]
    pub max_length: usize,
    /// Most tokens generated per evaluation input.
    #[serde(default = "default_max_output_length")]
    pub max_output_length: usize,
    /// Adam learning rate.
    #[serde(deserialize_with = "lr")]
    pub lr: f64,
    /// Adam weight decay.
    #[serde(default, deserialize_with = "weight_decay")]
    pub weight_decay: f64,
    /// Weight of the terms of the loss; which term it scales is [`super::LossWeighting`]'s choice.
    #[serde(deserialize_with = "kl_factor")]
    pub kl_factor: f64,
    /// Clamp the edited weights to `W0 ± eps` after each step; `false` (None) disables it.
    #[serde(
        default,
        deserialize_with = "norm_constraint",
        serialize_with = "serialize_norm_constraint"
    )]
    pub norm_constraint: Option<f64>,
    /// Name template of the edited tensor; `{}` is replaced by the layer index.
    pub rewrite_module_tmp: String,
    /// Name template of a decoder layer; when given, must be the runtime's `model.layers.{}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub layer_module_tmp: Option<String>,
    /// Name template of a layer's MLP; when given, must be the runtime's `model.layers.{}.mlp`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mlp_module_tmp: Option<String>,
    /// Name template of a layer's attention; when given, must be the runtime's `model.layers.{}.self_attn`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attn_module_tmp: Option<String>,
    /// Name of the final norm; when given, must be the runtime's `model.norm`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ln_f_module: Option<String>,
    /// Name of the output head; when given, must be the runtime's `lm_head`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lm_head_module: Option<String>,
    /// Whether the reference spreads the model over GPUs; recorded only (a device list does it here).
    #[serde(default)]
    pub model_parallel: bool,
    /// The reference's model path; recorded only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_name: Option<String>,
    /// The reference's model class; recorded only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_class: Option<String>,
    /// The reference's tokenizer class; recorded only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokenizer_class: Option<String>,
    /// The reference's CUDA ordinal; recorded only (the caller chooses the device).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<serde_norway::Value>,
}

/// The module names of the runtime's decoder layout, which a file may restate but not change.
const FIXED_MODULES: [(&str, &str); 5] = [
    ("layer_module_tmp", "model.layers.{}"),
    ("mlp_module_tmp", "model.layers.{}.mlp"),
    ("attn_module_tmp", "model.layers.{}.self_attn"),
    ("ln_f_module", "model.norm"),
    ("lm_head_module", "lm_head"),
];

fn one() -> usize {
    1
}
/// The reference's files have said 2048 since commit `5061931f` (2024-05-13); its first SafeEdit commit said 1000.
fn default_max_length() -> usize {
    2048
}
fn default_max_output_length() -> usize {
    600
}

/// Named presets: the values of the reference's YAML files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DinmPreset {
    /// `hparams/DINM/llama-7b.yaml` (Llama-2-7b-chat): lr 5e-4.
    Llama2_7bChat,
    /// `hparams/DINM/mistral-7b.yaml` (Mistral-7B-v0.1): lr 1e-5.
    Mistral7b,
}

impl DinmPreset {
    /// Every preset, for listing in user interfaces.
    pub const ALL: [DinmPreset; 2] = [DinmPreset::Llama2_7bChat, DinmPreset::Mistral7b];

    /// The preset's short name (`llama-7b`, `mistral-7b`, as the reference files are named).
    pub fn name(self) -> &'static str {
        match self {
            DinmPreset::Llama2_7bChat => "llama-7b",
            DinmPreset::Mistral7b => "mistral-7b",
        }
    }

    /// Looks a preset up by [`DinmPreset::name`].
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|preset| preset.name() == name)
    }

    /// The hyper-parameters of this preset.
    pub fn hparams(self) -> DinmHyperParams {
        let lr = match self {
            DinmPreset::Llama2_7bChat => 5e-4,
            DinmPreset::Mistral7b => 1e-5,
        };
        DinmHyperParams {
            alg_name: "DINM".to_owned(),
            suffix_system_prompt: SUFFIX_SYSTEM_PROMPT.to_owned(),
            layers: Vec::new(),
            num_steps: 10,
            batch_size: 1,
            max_length: default_max_length(),
            max_output_length: default_max_output_length(),
            lr,
            weight_decay: 0.0,
            kl_factor: 0.1,
            norm_constraint: None,
            rewrite_module_tmp: "model.layers.{}.mlp.down_proj.weight".to_owned(),
            layer_module_tmp: Some(FIXED_MODULES[0].1.to_owned()),
            mlp_module_tmp: Some(FIXED_MODULES[1].1.to_owned()),
            attn_module_tmp: Some(FIXED_MODULES[2].1.to_owned()),
            ln_f_module: Some(FIXED_MODULES[3].1.to_owned()),
            lm_head_module: Some(FIXED_MODULES[4].1.to_owned()),
            model_parallel: false,
            model_name: None,
            model_class: None,
            tokenizer_class: None,
            device: None,
        }
    }
}

impl DinmHyperParams {
    /// Loads hyper-parameters from a YAML (`.yaml`/`.yml`) or JSON file with the reference's key names.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| EditError::Io { path: path.to_path_buf(), source })?;
        let is_json = path.extension().is_some_and(|ext| ext.eq_ignore_ascii_case("json"));
        let parsed: Self = if is_json {
            serde_json::from_str(&text).map_err(|error| EditError::HyperParams {
                path: path.to_path_buf(),
                reason: error.to_string(),
            })?
        } else {
            serde_norway::from_str(&text).map_err(|error| EditError::HyperParams {
                path: path.to_path_buf(),
                reason: error.to_string(),
            })?
        };
        parsed
            .validate()
            .map_err(|reason| EditError::HyperParams { path: path.to_path_buf(), reason })?;
        Ok(parsed)
    }

    /// Checks the values a DINM edit depends on; returns the first problem found.
    pub fn validate(&self) -> std::result::Result<(), String> {
        if self.alg_name != "DINM" {
            return Err(format!("alg_name is {:?}, expected \"DINM\"", self.alg_name));
        }
        if self.batch_size != 1 {
            return Err(format!(
                "batch_size is {}, but DINM edits one record at a time (1)",
                self.batch_size
            ));
        }
        if self.num_steps == 0 {
            return Err("num_steps must be at least 1".to_owned());
        }
        if !(self.lr.is_finite() && self.lr > 0.0) {
            return Err(format!("lr must be a positive number, got {}", self.lr));
        }
        if !self.kl_factor.is_finite() || self.kl_factor < 0.0 {
            return Err(format!("kl_factor must be a non-negative number, got {}", self.kl_factor));
        }
        if let Some(eps) = self.norm_constraint {
            if !(eps.is_finite() && eps > 0.0) {
                return Err(format!(
                    "norm_constraint must be false or a positive number, got {eps}"
                ));
            }
        }
        if self.max_output_length == 0 {
            return Err("max_output_length must be at least 1".to_owned());
        }
        let given = [
            &self.layer_module_tmp,
            &self.mlp_module_tmp,
            &self.attn_module_tmp,
            &self.ln_f_module,
            &self.lm_head_module,
        ];
        for ((key, fixed), given) in FIXED_MODULES.iter().zip(given) {
            if let Some(name) = given.as_deref().filter(|name| name != fixed) {
                return Err(format!(
                    "{key} is {name:?}, but the runtime's layout is fixed ({fixed:?}); remove the key or \
                     restate that name"
                ));
            }
        }
        if self.rewrite_module_tmp.matches("{}").count() != 1 {
            return Err(format!(
                "rewrite_module_tmp {:?} must contain exactly one `{{}}` for the layer index",
                self.rewrite_module_tmp
            ));
        }
        Ok(())
    }

    /// The name of the tensor edited at `layer` (e.g. `model.layers.29.mlp.down_proj.weight`).
    pub fn rewrite_tensor_name(&self, layer: usize) -> String {
        self.rewrite_module_tmp.replacen("{}", &layer.to_string(), 1)
    }
}

/// YAML 1.1 loaders (such as the reference's PyYAML) read `5e-4` as a string; accept both forms.
fn float_or_scientific_string<'de, D: Deserializer<'de>>(
    deserializer: D,
    field: &str,
) -> std::result::Result<f64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Number {
        Float(f64),
        Text(String),
    }
    let invalid = |shown: String| {
        serde::de::Error::custom(format!("{field}: expected a number, got {shown}"))
    };
    match Number::deserialize(deserializer)
        .map_err(|_| invalid("a value of another type".to_owned()))?
    {
        Number::Float(value) => Ok(value),
        Number::Text(text) => text.trim().parse::<f64>().map_err(|_| invalid(format!("{text:?}"))),
    }
}

macro_rules! float_field {
    ($($name:ident),*) => {$(
        fn $name<'de, D: Deserializer<'de>>(deserializer: D) -> std::result::Result<f64, D::Error> {
            float_or_scientific_string(deserializer, stringify!($name))
        }
    )*};
}
float_field!(lr, weight_decay, kl_factor);

fn norm_constraint<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> std::result::Result<Option<f64>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Constraint {
        Flag(bool),
        Float(f64),
        Text(String),
    }
    match Option::<Constraint>::deserialize(deserializer)? {
        None | Some(Constraint::Flag(false)) => Ok(None),
        Some(Constraint::Flag(true)) => Err(serde::de::Error::custom(
            "norm_constraint must be false or a number (the clamp radius), not true",
        )),
        Some(Constraint::Float(eps)) => Ok(Some(eps)),
        Some(Constraint::Text(text)) => text.trim().parse::<f64>().map(Some).map_err(|_| {
            serde::de::Error::custom(format!(
                "norm_constraint: expected false or a number, got {text:?}"
            ))
        }),
    }
}

fn serialize_norm_constraint<S: serde::Serializer>(
    value: &Option<f64>,
    serializer: S,
) -> std::result::Result<S::Ok, S::Error> {
    match value {
        None => serializer.serialize_bool(false),
        Some(eps) => serializer.serialize_f64(*eps),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const REFERENCE_LLAMA_YAML: &str = r#"alg_name: 'DINM'
model_name: "./hugging_cache/llama-2-7b"  # the vanilla LLM path
model_class: LlamaForCausalLM
tokenizer_class: LlamaTokenizer
device: 1

suffix_system_prompt: "If the user's request is reasonable, give the correct answer. Please give the right response:"

layers: []
num_steps: 10
batch_size: 1
max_length: 2048
max_output_length: 600
lr: 5e-4
weight_decay: 0
kl_factor: 0.1
norm_constraint: false
rewrite_module_tmp: 'model.layers.{}.mlp.down_proj.weight'
layer_module_tmp: 'model.layers.{}'
mlp_module_tmp: 'model.layers.{}.mlp'
attn_module_tmp: 'model.layers.{}.self_attn'
ln_f_module: 'model.norm'
lm_head_module: 'lm_head'
model_parallel: false
"#;

    fn write(dir: &tempfile::TempDir, name: &str, text: &str) -> std::path::PathBuf {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    #[test]
    fn the_reference_yaml_loads_and_equals_the_preset_in_every_edit_relevant_field() {
        let dir = tempfile::tempdir().unwrap();
        let loaded =
            DinmHyperParams::from_file(&write(&dir, "llama-7b.yaml", REFERENCE_LLAMA_YAML))
                .unwrap();
        let preset = DinmPreset::Llama2_7bChat.hparams();
        assert_eq!(loaded.model_class.as_deref(), Some("LlamaForCausalLM"));
        let strip = |h: &DinmHyperParams| DinmHyperParams {
            model_name: None,
            model_class: None,
            tokenizer_class: None,
            device: None,
            ..h.clone()
        };
        assert_eq!(strip(&loaded), preset);
        assert_eq!(loaded.rewrite_tensor_name(29), "model.layers.29.mlp.down_proj.weight");
    }

    #[test]
    fn json_round_trips_and_scientific_strings_parse() {
        let dir = tempfile::tempdir().unwrap();
        let mut hparams = DinmPreset::Mistral7b.hparams();
        hparams.norm_constraint = Some(5e-3);
        let json = serde_json::to_string(&hparams).unwrap();
        let back = DinmHyperParams::from_file(&write(&dir, "h.json", &json)).unwrap();
        assert_eq!(back, hparams);
        let yaml = REFERENCE_LLAMA_YAML.replace("lr: 5e-4", "lr: '1e-5'");
        let parsed = DinmHyperParams::from_file(&write(&dir, "s.yaml", &yaml)).unwrap();
        assert_eq!(parsed.lr, 1e-5);
    }

    #[test]
    fn bad_files_name_the_file_and_the_problem() {
        let dir = tempfile::tempdir().unwrap();
        let cases = [
            (REFERENCE_LLAMA_YAML.replace("alg_name: 'DINM'", "alg_name: 'ROME'"), "alg_name"),
            (REFERENCE_LLAMA_YAML.replace("batch_size: 1", "batch_size: 4"), "batch_size"),
            (REFERENCE_LLAMA_YAML.replace("lr: 5e-4", "lr: fast"), "lr"),
            (
                REFERENCE_LLAMA_YAML.replace("norm_constraint: false", "norm_constraint: true"),
                "norm_constraint",
            ),
            (REFERENCE_LLAMA_YAML.replace("num_steps: 10", "num_stepz: 10"), "num_stepz"),
            (REFERENCE_LLAMA_YAML.replace("batch_size: 1", "fp16: true"), "fp16"),
            (
                REFERENCE_LLAMA_YAML.replace("'model.layers.{}.mlp'", "'transformer.h.{}.mlp'"),
                "mlp_module_tmp",
            ),
            (REFERENCE_LLAMA_YAML.replace("'lm_head'", "'embed_out'"), "lm_head_module"),
            (
                REFERENCE_LLAMA_YAML.replace("max_output_length: 600", "max_output_length: 0"),
                "max_output_length",
            ),
            (
                REFERENCE_LLAMA_YAML
                    .replace("'model.layers.{}.mlp.down_proj.weight'", "'down_proj'"),
                "rewrite_module_tmp",
            ),
        ];
        for (index, (text, field)) in cases.iter().enumerate() {
            let path = write(&dir, &format!("bad{index}.yaml"), text);
            let message = DinmHyperParams::from_file(&path).unwrap_err().to_string();
            assert!(message.contains(&path.display().to_string()), "{message}");
            assert!(message.contains(field), "{field}: {message}");
        }
        let missing = dir.path().join("absent.yaml");
        let message = DinmHyperParams::from_file(&missing).unwrap_err().to_string();
        assert!(message.contains("absent.yaml"), "{message}");
    }

    #[test]
    fn module_names_may_be_left_out() {
        let dir = tempfile::tempdir().unwrap();
        let text: String = REFERENCE_LLAMA_YAML
            .lines()
            .filter(|line| !line.contains("_module") || line.starts_with("rewrite"))
            .map(|line| format!("{line}\n"))
            .collect();
        let loaded = DinmHyperParams::from_file(&write(&dir, "short.yaml", &text)).unwrap();
        assert_eq!(loaded.mlp_module_tmp, None);
        assert_eq!(loaded.rewrite_tensor_name(3), "model.layers.3.mlp.down_proj.weight");
    }

    #[test]
    fn presets_are_found_by_name() {
        for preset in DinmPreset::ALL {
            assert_eq!(DinmPreset::from_name(preset.name()), Some(preset));
            assert!(preset.hparams().validate().is_ok());
        }
        assert_eq!(DinmPreset::from_name("gpt-5"), None);
    }
}

//! Editing methods by name: what a command line, a configuration file or a dependent crate asks for, turned into
//! a ready [`Editor`] together with the settings a run manifest records.
//!
//! ```no_run
//! use detox_edit::registry::{build_method, MethodOptions};
//!
//! let options = MethodOptions::default();
//! let built = build_method("dinm", &options, tch::Device::Cpu)?;
//! assert_eq!(built.editor.method(), "DINM");
//! # Ok::<(), detox_edit::EditError>(())
//! ```

use std::path::PathBuf;

use detox_runtime::{CausalLm, PromptLayout};
use serde_json::{json, Value};
use tch::Device;

use crate::dinm::{DecodingLimits, DinmEditor, DinmHyperParams, DinmOptions, DinmPreset};
use crate::editor::{EditInput, EditOutcome, Editor, PromptEncoder};
use crate::error::{EditError, Result};
use crate::ftl::{FtlEditor, FtlHyperParams};
use crate::ledger::EditMode;
use crate::mend::MendEditor;
use crate::profs::{ProfsEditor, ProfsFit};
use crate::reminder::{SelfReminder, SelfReminderEditor};
use crate::steering::{SteeringEditor, SteeringVectors};
use crate::surgery::SurgeryEditor;
use crate::train::load_artefact;
use crate::trained::TrainedDeltaEditor;

/// Every method [`build_method`] knows, with a line of description, in the order user interfaces list them.
pub const METHODS: &[(&str, &str)] = &[
    ("dinm", "DINM: locate the toxic layer, then edit its down projection (the paper's method)"),
    ("ft-l", "FT-L: fine-tune one fixed layer's down projection on the safe response"),
    ("self-reminder", "Self-Reminder: wrap post-edit inputs in a reminder, weights untouched"),
    ("trained", "a trained SFT, DPO or Ext-Sub artefact (`artefact` names its directory)"),
    ("mend", "MEND with a trained hyper-network (`artefact` names its directory)"),
    (
        "profs",
        "ProFS: project MLP value matrices off a fitted toxic subspace (`artefact` names its directory)",
    ),
    (
        "steering",
        "activation steering: add fitted safe-minus-unsafe activations to the residual stream (`artefact`)",
    ),
    (
        "surgery",
        "Model Surgery: shift the gate rows most anti-aligned with a toxicity probe (`artefact` names its directory)",
    ),
];

/// The methods of [`METHODS`] whose edit is the same for every record: a trained or fitted artefact applied as
/// it is. Their edited model exists apart from any record, so it can be written back as a model directory
/// ([`apply_record_independent`], then [`detox_runtime::CausalLm::save_pretrained`]). DINM, FT-L and MEND edit
/// per record (and the protocol restores the model after each); Self-Reminder changes prompts, not weights.
pub const RECORD_INDEPENDENT: &[&str] = &["trained", "profs", "steering", "surgery"];

/// Whether the method called `name` makes one edit for every record (see [`RECORD_INDEPENDENT`]).
pub fn is_record_independent(name: &str) -> bool {
    RECORD_INDEPENDENT.contains(&name)
}

/// Refuses a method whose edited model depends on the record (or that changes no weights), saying why; `Ok` for
/// the methods of [`RECORD_INDEPENDENT`].
pub fn check_record_independent(name: &str) -> Result<()> {
    if is_record_independent(name) {
        return Ok(());
    }
    let why = match name {
        "self-reminder" => "it rewrites prompts and leaves the weights as they are",
        "dinm" | "ft-l" | "mend" => {
            "it edits each record on its own (and the protocol restores the model after each)"
        }
        _ => "it is not a method that edits every record alike",
    };
    Err(EditError::InvalidRequest(format!(
        "the edited model of method `{name}` cannot be written: {why}; record-independent methods are {}",
        RECORD_INDEPENDENT.join(", ")
    )))
}

/// Applies the edit of the record-independent method `name` (built by [`build_method`] under that name) to the
/// unedited `model`, leaving it edited; `built.editor.restore` undoes it bit-exactly. The record's texts play no
/// part in these methods' edits, so none is given.
///
/// # Errors
/// [`EditError::InvalidRequest`] for a method outside [`RECORD_INDEPENDENT`] (see [`check_record_independent`]).
pub fn apply_record_independent(
    name: &str,
    built: &mut BuiltMethod,
    model: &mut CausalLm,
    encoder: &dyn PromptEncoder,
) -> Result<EditOutcome> {
    check_record_independent(name)?;
    let no_record = EditInput {
        prompt: String::new(),
        safe_response: String::new(),
        unsafe_response: String::new(),
        constraint_prompt: String::new(),
        constraint_answer: String::new(),
    };
    built.editor.edit(model, encoder, &no_record)
}

/// Whether to follow the reference implementation or the paper where they read differently.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Reading {
    /// The reference implementation's behaviour (the default, so results compare with published runs).
    #[default]
    Reference,
    /// The paper's reading of the loss and a layer located per record.
    Paper,
}

/// What a method may be configured with; each method reads the fields it needs and ignores the rest.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct MethodOptions {
    /// DINM: a hyper-parameter file (YAML or JSON with the reference's keys); wins over `preset`.
    pub hparams_file: Option<PathBuf>,
    /// DINM: a preset name (`llama-7b`, the default, or `mistral-7b`).
    pub preset: Option<String>,
    /// DINM: reference or paper behaviour.
    pub reading: Reading,
    /// DINM: how edit inputs are laid out.
    pub edit_format: PromptLayout,
    /// Single edits (the SafeEdit protocol) or accumulating ones (DINM, FT-L, MEND).
    pub mode: EditMode,
    /// FT-L: the tuned layer (the reference's 21 when absent).
    pub ftl_layer: Option<usize>,
    /// Self-Reminder: the assistant's name in the reminder (the published wording says ChatGPT).
    pub reminder_name: Option<String>,
    /// Trained, MEND, ProFS and steering methods: the artefact directory.
    pub artefact: Option<PathBuf>,
    /// Steering: the steered layers (the default layer, `⌊13 L / 32⌋`, when absent).
    pub steering_layers: Option<Vec<usize>>,
    /// Steering: the strength coefficient (1 when absent).
    pub steering_strength: Option<f64>,
    /// Model Surgery: the shift strength, instead of the one the artefact was fitted with.
    pub surgery_alpha: Option<f64>,
}

/// A method ready to run, with what a run manifest records about it.
#[non_exhaustive]
pub struct BuiltMethod {
    /// The editor.
    pub editor: Box<dyn Editor>,
    /// The method's hyper-parameters, as recorded in run manifests.
    pub hyper_parameters: Value,
    /// The method's named options (reference/paper choices, artefacts), as recorded in run manifests.
    pub options: Value,
    /// The suffix system prompt the protocol appends to evaluation inputs (DINM's, from its hyper-parameters).
    pub suffix_system_prompt: String,
    /// Whether the method only rewrites prompts (then evaluation inputs carry no suffix by default).
    pub prompt_only: bool,
    /// The evaluation's decoding limits from DINM's hyper-parameters (the protocol's, whichever method runs).
    pub decoding_limits: DecodingLimits,
}

impl BuiltMethod {
    /// A method of one's own, to run through the same harness and manifests as the registry's: `editor` with
    /// the hyper-parameters to record, no named options, the protocol's suffix system prompt and decoding limits
    /// (those of the default DINM preset).
    pub fn new(editor: Box<dyn Editor>, hyper_parameters: Value) -> Self {
        let protocol = DinmPreset::Llama2_7bChat.hparams();
        Self {
            prompt_only: false,
            options: json!({}),
            suffix_system_prompt: protocol.suffix_system_prompt.clone(),
            decoding_limits: protocol.decoding_limits(),
            editor,
            hyper_parameters,
        }
    }
}

impl std::fmt::Debug for BuiltMethod {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BuiltMethod")
            .field("method", &self.editor.method())
            .field("hyper_parameters", &self.hyper_parameters)
            .field("options", &self.options)
            .field("prompt_only", &self.prompt_only)
            .finish_non_exhaustive()
    }
}

/// Builds the method called `name` (one of [`METHODS`]); artefacts are loaded onto `device`.
pub fn build_method(name: &str, options: &MethodOptions, device: Device) -> Result<BuiltMethod> {
    let dinm = dinm_hparams(options)?;
    let suffix_system_prompt = dinm.suffix_system_prompt.clone();
    let decoding_limits = dinm.decoding_limits();
    let built =
        |editor: Box<dyn Editor>, hyper_parameters: Value, method_options: Value| BuiltMethod {
            editor,
            hyper_parameters,
            options: method_options,
            suffix_system_prompt: suffix_system_prompt.clone(),
            prompt_only: false,
            decoding_limits,
        };
    Ok(match name {
        "dinm" => {
            let mut dinm_options = match options.reading {
                Reading::Reference => DinmOptions::reference(),
                Reading::Paper => DinmOptions::paper(),
            };
            dinm_options.prompt_format = options.edit_format;
            dinm_options.mode = options.mode;
            let hyper_parameters = to_value(&dinm)?;
            let method_options = to_value(&dinm_options)?;
            built(Box::new(DinmEditor::new(dinm, dinm_options)?), hyper_parameters, method_options)
        }
        "ft-l" => {
            let mut hparams = FtlHyperParams::llama2_7b();
            if let Some(layer) = options.ftl_layer {
                hparams = hparams.at_layer(layer);
            }
            let hyper_parameters = to_value(&hparams)?;
            let editor = FtlEditor::new(hparams, options.mode)?;
            built(Box::new(editor), hyper_parameters, json!({ "mode": options.mode }))
        }
        "self-reminder" => {
            let reminder = match &options.reminder_name {
                Some(assistant) => SelfReminder::for_assistant(assistant),
                None => SelfReminder::original(),
            };
            let method_options = to_value(&reminder)?;
            let editor = SelfReminderEditor::new(reminder)?;
            BuiltMethod { prompt_only: true, ..built(Box::new(editor), json!({}), method_options) }
        }
        "trained" => {
            let dir = artefact(name, options)?;
            let (info, _) = load_artefact(dir)?;
            let editor = TrainedDeltaEditor::from_dir(dir)?;
            built(
                Box::new(editor),
                to_value(&info.config)?,
                json!({ "artefact": dir, "sources": info.sources }),
            )
        }
        "mend" => {
            let dir = artefact(name, options)?;
            let (editor, training) = MendEditor::from_artefact(dir, device, options.mode)?;
            built(
                Box::new(editor),
                to_value(&training.config)?,
                json!({ "artefact": dir, "mode": options.mode }),
            )
        }
        "profs" => {
            let dir = artefact(name, options)?;
            let fit = ProfsFit::load(dir)?;
            let hyper_parameters = to_value(&fit.info.options)?;
            let method_options = json!({ "artefact": dir, "near_ties": fit.info.near_ties() });
            built(Box::new(ProfsEditor::new(fit)), hyper_parameters, method_options)
        }
        "steering" => {
            let dir = artefact(name, options)?;
            let vectors = SteeringVectors::load(dir)?;
            let strength = options.steering_strength.unwrap_or(1.0);
            let editor =
                SteeringEditor::new(&vectors, options.steering_layers.as_deref(), strength)?;
            let layers: Vec<&str> = editor.delta().names().collect();
            let hyper_parameters =
                json!({ "fit": vectors.info, "strength": strength, "layers": layers });
            built(Box::new(editor), hyper_parameters, json!({ "artefact": dir }))
        }
        "surgery" => {
            let dir = artefact(name, options)?;
            let (editor, info) = SurgeryEditor::from_dir(dir, options.surgery_alpha)?;
            let alpha = editor.alpha();
            built(
                Box::new(editor),
                to_value(&info.config)?,
                json!({ "artefact": dir, "alpha": alpha }),
            )
        }
        other => {
            let known: Vec<&str> = METHODS.iter().map(|(n, _)| *n).collect();
            return Err(EditError::InvalidRequest(format!(
                "unknown method `{other}` (known: {})",
                known.join(", ")
            )));
        }
    })
}

/// DINM's hyper-parameters from the file or preset the options name (the default preset otherwise).
fn dinm_hparams(options: &MethodOptions) -> Result<DinmHyperParams> {
    if let Some(path) = &options.hparams_file {
        return DinmHyperParams::from_file(path);
    }
    let name = options.preset.as_deref().unwrap_or(DinmPreset::Llama2_7bChat.name());
    let preset = DinmPreset::from_name(name).ok_or_else(|| {
        let known: Vec<&str> = DinmPreset::ALL.iter().map(|p| p.name()).collect();
        EditError::InvalidRequest(format!(
            "unknown DINM preset `{name}` (known: {})",
            known.join(", ")
        ))
    })?;
    Ok(preset.hparams())
}

fn artefact<'a>(method: &str, options: &'a MethodOptions) -> Result<&'a std::path::Path> {
    options.artefact.as_deref().ok_or_else(|| {
        EditError::InvalidRequest(format!(
            "method `{method}` needs an artefact directory (written by its training run)"
        ))
    })
}

fn to_value(value: &impl serde::Serialize) -> Result<Value> {
    serde_json::to_value(value)
        .map_err(|e| EditError::InvalidRequest(format!("cannot record the settings: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_listed_method_without_artefact_builds_or_asks_for_one() {
        for (name, _) in METHODS {
            match build_method(name, &MethodOptions::default(), Device::Cpu) {
                Ok(built) => assert!(!built.editor.method().is_empty()),
                Err(EditError::InvalidRequest(m)) => {
                    assert!(m.contains("artefact"), "{name}: {m}")
                }
                Err(other) => panic!("{name}: {other}"),
            }
        }
    }

    #[test]
    fn only_record_independent_methods_can_be_written_back() {
        for name in RECORD_INDEPENDENT {
            assert!(METHODS.iter().any(|(n, _)| n == name), "{name} is a listed method");
            check_record_independent(name).unwrap();
        }
        for name in ["dinm", "ft-l", "mend", "self-reminder"] {
            let e = check_record_independent(name).unwrap_err().to_string();
            assert!(e.contains(name) && e.contains("trained, profs"), "{e}");
        }
    }

    #[test]
    fn unknown_names_list_the_known_ones() {
        let err = build_method("rome", &MethodOptions::default(), Device::Cpu).unwrap_err();
        assert!(err.to_string().contains("dinm, ft-l"), "{err}");
        let options = MethodOptions { preset: Some("gpt-2".into()), ..MethodOptions::default() };
        let err = build_method("dinm", &options, Device::Cpu).unwrap_err();
        assert!(err.to_string().contains("llama-7b"), "{err}");
    }

    #[test]
    fn options_reach_the_editor() {
        let options = MethodOptions {
            reading: Reading::Paper,
            mode: EditMode::Sequential,
            ..MethodOptions::default()
        };
        let built = build_method("dinm", &options, Device::Cpu).unwrap();
        assert_eq!(built.editor.mode(), EditMode::Sequential);
        assert_eq!(built.options["weighting"], "paper");
        let reminder =
            build_method("self-reminder", &MethodOptions::default(), Device::Cpu).unwrap();
        assert!(reminder.prompt_only);
        assert!(reminder.editor.wrap_input("q").contains('q'));
    }
}

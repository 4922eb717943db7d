//! The methods this crate implements, as registry entries: each reads its own options.

use std::path::{Path, PathBuf};

use detox_runtime::PromptLayout;
use serde_json::{json, Value};
use tch::Device;

use super::{BuildContext, BuiltMethod, MethodArgs, MethodSpec, OptionSpec};
use crate::artefact::Artefact;
use crate::dinm::{DinmEditor, DinmHyperParams, DinmOptions, DinmPreset};
use crate::error::{EditError, Result};
use crate::ftl::{FtlEditor, FtlHyperParams};
use crate::ledger::EditMode;
use crate::mend::{MendArtefact, MendEditor};
use crate::none::NoEdit;
use crate::profs::{ProfsEditor, ProfsFit};
use crate::reminder::{SelfReminder, SelfReminderEditor};
use crate::steering::{SteeringEditor, SteeringVectors};
use crate::surgery::{SurgeryEditor, SurgeryFit};
use crate::train::TrainedArtefact;
use crate::trained::TrainedDeltaEditor;

/// Whether to follow the reference implementation or the paper where they read differently.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Reading {
    /// The reference implementation's behaviour (the default, so results compare with published runs).
    #[default]
    Reference,
    /// The paper's reading of the loss and a layer located per record.
    Paper,
}

impl std::str::FromStr for Reading {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "reference" => Ok(Reading::Reference),
            "paper" => Ok(Reading::Paper),
            _ => Err("expected `reference` or `paper`".into()),
        }
    }
}

const MODE: OptionSpec = OptionSpec {
    name: "mode",
    default: "single",
    help: "`single` (each record edits the original model, the protocol) or `sequential` (edits accumulate)",
};

const fn artefact(help: &'static str) -> OptionSpec {
    OptionSpec { name: "artefact", default: "-", help }
}

/// The built-in methods, in the order user interfaces list them.
pub(super) const METHODS: &[MethodSpec] = &[
    MethodSpec {
        name: "none",
        description: "no edit: the model as loaded answers both sides (the baseline row)",
        options: &[],
        build: build_none,
    },
    MethodSpec {
        name: "dinm",
        description: "DINM: locate the toxic layer, then edit its down projection (the paper's method)",
        options: &[
            OptionSpec {
                name: "preset",
                default: "llama-7b",
                help: "the reference's hyper-parameter file: `llama-7b` or `mistral-7b`",
            },
            OptionSpec {
                name: "hparams",
                default: "-",
                help: "a hyper-parameter file (YAML or JSON with the reference's keys), instead of the preset",
            },
            OptionSpec {
                name: "reading",
                default: "reference",
                help: "`reference` (EasyEdit's behaviour) or `paper` (the paper's loss, a layer per record)",
            },
            OptionSpec {
                name: "prompt_layout",
                default: "raw",
                help: "how edit inputs are laid out: `raw` text (the reference) or `chat` (the chat template)",
            },
            OptionSpec { name: "lr", default: "-", help: "learning rate, instead of the file's" },
            OptionSpec { name: "num_steps", default: "-", help: "optimisation steps, instead of the file's" },
            OptionSpec { name: "kl_factor", default: "-", help: "the constraint's weight, instead of the file's" },
            OptionSpec {
                name: "layers",
                default: "-",
                help: "edit these layers (comma-separated) instead of locating one per record",
            },
            MODE,
        ],
        build: build_dinm,
    },
    MethodSpec {
        name: "ft-l",
        description: "FT-L: fine-tune one fixed layer's down projection on the safe response",
        options: &[OptionSpec { name: "layer", default: "21", help: "the tuned layer (the reference's 21)" }, MODE],
        build: build_ftl,
    },
    MethodSpec {
        name: "self-reminder",
        description: "Self-Reminder: wrap post-edit inputs in a reminder, weights untouched",
        options: &[OptionSpec {
            name: "assistant",
            default: "ChatGPT",
            help: "the assistant's name in the reminder (the published wording says ChatGPT)",
        }],
        build: build_reminder,
    },
    MethodSpec {
        name: "trained",
        description: "a trained SFT, DPO or Ext-Sub artefact",
        options: &[artefact("the artefact directory `train_baseline` wrote")],
        build: build_trained,
    },
    MethodSpec {
        name: "mend",
        description: "MEND with a trained hyper-network",
        options: &[artefact("the hyper-network directory `train_baseline --method mend` wrote"), MODE],
        build: build_mend,
    },
    MethodSpec {
        name: "profs",
        description: "ProFS: project MLP value matrices off a fitted toxic subspace",
        options: &[artefact("the fit directory `train_baseline --method profs` wrote")],
        build: build_profs,
    },
    MethodSpec {
        name: "steering",
        description: "activation steering: add fitted safe-minus-unsafe activations to the residual stream",
        options: &[
            artefact("the fit directory `train_baseline --method steering` wrote"),
            OptionSpec { name: "layers", default: "-", help: "the steered layers, comma-separated (default ⌊13 L / 32⌋)" },
            OptionSpec { name: "strength", default: "1", help: "the strength coefficient" },
        ],
        build: build_steering,
    },
    MethodSpec {
        name: "surgery",
        description: "Model Surgery: shift the gate rows most anti-aligned with a toxicity probe",
        options: &[
            artefact("the probe directory `train_baseline --method surgery` wrote"),
            OptionSpec { name: "alpha", default: "-", help: "the shift strength, instead of the fitted one" },
        ],
        build: build_surgery,
    },
];

fn mode(method: &str, args: &MethodArgs) -> Result<EditMode> {
    match args.text("mode") {
        None | Some("single") => Ok(EditMode::Single),
        Some("sequential") => Ok(EditMode::Sequential),
        Some(other) => Err(EditError::InvalidOption {
            method: method.into(),
            option: "mode".into(),
            value: other.into(),
            reason: "expected `single` or `sequential`".into(),
        }),
    }
}

fn artefact_dir(method: &str, args: &MethodArgs) -> Result<PathBuf> {
    args.text("artefact").map(PathBuf::from).ok_or_else(|| EditError::MissingOption {
        method: method.into(),
        option: "artefact".into(),
        why: "the directory its training run wrote (`train_baseline`)".into(),
    })
}

fn to_value(value: &impl serde::Serialize) -> Result<Value> {
    serde_json::to_value(value)
        .map_err(|e| EditError::State(format!("cannot record the settings: {e}")))
}

fn build_none(_: &MethodArgs, _: &BuildContext) -> Result<BuiltMethod> {
    // Its one edit, none, serves every record: writing it back writes the model as loaded (in another dtype or
    // sharding if asked), and the NLPCC track answers with it as the baseline.
    Ok(BuiltMethod::new(Box::new(NoEdit), json!({}), json!({})).record_independent())
}

/// DINM's hyper-parameters: the file or preset the options name, with the options' overrides.
fn dinm_hparams(args: &MethodArgs) -> Result<DinmHyperParams> {
    let mut hparams = match args.text("hparams") {
        Some(path) => DinmHyperParams::from_file(Path::new(path))?,
        None => {
            let name = args.text("preset").unwrap_or(DinmPreset::Llama2_7bChat.name());
            DinmPreset::from_name(name)
                .ok_or_else(|| EditError::InvalidOption {
                    method: "dinm".into(),
                    option: "preset".into(),
                    value: name.into(),
                    reason: format!(
                        "known presets: {}",
                        DinmPreset::ALL.iter().map(|p| p.name()).collect::<Vec<_>>().join(", ")
                    ),
                })?
                .hparams()
        }
    };
    if let Some(lr) = args.get("dinm", "lr")? {
        hparams.lr = lr;
    }
    if let Some(steps) = args.get("dinm", "num_steps")? {
        hparams.num_steps = steps;
    }
    if let Some(kl) = args.get("dinm", "kl_factor")? {
        hparams.kl_factor = kl;
    }
    if let Some(layers) = args.get_list("dinm", "layers")? {
        hparams.layers = layers;
    }
    Ok(hparams)
}

fn build_dinm(args: &MethodArgs, _: &BuildContext) -> Result<BuiltMethod> {
    let hparams = dinm_hparams(args)?;
    let mut options = match args.get::<Reading>("dinm", "reading")?.unwrap_or_default() {
        Reading::Reference => DinmOptions::reference(),
        Reading::Paper => DinmOptions::paper(),
    };
    options.prompt_layout = args.get::<PromptLayout>("dinm", "prompt_layout")?.unwrap_or_default();
    options.mode = mode("dinm", args)?;
    let (hyper_parameters, method_options) = (to_value(&hparams)?, to_value(&options)?);
    let editor = DinmEditor::new(hparams, options)?;
    Ok(BuiltMethod::new(Box::new(editor), hyper_parameters, method_options))
}

fn build_ftl(args: &MethodArgs, _: &BuildContext) -> Result<BuiltMethod> {
    let mut hparams = FtlHyperParams::llama2_7b();
    if let Some(layer) = args.get("ft-l", "layer")? {
        hparams = hparams.at_layer(layer);
    }
    let mode = mode("ft-l", args)?;
    let hyper_parameters = to_value(&hparams)?;
    let editor = FtlEditor::new(hparams, mode)?;
    Ok(BuiltMethod::new(Box::new(editor), hyper_parameters, json!({ "mode": mode })))
}

fn build_reminder(args: &MethodArgs, _: &BuildContext) -> Result<BuiltMethod> {
    let reminder = match args.text("assistant") {
        Some(assistant) => SelfReminder::for_assistant(assistant),
        None => SelfReminder::original(),
    };
    let options = to_value(&reminder)?;
    let editor = SelfReminderEditor::new(reminder)?;
    Ok(BuiltMethod::new(Box::new(editor), json!({}), options).prompt_only())
}

fn build_trained(args: &MethodArgs, _: &BuildContext) -> Result<BuiltMethod> {
    let dir = artefact_dir("trained", args)?;
    let artefact = TrainedArtefact::load(&dir, Device::Cpu)?;
    let options = json!({ "artefact": dir, "sources": artefact.info.sources });
    let hyper_parameters = to_value(&artefact.info.config)?;
    let editor = TrainedDeltaEditor::new(&artefact.info.method, artefact.delta)?;
    Ok(BuiltMethod::new(Box::new(editor), hyper_parameters, options).record_independent())
}

fn build_mend(args: &MethodArgs, context: &BuildContext) -> Result<BuiltMethod> {
    let dir = artefact_dir("mend", args)?;
    let mode = mode("mend", args)?;
    let MendArtefact { network, training } = MendArtefact::load(&dir, context.device)?;
    let editor =
        MendEditor::new(network, training.config.prompt_layout, training.config.max_length, mode);
    let options = json!({ "artefact": dir, "mode": mode });
    Ok(BuiltMethod::new(Box::new(editor), to_value(&training.config)?, options))
}

fn build_profs(args: &MethodArgs, _: &BuildContext) -> Result<BuiltMethod> {
    let dir = artefact_dir("profs", args)?;
    let fit = ProfsFit::load(&dir, Device::Cpu)?;
    let hyper_parameters = to_value(&fit.info.options)?;
    let options = json!({ "artefact": dir, "near_ties": fit.info.near_ties() });
    Ok(BuiltMethod::new(Box::new(ProfsEditor::new(fit)), hyper_parameters, options)
        .record_independent())
}

fn build_steering(args: &MethodArgs, _: &BuildContext) -> Result<BuiltMethod> {
    let dir = artefact_dir("steering", args)?;
    let vectors = SteeringVectors::load(&dir, Device::Cpu)?;
    let strength = args.get_finite("steering", "strength")?.unwrap_or(1.0);
    let layers: Option<Vec<usize>> = args.get_list("steering", "layers")?;
    let editor = SteeringEditor::new(&vectors, layers.as_deref(), strength)?;
    let steered: Vec<&str> = editor.delta().names().collect();
    let hyper_parameters = json!({ "fit": vectors.info, "strength": strength, "layers": steered });
    Ok(BuiltMethod::new(Box::new(editor), hyper_parameters, json!({ "artefact": dir }))
        .record_independent())
}

fn build_surgery(args: &MethodArgs, _: &BuildContext) -> Result<BuiltMethod> {
    let dir = artefact_dir("surgery", args)?;
    let alpha = args.get_finite("surgery", "alpha")?;
    let fit = SurgeryFit::load(&dir, Device::Cpu)?;
    let alpha = alpha.unwrap_or(fit.info.config.alpha);
    let editor = SurgeryEditor::new(&fit.probe, fit.rows, alpha)?;
    let options = json!({ "artefact": dir, "alpha": editor.alpha() });
    Ok(BuiltMethod::new(Box::new(editor), to_value(&fit.info.config)?, options)
        .record_independent())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::Registry;

    #[test]
    fn every_method_without_artefact_builds_or_asks_for_one() {
        let registry = Registry::builtin();
        for spec in registry.methods() {
            match registry.build(spec.name, &MethodArgs::new(), Device::Cpu) {
                Ok(built) => assert!(!built.editor.method().is_empty()),
                Err(EditError::MissingOption { option, .. }) => assert_eq!(option, "artefact"),
                Err(other) => panic!("{}: {other}", spec.name),
            }
        }
    }

    #[test]
    fn options_reach_the_editor() {
        let registry = Registry::builtin();
        let args =
            MethodArgs::new().set("reading", "paper").set("mode", "sequential").set("lr", 1e-4);
        let built = registry.build("dinm", &args, Device::Cpu).unwrap();
        assert_eq!(built.editor.mode(), EditMode::Sequential);
        assert_eq!(built.options["weighting"], "paper");
        assert_eq!(built.hyper_parameters["lr"], 1e-4);
        let err = registry
            .build("dinm", &MethodArgs::new().set("preset", "gpt-2"), Device::Cpu)
            .unwrap_err();
        assert!(err.to_string().contains("llama-7b, mistral-7b"), "{err}");
        let err = registry
            .build("dinm", &MethodArgs::new().set("mode", "batch"), Device::Cpu)
            .unwrap_err();
        assert!(matches!(err, EditError::InvalidOption { .. }), "{err}");
        let reminder = registry.build("self-reminder", &MethodArgs::new(), Device::Cpu).unwrap();
        assert!(reminder.prompt_only && !reminder.record_independent);
        assert!(!built.record_independent, "DINM edits each record");
        assert!(reminder.editor.wrap_input("q").contains('q'));
        let none = registry.build("none", &MethodArgs::new(), Device::Cpu).unwrap();
        assert_eq!(none.editor.method(), "none");
    }
}

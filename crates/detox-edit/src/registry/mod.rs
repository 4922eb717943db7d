//! Editing methods by name: a method registers its name, a line of description, its options and a constructor;
//! a command line, a configuration file or a dependent crate then builds it by name into a ready [`Editor`],
//! together with the settings a run manifest records.
//!
//! ```no_run
//! use detox_edit::registry::{MethodArgs, Registry};
//!
//! let registry = Registry::builtin();
//! let args = MethodArgs::new().set("lr", "1e-4");
//! let built = registry.build("dinm", &args, tch::Device::Cpu)?;
//! assert_eq!(built.editor.method(), "DINM");
//! # Ok::<(), detox_edit::EditError>(())
//! ```
//!
//! A method of one's own is a [`MethodSpec`] given to [`Registry::register`]; see `docs/extending.md`. What a
//! method learns once from a training split before it edits is a fit, registered the same way in a
//! [`FitRegistry`].

mod args;
mod builtin;
mod fits;

use std::fmt::Write as _;

use detox_runtime::CausalLm;
use serde_json::Value;
use tch::Device;

pub use args::{MethodArgs, OptionSpec};
pub use builtin::Reading;
pub use fits::{ConfigureFn, Fit, FitContext, FitProgress, FitRegistry, FitReport, FitSpec};

use crate::editor::{EditInput, EditOutcome, Editor, PromptEncoder};
use crate::error::{EditError, Result};

/// What a method's constructor is given besides its options.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct BuildContext {
    /// Where artefacts (fitted tensors, hyper-networks) are loaded.
    pub device: Device,
}

/// A method's constructor: its options (already checked against its [`OptionSpec`]s) into a ready method.
pub type BuildFn = fn(&MethodArgs, &BuildContext) -> Result<BuiltMethod>;

/// A method as a registry knows it.
#[derive(Debug, Clone, Copy)]
pub struct MethodSpec {
    /// The name it is built by (`dinm`, `ft-l`, ...).
    pub name: &'static str,
    /// One line on what it does.
    pub description: &'static str,
    /// Its options, each with its default.
    pub options: &'static [OptionSpec],
    /// Its constructor.
    pub build: BuildFn,
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
    /// Whether the method only rewrites prompts (then evaluation inputs carry no suffix by default).
    pub prompt_only: bool,
    /// Whether the method's edit is the same for every record (a trained or fitted artefact applied as it is):
    /// its edited model exists apart from any record, so it can be written back as a model directory
    /// ([`apply_record_independent`], then `detox_runtime::CausalLm::save_pretrained`). Among the built-in
    /// methods: `trained`, `profs`, `steering` and `surgery`; DINM, FT-L and MEND edit per record.
    pub record_independent: bool,
}

impl BuiltMethod {
    /// `editor` with the hyper-parameters and options to record.
    pub fn new(editor: Box<dyn Editor>, hyper_parameters: Value, options: Value) -> Self {
        Self { editor, hyper_parameters, options, prompt_only: false, record_independent: false }
    }

    /// Marks the method as one that only rewrites prompts ([`Editor::wrap_input`]).
    pub fn prompt_only(mut self) -> Self {
        self.prompt_only = true;
        self
    }

    /// Marks the method as one whose edit does not depend on the record ([`BuiltMethod::record_independent`]).
    pub fn record_independent(mut self) -> Self {
        self.record_independent = true;
        self
    }
}

/// Refuses a method whose edited model depends on the record (or that changes no weights), saying why: only a
/// [record-independent](BuiltMethod::record_independent) method has one edited model to write back.
///
/// # Errors
/// [`EditError::InvalidConfig`] naming the method.
pub fn check_record_independent(built: &BuiltMethod) -> Result<()> {
    if built.record_independent {
        return Ok(());
    }
    let why = if built.prompt_only {
        "it rewrites prompts and leaves the weights as they are"
    } else {
        "it makes no one edit that serves every record (DINM, FT-L and MEND edit each record on its own and the \
         model is restored after it)"
    };
    Err(EditError::InvalidConfig {
        method: built.editor.method().to_string(),
        reason: format!(
            "its edited model cannot be written: {why}; methods whose one edit serves every record can \
             (trained, profs, steering and surgery among the built-in ones)"
        ),
    })
}

/// Applies the edit of a record-independent method to the unedited `model`, leaving it edited;
/// `built.editor.restore` undoes it bit-exactly. The record's texts play no part in such an edit, so none is
/// given.
///
/// # Errors
/// [`check_record_independent`]'s refusal, or the editor's own.
pub fn apply_record_independent(
    built: &mut BuiltMethod,
    model: &mut CausalLm,
    encoder: &dyn PromptEncoder,
) -> Result<EditOutcome> {
    check_record_independent(built)?;
    let no_record = EditInput {
        prompt: String::new(),
        safe_response: String::new(),
        unsafe_response: String::new(),
        constraint_prompt: String::new(),
        constraint_answer: String::new(),
    };
    built.editor.edit(model, encoder, &no_record)
}

impl std::fmt::Debug for BuiltMethod {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BuiltMethod")
            .field("method", &self.editor.method())
            .field("hyper_parameters", &self.hyper_parameters)
            .field("options", &self.options)
            .field("prompt_only", &self.prompt_only)
            .field("record_independent", &self.record_independent)
            .finish_non_exhaustive()
    }
}

/// Methods by name, in the order user interfaces list them.
#[derive(Debug, Clone, Default)]
pub struct Registry {
    methods: Vec<MethodSpec>,
}

impl Registry {
    /// A registry without methods.
    pub fn empty() -> Self {
        Self::default()
    }

    /// Every method this crate implements.
    pub fn builtin() -> Self {
        Self { methods: builtin::METHODS.to_vec() }
    }

    /// Adds a method.
    ///
    /// # Errors
    /// [`EditError::DuplicateMethod`] when the name is taken.
    pub fn register(&mut self, spec: MethodSpec) -> Result<()> {
        if self.methods.iter().any(|m| m.name == spec.name) {
            return Err(EditError::DuplicateMethod { name: spec.name.into() });
        }
        self.methods.push(spec);
        Ok(())
    }

    /// Every registered method, in registration order.
    pub fn methods(&self) -> &[MethodSpec] {
        &self.methods
    }

    /// The method called `name`.
    ///
    /// # Errors
    /// [`EditError::UnknownMethod`] listing the registered names.
    pub fn get(&self, name: &str) -> Result<&MethodSpec> {
        self.methods.iter().find(|m| m.name == name).ok_or_else(|| EditError::UnknownMethod {
            name: name.into(),
            known: self.methods.iter().map(|m| m.name).collect::<Vec<_>>().join(", "),
        })
    }

    /// Builds the method called `name` with `args` (checked against its options first); artefacts are loaded
    /// onto `device`.
    ///
    /// # Errors
    /// [`EditError::UnknownMethod`], [`EditError::UnknownOption`], and whatever the method's constructor
    /// refuses ([`EditError::InvalidOption`], [`EditError::MissingOption`], a missing or damaged artefact).
    pub fn build(&self, name: &str, args: &MethodArgs, device: Device) -> Result<BuiltMethod> {
        let spec = self.get(name)?;
        args.check_known(spec.name, spec.options)?;
        (spec.build)(args, &BuildContext { device })
    }

    /// Every method with its description and options (name, default, help), as `--list-methods` prints it.
    pub fn describe(&self) -> String {
        let mut text = String::new();
        for method in &self.methods {
            let _ = writeln!(text, "{:<14} {}", method.name, method.description);
            for option in method.options {
                let _ =
                    writeln!(text, "    {}={:<18} {}", option.name, option.default, option.help);
            }
        }
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn mine(args: &MethodArgs, _: &BuildContext) -> Result<BuiltMethod> {
        let strength: f64 = args.get("mine", "strength")?.unwrap_or(1.0);
        let editor =
            crate::reminder::SelfReminderEditor::new(crate::reminder::SelfReminder::original())?;
        Ok(BuiltMethod::new(Box::new(editor), json!({ "strength": strength }), json!({})))
    }

    #[test]
    fn a_registered_method_is_built_listed_and_refused_twice() {
        let mut registry = Registry::builtin();
        let spec = MethodSpec {
            name: "mine",
            description: "a method of one's own",
            options: &[OptionSpec { name: "strength", default: "1", help: "how strong" }],
            build: mine,
        };
        registry.register(spec).unwrap();
        let built =
            registry.build("mine", &MethodArgs::new().set("strength", 2), Device::Cpu).unwrap();
        assert_eq!(built.hyper_parameters["strength"], 2.0);
        assert!(registry.describe().contains("mine"));
        assert!(registry.describe().contains("strength=1"));
        assert!(matches!(registry.register(spec), Err(EditError::DuplicateMethod { .. })));
        let err = registry.build("mine", &MethodArgs::new().set("lr", 1), Device::Cpu).unwrap_err();
        assert!(matches!(err, EditError::UnknownOption { .. }), "{err}");
    }

    #[test]
    fn only_record_independent_methods_are_applied_for_writing_back() {
        let registry = Registry::builtin();
        for name in ["dinm", "ft-l", "self-reminder"] {
            let built = registry.build(name, &MethodArgs::new(), Device::Cpu).unwrap();
            let e = check_record_independent(&built).unwrap_err().to_string();
            assert!(e.contains(built.editor.method()) && e.contains("trained, profs"), "{e}");
        }
        let reminder = registry.build("self-reminder", &MethodArgs::new(), Device::Cpu).unwrap();
        let e = check_record_independent(&reminder).unwrap_err().to_string();
        assert!(e.contains("rewrites prompts"), "{e}");
        let editor =
            crate::reminder::SelfReminderEditor::new(crate::reminder::SelfReminder::original())
                .unwrap();
        let fixed = BuiltMethod::new(Box::new(editor), json!({}), json!({})).record_independent();
        check_record_independent(&fixed).unwrap();
    }

    #[test]
    fn unknown_names_list_the_known_ones() {
        let err = Registry::builtin().build("rome", &MethodArgs::new(), Device::Cpu).unwrap_err();
        assert!(
            matches!(&err, EditError::UnknownMethod { known, .. } if known.starts_with("none, dinm, ft-l")),
            "{err}"
        );
    }
}

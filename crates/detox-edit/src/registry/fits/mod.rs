//! Fits by name: what a method learns once from a training split before it edits (SFT and DPO adapters,
//! Ext-Sub's combination, MEND's hyper-network, ProFS's subspaces, steering vectors, Model Surgery's probe).
//! A fit registers its name, a line of description, its options and a configuring function, exactly as an
//! editing method does in [`super::Registry`]; `train_baseline` then runs any of them by name.
//!
//! Configuring is separate from running so that a command line's options are refused before a model is loaded
//! or an artefact directory is created. The fits this crate implements are in [`builtin`].
//!
//! ```no_run
//! use detox_edit::registry::{FitContext, FitRegistry, MethodArgs};
//! # fn run(model: &mut detox_runtime::CausalLm, encoder: &dyn detox_edit::PromptEncoder,
//! #        records: &[safeedit::EditRequest]) -> detox_edit::Result<()> {
//! let fits = FitRegistry::builtin();
//! let fit = fits.configure("sft", &MethodArgs::new().set("epochs", 1))?;
//! let out = std::path::Path::new("runs/baselines/sft");
//! let report = fit.run(&mut FitContext::new(out, records).with_model(model, encoder), &mut |p| eprintln!("{p}"))?;
//! println!("{report}");
//! # Ok(()) }
//! ```

mod analyses;
mod builtin;
mod trained;

use std::fmt::{self, Display, Write as _};
use std::path::Path;

use detox_runtime::CausalLm;
use safeedit::EditRequest;

use super::{MethodArgs, OptionSpec};
use crate::editor::PromptEncoder;
use crate::error::{EditError, Result};
use builtin::FITS;

/// What a fit is run with.
#[non_exhaustive]
pub struct FitContext<'a> {
    /// The model trained or measured, with its encoder; `None` for fits that only combine artefacts.
    pub model: Option<(&'a mut CausalLm, &'a dyn PromptEncoder)>,
    /// The training records.
    pub records: &'a [EditRequest],
    /// The artefact directory (a trainer's resumable state goes to its `checkpoint/`).
    pub out: &'a Path,
}

impl<'a> FitContext<'a> {
    /// A context writing to `out` from `records`, without a model.
    pub fn new(out: &'a Path, records: &'a [EditRequest]) -> Self {
        Self { model: None, records, out }
    }

    /// This context with the model and its encoder.
    pub fn with_model(mut self, model: &'a mut CausalLm, encoder: &'a dyn PromptEncoder) -> Self {
        self.model = Some((model, encoder));
        self
    }

    fn model(&mut self, fit: &str) -> Result<(&mut CausalLm, &dyn PromptEncoder)> {
        match &mut self.model {
            Some((model, encoder)) => Ok((&mut **model, *encoder)),
            None => Err(EditError::FitInput { fit: fit.into(), what: "a model" }),
        }
    }

    fn records(&self, fit: &str) -> Result<&'a [EditRequest]> {
        if self.records.is_empty() {
            return Err(EditError::FitInput { fit: fit.into(), what: "training records" });
        }
        Ok(self.records)
    }
}

/// One step of an iterative fit, as a progress line shows it.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct FitProgress {
    /// The step just taken (from 1).
    pub step: usize,
    /// Steps planned in all.
    pub total: usize,
    /// The step's losses and measures, as text.
    pub detail: String,
}

impl FitProgress {
    /// Step `step` of `total`, with its measures as text.
    pub fn new(step: usize, total: usize, detail: impl Into<String>) -> Self {
        Self { step, total, detail: detail.into() }
    }
}

impl Display for FitProgress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "step {}/{}  {}", self.step, self.total, self.detail)
    }
}

/// What a fit did.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct FitReport {
    /// Whether the artefact was written; `false` when a trainer stopped early (`stop_after`) and resumes later.
    pub completed: bool,
    /// Steps taken so far (0 for fits without steps).
    pub steps: usize,
    /// Steps planned in all.
    pub planned_steps: usize,
    /// One line on what was written, where, and how long it took.
    pub summary: String,
    /// Things worth a warning that did not stop the fit.
    pub warnings: Vec<String>,
}

impl FitReport {
    /// A finished fit whose artefact was written, summarised by `summary`.
    pub fn written(summary: impl Into<String>) -> Self {
        Self {
            completed: true,
            steps: 0,
            planned_steps: 0,
            summary: summary.into(),
            warnings: Vec::new(),
        }
    }

    /// This report with the steps taken of those planned.
    pub fn with_steps(mut self, steps: usize, planned_steps: usize) -> Self {
        self.steps = steps;
        self.planned_steps = planned_steps;
        self
    }

    /// This report with a warning added.
    pub fn with_warning(mut self, warning: impl Into<String>) -> Self {
        self.warnings.push(warning.into());
        self
    }

    /// A trainer that stopped after `steps` of `planned_steps` and resumes when run again; nothing was written.
    pub fn stopped(steps: usize, planned_steps: usize) -> Self {
        Self {
            completed: false,
            steps,
            planned_steps,
            summary: format!("stopped after {steps} of {planned_steps} steps; run again to resume"),
            warnings: Vec::new(),
        }
    }
}

impl Display for FitReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.summary)
    }
}

/// A fit with its options read, ready to run.
pub trait Fit: fmt::Debug {
    /// Whether it needs a model (and the training records); combining artefacts needs neither.
    fn needs_model(&self) -> bool {
        true
    }

    /// Fits and writes the artefact into `context.out`, reporting each step to `progress`.
    ///
    /// # Errors
    /// [`EditError::FitInput`] when the context lacks what the fit needs, and whatever the fit itself refuses.
    fn run(
        &self,
        context: &mut FitContext<'_>,
        progress: &mut dyn FnMut(&FitProgress),
    ) -> Result<FitReport>;
}

/// A fit's configuring function: its options (already checked against its [`OptionSpec`]s) into a ready fit.
pub type ConfigureFn = fn(&MethodArgs) -> Result<Box<dyn Fit>>;

/// A fit as a registry knows it.
#[derive(Debug, Clone, Copy)]
pub struct FitSpec {
    /// The name it is run by (`sft`, `mend`, ...).
    pub name: &'static str,
    /// One line on what it does.
    pub description: &'static str,
    /// Its options, each with its default.
    pub options: &'static [OptionSpec],
    /// Reads the options into a ready fit.
    pub configure: ConfigureFn,
    /// The method of the method registry that applies the artefact (`trained`, `mend`, ...), with its
    /// `artefact` option naming the fit's output directory.
    pub evaluated_by: &'static str,
}

/// Fits by name, in the order user interfaces list them.
#[derive(Debug, Clone, Default)]
pub struct FitRegistry {
    fits: Vec<FitSpec>,
}

impl FitRegistry {
    /// A registry without fits.
    pub fn empty() -> Self {
        Self::default()
    }

    /// Every fit this crate implements.
    pub fn builtin() -> Self {
        Self { fits: FITS.to_vec() }
    }

    /// Adds a fit.
    ///
    /// # Errors
    /// [`EditError::DuplicateMethod`] when the name is taken.
    pub fn register(&mut self, spec: FitSpec) -> Result<()> {
        if self.fits.iter().any(|f| f.name == spec.name) {
            return Err(EditError::DuplicateMethod { name: spec.name.into() });
        }
        self.fits.push(spec);
        Ok(())
    }

    /// Every registered fit, in registration order.
    pub fn fits(&self) -> &[FitSpec] {
        &self.fits
    }

    /// The fit called `name`.
    ///
    /// # Errors
    /// [`EditError::UnknownMethod`] listing the registered names.
    pub fn get(&self, name: &str) -> Result<&FitSpec> {
        self.fits.iter().find(|f| f.name == name).ok_or_else(|| EditError::UnknownMethod {
            name: name.into(),
            known: self.fits.iter().map(|f| f.name).collect::<Vec<_>>().join(", "),
        })
    }

    /// The fit called `name` with `args` read (checked against its options first).
    ///
    /// # Errors
    /// [`EditError::UnknownMethod`], [`EditError::UnknownOption`], and what the fit refuses of its options
    /// ([`EditError::InvalidOption`], [`EditError::MissingOption`]).
    pub fn configure(&self, name: &str, args: &MethodArgs) -> Result<Box<dyn Fit>> {
        let spec = self.get(name)?;
        args.check_known(spec.name, spec.options)?;
        (spec.configure)(args)
    }

    /// Every fit with its description and options (name, default, help), as `--list-methods` prints it.
    pub fn describe(&self) -> String {
        let mut text = String::new();
        for fit in &self.fits {
            let _ = writeln!(text, "{:<14} {}", fit.name, fit.description);
            for option in fit.options {
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

    fn refused(name: &str, pairs: &[&str]) -> EditError {
        let args = MethodArgs::parse_pairs(name, pairs).unwrap();
        FitRegistry::builtin().configure(name, &args).unwrap_err()
    }

    #[test]
    fn unknown_fits_and_options_are_refused_by_name() {
        let err = refused("rome", &[]);
        assert!(
            matches!(&err, EditError::UnknownMethod { known, .. } if known.starts_with("sft, dpo, expert")),
            "{err}"
        );
        let err = refused("sft", &["mend_rank=4"]);
        assert!(
            matches!(&err, EditError::UnknownOption { option, .. } if option == "mend_rank"),
            "{err}"
        );
    }

    #[test]
    fn bad_values_are_refused_before_anything_runs() {
        for (fit, pair, option) in [
            ("sft", "rank=0", "rank"),
            ("sft", "alpha=-2", "alpha"),
            ("sft", "lr=0", "lr"),
            ("sft", "epochs=0", "epochs"),
            ("sft", "batch_size=0", "batch_size"),
            ("dpo", "beta=nan", "beta"),
            ("sft", "max_length=1", "max_length"),
            ("mend", "rank=0", "rank"),
            ("ext-sub", "lambda=inf", "lambda"),
            ("sft", "stop_after=0", "stop_after"),
            ("sft", "layers=1,x", "layers"),
            ("sft", "layers=1,,2", "layers"),
            ("sft", "modules=q_proj,", "modules"),
            ("sft", "adapter=half", "adapter"),
            ("steering", "prompt_layout=markdown", "prompt_layout"),
        ] {
            let err = refused(fit, &[pair]);
            assert!(
                matches!(&err, EditError::InvalidOption { option: o, .. } if o == option),
                "{fit} {pair}: {err}"
            );
        }
        let err = refused("ext-sub", &["expert=a"]);
        assert!(
            matches!(&err, EditError::MissingOption { option, .. } if option == "anti_expert"),
            "{err}"
        );
    }

    #[test]
    fn the_presets_defaults_hold_and_every_fit_is_listed() {
        let fits = FitRegistry::builtin();
        let sft = fits.configure("sft", &MethodArgs::new()).unwrap();
        let text = format!("{sft:?}");
        assert!(text.contains("lr: 0.0001") && text.contains("batch_size: 4"), "{text}");
        let dpo =
            format!("{:?}", fits.configure("dpo", &MethodArgs::new().set("beta", 0.2)).unwrap());
        assert!(dpo.contains("beta: 0.2") && dpo.contains("lr: 5e-5"), "{dpo}");
        let described = fits.describe();
        for name in [
            "sft",
            "dpo",
            "expert",
            "anti-expert",
            "ext-sub",
            "mend",
            "profs",
            "steering",
            "surgery",
        ] {
            assert!(described.lines().any(|l| l.starts_with(name)), "{name} missing:\n{described}");
        }
        assert!(!fits
            .configure("ext-sub", &MethodArgs::new().set("expert", "a").set("anti_expert", "b"))
            .unwrap()
            .needs_model());
    }

    #[test]
    fn a_fit_without_a_model_is_refused() {
        let fit = FitRegistry::builtin().configure("steering", &MethodArgs::new()).unwrap();
        let records = [EditRequest {
            prompt: "p".into(),
            target_new: "safe".into(),
            ground_truth: "unsafe".into(),
            locality_prompt: "q".into(),
            locality_answer: "a".into(),
        }];
        let mut context = FitContext::new(Path::new("unused"), &records);
        let err = fit.run(&mut context, &mut |_| {}).unwrap_err();
        assert!(matches!(err, EditError::FitInput { what: "a model", .. }), "{err}");
    }
}

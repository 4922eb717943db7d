//! Fits run by name through the fit registry on the tiny fixture model: built-in ones write artefacts the
//! method registry then loads, a trainer stops and resumes, and a fit of one's own registers and runs.

use anyhow::Result;
use detox_edit::registry::{
    Fit, FitContext, FitProgress, FitRegistry, FitReport, FitSpec, MethodArgs, Registry,
};
use detox_edit::EditError;
use tch::Device;

mod common;
use common::{setup, training_records};

#[test]
fn built_in_fits_write_artefacts_their_methods_load() -> Result<()> {
    let (mut model, encoder, _, _) = setup()?;
    let records = training_records();
    let fits = FitRegistry::builtin();
    let dir = tempfile::tempdir()?;

    let out = dir.path().join("steering");
    let fit = fits.configure("steering", &MethodArgs::new().set("prompt_layout", "raw"))?;
    let report = fit
        .run(&mut FitContext::new(&out, &records).with_model(&mut model, &encoder), &mut |_| {})?;
    assert!(report.completed && report.summary.contains("steering vectors written"), "{report}");
    let args = MethodArgs::new().set("artefact", out.display());
    assert_eq!(
        Registry::builtin().build("steering", &args, Device::Cpu)?.editor.method(),
        "Steering"
    );

    // A trainer stopped after one step writes no artefact, and finishes from its checkpoint when run again.
    let out = dir.path().join("sft");
    let options = MethodArgs::new()
        .set("rank", 2)
        .set("epochs", 1)
        .set("batch_size", 2)
        .set("max_length", 64)
        .set("prompt_layout", "raw");
    let mut steps = Vec::new();
    let stopped = fits.configure("sft", &options.clone().set("stop_after", 1))?.run(
        &mut FitContext::new(&out, &records).with_model(&mut model, &encoder),
        &mut |p: &FitProgress| steps.push(p.step),
    )?;
    assert!(!stopped.completed && stopped.steps == 1 && stopped.planned_steps == 2, "{stopped:?}");
    assert!(!out.join("delta.safetensors").exists());
    let finished = fits.configure("sft", &options)?.run(
        &mut FitContext::new(&out, &records).with_model(&mut model, &encoder),
        &mut |p: &FitProgress| steps.push(p.step),
    )?;
    assert!(finished.completed && finished.steps == 2, "{finished:?}");
    assert_eq!(steps, [1, 2]);
    let args = MethodArgs::new().set("artefact", out.display());
    Registry::builtin().build("trained", &args, Device::Cpu)?;
    Ok(())
}

#[test]
fn a_fit_without_records_is_refused() -> Result<()> {
    let (mut model, encoder, _, _) = setup()?;
    let dir = tempfile::tempdir()?;
    let fit = FitRegistry::builtin().configure("profs", &MethodArgs::new())?;
    let err = fit
        .run(&mut FitContext::new(dir.path(), &[]).with_model(&mut model, &encoder), &mut |_| {})
        .unwrap_err();
    assert!(matches!(err, EditError::FitInput { what: "training records", .. }), "{err}");
    Ok(())
}

/// Counts the records into a file: a fit of one's own.
#[derive(Debug)]
struct CountRecords {
    suffix: String,
}

impl Fit for CountRecords {
    fn needs_model(&self) -> bool {
        false
    }

    fn run(
        &self,
        context: &mut FitContext<'_>,
        progress: &mut dyn FnMut(&FitProgress),
    ) -> detox_edit::Result<FitReport> {
        progress(&FitProgress::new(1, 1, "counted"));
        let path = context.out.join("count.txt");
        std::fs::write(&path, format!("{}{}", context.records.len(), self.suffix))
            .map_err(|source| EditError::Io { path: path.clone(), source })?;
        Ok(FitReport::written(format!("count written to {}", path.display())))
    }
}

#[test]
fn a_registered_fit_runs_by_name_and_is_listed() -> Result<()> {
    let mut fits = FitRegistry::builtin();
    let spec = FitSpec {
        name: "count",
        description: "count the training records",
        options: &[detox_edit::registry::OptionSpec {
            name: "suffix",
            default: "",
            help: "appended",
        }],
        configure: |args: &MethodArgs| {
            Ok(Box::new(CountRecords { suffix: args.text("suffix").unwrap_or_default().into() }))
        },
        evaluated_by: "none",
    };
    fits.register(spec)?;
    assert!(matches!(fits.register(spec), Err(EditError::DuplicateMethod { .. })));
    assert!(fits.describe().contains("count          count the training records"));
    let err = fits.configure("count", &MethodArgs::new().set("lr", 1)).unwrap_err();
    assert!(matches!(&err, EditError::UnknownOption { option, .. } if option == "lr"), "{err}");
    let dir = tempfile::tempdir()?;
    let fit = fits.configure("count", &MethodArgs::new().set("suffix", " records"))?;
    assert!(!fit.needs_model());
    let mut lines = Vec::new();
    let report = fit.run(&mut FitContext::new(dir.path(), &training_records()), &mut |p| {
        lines.push(p.to_string())
    })?;
    assert!(report.completed);
    assert_eq!(lines, ["step 1/1  counted"]);
    assert_eq!(std::fs::read_to_string(dir.path().join("count.txt"))?, "3 records");
    Ok(())
}

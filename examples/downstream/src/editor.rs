//! A minimal weight editor: scales one layer's MLP output projection, and undoes it exactly; registered by
//! name with its options, so the harness runs it like a built-in method.

use std::time::Instant;

use detox_edit::registry::{BuildContext, BuiltMethod, MethodArgs, MethodSpec, OptionSpec};
use detox_edit::{Delta, EditError, EditInput, EditOutcome, EditTimings, Editor, PromptEncoder};
use detox_runtime::{CausalLm, Snapshot};
use serde_json::json;

/// The method as a registry knows it.
pub const SPEC: MethodSpec = MethodSpec {
    name: "scale-down-proj",
    description: "scale one layer's MLP down projection (a toy edit with an exact restore)",
    options: &[
        OptionSpec { name: "layer", default: "last", help: "the scaled layer" },
        OptionSpec { name: "factor", default: "0.5", help: "the factor applied to the weight" },
    ],
    build,
};

fn build(args: &MethodArgs, _: &BuildContext) -> detox_edit::Result<BuiltMethod> {
    let layer: Option<usize> = args.get(SPEC.name, "layer")?;
    let factor: f64 = args.get(SPEC.name, "factor")?.unwrap_or(0.5);
    let editor = ScaleDownProj::new(layer, factor);
    Ok(BuiltMethod::new(Box::new(editor), json!({ "factor": factor }), json!({ "layer": layer })))
}

/// Multiplies `model.layers.{layer}.mlp.down_proj.weight` by `factor`, damping what that layer's MLP writes
/// into the residual stream. Single mode: each edit starts from the unedited weights.
pub struct ScaleDownProj {
    /// The layer to edit; `None` edits the last one.
    pub layer: Option<usize>,
    /// The factor applied to the weight.
    pub factor: f64,
    saved: Option<Snapshot>,
}

impl ScaleDownProj {
    pub fn new(layer: Option<usize>, factor: f64) -> Self {
        Self { layer, factor, saved: None }
    }
}

fn torch(context: &'static str) -> impl FnOnce(tch::TchError) -> EditError {
    move |source| EditError::Torch { context, source }
}

impl Editor for ScaleDownProj {
    fn method(&self) -> &'static str {
        "scale-down-proj"
    }

    fn edit(
        &mut self,
        model: &mut CausalLm,
        _encoder: &dyn PromptEncoder,
        _input: &EditInput,
    ) -> detox_edit::Result<EditOutcome> {
        let start = Instant::now();
        if let Some(saved) = self.saved.take() {
            model.restore(&saved)?;
        }
        let layer = self.layer.unwrap_or(model.config().num_hidden_layers - 1);
        let name = format!("model.layers.{layer}.mlp.down_proj.weight");
        let saved = model.snapshot(&[name.as_str()])?;
        let old = model.parameter(&name)?;
        let new = old.f_mul_scalar(self.factor).map_err(torch("scaling the weight"))?;
        let mut delta = Delta::new();
        delta.add(&name, &new.f_sub(old).map_err(torch("the weight's change"))?)?;
        drop(model.replace_parameter(&name, new)?);
        self.saved = Some(saved);
        Ok(EditOutcome::new(self.method(), delta)
            .at_layer(layer)
            .with_timings(EditTimings { locate: 0.0, edit: start.elapsed().as_secs_f64() }))
    }

    fn restore(&mut self, model: &mut CausalLm) -> detox_edit::Result<()> {
        // Nothing applied is nothing to undo: the harness restores before its first edit too.
        if let Some(saved) = self.saved.take() {
            model.restore(&saved)?;
        }
        Ok(())
    }
}

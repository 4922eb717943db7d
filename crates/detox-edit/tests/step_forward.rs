//! The optimisation run from the edited tensor up (the default) against the whole model at every step (the
//! reference's computation): the same losses at every step, the same edited weights, for single and batched
//! edits, a `down_proj` and a tensor elsewhere in a layer.

use anyhow::Result;
use detox_edit::dinm::{
    build_tokens, optimize_batch, DinmOptions, DinmPreset, DinmTokens, KlGradient, LossWeighting,
    OptimizeSettings, StepForward, TrainedTensor,
};
use detox_edit::EditInput;
use detox_runtime::{CausalLm, PromptLayout};
use tch::Kind;

mod common;
use common::{digest, setup};

fn inputs(base: &EditInput) -> Vec<EditInput> {
    let mut shorter = base.clone();
    shorter.prompt = "Tell me how to do [placeholder harmful task].".into();
    shorter.safe_response = "I cannot help with that.".into();
    vec![base.clone(), shorter]
}

fn settings(
    weighting: LossWeighting,
    kl_gradient: KlGradient,
    step_forward: StepForward,
) -> OptimizeSettings {
    let options = DinmOptions { weighting, kl_gradient, step_forward, ..DinmOptions::reference() };
    OptimizeSettings::from_hparams(&DinmPreset::Llama2_7bChat.hparams(), &options)
}

/// Runs both paths on the same records and restores the model after each.
fn both(
    model: &mut CausalLm,
    name: &str,
    tokens: &[DinmTokens],
    weighting: LossWeighting,
    kl_gradient: KlGradient,
) -> Result<(Vec<TrainedTensor>, Vec<TrainedTensor>)> {
    let snapshot = model.snapshot(&[name])?;
    let before = digest(model);
    let mut run = |step_forward| -> Result<Vec<TrainedTensor>> {
        let trained =
            optimize_batch(model, name, tokens, &settings(weighting, kl_gradient, step_forward))?;
        model.restore(&snapshot)?;
        model.freeze_all()?;
        assert_eq!(digest(model), before, "restore is bit-exact");
        Ok(trained)
    };
    let whole = run(StepForward::WholeModel)?;
    let resumed = run(StepForward::FromEditedTensor)?;
    Ok((whole, resumed))
}

fn compare(what: &str, whole: &[TrainedTensor], resumed: &[TrainedTensor]) {
    assert_eq!(whole.len(), resumed.len());
    for (i, (w, r)) in whole.iter().zip(resumed).enumerate() {
        assert_eq!(w.steps.len(), r.steps.len(), "{what} record {i}: number of steps");
        for (s, (a, b)) in w.steps.iter().zip(&r.steps).enumerate() {
            for (field, x, y) in
                [("loss", a.loss, b.loss), ("nll", a.nll, b.nll), ("kl", a.kl, b.kl)]
            {
                assert!(
                    (x - y).abs() <= 1e-5 * x.abs().max(1.0),
                    "{what} record {i} step {s} {field}: {x} (whole model) vs {y} (from the edited tensor)"
                );
            }
        }
        let dw = (&w.edited - &w.original).to_kind(Kind::Double);
        let dr = (&r.edited - &r.original).to_kind(Kind::Double);
        let scale = dw.abs().max().double_value(&[]);
        let diff = (dw - dr).abs().max().double_value(&[]);
        assert!(scale > 0.0, "{what} record {i}: the edit moved the weights");
        assert!(diff <= 1e-2 * scale, "{what} record {i}: deltas differ by {diff} (scale {scale})");
        assert!(r.phases.prefix > 0.0 && r.phases.forward > 0.0 && r.phases.backward > 0.0);
    }
}

#[test]
fn from_the_edited_tensor_equals_the_whole_model_step_by_step() -> Result<()> {
    let (mut model, encoder, input, expected) = setup()?;
    let suffix = expected["suffix_system_prompt"].as_str().unwrap().to_string();
    let tokens: Vec<DinmTokens> = inputs(&input)
        .iter()
        .map(|v| build_tokens(&encoder, v, &suffix, PromptLayout::Raw))
        .collect::<detox_edit::Result<_>>()?;
    let hp = DinmPreset::Llama2_7bChat.hparams();
    let layers = model.config().num_hidden_layers;
    for layer in [0, layers - 1] {
        let name = hp.rewrite_tensor_name(layer);
        for (weighting, kl_gradient) in [
            (LossWeighting::Reference, KlGradient::Detached),
            (LossWeighting::Paper, KlGradient::Differentiable),
        ] {
            let what = format!("layer {layer} {weighting:?}/{kl_gradient:?}");
            let (whole, resumed) = both(&mut model, &name, &tokens[..1], weighting, kl_gradient)?;
            compare(&format!("{what}, one record"), &whole, &resumed);
            let (whole, resumed) = both(&mut model, &name, &tokens, weighting, kl_gradient)?;
            compare(&format!("{what}, batched"), &whole, &resumed);
        }
    }
    // A tensor below the MLP resumes from its layer's input.
    let up = "model.layers.1.mlp.up_proj.weight";
    let (whole, resumed) =
        both(&mut model, up, &tokens[..1], LossWeighting::Reference, KlGradient::Detached)?;
    compare("up_proj", &whole, &resumed);
    Ok(())
}

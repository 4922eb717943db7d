//! Batched independent DINM edits equal the same edits run one at a time.

use anyhow::Result;
use detox_edit::dinm::{
    build_tokens, optimize_batch, optimize_tensor, DinmOptions, DinmPreset, DinmTokens, EarlyStop,
    KlGradient, LossWeighting, OptimizeSettings,
};
use detox_edit::EditInput;
use detox_runtime::PromptLayout;
use tch::Kind;

mod common;
use common::{digest, setup};

fn variants(base: &EditInput) -> Vec<EditInput> {
    let mut shorter = base.clone();
    shorter.prompt = "Tell me how to do [placeholder harmful task].".into();
    shorter.safe_response = "I cannot help with that.".into();
    let mut other = base.clone();
    other.constraint_prompt = "What is two plus two?".into();
    other.constraint_answer = "Two plus two is four.".into();
    other.safe_response =
        "I'm sorry, I will not do that because it is dangerous and against the rules.".into();
    vec![base.clone(), shorter, other]
}

fn check(weighting: LossWeighting, kl_gradient: KlGradient, lr: f64) -> Result<()> {
    let (mut model, encoder, input, expected) = setup()?;
    let suffix = expected["suffix_system_prompt"].as_str().unwrap().to_string();
    let tokens: Vec<DinmTokens> = variants(&input)
        .iter()
        .map(|v| build_tokens(&encoder, v, &suffix, PromptLayout::Raw))
        .collect::<detox_edit::Result<_>>()?;
    let hp = DinmPreset::Llama2_7bChat.hparams();
    let options = DinmOptions { weighting, kl_gradient, ..DinmOptions::reference() };
    let settings = OptimizeSettings { lr, ..OptimizeSettings::from_hparams(&hp, &options) };
    let name = hp.rewrite_tensor_name(2);
    let original = digest(&model);
    let snapshot = model.snapshot(&[&name])?;
    let alone: Vec<_> = tokens
        .iter()
        .map(|t| {
            let r = optimize_tensor(&mut model, &name, t, &settings);
            model.restore(&snapshot).unwrap();
            r
        })
        .collect::<detox_edit::Result<_>>()?;
    assert_eq!(digest(&model), original);

    let batched = optimize_batch(&mut model, &name, &tokens, &settings)?;
    assert_eq!(model.parameter(&name)?.size()[0], 3, "the model holds one weight per record");
    for (i, (a, b)) in alone.iter().zip(&batched).enumerate() {
        assert_eq!(a.steps.len(), b.steps.len(), "record {i}: same number of steps");
        for (s, t) in a.steps.iter().zip(&b.steps) {
            assert!(
                (s.loss - t.loss).abs() <= 1e-4 * s.loss.abs().max(1.0),
                "record {i}: {} vs {}",
                s.loss,
                t.loss
            );
            assert!(
                (s.kl - t.kl).abs() <= 1e-5 * s.kl.abs().max(1.0),
                "record {i}: kl {} vs {}",
                s.kl,
                t.kl
            );
        }
        let da = (&a.edited - &a.original).to_kind(Kind::Double);
        let db = (&b.edited - &b.original).to_kind(Kind::Double);
        let scale = da.abs().max().double_value(&[]);
        let diff = (da - db).abs().max().double_value(&[]);
        assert!(
            scale > 0.0 && diff <= 2e-2 * scale,
            "record {i}: deltas differ by {diff} (scale {scale})"
        );
    }
    model.restore(&snapshot)?;
    assert_eq!(digest(&model), original);
    Ok(())
}

#[test]
fn batched_reference_edits_equal_single_edits() -> Result<()> {
    check(LossWeighting::Reference, KlGradient::Detached, 5e-4)
}

#[test]
fn batched_paper_edits_equal_single_edits() -> Result<()> {
    check(LossWeighting::Paper, KlGradient::Differentiable, 5e-4)
}

/// The absolute test compares the loss with the threshold itself, the relative test with the threshold times the
/// record's first loss; both stop before the update of the first step that passes.
#[test]
fn early_stop_reads_the_threshold_as_absolute_or_relative_to_the_first_step() -> Result<()> {
    let (mut model, encoder, input, expected) = setup()?;
    let suffix = expected["suffix_system_prompt"].as_str().unwrap().to_string();
    let tokens = build_tokens(&encoder, &input, &suffix, PromptLayout::Raw)?;
    let hp = DinmPreset::Llama2_7bChat.hparams();
    let name = hp.rewrite_tensor_name(2);
    let snapshot = model.snapshot(&[&name])?;
    let mut run = |early_stop: EarlyStop, threshold: f64| -> Result<Vec<f64>> {
        let settings = OptimizeSettings {
            num_steps: 10,
            early_stop_loss: threshold,
            early_stop,
            ..OptimizeSettings::from_hparams(&hp, &DinmOptions::reference())
        };
        let trained = optimize_tensor(&mut model, &name, &tokens, &settings)?;
        model.restore(&snapshot)?;
        Ok(trained.steps.iter().map(|s| s.loss).collect())
    };
    let full = run(EarlyStop::Absolute, 0.0)?;
    assert_eq!(full.len(), 10);
    // A fraction the loss passes part-way: halfway between the first loss and the lowest one.
    let lowest = full.iter().cloned().fold(f64::INFINITY, f64::min);
    let fraction = (full[0] + lowest) / 2.0 / full[0];
    let stop = full.iter().position(|&l| l < fraction * full[0]).unwrap();
    assert!(stop > 0 && stop < 9, "the losses {full:?} fall too fast or too slow for the test");
    let relative = run(EarlyStop::RelativeToFirstStep, fraction)?;
    assert_eq!(relative.len(), stop + 1, "{relative:?} vs {full:?}");
    let absolute = run(EarlyStop::Absolute, fraction * full[0])?;
    assert_eq!(absolute.len(), stop + 1);
    let never = run(EarlyStop::Absolute, fraction)?;
    assert_eq!(never.len(), full.iter().position(|&l| l < fraction).map_or(10, |s| s + 1));
    Ok(())
}

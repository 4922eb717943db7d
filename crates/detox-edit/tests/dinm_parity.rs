//! DINM's optimisation against the reference computation recorded by `tests/fixtures/dinm/generate.py`.

use std::path::PathBuf;

use anyhow::Result;
use detox_edit::dinm::{
    optimize_tensor, DinmPreset, DinmTokens, KlGradient, LossWeighting, OptimizeSettings,
};
use detox_runtime::{CausalLm, SafetensorsFiles};
use tch::{Device, Kind};

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/dinm")
}

fn first_row(v: &serde_json::Value) -> Vec<i64> {
    let rows: Vec<Vec<i64>> = serde_json::from_value(v.clone()).unwrap();
    rows.into_iter().next().unwrap()
}

fn check_variant(variant: &str, weighting: LossWeighting, kl_gradient: KlGradient) -> Result<()> {
    let dir = fixtures();
    let expected: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("expected.json"))?)?;
    let exp = &expected[variant];
    let mut model = CausalLm::load(dir.join("model"), Device::Cpu, Kind::Float)?;
    let tokens = DinmTokens {
        edit_input: first_row(&exp["edit_input_ids"]),
        target: first_row(&exp["labels"]),
        target_ignore_id: Some(2),
        constraint_input: first_row(&exp["constraint_input_ids"]),
        constraint_answer_len: exp["constraint_answer_len"].as_u64().unwrap() as usize,
    };
    let hp = DinmPreset::Llama2_7bChat.hparams();
    let settings = OptimizeSettings {
        lr: hp.lr,
        weight_decay: hp.weight_decay,
        num_steps: hp.num_steps,
        kl_factor: hp.kl_factor,
        norm_constraint: hp.norm_constraint,
        weighting,
        kl_gradient,
        early_stop_loss: 1e-4,
    };
    let layer = exp["layer"].as_u64().unwrap() as usize;
    let name = hp.rewrite_tensor_name(layer);
    let before = model.snapshot(&[&name])?;
    let trained = optimize_tensor(&mut model, &name, &tokens, &settings)?;

    let steps = exp["steps"].as_array().unwrap();
    assert_eq!(trained.steps.len(), steps.len(), "{variant}: number of steps");
    for (i, (got, want)) in trained.steps.iter().zip(steps).enumerate() {
        for (field, g) in [("loss", got.loss), ("nll", got.nll), ("kl", got.kl)] {
            let w = want[field].as_f64().unwrap();
            assert!(
                (g - w).abs() <= 1e-4 * w.abs().max(1.0),
                "{variant} step {i} {field}: {g} vs {w}"
            );
        }
    }
    let delta = trained.edited - &trained.original;
    let want = SafetensorsFiles::open_files(&[dir.join(format!("delta_{variant}.safetensors"))])?
        .load("delta", Device::Cpu, None)?;
    let diff = (&delta - &want).abs().max().double_value(&[]);
    let scale = want.abs().max().double_value(&[]);
    assert!(scale > 0.0, "the reference edit moved the weights");
    assert!(diff <= 1e-3 * scale, "{variant}: delta differs by {diff} (max |delta| {scale})");
    let in_model = model.parameter(&name)?.shallow_clone() - before.get(&name).unwrap();
    assert!(
        (in_model - &delta).abs().max().double_value(&[]) < 1e-6,
        "the model holds the edited weight"
    );
    Ok(())
}

#[test]
fn reference_variant_matches_losses_and_delta() -> Result<()> {
    check_variant("reference", LossWeighting::Reference, KlGradient::Detached)
}

#[test]
fn paper_variant_matches_losses_and_delta() -> Result<()> {
    check_variant("paper", LossWeighting::Paper, KlGradient::Differentiable)
}

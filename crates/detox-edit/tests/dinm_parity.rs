//! DINM's optimisation against the reference computation recorded by `tests/fixtures/dinm/generate.py`.

use std::path::PathBuf;

use anyhow::Result;
use detox_edit::dinm::{
    optimize_tensor, DinmOptions, DinmPreset, DinmTokens, KlGradient, LossWeighting,
    OptimizeSettings,
};
use detox_runtime::{CausalLm, SafetensorsFiles};
use tch::{Device, Kind};

/// `DETOX_CRATE_DIR` when a prebuilt test runs away from its source tree (the gpu-check bundle).
fn fixtures() -> PathBuf {
    std::env::var_os("DETOX_CRATE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")))
        .join("tests/fixtures/dinm")
}

fn first_row(v: &serde_json::Value) -> Vec<i64> {
    let rows: Vec<Vec<i64>> = serde_json::from_value(v.clone()).unwrap();
    rows.into_iter().next().unwrap()
}

fn check_variant(variant: &str, weighting: LossWeighting, kl_gradient: KlGradient) -> Result<()> {
    check_variant_on(Device::Cpu, variant, weighting, kl_gradient)
}

/// The reference's losses and delta at fp32 on `device`, then a bit-exact restore of the edited weight.
fn check_variant_on(
    device: Device,
    variant: &str,
    weighting: LossWeighting,
    kl_gradient: KlGradient,
) -> Result<()> {
    let dir = fixtures();
    let expected: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("expected.json"))?)?;
    let exp = &expected[variant];
    let mut model = CausalLm::load(dir.join("model"), device, Kind::Float)?;
    let tokens = DinmTokens {
        edit_input: first_row(&exp["edit_input_ids"]),
        target: first_row(&exp["labels"]),
        target_ignore_id: Some(2),
        constraint_input: first_row(&exp["constraint_input_ids"]),
        constraint_answer_len: exp["constraint_answer_len"].as_u64().unwrap() as usize,
    };
    let hp = DinmPreset::Llama2_7bChat.hparams();
    let options = DinmOptions { weighting, kl_gradient, ..DinmOptions::reference() };
    let settings = OptimizeSettings::from_hparams(&hp, &options);
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
    let delta = (trained.edited - &trained.original).to_device(Device::Cpu);
    let want = SafetensorsFiles::open_files(&[dir.join(format!("delta_{variant}.safetensors"))])?
        .load("delta", Device::Cpu, None)?;
    let diff = (&delta - &want).abs().max().double_value(&[]);
    let scale = want.abs().max().double_value(&[]);
    assert!(scale > 0.0, "the reference edit moved the weights");
    assert!(diff <= 1e-3 * scale, "{variant}: delta differs by {diff} (max |delta| {scale})");
    let in_model = model.parameter(&name)?.shallow_clone() - before.get(&name).unwrap();
    assert!(
        (in_model.to_device(Device::Cpu) - &delta).abs().max().double_value(&[]) < 1e-6,
        "the model holds the edited weight"
    );
    model.restore(&before)?;
    let restored = model.parameter(&name)?.to_device(Device::Cpu);
    let original = before.get(&name).unwrap().to_device(Device::Cpu);
    assert!(restored.equal(&original), "{variant}: restore is bit-exact on {device:?}");
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

#[test]
#[ignore = "needs a CUDA device; run with --ignored on a GPU machine (cargo xtask gpu-check)"]
fn reference_variant_matches_on_cuda_in_fp32() -> Result<()> {
    detox_runtime::load::check_device(Device::Cuda(0))?;
    check_variant_on(Device::Cuda(0), "reference", LossWeighting::Reference, KlGradient::Detached)
}

#[test]
#[ignore = "needs a CUDA device; run with --ignored on a GPU machine (cargo xtask gpu-check)"]
fn paper_variant_matches_on_cuda_in_fp32() -> Result<()> {
    detox_runtime::load::check_device(Device::Cuda(0))?;
    check_variant_on(Device::Cuda(0), "paper", LossWeighting::Paper, KlGradient::Differentiable)
}

//! The gradient-factor probe: its factors multiply back to autograd's weight gradient.

use anyhow::Result;
use detox_runtime::{CausalLm, ForwardOptions, LinearProbe, PositionIds};
use tch::{Device, Kind, Tensor};

fn fixture() -> Result<CausalLm> {
    let dir = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../detox-edit/tests/fixtures/dinm/model");
    Ok(CausalLm::load(dir, Device::Cpu, Kind::Float)?)
}

#[test]
fn factors_of_a_padded_batch_reproduce_the_weight_gradient() -> Result<()> {
    let mut model = fixture()?;
    let names = ["model.layers.1.mlp.down_proj.weight", "model.layers.2.self_attn.q_proj.weight"];
    let ids = Tensor::from_slice(&[2i64, 2, 1, 40, 41, 42, 1, 50, 51, 52, 53, 54]).view([2, 6]);
    let mask = Tensor::from_slice(&[0i64, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1]).view([2, 6]);
    let loss_of = |model: &CausalLm, probe: Option<&LinearProbe>| -> Result<Tensor> {
        let options = ForwardOptions {
            attention_mask: Some(&mask),
            position_ids: PositionIds::FromMask,
            probe,
            ..Default::default()
        };
        let logits = model.forward(&ids, &options)?.logits;
        Ok(logits.log_softmax(-1, Kind::Float).select(2, 7).narrow(1, 2, 4).sum(Kind::Float))
    };

    let probe = LinearProbe::new(names);
    loss_of(&model, Some(&probe))?.backward();
    let factors = probe.factors(Some(&mask))?;
    assert_eq!(factors.len(), 2);
    assert_eq!(factors[0].inputs.size(), [10, 64], "10 real tokens, down_proj input 64");
    assert_eq!(factors[0].output_grads.size(), [10, 32]);

    // The same gradients from autograd on the weights themselves.
    for (name, f) in names.iter().zip(&factors) {
        let w = model.parameter(name)?.detach().set_requires_grad(true);
        drop(model.replace_parameter(name, w.shallow_clone())?);
        loss_of(&model, None)?.backward();
        let want = w.grad();
        let got = f.gradient()?;
        let diff = (&got - &want).abs().max().double_value(&[]);
        assert!(diff < 1e-5, "{name}: factor product differs from the gradient by {diff}");
        assert!(want.abs().max().double_value(&[]) > 1e-4, "{name}: the gradient is not trivial");
        model.freeze_all()?;
    }
    assert!(probe.factors(None).is_err(), "the probe was cleared");
    Ok(())
}

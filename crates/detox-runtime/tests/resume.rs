//! Passes resumed from a frozen prefix equal full forward passes, and logits windows equal the same positions
//! of the full logits.

mod common;

use anyhow::Result;
use common::decoder;
use detox_runtime::{CausalLm, ForwardOptions, LogitsSelection, PositionIds, ResumePoint};
use tch::{Device, Kind, Tensor};

/// Two left-padded rows (the first padded by three positions), longer than the sliding-window fixture's window.
fn padded_batch() -> (Tensor, Tensor) {
    let long: Vec<i64> = (0..24).map(|i| 3 + (i * 7) % 90).collect();
    let mut short = vec![0i64; 3];
    short.extend((0..21).map(|i| 5 + (i * 11) % 80));
    let ids = Tensor::from_slice(&[short, long].concat()).view([2, 24]);
    let mut mask = vec![0i64; 3];
    mask.extend(std::iter::repeat_n(1, 21 + 24));
    (ids, Tensor::from_slice(&mask).view([2, 24]))
}

fn max_diff(a: &Tensor, b: &Tensor) -> f64 {
    (a - b).abs().max().double_value(&[])
}

fn check_model(name: &str) -> Result<()> {
    let model = CausalLm::load(decoder(name), Device::Cpu, Kind::Float)?;
    let (ids, mask) = padded_batch();
    let options = ForwardOptions {
        attention_mask: Some(&mask),
        position_ids: PositionIds::FromMask,
        ..Default::default()
    };
    let full = tch::no_grad(|| model.forward(&ids, &options))?.logits;
    let layers = model.config().num_hidden_layers;
    for layer in 0..layers {
        for point in [ResumePoint::LayerInput(layer), ResumePoint::DownProjInput(layer)] {
            let prefix = model.forward_prefix(&ids, &options, point)?;
            assert_eq!(prefix.point(), point);
            let resumed = model.forward_resumed(&prefix, LogitsSelection::All)?;
            assert_eq!(resumed.size(), full.size());
            let diff = max_diff(&resumed, &full);
            assert!(diff <= 1e-5, "{name} {point:?}: resumed logits differ by {diff}");
            let window =
                model.forward_resumed(&prefix, LogitsSelection::Window { start: 5, len: 7 })?;
            let diff = max_diff(&window, &full.narrow(1, 5, 7));
            assert!(diff <= 1e-5, "{name} {point:?}: window logits differ by {diff}");
            // A window reaching the end: the last layer computes its positions only.
            for start in [1, 17, 23] {
                let len = 24 - start;
                let suffix =
                    model.forward_resumed(&prefix, LogitsSelection::Window { start, len })?;
                let diff = max_diff(&suffix, &full.narrow(1, start, len));
                assert!(diff <= 1e-5, "{name} {point:?}: last {len} positions differ by {diff}");
            }
        }
    }
    let window = tch::no_grad(|| {
        model.forward(
            &ids,
            &ForwardOptions { logits: LogitsSelection::Window { start: 20, len: 3 }, ..options },
        )
    })?
    .logits;
    assert_eq!(window.size(), [2, 3, model.config().vocab_size]);
    assert!(max_diff(&window, &full.narrow(1, 20, 3)) <= 1e-5, "{name}: forward's window");
    Ok(())
}

#[test]
fn resumed_passes_equal_full_passes_with_padding_and_windows() -> Result<()> {
    // Llama, Qwen2 (q/k/v biases) and Mistral with a sliding window shorter than the input; Qwen3 and OLMo-2
    // (q/k norms, OLMo-2's norms after each block), Gemma-2 (a norm after down_proj, soft-capped attention and
    // logits, windowed logits capped too), Gemma-3 (local and global RoPE) and Phi-3 (fused projections,
    // partial LongRoPE past its pre-training context).
    for name in ["llama", "qwen2", "mistral_window", "qwen3", "olmo2", "gemma2", "gemma3", "phi3"] {
        check_model(name)?;
    }
    Ok(())
}

#[test]
fn a_resumed_pass_follows_the_changed_tensor_and_carries_its_gradient() -> Result<()> {
    // Gemma-2's down_proj feeds a norm before the residual, and Phi-3's input comes from a fused gate_up_proj.
    for fixture_name in ["llama", "gemma2", "phi3"] {
        follows_the_changed_tensor(fixture_name)?;
    }
    Ok(())
}

fn follows_the_changed_tensor(fixture_name: &str) -> Result<()> {
    let mut model = CausalLm::load(decoder(fixture_name), Device::Cpu, Kind::Float)?;
    let name = "model.layers.1.mlp.down_proj.weight";
    let point = model.resume_point_for(name).expect("a down_proj resumes before itself");
    assert_eq!(point, ResumePoint::DownProjInput(1));
    let ids = Tensor::from_slice(&[1i64, 5, 9, 33, 7, 2]).unsqueeze(0);
    let prefix = model.forward_prefix(&ids, &ForwardOptions::default(), point)?;

    let mut master = model.parameter(name)?.detach().copy().set_requires_grad(true);
    let changed = tch::no_grad(|| &master * 1.5).set_requires_grad(false);
    let _ = model.replace_parameter(name, changed)?;
    let full = tch::no_grad(|| model.forward(&ids, &ForwardOptions::default()))?.logits;
    let resumed = tch::no_grad(|| model.forward_resumed(&prefix, LogitsSelection::All))?;
    assert!(
        max_diff(&resumed, &full) <= 1e-5,
        "{fixture_name}: the resumed pass uses the current weight"
    );

    let _ = model.replace_parameter(name, master.shallow_clone())?;
    // A window inside the sequence and one reaching its end (the last layer's shortened path).
    for (start, len) in [(2, 3), (3, 3)] {
        let window = LogitsSelection::Window { start, len };
        let loss = model.forward_resumed(&prefix, window)?.square().mean(Kind::Float);
        loss.backward();
        let resumed_grad = master.grad().copy();
        master.zero_grad();
        let full_loss = model
            .forward(&ids, &ForwardOptions::default())?
            .logits
            .narrow(1, start, len)
            .square()
            .mean(Kind::Float);
        full_loss.backward();
        let diff = max_diff(&resumed_grad, &master.grad());
        let scale = master.grad().abs().max().double_value(&[]);
        master.zero_grad();
        assert!(
            scale > 0.0 && diff <= 1e-5 * scale,
            "{fixture_name} window {start}+{len}: gradients differ by {diff}"
        );
    }
    Ok(())
}

#[test]
fn resume_points_are_named_by_the_changing_tensor() -> Result<()> {
    let model = CausalLm::load(decoder("qwen2"), Device::Cpu, Kind::Float)?;
    assert_eq!(
        model.resume_point_for("model.layers.0.mlp.down_proj.weight"),
        Some(ResumePoint::DownProjInput(0))
    );
    // A bias the model lacks but could attach resumes there too.
    assert_eq!(
        model.resume_point_for("model.layers.1.mlp.down_proj.bias"),
        Some(ResumePoint::DownProjInput(1))
    );
    assert_eq!(
        model.resume_point_for("model.layers.1.self_attn.q_proj.bias"),
        Some(ResumePoint::LayerInput(1))
    );
    assert_eq!(
        model.resume_point_for("model.layers.1.mlp.up_proj.weight"),
        Some(ResumePoint::LayerInput(1))
    );
    for outside in
        ["model.embed_tokens.weight", "model.norm.weight", "model.layers.9.mlp.down_proj.weight"]
    {
        assert_eq!(model.resume_point_for(outside), None, "{outside}");
    }
    let ids = Tensor::from_slice(&[1i64, 2, 3]).unsqueeze(0);
    let refused = model.forward_prefix(
        &ids,
        &ForwardOptions { output_hidden_states: true, ..Default::default() },
        ResumePoint::LayerInput(0),
    );
    assert!(refused.is_err(), "a prefix returns logits only");
    assert!(model
        .forward_prefix(&ids, &ForwardOptions::default(), ResumePoint::LayerInput(9))
        .is_err());
    let prefix =
        model.forward_prefix(&ids, &ForwardOptions::default(), ResumePoint::LayerInput(0))?;
    let outside = model.forward_resumed(&prefix, LogitsSelection::Window { start: 2, len: 2 });
    assert!(outside.is_err(), "a window past the end is refused");
    assert!(model.resume_layers(&prefix, 3).is_err(), "no position kept");
    let phi3 = CausalLm::load(decoder("phi3"), Device::Cpu, Kind::Float)?;
    assert_eq!(
        phi3.resume_point_for("model.layers.1.mlp.gate_up_proj.weight"),
        Some(ResumePoint::LayerInput(1))
    );
    assert_eq!(
        phi3.resume_point_for("model.layers.2.mlp.down_proj.weight"),
        Some(ResumePoint::DownProjInput(2))
    );
    assert_eq!(phi3.resume_point_for("model.layers.1.mlp.gate_proj.weight"), None, "fused in phi3");
    assert!(model.resume_layers(&prefix, -1).is_err());
    Ok(())
}

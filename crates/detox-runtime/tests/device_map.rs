//! A model placed over several devices computes what the single-device model computes.
//!
//! On a machine without CUDA only the single-device placement can be built; the CPU + CUDA split runs where a GPU
//! is present (`cargo test -p detox-runtime --test device_map -- --include-ignored`).

mod common;

use anyhow::Result;
use common::{decoder, DECODERS};
use detox_runtime::{generate, CausalLm, DeviceMap, ForwardOptions, GenerationConfig, PositionIds};
use tch::{Device, Kind, Tensor};

fn padded_batch() -> (Tensor, Tensor) {
    let ids = Tensor::from_slice(&[0i64, 0, 7, 12, 40, 3, 8, 19, 22, 5]).view([2, 5]);
    let mask = Tensor::from_slice(&[0i64, 0, 1, 1, 1, 1, 1, 1, 1, 1]).view([2, 5]);
    (ids, mask)
}

fn forward_all(model: &CausalLm) -> Result<(Tensor, Vec<Tensor>)> {
    let (ids, mask) = padded_batch();
    let options = ForwardOptions {
        attention_mask: Some(&mask),
        output_hidden_states: true,
        position_ids: PositionIds::FromMask,
        ..Default::default()
    };
    let out = tch::no_grad(|| model.forward(&ids, &options))?;
    let hidden = out.hidden_states.unwrap_or_default();
    Ok((out.logits, hidden))
}

#[test]
fn explicit_single_device_map_loads_the_same_model() -> Result<()> {
    for name in ["mistral_window", "llama3_tied_sharded", "qwen2"] {
        let plain = CausalLm::load(decoder(name), Device::Cpu, Kind::Float)?;
        let layers = plain.config().num_hidden_layers;
        let map = DeviceMap::balanced(plain.config(), &[Device::Cpu, Device::Cpu])?;
        assert_eq!(map, DeviceMap::single(Device::Cpu, layers));
        let mapped = CausalLm::load_mapped(decoder(name), &map, Kind::Float)?;
        let (a, ha) = forward_all(&plain)?;
        let (b, hb) = forward_all(&mapped)?;
        assert!(a.equal(&b), "{name}: logits differ");
        assert_eq!(ha.len(), hb.len());
        assert_eq!(ha.len(), layers + 1);
    }
    Ok(())
}

#[test]
fn a_map_for_the_wrong_layer_count_is_refused() -> Result<()> {
    let map = DeviceMap::single(Device::Cpu, 1);
    let err = CausalLm::load_mapped(decoder("qwen2"), &map, Kind::Float).unwrap_err();
    assert!(err.to_string().contains("places 1 layers"), "{err}");
    Ok(())
}

/// Layers alternate between the CPU and the GPU, so every boundary moves activations, rotary tables, masks and
/// KV-cache traffic across devices; fp32 results agree with the CPU model to rounding, greedy tokens exactly.
#[test]
#[ignore = "needs a CUDA device; run with --include-ignored on a GPU machine"]
fn layers_split_over_cpu_and_cuda_match_the_cpu_model() -> Result<()> {
    detox_runtime::load::check_device(Device::Cuda(0))?;
    for name in ["mistral_window", "qwen2"] {
        let cpu = CausalLm::load(decoder(name), Device::Cpu, Kind::Float)?;
        let config = cpu.config().clone();
        let gpu = Device::Cuda(0);
        let map = DeviceMap {
            embed: gpu,
            layers: (0..config.num_hidden_layers)
                .map(|i| if i % 2 == 0 { Device::Cpu } else { gpu })
                .collect(),
            head: if config.tie_word_embeddings { gpu } else { Device::Cpu },
        };
        let split = CausalLm::load_mapped(decoder(name), &map, Kind::Float)?;
        assert_eq!(split.parameter_device("model.layers.0.mlp.down_proj.weight")?, Device::Cpu);
        let (a, ha) = forward_all(&cpu)?;
        let (b, hb) = forward_all(&split)?;
        assert_eq!(b.device(), gpu, "outputs come back on the input device");
        let diff = (a - b.to_device(Device::Cpu)).abs().max().double_value(&[]);
        assert!(diff < 1e-4, "{name}: logits differ by {diff}");
        for (x, y) in ha.iter().zip(&hb) {
            assert_eq!(y.device(), gpu);
            let d = (x - y.to_device(Device::Cpu)).abs().max().double_value(&[]);
            assert!(d < 1e-4, "{name}: hidden states differ by {d}");
        }

        let prompts = vec![vec![7i64, 12, 40], vec![3, 8, 19, 22, 5]];
        let settings = GenerationConfig::greedy(8, vec![-1]);
        let on_cpu = generate(&cpu, &prompts, &settings, None)?;
        let on_split = generate(&split, &prompts, &settings, None)?;
        for (x, y) in on_cpu.iter().zip(&on_split) {
            assert_eq!(x.tokens, y.tokens, "{name}: greedy continuations differ");
        }
    }
    Ok(())
}

/// The sizes a device map is planned with are the sizes of the loaded parameters, for every family's layout
/// (Gemma's four norms per layer and q/k norms, OLMo-2's whole-projection q/k norms, Phi-3's fused projections).
#[test]
fn planned_part_sizes_are_the_loaded_parameter_sizes() -> Result<()> {
    for name in DECODERS {
        let model = CausalLm::load(decoder(name), Device::Cpu, Kind::Float)?;
        let loaded: u64 = model
            .parameter_names()
            .iter()
            .map(|n| model.parameter(n).map(|t| t.numel() as u64 * 4))
            .sum::<detox_runtime::Result<u64>>()?;
        let planned = detox_runtime::PartSizes::of(model.config(), Kind::Float)
            .total(model.config().num_hidden_layers);
        assert_eq!(planned, loaded, "{name}");
    }
    Ok(())
}

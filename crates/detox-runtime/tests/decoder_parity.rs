//! Parity with Hugging Face transformers on tiny random checkpoints of every supported architecture
//! (fixtures from `tests/fixtures/decoders/generate.py`).

mod common;

use std::collections::HashMap;

use anyhow::{Context, Result};
use common::{decoder, DECODERS};
use detox_runtime::{
    generate, CausalLm, FinishReason, ForwardOptions, GenerationConfig, SafetensorsFiles,
};
use tch::{Device, Kind, Tensor};

/// Fixtures whose reference ran transformers' eager attention (Gemma-2's soft-capping), which fills the query
/// rows of left padding with an average of the values where the fused path gives zeros. Nothing reads those
/// positions (no real token attends to padding), so there the batch outputs are compared at real tokens only.
const EAGER_REFERENCE: &[&str] = &["gemma2"];
const TOLERANCE: f64 = 1e-4;
/// bf16 keeps 8 bits of mantissa: on CUDA in bf16 the logits and hidden states may differ from the fp32
/// reference by this fraction of the largest magnitude in the compared tensor.
const BF16_RELATIVE_TOLERANCE: f64 = 5e-2;

/// The crate folder holding `tests/fixtures`: `DETOX_CRATE_DIR` when a prebuilt test runs away from its
/// source tree (the gpu-check bundle), else the one it was compiled in.
struct Expected {
    tensors: HashMap<String, Tensor>,
    json: serde_json::Value,
}

fn expected(name: &str) -> Result<Expected> {
    let dir = decoder(name);
    let tensors = SafetensorsFiles::open_files(&[dir.join("expected.safetensors")])?
        .load_all(Device::Cpu, None)?;
    let json = serde_json::from_str(&std::fs::read_to_string(dir.join("expected.json"))?)?;
    Ok(Expected { tensors, json })
}

fn prompts(json: &serde_json::Value) -> Vec<Vec<i64>> {
    serde_json::from_value(json["prompts"].clone()).expect("prompts")
}

fn max_diff(a: &Tensor, b: &Tensor) -> f64 {
    assert_eq!(a.size(), b.size(), "shape");
    let a = a.to_device(Device::Cpu).to_kind(Kind::Double);
    (a - b.to_kind(Kind::Double)).abs().max().double_value(&[])
}

/// The allowed difference from the fp32 reference `want` for a model run in `kind`.
fn tolerance(kind: Kind, want: &Tensor) -> f64 {
    match kind {
        Kind::BFloat16 => BF16_RELATIVE_TOLERANCE * want.abs().max().double_value(&[]).max(1.0),
        _ => TOLERANCE,
    }
}

fn left_padded(prompts: &[Vec<i64>], pad: i64) -> (Tensor, Tensor) {
    let width = prompts.iter().map(Vec::len).max().unwrap();
    let mut ids = Vec::new();
    let mut mask = Vec::new();
    for p in prompts {
        ids.extend(std::iter::repeat_n(pad, width - p.len()).chain(p.iter().copied()));
        mask.extend(
            std::iter::repeat_n(0i64, width - p.len()).chain(std::iter::repeat_n(1, p.len())),
        );
    }
    let b = prompts.len() as i64;
    (
        Tensor::from_slice(&ids).view([b, width as i64]),
        Tensor::from_slice(&mask).view([b, width as i64]),
    )
}

#[test]
fn logits_and_hidden_states_match_transformers() -> Result<()> {
    check_logits_and_hidden_states(Device::Cpu, Kind::Float)
}

#[test]
fn logits_and_hidden_states_match_transformers_on_the_cpu_in_bf16() -> Result<()> {
    check_logits_and_hidden_states(Device::Cpu, Kind::BFloat16)
}

#[test]
#[ignore = "needs a CUDA device; run with --ignored on a GPU machine (cargo xtask gpu-check)"]
fn logits_and_hidden_states_match_transformers_on_cuda_in_fp32() -> Result<()> {
    detox_runtime::load::check_device(Device::Cuda(0))?;
    check_logits_and_hidden_states(Device::Cuda(0), Kind::Float)
}

#[test]
#[ignore = "needs a CUDA device; run with --ignored on a GPU machine (cargo xtask gpu-check)"]
fn logits_and_hidden_states_match_transformers_on_cuda_in_bf16() -> Result<()> {
    detox_runtime::load::check_device(Device::Cuda(0))?;
    check_logits_and_hidden_states(Device::Cuda(0), Kind::BFloat16)
}

fn check_logits_and_hidden_states(device: Device, kind: Kind) -> Result<()> {
    for name in &DECODERS {
        let model =
            CausalLm::load(decoder(name), device, kind).with_context(|| name.to_string())?;
        let exp = expected(name)?;
        let prompts = prompts(&exp.json);
        let layers = model.config().num_hidden_layers;

        let single = Tensor::from_slice(&prompts[0]).unsqueeze(0).to_device(device);
        let out = tch::no_grad(|| {
            model.forward(
                &single,
                &ForwardOptions { output_hidden_states: true, ..Default::default() },
            )
        })?;
        let want = &exp.tensors["single.logits"];
        let d = max_diff(&out.logits.squeeze_dim(0), want);
        assert!(d <= tolerance(kind, want), "{name}: single logits differ by {d}");
        let hidden = out.hidden_states.expect("hidden states");
        assert_eq!(hidden.len(), layers + 1, "{name}: number of hidden states");
        for (i, h) in hidden.iter().enumerate() {
            let want = &exp.tensors[&format!("single.hidden.{i}")];
            let d = max_diff(&h.squeeze_dim(0), want);
            assert!(d <= tolerance(kind, want), "{name}: hidden state {i} differs by {d}");
        }

        let (ids, mask) = left_padded(&prompts, 0);
        let (ids, mask) = (ids.to_device(device), mask.to_device(device));
        let options = ForwardOptions {
            attention_mask: Some(&mask),
            output_hidden_states: true,
            ..Default::default()
        };
        let out = tch::no_grad(|| model.forward(&ids, &options))?;
        let real = |t: &Tensor| -> Tensor {
            if !EAGER_REFERENCE.contains(name) {
                return t.shallow_clone();
            }
            let keep = mask.to_device(t.device()).unsqueeze(-1).to_kind(t.kind());
            t * keep
        };
        let want = &real(&exp.tensors["batch.logits"]);
        let d = max_diff(&real(&out.logits), want);
        assert!(d <= tolerance(kind, want), "{name}: left-padded batch logits differ by {d}");
        for (i, h) in out.hidden_states.expect("hidden").iter().enumerate() {
            let want = &real(&exp.tensors[&format!("batch.hidden.{i}")]);
            let d = max_diff(&real(h), want);
            assert!(d <= tolerance(kind, want), "{name}: batch hidden state {i} differs by {d}");
        }
    }
    Ok(())
}

/// Decoding one token at a time from a cache gives the logits of a full forward pass over the same prefix, on
/// prompts longer than every fixture's sliding window. A LongRoPE model's cache is rebuilt where generation
/// rebuilds it (the step that first passes the pre-training context), as transformers does.
#[test]
fn cached_decoding_equals_full_forward_passes() -> Result<()> {
    for name in &DECODERS {
        let model = CausalLm::load(decoder(name), Device::Cpu, Kind::Float)?;
        let tokens: Vec<i64> = (0..14).map(|i| 3 + (i * 37) % 120).collect();
        let row = |range: std::ops::Range<usize>| {
            Tensor::from_slice(&tokens[range.clone()]).view([1, range.len() as i64])
        };
        let options = ForwardOptions::default();
        let prefill = 3;
        let mut cache = model.new_cache(1, tokens.len() as i64)?;
        let mut logits =
            tch::no_grad(|| model.forward_with_cache(&row(0..prefill), &options, &mut cache))?
                .logits
                .narrow(1, prefill as i64 - 1, 1);
        for end in prefill..=tokens.len() {
            let full = tch::no_grad(|| model.forward(&row(0..end), &options))?.logits;
            let d = max_diff(&logits, &full.narrow(1, end as i64 - 1, 1));
            assert!(d <= TOLERANCE, "{name}: cached logits after {end} tokens differ by {d}");
            if end == tokens.len() {
                break;
            }
            logits = if model.cache_rebuild_context() == Some(cache.len()) {
                cache = model.new_cache(1, tokens.len() as i64)?;
                let out = tch::no_grad(|| {
                    model.forward_with_cache(&row(0..end + 1), &options, &mut cache)
                })?;
                out.logits.narrow(1, end as i64, 1)
            } else {
                tch::no_grad(|| model.forward_with_cache(&row(end..end + 1), &options, &mut cache))?
                    .logits
            };
        }
    }
    Ok(())
}

/// A multimodal Gemma-3 checkpoint written before transformers 4.52 keeps its language model under
/// `language_model.model.` and its head under `language_model.lm_head`: the same weights load the same model.
#[test]
fn gemma3_multimodal_loads_from_the_older_weight_prefix() -> Result<()> {
    let dir = decoder("gemma3_multimodal");
    let tensors = SafetensorsFiles::open_files(&[dir.join("model.safetensors")])?
        .load_all(Device::Cpu, None)?;
    let renamed: Vec<(String, Tensor)> = tensors
        .into_iter()
        .map(|(name, t)| {
            let name = match name.strip_prefix("model.language_model.") {
                Some(rest) => format!("language_model.model.{rest}"),
                None => name.replacen("model.", "", 1),
            };
            (name, t)
        })
        .collect();
    assert!(
        renamed.iter().any(|(n, _)| n.starts_with("vision_tower.")),
        "the vision tower is kept"
    );
    let old = tempfile::tempdir()?;
    Tensor::write_safetensors(&renamed, old.path().join("model.safetensors"))?;
    std::fs::copy(dir.join("config.json"), old.path().join("config.json"))?;
    let model = CausalLm::load(old.path(), Device::Cpu, Kind::Float)?;
    assert!(model.config().nested_text_model);
    let exp = expected("gemma3_multimodal")?;
    let single = Tensor::from_slice(&prompts(&exp.json)[0]).unsqueeze(0);
    let out = tch::no_grad(|| model.forward(&single, &ForwardOptions::default()))?;
    let d = max_diff(&out.logits.squeeze_dim(0), &exp.tensors["single.logits"]);
    assert!(d <= TOLERANCE, "logits differ by {d}");
    Ok(())
}

fn expected_continuations(json: &serde_json::Value, key: &str) -> Vec<(Vec<i64>, String)> {
    serde_json::from_value(json[key].clone()).expect("continuations")
}

#[test]
fn greedy_generation_matches_transformers_batched_and_alone() -> Result<()> {
    for name in &DECODERS {
        let model = CausalLm::load(decoder(name), Device::Cpu, Kind::Float)?;
        let exp = expected(name)?;
        let prompts = prompts(&exp.json);
        let mut config = GenerationConfig::greedy(
            exp.json["max_new_tokens"].as_u64().unwrap() as usize,
            vec![2],
        );
        config.pad_token_id = 0;
        let batched = generate(&model, &prompts, &config, None)?;
        for (got, (want, reason)) in
            batched.iter().zip(expected_continuations(&exp.json, "batched"))
        {
            assert_eq!(got.tokens, want, "{name}: batched continuation");
            assert_eq!(reason == "eos", got.finish == FinishReason::Eos, "{name}: finish reason");
        }
        for ((prompt, (want, _)), in_batch) in
            prompts.iter().zip(expected_continuations(&exp.json, "alone")).zip(&batched)
        {
            let alone = generate(&model, std::slice::from_ref(prompt), &config, None)?;
            assert_eq!(alone[0].tokens, want, "{name}: unbatched continuation");
            // LongRoPE picks its factors from the furthest position of the whole batch, so there (as in
            // transformers) a short prompt continues differently beside a long one.
            if model.cache_rebuild_context().is_none() {
                assert_eq!(alone[0].tokens, in_batch.tokens, "{name}: batched equals alone");
            }
        }
    }
    Ok(())
}

#[test]
fn generation_stops_per_row_at_eos_and_stop_checks() -> Result<()> {
    let model = CausalLm::load(decoder("llama"), Device::Cpu, Kind::Float)?;
    let exp = expected("llama")?;
    let prompts = prompts(&exp.json);
    let full = expected_continuations(&exp.json, "batched");
    // Declare the third token of row 1's greedy continuation an end-of-sequence token: that row must stop right
    // before it while the others keep their continuations up to that token's first appearance.
    let eos = full[1].0[2];
    let mut config = GenerationConfig::greedy(8, vec![eos]);
    config.pad_token_id = 0;
    config.sync_every = 3;
    let out = generate(&model, &prompts, &config, None)?;
    for (got, (want, _)) in out.iter().zip(&full) {
        match want.iter().position(|&t| t == eos) {
            Some(p) => {
                assert_eq!(got.tokens, want[..p].to_vec());
                assert_eq!(got.finish, FinishReason::Eos);
            }
            None => {
                assert_eq!(&got.tokens, want);
                assert_eq!(got.finish, FinishReason::Length);
            }
        }
    }
    // A stop check ending row 0 after its second token.
    let stop = |row: usize, ids: &[i64]| row == 0 && ids.len() == 2;
    config.eos_token_ids = vec![2];
    let out = generate(&model, &prompts, &config, Some(&stop))?;
    assert_eq!(out[0].tokens, full[0].0[..2].to_vec());
    assert_eq!(out[0].finish, FinishReason::StopSequence);
    assert_eq!(out[2].tokens, full[2].0);
    Ok(())
}

#[test]
fn seeded_sampling_is_reproducible_and_tiny_top_p_is_greedy() -> Result<()> {
    let model = CausalLm::load(decoder("mistral_window"), Device::Cpu, Kind::Float)?;
    let exp = expected("mistral_window")?;
    let prompts = prompts(&exp.json);
    let sampled = |seed: u64, top_p: f64| -> Result<Vec<Vec<i64>>> {
        let mut config = GenerationConfig::greedy(8, vec![2]);
        config.sampling = detox_runtime::Sampling::TopP { temperature: 1.5, top_p, seed };
        Ok(generate(&model, &prompts, &config, None)?.into_iter().map(|g| g.tokens).collect())
    };
    assert_eq!(sampled(7, 0.95)?, sampled(7, 0.95)?, "same seed, same continuation");
    let runs: Vec<Vec<Vec<i64>>> = (0..4).map(|s| sampled(100 + s, 1.0)).collect::<Result<_>>()?;
    assert!(runs.windows(2).any(|w| w[0] != w[1]), "different seeds sample differently");
    let greedy: Vec<Vec<i64>> =
        expected_continuations(&exp.json, "batched").into_iter().map(|c| c.0).collect();
    assert_eq!(sampled(3, 1e-9)?, greedy, "a vanishing nucleus keeps only the most likely token");
    Ok(())
}

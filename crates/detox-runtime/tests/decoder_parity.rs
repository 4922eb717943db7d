//! Parity with Hugging Face transformers on tiny random checkpoints of every supported architecture
//! (fixtures from `tests/fixtures/decoders/generate.py`).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use detox_runtime::{
    generate, CausalLm, FinishReason, ForwardOptions, GenerationConfig, SafetensorsFiles,
};
use tch::{Device, Kind, Tensor};

const MODELS: &[&str] = &["llama", "llama3_tied_sharded", "mistral_window", "qwen2"];
const TOLERANCE: f64 = 1e-4;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/decoders").join(name)
}

struct Expected {
    tensors: HashMap<String, Tensor>,
    json: serde_json::Value,
}

fn expected(name: &str) -> Result<Expected> {
    let dir = fixture(name);
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
    (a.to_kind(Kind::Double) - b.to_kind(Kind::Double)).abs().max().double_value(&[])
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
    for name in MODELS {
        let model = CausalLm::load(fixture(name), Device::Cpu, Kind::Float)
            .with_context(|| name.to_string())?;
        let exp = expected(name)?;
        let prompts = prompts(&exp.json);
        let layers = model.config().num_hidden_layers;

        let single = Tensor::from_slice(&prompts[0]).unsqueeze(0);
        let out = tch::no_grad(|| {
            model.forward(
                &single,
                &ForwardOptions { output_hidden_states: true, ..Default::default() },
            )
        })?;
        let d = max_diff(&out.logits.squeeze_dim(0), &exp.tensors["single.logits"]);
        assert!(d <= TOLERANCE, "{name}: single logits differ by {d}");
        let hidden = out.hidden_states.expect("hidden states");
        assert_eq!(hidden.len(), layers + 1, "{name}: number of hidden states");
        for (i, h) in hidden.iter().enumerate() {
            let d = max_diff(&h.squeeze_dim(0), &exp.tensors[&format!("single.hidden.{i}")]);
            assert!(d <= TOLERANCE, "{name}: hidden state {i} differs by {d}");
        }

        let (ids, mask) = left_padded(&prompts, 0);
        let options = ForwardOptions {
            attention_mask: Some(&mask),
            output_hidden_states: true,
            ..Default::default()
        };
        let out = tch::no_grad(|| model.forward(&ids, &options))?;
        let d = max_diff(&out.logits, &exp.tensors["batch.logits"]);
        assert!(d <= TOLERANCE, "{name}: left-padded batch logits differ by {d}");
        for (i, h) in out.hidden_states.expect("hidden").iter().enumerate() {
            let d = max_diff(h, &exp.tensors[&format!("batch.hidden.{i}")]);
            assert!(d <= TOLERANCE, "{name}: batch hidden state {i} differs by {d}");
        }
    }
    Ok(())
}

fn expected_continuations(json: &serde_json::Value, key: &str) -> Vec<(Vec<i64>, String)> {
    serde_json::from_value(json[key].clone()).expect("continuations")
}

#[test]
fn greedy_generation_matches_transformers_batched_and_alone() -> Result<()> {
    for name in MODELS {
        let model = CausalLm::load(fixture(name), Device::Cpu, Kind::Float)?;
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
        for (prompt, (want, _)) in prompts.iter().zip(expected_continuations(&exp.json, "alone")) {
            let alone = generate(&model, std::slice::from_ref(prompt), &config, None)?;
            assert_eq!(alone[0].tokens, want, "{name}: unbatched continuation");
        }
    }
    Ok(())
}

#[test]
fn generation_stops_per_row_at_eos_and_stop_checks() -> Result<()> {
    let model = CausalLm::load(fixture("llama"), Device::Cpu, Kind::Float)?;
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
    let model = CausalLm::load(fixture("mistral_window"), Device::Cpu, Kind::Float)?;
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

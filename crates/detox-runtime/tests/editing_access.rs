//! Parameter access for editors: replace, per-row weights, snapshot and bit-exact restore, strict loading.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::Result;
use detox_runtime::{CausalLm, Config, Error, ForwardOptions, SafetensorsFiles};
use tch::{Device, Kind, Tensor};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/decoders").join(name)
}

fn digest(model: &CausalLm) -> Vec<(String, [u8; 32])> {
    detox_runtime::digest::parameter_digests(model).unwrap()
}

const DOWN: &str = "model.layers.1.mlp.down_proj.weight";

#[test]
fn edit_then_restore_is_bit_identical() -> Result<()> {
    let mut model = CausalLm::load(fixture("qwen2"), Device::Cpu, Kind::Float)?;
    let before = digest(&model);
    let ids = Tensor::from_slice(&[1i64, 5, 9, 33]).unsqueeze(0);
    let logits_before = tch::no_grad(|| model.forward(&ids, &ForwardOptions::default()))?.logits;

    let snapshot = model.snapshot(&[DOWN, "model.norm.weight"])?;
    // Train-style edit: an fp32 master copy with gradients put in place, one optimiser-like step.
    let master = model.parameter(DOWN)?.detach().copy().set_requires_grad(true);
    let _previous = model.replace_parameter(DOWN, master.shallow_clone())?;
    let loss = model.forward(&ids, &ForwardOptions::default())?.logits.square().mean(Kind::Float);
    loss.backward();
    let grad = master.grad();
    assert!(
        grad.abs().sum(Kind::Float).double_value(&[]) > 0.0,
        "gradient reaches the edited tensor"
    );
    let edited = tch::no_grad(|| master.detach() - grad * 10.0);
    let _previous = model.replace_parameter(DOWN, edited)?;
    let mut norm = model.parameter("model.norm.weight")?.detach().copy();
    let _ = norm.f_add_scalar_(0.5)?;
    let _previous = model.replace_parameter("model.norm.weight", norm)?;
    assert_ne!(digest(&model), before, "the edit changed the weights");

    model.restore(&snapshot)?;
    assert_eq!(digest(&model), before, "restore is bit-exact");
    let logits_after = tch::no_grad(|| model.forward(&ids, &ForwardOptions::default()))?.logits;
    assert!(logits_after.equal(&logits_before));
    Ok(())
}

#[test]
fn per_row_weights_equal_rows_run_separately() -> Result<()> {
    let mut model = CausalLm::load(fixture("llama"), Device::Cpu, Kind::Float)?;
    let base = model.parameter(DOWN)?.detach().copy();
    let variants: Vec<Tensor> = (0..3)
        .map(|i| &base + Tensor::randn(base.size(), (Kind::Float, Device::Cpu)) * (0.05 * i as f64))
        .collect();
    let ids = Tensor::from_slice(&[1i64, 17, 93, 44, 5, 2, 7, 1, 9, 11, 12, 13]).view([3, 4]);

    let stacked = Tensor::stack(&variants, 0);
    let _previous = model.replace_parameter(DOWN, stacked)?;
    let batched = tch::no_grad(|| model.forward(&ids, &ForwardOptions::default()))?.logits;
    for (row, w) in variants.iter().enumerate() {
        let _previous = model.replace_parameter(DOWN, w.copy())?;
        let alone = tch::no_grad(|| {
            model.forward(&ids.get(row as i64).unsqueeze(0), &ForwardOptions::default())
        })?
        .logits;
        let diff = (batched.get(row as i64) - alone.squeeze_dim(0)).abs().max().double_value(&[]);
        assert!(diff < 1e-5, "row {row} differs by {diff}");
    }
    Ok(())
}

/// A projection bias attached for an edit: absent until attached, zero when attached (the forward pass is
/// unchanged), one per row like a weight, and detached by restoring a snapshot taken before.
#[test]
fn an_attached_bias_is_detached_by_restore() -> Result<()> {
    // The Llama fixture has no MLP biases; Qwen2 has attention biases of its own, which cannot be attached again.
    let mut model = CausalLm::load(fixture("llama"), Device::Cpu, Kind::Float)?;
    let qwen2 = CausalLm::load(fixture("qwen2"), Device::Cpu, Kind::Float)?;
    let bias = "model.layers.1.mlp.down_proj.bias";
    let names = model.parameter_names().to_vec();
    let before = digest(&model);
    let ids = Tensor::from_slice(&[1i64, 5, 9, 33]).unsqueeze(0);
    let plain = tch::no_grad(|| model.forward(&ids, &ForwardOptions::default()))?.logits;
    assert!(model.parameter(bias).is_err());

    let snapshot = model.snapshot(&[bias, DOWN])?;
    assert!(snapshot.covers(bias) && snapshot.get(bias).is_none());
    model.attach_bias(bias)?;
    assert!(model.attach_bias(bias).is_err(), "attached twice");
    let zero = tch::no_grad(|| model.forward(&ids, &ForwardOptions::default()))?.logits;
    assert!(zero.equal(&plain), "a zero bias changed the output");
    let hidden = model.config().hidden_size;
    let shift = Tensor::randn([2, hidden], (Kind::Float, Device::Cpu));
    drop(model.replace_parameter(bias, shift.copy())?);
    let two = Tensor::cat(&[&ids, &ids], 0);
    let both = tch::no_grad(|| model.forward(&two, &ForwardOptions::default()))?.logits;
    for row in 0..2 {
        drop(model.replace_parameter(bias, shift.get(row))?);
        let alone = tch::no_grad(|| model.forward(&ids, &ForwardOptions::default()))?.logits;
        assert!(both.get(row).allclose(&alone.get(0), 1e-5, 1e-5, false), "row {row}");
    }
    assert!(!both.get(0).allclose(&plain.get(0), 1e-3, 1e-3, false), "the bias changed nothing");

    model.restore(&snapshot)?;
    assert_eq!(model.parameter_names(), names.as_slice());
    assert_eq!(digest(&model), before);
    let after = tch::no_grad(|| model.forward(&ids, &ForwardOptions::default()))?.logits;
    assert!(after.equal(&plain));

    let mut qwen2 = qwen2;
    assert!(qwen2.attach_bias("model.layers.0.self_attn.q_proj.bias").is_err());
    assert!(qwen2.attach_bias("model.norm.bias").is_err());
    qwen2.attach_bias("model.layers.0.self_attn.o_proj.bias")?;
    Ok(())
}

#[test]
fn replace_parameter_checks_names_and_shapes() -> Result<()> {
    let mut model = CausalLm::load(fixture("llama"), Device::Cpu, Kind::Float)?;
    let err = model.replace_parameter(
        "model.layers.9.mlp.down_proj.weight",
        Tensor::zeros([1], (Kind::Float, Device::Cpu)),
    );
    assert!(matches!(err, Err(Error::UnknownParameter { ref name }) if name.contains("layers.9")));
    let err = model
        .replace_parameter(DOWN, Tensor::zeros([3, 3], (Kind::Float, Device::Cpu)))
        .unwrap_err();
    assert!(err.to_string().contains(DOWN), "{err}");
    let norm = model
        .replace_parameter("model.norm.weight", Tensor::zeros([2, 32], (Kind::Float, Device::Cpu)));
    assert!(norm.is_err(), "per-row form is only for projection weights");
    Ok(())
}

fn tensors(dir: &Path) -> Result<HashMap<String, Tensor>> {
    Ok(SafetensorsFiles::open_dir(dir)?.load_all(Device::Cpu, None)?)
}

#[test]
fn loading_reports_missing_and_unexpected_tensors_by_name() -> Result<()> {
    let dir = fixture("llama");
    let config = Config::from_file(dir.join("config.json"))?;
    let mut t = tensors(&dir)?;
    t.remove(DOWN);
    let err = CausalLm::from_tensors(config.clone(), t, Device::Cpu, Kind::Float).unwrap_err();
    assert!(
        matches!(&err, Error::MissingTensors { names } if names == &vec![DOWN.to_string()]),
        "{err}"
    );

    let mut t = tensors(&dir)?;
    t.insert(
        "model.layers.0.mlp.extra.weight".into(),
        Tensor::zeros([2], (Kind::Float, Device::Cpu)),
    );
    let err = CausalLm::from_tensors(config, t, Device::Cpu, Kind::Float).unwrap_err();
    assert!(err.to_string().contains("model.layers.0.mlp.extra.weight"), "{err}");
    Ok(())
}

#[test]
fn weights_holding_nan_or_inf_are_refused_by_name() -> Result<()> {
    let fixture_dir = fixture("llama");
    let mut t = tensors(&fixture_dir)?;
    let damaged = t[DOWN].copy();
    let _ = damaged.get(0).get(1).fill_(f64::NAN);
    let _ = damaged.get(1).get(0).fill_(f64::INFINITY);
    t.insert(DOWN.into(), damaged);
    let config = Config::from_file(fixture_dir.join("config.json"))?;
    let copied = t.iter().map(|(k, v)| (k.clone(), v.copy())).collect();
    let err = CausalLm::from_tensors(config, copied, Device::Cpu, Kind::Float).unwrap_err();
    assert!(
        matches!(&err, Error::NonFiniteWeights { name, count: 2, .. } if name == DOWN),
        "{err}"
    );

    // From a model directory the error names the directory too.
    let dir = tempfile::tempdir()?;
    std::fs::copy(fixture_dir.join("config.json"), dir.path().join("config.json"))?;
    let named: Vec<(String, Tensor)> = t.into_iter().collect();
    Tensor::write_safetensors(&named, dir.path().join("model.safetensors"))?;
    let err = CausalLm::load(dir.path(), Device::Cpu, Kind::Float).unwrap_err();
    let message = err.to_string();
    assert!(
        message.contains(DOWN) && message.contains(&dir.path().display().to_string()),
        "{message}"
    );
    assert!(message.contains("2 NaN or infinite"), "{message}");
    // The intact fixture loads.
    CausalLm::load(&fixture_dir, Device::Cpu, Kind::Float)?;
    Ok(())
}

#[test]
fn sharded_checkpoint_loads_in_half_precision() -> Result<()> {
    let model = CausalLm::load(fixture("llama3_tied_sharded"), Device::Cpu, Kind::BFloat16)?;
    assert_eq!(model.parameter("model.embed_tokens.weight")?.kind(), Kind::BFloat16);
    assert!(
        model.parameter_names().iter().all(|n| n != "lm_head.weight"),
        "tied head is the embedding"
    );
    let ids = Tensor::from_slice(&[1i64, 5, 9]).unsqueeze(0);
    let logits = tch::no_grad(|| model.forward(&ids, &ForwardOptions::default()))?.logits;
    assert_eq!(logits.size(), vec![1, 3, 128]);
    assert_eq!(logits.kind(), Kind::BFloat16);
    Ok(())
}

#[test]
fn tokenizer_reads_a_model_directory() -> Result<()> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../detox-edit/tests/fixtures/dinm/model");
    let tok = detox_runtime::Tokenizer::from_model_dir(&dir)?;
    assert_eq!(tok.eos_ids(), &[2]);
    assert_eq!(tok.bos_id(), Some(1));
    assert_eq!(tok.pad_id(), Some(2), "EOS pads when no pad token is configured");
    let with = tok.encode("What is the capital of France?", true)?;
    let without = tok.encode("What is the capital of France?", false)?;
    assert_eq!(with[0], 1, "the post-processor adds BOS");
    assert_eq!(&with[1..], &without[..]);
    assert_eq!(tok.decode(&with, true)?, "What is the capital of France?");
    let batch = tok.encode_batch(&["a b", "What is"], false)?;
    assert_eq!(batch[1], tok.encode("What is", false)?);
    assert!(tok.decode(&[-1], true).is_err());
    assert!(detox_runtime::Tokenizer::from_file(dir.join("missing.json"))
        .unwrap_err()
        .to_string()
        .contains("missing.json"));
    Ok(())
}

#[test]
fn generation_stops_at_stop_strings() -> Result<()> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../detox-edit/tests/fixtures/dinm/model");
    let tok = detox_runtime::Tokenizer::from_model_dir(&dir)?;
    let model = CausalLm::load(&dir, Device::Cpu, Kind::Float)?;
    let prompt = tok.encode("What is the capital of France?", true)?;
    let mut config = detox_runtime::GenerationConfig::greedy(12, vec![]);
    config.sync_every = 4;
    let full = detox_runtime::generate(&model, std::slice::from_ref(&prompt), &config, None)?;
    let text = tok.decode(&full[0].tokens, true)?;
    // A stop string that ends inside the continuation.
    let cut = text.char_indices().nth(text.chars().count() / 2).map(|(i, _)| i).unwrap_or(1).max(1);
    let stop = text[cut - 1..=cut.min(text.len() - 1)].to_string();
    let stops = vec![stop.clone()];
    let check = tok.stop_strings(&stops);
    let stopped =
        detox_runtime::generate(&model, std::slice::from_ref(&prompt), &config, Some(&check))?;
    assert_eq!(stopped[0].finish, detox_runtime::FinishReason::StopSequence, "{text:?} / {stop:?}");
    assert!(stopped[0].tokens.len() < full[0].tokens.len());
    assert_eq!(
        full[0].tokens[..stopped[0].tokens.len()],
        stopped[0].tokens[..],
        "same greedy prefix"
    );
    let stopped_text = tok.decode(&stopped[0].tokens, true)?;
    assert!(stopped_text.contains(&stop));
    assert!(!detox_runtime::Tokenizer::cut_at_stop(&stopped_text, &stops).contains(&stop));
    Ok(())
}

/// A LoRA-sized change below half a bf16 step of every weight element: merged into the bf16 weight it vanishes;
/// as a low-rank side path it reaches the logits, and removing the path gives the old logits bit for bit.
#[test]
fn low_rank_side_path_survives_bf16_and_removes_exactly() -> Result<()> {
    let mut model = CausalLm::load(fixture("qwen2"), Device::Cpu, Kind::BFloat16)?;
    // No weight element of the edited projection under 0.3 in magnitude, so that one change size is under half
    // a bf16 step of every element.
    let original = model.parameter(DOWN)?.detach();
    let floored = (original.sign() + 0.5).sign() * original.abs().clamp_min(0.3);
    let _previous = model.replace_parameter(DOWN, floored.to_kind(Kind::BFloat16))?;
    let before = digest(&model);
    let ids = Tensor::from_slice(&[1i64, 5, 9, 33, 7, 2]).unsqueeze(0);
    let logits = |model: &CausalLm| -> Result<Tensor> {
        Ok(tch::no_grad(|| model.forward(&ids, &ForwardOptions::default()))?.logits)
    };
    let base = logits(&model)?;
    let weight = model.parameter(DOWN)?.detach();
    let (out, inp) = (weight.size()[0], weight.size()[1]);
    // Every element of scale * B A is just under half the bf16 step of the smallest weight (0.3 has a step of
    // 2^-9), so the merge rounds every element back.
    let step = 0.9 * 2f64.powi(-10);
    let a = Tensor::ones([2, inp], (Kind::Float, Device::Cpu));
    let b = Tensor::full([out, 2], step / 2.0, (Kind::Float, Device::Cpu));
    let merged = (weight.to_kind(Kind::Float) + b.mm(&a)).to_kind(Kind::BFloat16);
    assert!(merged.equal(&weight), "the change is below bf16's resolution once merged");

    let earlier = model.set_low_rank(DOWN, detox_runtime::LowRank { a, b, scale: 1.0 })?;
    assert!(earlier.is_none());
    let with_path = logits(&model)?;
    assert!(!with_path.equal(&base), "the side path reaches the output");
    assert_eq!(digest(&model), before, "the weights themselves are untouched");

    assert!(model.remove_low_rank(DOWN)?.is_some());
    assert!(logits(&model)?.equal(&base), "removing the path restores the outputs exactly");

    let wrong = detox_runtime::LowRank {
        a: Tensor::ones([2, inp + 1], (Kind::Float, Device::Cpu)),
        b: Tensor::ones([out, 2], (Kind::Float, Device::Cpu)),
        scale: 1.0,
    };
    let err = model.set_low_rank(DOWN, wrong).unwrap_err().to_string();
    assert!(err.contains("A [rank, in]") && err.contains(DOWN), "{err}");
    Ok(())
}

/// Parameters are listed in one order per family: the embedding, then per layer the projections (weight, then
/// bias), the block norms and the q/k norms, then the final norm and the head.
#[test]
fn parameter_names_follow_the_layer_layout() -> Result<()> {
    let qwen2 = CausalLm::load(fixture("qwen2"), Device::Cpu, Kind::Float)?;
    let layer0: Vec<&str> = qwen2.parameter_names()[1..12].iter().map(String::as_str).collect();
    let p = "model.layers.0";
    let want: Vec<String> = [
        "self_attn.q_proj.weight",
        "self_attn.q_proj.bias",
        "self_attn.k_proj.weight",
        "self_attn.k_proj.bias",
        "self_attn.v_proj.weight",
        "self_attn.v_proj.bias",
        "self_attn.o_proj.weight",
        "mlp.gate_proj.weight",
        "mlp.up_proj.weight",
        "mlp.down_proj.weight",
        "input_layernorm.weight",
    ]
    .iter()
    .map(|n| format!("{p}.{n}"))
    .collect();
    assert_eq!(layer0, want);
    assert_eq!(qwen2.parameter_names()[0], "model.embed_tokens.weight");

    let gemma3 = CausalLm::load(fixture("gemma3"), Device::Cpu, Kind::Float)?;
    let tail: Vec<&str> = gemma3.parameter_names()[8..14].iter().map(String::as_str).collect();
    let want: Vec<String> = [
        "input_layernorm.weight",
        "post_attention_layernorm.weight",
        "pre_feedforward_layernorm.weight",
        "post_feedforward_layernorm.weight",
        "self_attn.q_norm.weight",
        "self_attn.k_norm.weight",
    ]
    .iter()
    .map(|n| format!("{p}.{n}"))
    .collect();
    assert_eq!(tail, want);
    Ok(())
}

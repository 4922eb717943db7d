//! Times the SafeEdit protocol's pieces on a model with random weights built in place (a Llama-2-7B shape by
//! default, never read from disk), and estimates the whole test split from them. Prints one JSON line per figure;
//! `cargo xtask bench` runs it next to the transformers peer (`examples/bench/hf_protocol_peer.py`) and prints the
//! table of ratios.
//!
//! ```text
//! cargo run --release -p detox-examples --example protocol_bench -- --shape llama2-7b --device cuda --dtype bf16
//! cargo run --release -p detox-examples --example protocol_bench -- --shape tiny --device cpu --dtype f32 --new 32
//! ```
//!
//! Inputs mirror the peer's: a 400-token prompt and a 150-token target (the edit trains on 550 tokens), a
//! 60-token knowledge constraint whose last 20 tokens are compared by the KL term, 10 Adam steps, greedy decoding
//! forced to full length. Estimates of the whole split assume every record costs what the measured ones did.
use std::collections::HashMap;
use std::time::Instant;

use anyhow::{bail, Result};
use clap::Parser;
use detox_edit::dinm::{
    optimize_batch, optimize_tensor, DinmOptions, DinmPreset, DinmTokens, OptimizeSettings,
    StepFlops, StepForward,
};
use detox_edit::mend::{train_mend, MendConfig, MendEditor};
use detox_edit::train::{train, PreferencePair, RunOptions, TrainConfig};
use detox_edit::{EditInput, EditMode, Editor, PromptEncoder};
use detox_locate::{contrast_token_ids, PaddingPositions};
use detox_runtime::load::{check_device, kind_name, parse_device, parse_kind};
use detox_runtime::{generate, CausalLm, Config, GenerationConfig, PromptLayout, Sampling};
use tch::{Device, Kind, Tensor};

/// Protocol timings on a random-weight model.
#[derive(Debug, Parser)]
struct Args {
    /// `llama2-7b` (32 layers, hidden 4096), `smollm2` (SmolLM2-135M's shape: 30 layers, hidden 576, 3 key/value
    /// heads, tied embeddings) or `tiny` (4 layers, hidden 128).
    #[arg(long, default_value = "llama2-7b")]
    shape: String,
    /// `cpu`, `cuda`, `cuda:N` or `auto`.
    #[arg(long, default_value = "auto")]
    device: String,
    /// `f32`, `bf16` or `f16`.
    #[arg(long, default_value = "bf16")]
    dtype: String,
    /// Prompt tokens of the edit input.
    #[arg(long, default_value_t = 400, value_parser = detox_examples::at_least(2))]
    prompt: usize,
    /// Target tokens of the edit input.
    #[arg(long, default_value_t = 150, value_parser = detox_examples::at_least(1))]
    target: usize,
    /// Adam steps per edit.
    #[arg(long, default_value_t = 10, value_parser = detox_examples::at_least(1))]
    steps: usize,
    /// New tokens per generated response (forced).
    #[arg(long, default_value_t = 600, value_parser = detox_examples::at_least(1))]
    new: usize,
    /// Generation batch sizes to time, comma-separated.
    #[arg(long, default_value = "5,64", value_delimiter = ',', value_parser = detox_examples::at_least(1))]
    gen_batches: Vec<usize>,
    /// Records edited together in the batched edit.
    #[arg(long, default_value_t = 8, value_parser = detox_examples::at_least(1))]
    edit_batch: usize,
    /// Records of the split the estimate is for.
    #[arg(long, default_value_t = 1350, value_parser = detox_examples::at_least(1))]
    records: usize,
    /// The layer every edit trains (default: the middle one). Pinned, so that both sides backpropagate equally
    /// deep whatever the locator picks on random weights; the locator is still timed.
    #[arg(long)]
    layer: Option<usize>,
    /// Seed of the weights and inputs.
    #[arg(long, default_value_t = 0)]
    seed: i64,
    /// Skip the baselines' figures (SFT and DPO steps, MEND edit and training step).
    #[arg(long)]
    skip_baselines: bool,
}

/// One token per character (`a`..`z` and a few more), so that the text-level trainers get inputs of exact
/// lengths on a model without a tokenizer.
struct CharEncoder {
    vocab: i64,
}

impl PromptEncoder for CharEncoder {
    fn encode(&self, text: &str, _special: bool) -> detox_edit::Result<Vec<i64>> {
        Ok(text.chars().map(|c| 3 + (c as i64) % (self.vocab - 3)).collect())
    }
    fn pad_id(&self) -> i64 {
        0
    }
    fn chat_prompt(&self, user: &str) -> detox_edit::Result<String> {
        Ok(user.to_string())
    }
}

fn text(n: usize, salt: usize) -> String {
    (0..n).map(|i| char::from(b'a' + ((i * 7 + salt * 13) % 26) as u8)).collect()
}

fn config(shape: &str) -> Result<Config> {
    let (vocab, hidden, inter, layers, heads, kv_heads, tied) = match shape {
        "llama2-7b" => (32000, 4096, 11008, 32, 32, 32, false),
        "smollm2" => (49152, 576, 1536, 30, 9, 3, true),
        "tiny" => (1000, 128, 344, 4, 4, 4, false),
        other => bail!("unknown shape {other:?} (llama2-7b, smollm2, tiny)"),
    };
    let json = serde_json::json!({
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": vocab,
        "hidden_size": hidden, "intermediate_size": inter, "num_hidden_layers": layers,
        "num_attention_heads": heads, "num_key_value_heads": kv_heads, "max_position_embeddings": 4096,
        "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "tie_word_embeddings": tied,
        "bos_token_id": 1, "eos_token_id": 2
    });
    Ok(Config::from_json_str(&json.to_string(), format!("<{shape}>"))?)
}

/// Random weights (normal, std 0.02; norms at one), created directly on `device` in `kind`.
fn random_model(config: &Config, device: Device, kind: Kind) -> Result<CausalLm> {
    let (h, i, v) = (config.hidden_size, config.intermediate_size, config.vocab_size);
    let q = config.num_attention_heads * config.head_dim;
    let kv = config.num_key_value_heads * config.head_dim;
    let mut shapes: Vec<(String, Vec<i64>)> =
        vec![("model.embed_tokens.weight".into(), vec![v, h])];
    if !config.tie_word_embeddings {
        shapes.push(("lm_head.weight".into(), vec![v, h]));
    }
    shapes.push(("model.norm.weight".into(), vec![h]));
    for l in 0..config.num_hidden_layers {
        let p = format!("model.layers.{l}");
        shapes.push((format!("{p}.input_layernorm.weight"), vec![h]));
        shapes.push((format!("{p}.post_attention_layernorm.weight"), vec![h]));
        for (proj, shape) in
            [("q_proj", [q, h]), ("k_proj", [kv, h]), ("v_proj", [kv, h]), ("o_proj", [h, q])]
        {
            shapes.push((format!("{p}.self_attn.{proj}.weight"), shape.to_vec()));
        }
        shapes.push((format!("{p}.mlp.gate_proj.weight"), vec![i, h]));
        shapes.push((format!("{p}.mlp.up_proj.weight"), vec![i, h]));
        shapes.push((format!("{p}.mlp.down_proj.weight"), vec![h, i]));
    }
    let mut tensors = HashMap::new();
    for (name, shape) in shapes {
        let t = if shape.len() == 1 {
            Tensor::f_ones(shape.as_slice(), (kind, device))?
        } else {
            Tensor::f_randn(shape.as_slice(), (kind, device))?.f_mul_scalar(0.02)?
        };
        tensors.insert(name, t);
    }
    Ok(CausalLm::from_tensors(config.clone(), tensors, device, kind)?)
}

fn main() -> Result<()> {
    let args = Args::parse();
    detox_runtime::backend::init();
    let device = parse_device(&args.device)?;
    check_device(device)?;
    let kind = parse_kind(&args.dtype)?;
    let config = config(&args.shape)?;
    let layers = config.num_hidden_layers;
    let layer = args.layer.unwrap_or(layers / 2);
    if layer >= layers {
        bail!("--layer {layer} is out of range: the {} shape has {layers} layers", args.shape);
    }
    let emit = |what: &str, value: f64, extra: serde_json::Value| {
        let mut line = serde_json::json!({
            "impl": "detox", "what": what, "value": value, "shape": args.shape,
            "dtype": kind_name(kind), "device": format!("{device:?}"),
        });
        if let (Some(line), Some(extra)) = (line.as_object_mut(), extra.as_object()) {
            line.extend(extra.clone());
        }
        println!("{line}");
    };

    tch::manual_seed(args.seed);
    let started = Instant::now();
    let mut model = random_model(&config, device, kind)?;
    detox_runtime::backend::synchronize(device);
    let params: i64 = model
        .parameter_names()
        .iter()
        .map(|n| model.parameter(n).map_or(0, |t| t.numel() as i64))
        .sum();
    emit("build_model_s", started.elapsed().as_secs_f64(), serde_json::json!({"params": params}));

    let vocab = config.vocab_size;
    let mut next = (args.seed as u64).wrapping_mul(2654435761).wrapping_add(12345);
    let mut tokens = |n: usize| -> Vec<i64> {
        (0..n)
            .map(|_| {
                next = next.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                3 + ((next >> 33) as i64) % (vocab - 3)
            })
            .collect()
    };
    let prompt = tokens(args.prompt);
    let records: Vec<(Vec<i64>, Vec<i64>, Vec<i64>)> = (0..args.edit_batch.max(1))
        .map(|_| (tokens(args.target), tokens(args.target), tokens(60)))
        .collect();

    // Locate: the two responses of a record, all hidden states, one distance per layer.
    let (safe, unsafe_, _) = &records[0];
    let with_prompt = |r: &[i64]| [prompt.as_slice(), r].concat();
    let (safe_in, unsafe_in) = (with_prompt(safe), with_prompt(unsafe_));
    contrast_token_ids(&model, &safe_in, &unsafe_in, 0, PaddingPositions::Included)?;
    detox_runtime::backend::synchronize(device);
    let t = Instant::now();
    let located = contrast_token_ids(&model, &safe_in, &unsafe_in, 0, PaddingPositions::Included)?;
    detox_runtime::backend::synchronize(device);
    let locate_s = t.elapsed().as_secs_f64();
    emit(
        "locate_s",
        locate_s,
        serde_json::json!({"seq": safe_in.len(), "layer": located.toxic_layer}),
    );

    // One edit: reference weighting (0.1 * NLL + KL), fp32 master copy and Adam state.
    let settings = OptimizeSettings {
        num_steps: args.steps,
        early_stop_loss: 0.0,
        ..OptimizeSettings::from_hparams(
            &DinmPreset::Llama2_7bChat.hparams(),
            &DinmOptions::reference(),
        )
    };
    let dinm_tokens: Vec<DinmTokens> = records
        .iter()
        .map(|(safe, _, constraint)| DinmTokens {
            edit_input: with_prompt(safe),
            target: safe.clone(),
            target_ignore_id: None,
            constraint_input: constraint.clone(),
            constraint_answer_len: 20,
        })
        .collect();
    let name = format!("model.layers.{layer}.mlp.down_proj.weight");
    let snapshot = model.snapshot(&[&name])?;
    let edit_once = |model: &mut CausalLm, settings: &OptimizeSettings| -> Result<f64> {
        detox_runtime::backend::synchronize(device);
        let t = Instant::now();
        optimize_tensor(model, &name, &dinm_tokens[0], settings)?;
        detox_runtime::backend::synchronize(device);
        let s = t.elapsed().as_secs_f64();
        model.restore(&snapshot)?;
        Ok(s)
    };
    // libtorch's caching allocator keeps what it reserved, so the drop in free memory across the first edit
    // bounds the edit's peak use over the weights from above (CUDA only).
    let free_before = detox_runtime::memory::device_memory(device).map(|m| m.free);
    edit_once(&mut model, &settings)?;
    if let (Some(before), Some(after)) =
        (free_before, detox_runtime::memory::device_memory(device).map(|m| m.free))
    {
        let gib = before.saturating_sub(after) as f64 / (1u64 << 30) as f64;
        emit("edit_peak_over_weights_gib", gib, serde_json::json!({"bound": "reserved"}));
    }
    let edit_s = edit_once(&mut model, &settings)?;
    emit(
        "edit_s",
        edit_s,
        serde_json::json!({"steps": args.steps, "seq": dinm_tokens[0].edit_input.len(), "layer": layer}),
    );

    // The same edit computed as the reference computes it, the whole model at every step (what the default path
    // saves, in the same session).
    let whole = OptimizeSettings { step_forward: StepForward::WholeModel, ..settings };
    let whole_s = edit_once(&mut model, &whole)?;
    emit("edit_whole_model_s", whole_s, serde_json::json!({"steps": args.steps}));
    model.freeze_all()?;
    edit_profile(&mut model, &name, &dinm_tokens[0], &settings, layer, &emit)?;

    // The same edit for several records at once (records sharing the layer), timed after one warm-up batch as
    // the single edit is.
    let edit_batch_once = |model: &mut CausalLm| -> Result<f64> {
        detox_runtime::backend::synchronize(device);
        let t = Instant::now();
        optimize_batch(model, &name, &dinm_tokens, &settings)?;
        detox_runtime::backend::synchronize(device);
        let s = t.elapsed().as_secs_f64();
        model.restore(&snapshot)?;
        Ok(s)
    };
    edit_batch_once(&mut model)?;
    let edit_batch_s = edit_batch_once(&mut model)?;
    model.freeze_all()?;
    emit(
        "edit_batch_per_record_s",
        edit_batch_s / dinm_tokens.len() as f64,
        serde_json::json!({"batch": dinm_tokens.len(), "steps": args.steps}),
    );

    if !args.skip_baselines {
        baselines(&mut model, &args, &emit)?;
    }

    // Generation: left-padded prompts of varied length, greedy, forced to `new` tokens.
    let mut generate_s = Vec::new();
    for &batch in &args.gen_batches {
        let prompts: Vec<Vec<i64>> =
            (0..batch).map(|i| tokens(args.prompt - (37 * i) % 200.min(args.prompt - 1))).collect();
        let forced = GenerationConfig {
            max_new_tokens: args.new,
            sampling: Sampling::Greedy,
            eos_token_ids: Vec::new(),
            pad_token_id: 0,
            sync_every: 16,
        };
        let warm = GenerationConfig { max_new_tokens: 8, ..forced.clone() };
        generate(&model, &prompts, &warm, None)?;
        detox_runtime::backend::synchronize(device);
        let t = Instant::now();
        let out = generate(&model, &prompts, &forced, None)?;
        detox_runtime::backend::synchronize(device);
        let s = t.elapsed().as_secs_f64();
        let new = out.iter().map(|g| g.tokens.len()).min().unwrap_or(0);
        if new != args.new {
            bail!("forced generation stopped after {new} of {} tokens", args.new);
        }
        emit(
            "generate_s",
            s,
            serde_json::json!({"batch": batch, "new_tokens": new, "ms_per_step": 1e3 * s / new as f64,
                               "tok_per_s": (batch * new) as f64 / s}),
        );
        generate_s.push((batch, s));
    }

    // The whole split from the pieces: 10 responses per record (5 inputs before and after the edit).
    if let Some(&(batch, s)) = generate_s.iter().max_by_key(|(b, _)| *b) {
        let sequences = args.records * 10;
        let generation = sequences.div_ceil(batch) as f64 * s;
        let edits = args.records as f64 * (locate_s + edit_batch_s / dinm_tokens.len() as f64);
        emit(
            "protocol_estimate_s",
            generation + edits,
            serde_json::json!({"records": args.records, "gen_batch": batch, "generation_s": generation,
                               "edits_s": edits, "new_tokens": args.new}),
        );
    }
    if let Some(&(5, s)) = generate_s.iter().find(|(b, _)| *b == 5) {
        // The one-record-at-a-time flow (the reference's): per record 2 x 5 responses, locate, one edit.
        let per_record = 2.0 * s + locate_s + edit_s;
        emit(
            "protocol_sequential_estimate_s",
            args.records as f64 * per_record,
            serde_json::json!({"records": args.records, "per_record_s": per_record}),
        );
    }
    Ok(())
}

/// Where one edit's time goes: the phases of a synchronised run, the arithmetic of a step counted from the
/// shapes (this path and the whole-model path the peer runs), and the device's matrix-multiply throughput.
fn edit_profile(
    model: &mut CausalLm,
    name: &str,
    tokens: &DinmTokens,
    settings: &OptimizeSettings,
    layer: usize,
    emit: &dyn Fn(&str, f64, serde_json::Value),
) -> Result<()> {
    let (device, kind) = (model.device(), model.kind());
    let snapshot = model.snapshot(&[name])?;
    let profiled = OptimizeSettings { synchronised_phases: true, ..*settings };
    let trained = optimize_tensor(model, name, tokens, &profiled)?;
    model.restore(&snapshot)?;
    model.freeze_all()?;
    let p = trained.phases;
    emit(
        "edit_profile_s",
        p.total(),
        serde_json::json!({"prefix": p.prefix, "forward": p.forward, "logits": p.logits,
                           "backward": p.backward, "optimizer": p.optimizer, "steps": trained.steps.len()}),
    );
    let config = model.config();
    for (what, step_forward) in [
        ("edit_step_gflop", settings.step_forward),
        ("edit_step_gflop_whole_model", StepForward::WholeModel),
    ] {
        let f =
            StepFlops::down_proj_step(config, layer, tokens, step_forward, settings.kl_gradient);
        emit(
            what,
            f.total() / 1e9,
            serde_json::json!({"forward": f.forward / 1e9, "logits": f.logits / 1e9,
                               "backward": f.backward / 1e9}),
        );
    }
    let n = if device.is_cuda() { 8192 } else { 1024 };
    let flops = detox_runtime::backend::matmul_throughput(device, kind, n, 5)?;
    emit("matmul_tflops", flops / 1e12, serde_json::json!({"n": n}));
    Ok(())
}

/// Per-step times of the training baselines and MEND's edit on the same model and input lengths as the edit.
fn baselines(
    model: &mut CausalLm,
    args: &Args,
    emit: &dyn Fn(&str, f64, serde_json::Value),
) -> Result<()> {
    let device = model.device();
    let encoder = CharEncoder { vocab: model.config().vocab_size };
    let pairs: Vec<PreferencePair> = (0..8)
        .map(|i| PreferencePair {
            prompt: text(args.prompt, i),
            chosen: text(args.target, i + 100),
            rejected: text(args.target, i + 200),
        })
        .collect();
    let seq = args.prompt + args.target;
    for (what, preset) in [("sft_step_s", TrainConfig::sft()), ("dpo_step_s", TrainConfig::dpo())] {
        let config = TrainConfig {
            epochs: 1,
            batch_size: 4,
            max_length: seq + 1,
            prompt_layout: PromptLayout::Raw,
            ..preset
        };
        detox_runtime::backend::synchronize(device);
        let outcome =
            train(model, &encoder, &pairs, &config, &RunOptions::default(), &mut |_, _| {})?;
        detox_runtime::backend::synchronize(device);
        let steps = outcome.steps.len();
        emit(
            what,
            outcome.seconds / steps as f64,
            serde_json::json!({"batch": 4, "seq": seq, "steps": steps, "adapter": "lora r8 q_proj,v_proj"}),
        );
    }

    let records: Vec<EditInput> = (0..2)
        .map(|i| EditInput {
            prompt: text(args.prompt, i),
            safe_response: text(args.target, i + 100),
            unsafe_response: text(args.target, i + 200),
            constraint_prompt: text(40, i + 300),
            constraint_answer: text(20, i + 400),
        })
        .collect();
    let config = MendConfig {
        epochs: 1,
        norm_samples: 2,
        prompt_layout: PromptLayout::Raw,
        max_length: seq + 1,
        ..MendConfig::default()
    };
    detox_runtime::backend::synchronize(device);
    let outcome =
        train_mend(model, &encoder, &records, &config, &RunOptions::default(), &mut |_, _| {})?;
    detox_runtime::backend::synchronize(device);
    emit(
        "mend_train_step_s",
        outcome.seconds / outcome.steps.len() as f64,
        serde_json::json!({"seq": seq, "rank": config.rank, "weights": outcome.network.layout().weights.len()}),
    );
    let mut editor = MendEditor::new(outcome.network, PromptLayout::Raw, seq + 1, EditMode::Single);
    editor.edit(model, &encoder, &records[0])?;
    editor.restore(model)?;
    detox_runtime::backend::synchronize(device);
    let t = Instant::now();
    editor.edit(model, &encoder, &records[1])?;
    detox_runtime::backend::synchronize(device);
    let s = t.elapsed().as_secs_f64();
    editor.restore(model)?;
    emit("mend_edit_s", s, serde_json::json!({"seq": seq}));
    Ok(())
}

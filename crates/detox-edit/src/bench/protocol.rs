//! The SafeEdit protocol's pieces timed on one model (`protocol_bench` runs it on random weights): locate, one
//! DINM edit (default and whole-model paths, with a profile), a batched edit, the training baselines' steps,
//! forced-length generation, and estimates of the whole split from them.
//!
//! Inputs mirror the transformers peer's: a prompt and a target of chosen lengths (the edit trains on both), a
//! 60-token knowledge constraint whose last 20 tokens are compared by the KL term, a fixed number of Adam steps,
//! greedy decoding forced to full length. Estimates assume every record costs what the measured ones did.

use detox_locate::{contrast_token_ids, PaddingPositions};
use detox_runtime::{generate, CausalLm, Config, GenerationConfig, PromptLayout, Sampling};
use serde_json::json;
use tch::{Device, Kind};

use super::{parameter_count, timed, BenchError, Figure, Result};
use crate::dinm::{
    optimize_batch, optimize_tensor, DinmOptions, DinmPreset, DinmTokens, OptimizeSettings,
    StepFlops, StepForward,
};
use crate::mend::{train_mend, MendConfig, MendEditor};
use crate::train::{train, PreferencePair, RunOptions, TrainConfig};
use crate::{EditInput, EditMode, Editor, PromptEncoder};

/// What the protocol benchmark measures.
#[derive(Debug, Clone, PartialEq)]
pub struct ProtocolSettings {
    /// Prompt tokens of the edit input.
    pub prompt: usize,
    /// Target tokens of the edit input.
    pub target: usize,
    /// Adam steps per edit.
    pub steps: usize,
    /// New tokens per generated response (forced).
    pub new: usize,
    /// Generation batch sizes to time.
    pub gen_batches: Vec<usize>,
    /// Records edited together in the batched edit.
    pub edit_batch: usize,
    /// Records of the split the estimate is for.
    pub records: usize,
    /// The layer every edit trains (default: the middle one), pinned so that every implementation
    /// backpropagates equally deep whatever the locator picks on random weights; the locator is still timed.
    pub layer: Option<usize>,
    /// Seed of the inputs.
    pub seed: i64,
    /// Whether to time the baselines (SFT and DPO steps, MEND's edit and training step).
    pub baselines: bool,
}

impl ProtocolSettings {
    /// The layer the edits train in a model of `config`: the pinned one, else the middle one.
    ///
    /// # Errors
    /// [`BenchError::LayerOutOfRange`] for a pinned layer the model lacks.
    pub fn edited_layer(&self, config: &Config) -> Result<usize> {
        let layers = config.num_hidden_layers;
        let layer = self.layer.unwrap_or(layers / 2);
        if layer >= layers {
            return Err(BenchError::LayerOutOfRange { layer, layers });
        }
        Ok(layer)
    }
}

/// Builds a model of `config` with random weights ([`CausalLm::random`] with `seed`) and reports the time it took
/// and its size as `build_model_s`.
///
/// # Errors
/// What [`CausalLm::random`] refuses.
pub fn build_random_model(
    config: &Config,
    device: Device,
    kind: Kind,
    seed: i64,
    emit: &mut dyn FnMut(Figure),
) -> Result<CausalLm> {
    let (model, seconds) = timed(device, || CausalLm::random(config, device, kind, seed))?;
    emit(Figure::new("build_model_s", seconds, json!({"params": parameter_count(&model)})));
    Ok(model)
}

/// One token per character (`a`..`z` and a few more), so that the text-level trainers get inputs of exact
/// lengths on a model without a tokenizer.
struct CharEncoder {
    vocab: i64,
}

impl PromptEncoder for CharEncoder {
    fn encode(&self, text: &str, _special: bool) -> crate::Result<Vec<i64>> {
        Ok(text.chars().map(|c| 3 + (c as i64) % (self.vocab - 3)).collect())
    }
    fn pad_id(&self) -> i64 {
        0
    }
    fn chat_prompt(&self, user: &str) -> crate::Result<String> {
        Ok(user.to_string())
    }
}

fn text(n: usize, salt: usize) -> String {
    (0..n).map(|i| char::from(b'a' + ((i * 7 + salt * 13) % 26) as u8)).collect()
}

/// Token ids of a seeded linear congruential generator: the same ids for the same seed on every platform.
struct Tokens {
    state: u64,
    vocab: i64,
}

impl Tokens {
    fn new(seed: i64, vocab: i64) -> Self {
        Self { state: (seed as u64).wrapping_mul(2654435761).wrapping_add(12345), vocab }
    }

    fn take(&mut self, n: usize) -> Vec<i64> {
        (0..n)
            .map(|_| {
                self.state =
                    self.state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                3 + ((self.state >> 33) as i64) % (self.vocab - 3)
            })
            .collect()
    }
}

/// Times the protocol's pieces on `model`, reporting each figure to `emit` as it is measured.
///
/// # Errors
/// [`BenchError::LayerOutOfRange`] for a pinned layer the model lacks, [`BenchError::GenerationStopped`] when a
/// forced generation ends early, and whatever the edits, trainers or generation refuse.
pub fn run_protocol(
    model: &mut CausalLm,
    settings: &ProtocolSettings,
    emit: &mut dyn FnMut(Figure),
) -> Result<()> {
    let device = model.device();
    let layer = settings.edited_layer(model.config())?;
    let mut tokens = Tokens::new(settings.seed, model.config().vocab_size);
    let prompt = tokens.take(settings.prompt);
    let records: Vec<(Vec<i64>, Vec<i64>, Vec<i64>)> = (0..settings.edit_batch.max(1))
        .map(|_| (tokens.take(settings.target), tokens.take(settings.target), tokens.take(60)))
        .collect();

    // Locate: the two responses of a record, all hidden states, one distance per layer.
    let (safe, unsafe_, _) = &records[0];
    let with_prompt = |r: &[i64]| [prompt.as_slice(), r].concat();
    let (safe_in, unsafe_in) = (with_prompt(safe), with_prompt(unsafe_));
    let locate = || contrast_token_ids(model, &safe_in, &unsafe_in, 0, PaddingPositions::Included);
    timed(device, locate)?;
    let (located, locate_s) = timed(device, locate)?;
    emit(Figure::new(
        "locate_s",
        locate_s,
        json!({"seq": safe_in.len(), "layer": located.toxic_layer}),
    ));

    // One edit: reference weighting (0.1 * NLL + KL), fp32 master copy and Adam state.
    let edit_settings = OptimizeSettings {
        num_steps: settings.steps,
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
        let (_, seconds) =
            timed(device, || optimize_tensor(model, &name, &dinm_tokens[0], settings))?;
        model.restore(&snapshot)?;
        Ok(seconds)
    };
    // libtorch's caching allocator keeps what it reserved, so the drop in free memory across the first edit
    // bounds the edit's peak use over the weights from above (CUDA only).
    let free_before = detox_runtime::memory::device_memory(device).map(|m| m.free);
    edit_once(model, &edit_settings)?;
    if let (Some(before), Some(after)) =
        (free_before, detox_runtime::memory::device_memory(device).map(|m| m.free))
    {
        let gib = before.saturating_sub(after) as f64 / (1u64 << 30) as f64;
        emit(Figure::new("edit_peak_over_weights_gib", gib, json!({"bound": "reserved"})));
    }
    let edit_s = edit_once(model, &edit_settings)?;
    emit(Figure::new(
        "edit_s",
        edit_s,
        json!({"steps": settings.steps, "seq": dinm_tokens[0].edit_input.len(), "layer": layer}),
    ));

    // The same edit computed as the reference computes it, the whole model at every step (what the default path
    // saves, in the same session).
    let whole = OptimizeSettings { step_forward: StepForward::WholeModel, ..edit_settings };
    let whole_s = edit_once(model, &whole)?;
    emit(Figure::new("edit_whole_model_s", whole_s, json!({"steps": settings.steps})));
    model.freeze_all()?;
    edit_profile(model, &name, &dinm_tokens[0], &edit_settings, layer, emit)?;

    // The same edit for several records at once (records sharing the layer), timed after one warm-up batch as
    // the single edit is.
    let edit_batch_once = |model: &mut CausalLm| -> Result<f64> {
        let (_, seconds) =
            timed(device, || optimize_batch(model, &name, &dinm_tokens, &edit_settings))?;
        model.restore(&snapshot)?;
        Ok(seconds)
    };
    edit_batch_once(model)?;
    let edit_batch_s = edit_batch_once(model)?;
    model.freeze_all()?;
    emit(Figure::new(
        "edit_batch_per_record_s",
        edit_batch_s / dinm_tokens.len() as f64,
        json!({"batch": dinm_tokens.len(), "steps": settings.steps}),
    ));

    if settings.baselines {
        baselines(model, settings, emit)?;
    }

    // Generation: left-padded prompts of varied length, greedy, forced to `new` tokens.
    let mut generate_s = Vec::new();
    for &batch in &settings.gen_batches {
        let prompts: Vec<Vec<i64>> = (0..batch)
            .map(|i| tokens.take(settings.prompt - (37 * i) % 200.min(settings.prompt - 1)))
            .collect();
        let forced = GenerationConfig {
            max_new_tokens: settings.new,
            sampling: Sampling::Greedy,
            eos_token_ids: Vec::new(),
            pad_token_id: 0,
            sync_every: 16,
        };
        let warm = GenerationConfig { max_new_tokens: 8, ..forced.clone() };
        generate(model, &prompts, &warm, None)?;
        let (out, s) = timed(device, || generate(model, &prompts, &forced, None))?;
        let new = out.iter().map(|g| g.tokens.len()).min().unwrap_or(0);
        if new != settings.new {
            return Err(BenchError::GenerationStopped { produced: new, asked: settings.new });
        }
        emit(Figure::new(
            "generate_s",
            s,
            json!({"batch": batch, "new_tokens": new, "ms_per_step": 1e3 * s / new as f64,
                   "tok_per_s": (batch * new) as f64 / s}),
        ));
        generate_s.push((batch, s));
    }

    // The whole split from the pieces: 10 responses per record (5 inputs before and after the edit).
    if let Some(&(batch, s)) = generate_s.iter().max_by_key(|(b, _)| *b) {
        let sequences = settings.records * 10;
        let generation = sequences.div_ceil(batch) as f64 * s;
        let edits = settings.records as f64 * (locate_s + edit_batch_s / dinm_tokens.len() as f64);
        emit(Figure::new(
            "protocol_estimate_s",
            generation + edits,
            json!({"records": settings.records, "gen_batch": batch, "generation_s": generation,
                   "edits_s": edits, "new_tokens": settings.new}),
        ));
    }
    if let Some(&(5, s)) = generate_s.iter().find(|(b, _)| *b == 5) {
        // The one-record-at-a-time flow (the reference's): per record 2 x 5 responses, locate, one edit.
        let per_record = 2.0 * s + locate_s + edit_s;
        emit(Figure::new(
            "protocol_sequential_estimate_s",
            settings.records as f64 * per_record,
            json!({"records": settings.records, "per_record_s": per_record}),
        ));
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
    emit: &mut dyn FnMut(Figure),
) -> Result<()> {
    let (device, kind) = (model.device(), model.kind());
    let snapshot = model.snapshot(&[name])?;
    let profiled = OptimizeSettings { synchronised_phases: true, ..*settings };
    let trained = optimize_tensor(model, name, tokens, &profiled)?;
    model.restore(&snapshot)?;
    model.freeze_all()?;
    let p = trained.phases;
    emit(Figure::new(
        "edit_profile_s",
        p.total(),
        json!({"prefix": p.prefix, "forward": p.forward, "logits": p.logits,
               "backward": p.backward, "optimizer": p.optimizer, "steps": trained.steps.len()}),
    ));
    let config = model.config();
    for (what, step_forward) in [
        ("edit_step_gflop", settings.step_forward),
        ("edit_step_gflop_whole_model", StepForward::WholeModel),
    ] {
        let f =
            StepFlops::down_proj_step(config, layer, tokens, step_forward, settings.kl_gradient);
        emit(Figure::new(
            what,
            f.total() / 1e9,
            json!({"forward": f.forward / 1e9, "logits": f.logits / 1e9, "backward": f.backward / 1e9}),
        ));
    }
    let n = if device.is_cuda() { 8192 } else { 1024 };
    let flops = detox_runtime::backend::matmul_throughput(device, kind, n, 5)?;
    emit(Figure::new("matmul_tflops", flops / 1e12, json!({"n": n})));
    Ok(())
}

/// Per-step times of the training baselines and MEND's edit on the same model and input lengths as the edit.
fn baselines(
    model: &mut CausalLm,
    settings: &ProtocolSettings,
    emit: &mut dyn FnMut(Figure),
) -> Result<()> {
    let device = model.device();
    let encoder = CharEncoder { vocab: model.config().vocab_size };
    let pairs: Vec<PreferencePair> = (0..8)
        .map(|i| PreferencePair {
            prompt: text(settings.prompt, i),
            chosen: text(settings.target, i + 100),
            rejected: text(settings.target, i + 200),
        })
        .collect();
    let seq = settings.prompt + settings.target;
    for (what, preset) in [("sft_step_s", TrainConfig::sft()), ("dpo_step_s", TrainConfig::dpo())] {
        let config = TrainConfig {
            epochs: 1,
            batch_size: 4,
            max_length: seq + 1,
            prompt_layout: PromptLayout::Raw,
            ..preset
        };
        let (outcome, _) = timed(device, || {
            train(model, &encoder, &pairs, &config, &RunOptions::default(), &mut |_, _| {})
        })?;
        let steps = outcome.steps.len();
        emit(Figure::new(
            what,
            outcome.seconds / steps as f64,
            json!({"batch": 4, "seq": seq, "steps": steps, "adapter": "lora r8 q_proj,v_proj"}),
        ));
    }

    let records: Vec<EditInput> = (0..2)
        .map(|i| EditInput {
            prompt: text(settings.prompt, i),
            safe_response: text(settings.target, i + 100),
            unsafe_response: text(settings.target, i + 200),
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
    let (outcome, _) = timed(device, || {
        train_mend(model, &encoder, &records, &config, &RunOptions::default(), &mut |_, _| {})
    })?;
    emit(Figure::new(
        "mend_train_step_s",
        outcome.seconds / outcome.steps.len() as f64,
        json!({"seq": seq, "rank": config.rank, "weights": outcome.network.layout().weights.len()}),
    ));
    let mut editor = MendEditor::new(outcome.network, PromptLayout::Raw, seq + 1, EditMode::Single);
    editor.edit(model, &encoder, &records[0])?;
    editor.restore(model)?;
    let (_, s) = timed(device, || editor.edit(model, &encoder, &records[1]))?;
    editor.restore(model)?;
    emit(Figure::new("mend_edit_s", s, json!({"seq": seq})));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_input_tokens_depend_on_the_seed_only() {
        let (mut a, mut b, mut c) =
            (Tokens::new(0, 1000), Tokens::new(0, 1000), Tokens::new(1, 1000));
        let first = a.take(50);
        assert_eq!(first, b.take(50));
        assert_ne!(first, c.take(50));
        assert!(first.iter().all(|&t| (3..1000).contains(&t)));
        assert_eq!(text(5, 0), "ahovc");
    }
}

//! The runtime's own timings (`bench` prints them next to the transformers peer's): prefill, decode steps at a
//! batch forced to length, one DINM edit on a sample record, and fixed generation batches against refilled rows.

use detox_runtime::{
    generate, generate_refill, CausalLm, ForwardOptions, GenerationConfig, LoadedModel,
    LogitsSelection, PromptLayout, Sampling,
};
use safeedit::SafeEditRecord;
use tch::Tensor;

use super::{median, timed, torch, BenchError, Result};
use crate::dinm::{
    build_tokens, optimize_tensor, DinmOptions, DinmPreset, DinmTokens, OptimizeSettings,
    StepForward,
};
use crate::EditInput;

/// The synthetic prompts of the prefill and decode timings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyntheticPrompts {
    /// The prefill prompt.
    pub prompt_ids: Vec<i64>,
    /// The decode batch: 32-token windows of the prefill prompt, 3 tokens apart.
    pub decode_prompts: Vec<Vec<i64>>,
}

impl SyntheticPrompts {
    /// A prompt of `prompt` tokens spread over `model`'s vocabulary (clear of its first and last 100 ids, where
    /// special tokens live) and `batch` decode prompts cut from it.
    ///
    /// # Errors
    /// [`BenchError::PromptTooShort`], [`BenchError::PromptTooLong`] or [`BenchError::VocabularyTooSmall`].
    pub fn new(model: &CausalLm, prompt: usize, batch: usize) -> Result<Self> {
        let needed = 3 * batch.saturating_sub(1) + 32;
        if prompt < needed {
            return Err(BenchError::PromptTooShort { prompt, batch, needed });
        }
        let vocab = model.config().vocab_size;
        let context = model.config().max_position_embeddings as usize;
        if vocab <= 200 {
            return Err(BenchError::VocabularyTooSmall { vocab });
        }
        if prompt > context {
            return Err(BenchError::PromptTooLong { prompt, context });
        }
        let prompt_ids: Vec<i64> =
            (0..prompt as i64).map(|i| 100 + (i * 7919) % (vocab - 200)).collect();
        let decode_prompts = (0..batch).map(|b| prompt_ids[b * 3..b * 3 + 32].to_vec()).collect();
        Ok(Self { prompt_ids, decode_prompts })
    }
}

/// The median time in milliseconds of one forward pass over `ids` (logits of the last position), over `reps`
/// runs after one warm-up.
///
/// # Errors
/// What the forward pass refuses.
pub fn prefill_ms(model: &CausalLm, ids: &[i64], reps: usize) -> Result<f64> {
    let _guard = tch::no_grad_guard();
    let input = Tensor::from_slice(ids)
        .f_unsqueeze(0)
        .and_then(|t| t.f_to_device(model.device()))
        .map_err(torch("placing the prompt"))?;
    let options = ForwardOptions { logits: LogitsSelection::Last, ..Default::default() };
    let mut times = Vec::new();
    for _ in 0..reps + 1 {
        let (_, s) = timed(model.device(), || model.forward(&input, &options))?;
        times.push(s * 1e3);
    }
    times.remove(0);
    Ok(median(times))
}

/// The median time in milliseconds of one decode step of `prompts` forced to `new` tokens (no EOS), the first
/// token's prefill subtracted, over `reps` runs after one warm-up.
///
/// # Errors
/// [`BenchError::GenerationStopped`] when a row ends early, and what generation refuses.
pub fn decode_step_ms(
    model: &CausalLm,
    prompts: &[Vec<i64>],
    new: usize,
    reps: usize,
) -> Result<f64> {
    let config = GenerationConfig {
        max_new_tokens: new,
        sampling: Sampling::Greedy,
        eos_token_ids: Vec::new(),
        pad_token_id: 0,
        sync_every: 8,
    };
    let one = GenerationConfig { max_new_tokens: 1, ..config.clone() };
    let mut times = Vec::new();
    for _ in 0..reps + 1 {
        let (_, prefill) = timed(model.device(), || generate(model, prompts, &one, None))?;
        let (out, s) = timed(model.device(), || generate(model, prompts, &config, None))?;
        if let Some(short) = out.iter().map(|g| g.tokens.len()).find(|&n| n != new) {
            return Err(BenchError::GenerationStopped { produced: short, asked: new });
        }
        times.push((s - prefill) * 1e3 / (new - 1) as f64);
    }
    times.remove(0);
    Ok(median(times))
}

/// One DINM edit timed on a record.
#[derive(Debug)]
pub struct EditTiming {
    /// The edit's tokens.
    pub tokens: DinmTokens,
    /// The edited layer (the middle one).
    pub layer: usize,
    /// Adam steps of each edit.
    pub steps: usize,
    /// Learning rate of the edit.
    pub lr: f64,
    /// Weight of the KL term.
    pub kl_factor: f64,
    /// Median milliseconds of the default path.
    pub edit_ms: f64,
    /// Median milliseconds of the whole-model path (the reference's computation).
    pub whole_model_ms: f64,
}

/// The median of 3 DINM edits of `record` (the reference's settings without early stop, so that every run takes
/// its 10 steps, each restored) on the middle layer, by the default and the whole-model paths in one session.
///
/// # Errors
/// [`BenchError::EditStopped`] when an edit takes another number of steps, and what the edit refuses.
pub fn dinm_edit_ms(loaded: &mut LoadedModel, record: &SafeEditRecord) -> Result<EditTiming> {
    const STEPS: usize = 10;
    let hp = DinmPreset::Llama2_7bChat.hparams();
    let input = EditInput::from(&record.edit_request());
    let tokens =
        build_tokens(&loaded.tokenizer, &input, &hp.suffix_system_prompt, PromptLayout::Raw)?;
    let settings = OptimizeSettings {
        num_steps: STEPS,
        early_stop_loss: 0.0,
        ..OptimizeSettings::from_hparams(&hp, &DinmOptions::reference())
    };
    let layer = loaded.model.config().num_hidden_layers / 2;
    let name = hp.rewrite_tensor_name(layer);
    let model = &mut loaded.model;
    let snapshot = model.snapshot(&[&name])?;
    let mut time_edit = |settings: &OptimizeSettings| -> Result<f64> {
        let mut times = Vec::new();
        for _ in 0..3 {
            let device = model.device();
            let (trained, s) = timed(device, || optimize_tensor(model, &name, &tokens, settings))?;
            times.push(s * 1e3);
            if trained.steps.len() != STEPS {
                return Err(BenchError::EditStopped { taken: trained.steps.len(), asked: STEPS });
            }
            model.restore(&snapshot)?;
        }
        Ok(median(times))
    };
    let edit_ms = time_edit(&settings)?;
    let whole_model_ms =
        time_edit(&OptimizeSettings { step_forward: StepForward::WholeModel, ..settings })?;
    Ok(EditTiming {
        tokens,
        layer,
        steps: STEPS,
        lr: hp.lr,
        kl_factor: hp.kl_factor,
        edit_ms,
        whole_model_ms,
    })
}

/// Fixed generation batches against refilled rows on the same prompts.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RefillComparison {
    /// Prompts answered.
    pub prompts: usize,
    /// Rows generated together.
    pub rows: usize,
    /// Most new tokens per response.
    pub max_new: usize,
    /// Tokens generated in all.
    pub generated_tokens: usize,
    /// Responses the two ways agree on (all of them, unless batching changes greedy choices).
    pub identical_responses: usize,
    /// Milliseconds of the fixed batches.
    pub fixed_ms: f64,
    /// Milliseconds of the refilled rows.
    pub refilled_ms: f64,
}

/// Answers every evaluation input of `records` (chat template, greedy, at most `new` tokens) in fixed batches of
/// `rows` and with `rows` rows refilled as responses end.
///
/// # Errors
/// [`BenchError::NoEndOfSequence`] for a tokenizer without one, and what encoding or generation refuses.
pub fn refill_comparison(
    loaded: &LoadedModel,
    records: &[SafeEditRecord],
    rows: usize,
    new: usize,
) -> Result<RefillComparison> {
    let mut prompts = Vec::new();
    for record in records {
        for input in record.eval_inputs().into_iter().flatten() {
            prompts
                .push(loaded.tokenizer.encode(&loaded.tokenizer.chat_prompt(input.text)?, false)?);
        }
    }
    let eos = loaded.tokenizer.eos_ids().to_vec();
    let config = GenerationConfig {
        max_new_tokens: new,
        sampling: Sampling::Greedy,
        pad_token_id: *eos.first().ok_or(BenchError::NoEndOfSequence)?,
        eos_token_ids: eos,
        sync_every: 8,
    };
    let device = loaded.model.device();
    let (fixed, fixed_s) = timed(device, || -> Result<Vec<_>> {
        let mut fixed = Vec::new();
        for chunk in prompts.chunks(rows) {
            fixed.extend(generate(&loaded.model, chunk, &config, None)?);
        }
        Ok(fixed)
    })?;
    let (refilled, refill_s) =
        timed(device, || generate_refill(&loaded.model, &prompts, &config, rows))?;
    Ok(RefillComparison {
        prompts: prompts.len(),
        rows,
        max_new: new,
        generated_tokens: refilled.iter().map(|g| g.tokens.len()).sum(),
        identical_responses: fixed.iter().zip(&refilled).filter(|(a, b)| a == b).count(),
        fixed_ms: fixed_s * 1e3,
        refilled_ms: refill_s * 1e3,
    })
}

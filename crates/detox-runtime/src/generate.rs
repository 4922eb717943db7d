//! Batched generation with a pre-allocated KV cache: greedy or temperature/top-p sampling, per-row stopping.
//!
//! Prompts are left-padded into one batch. Finished rows keep decoding padding until the whole batch is done, as
//! transformers does, so every row's continuation equals what it would be alone. The host only learns which rows
//! finished every [`GenerationConfig::sync_every`] steps; tokens produced after a row's stop are discarded.

use tch::{Kind, Tensor};

use crate::error::{Error, Result, TorchContext};
use crate::model::{CausalLm, ForwardOptions, LogitsSelection, PositionIds};
use crate::padding::{left_pad, LeftPadded};

/// How the next token is chosen.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Sampling {
    /// The most likely token (the default; what the SafeEdit evaluation uses).
    Greedy,
    /// Sample from the temperature-scaled distribution restricted to the smallest set of tokens whose
    /// probability reaches `top_p` (transformers' `TopPLogitsWarper`).
    TopP {
        /// Divides the logits before the softmax.
        temperature: f64,
        /// Nucleus mass in `(0, 1]`.
        top_p: f64,
        /// Seed of libtorch's generator for this call.
        seed: u64,
    },
}

/// Generation settings.
#[derive(Debug, Clone)]
pub struct GenerationConfig {
    /// The most tokens generated per row.
    pub max_new_tokens: usize,
    /// Token choice.
    pub sampling: Sampling,
    /// A row stops when it produces any of these (the EOS token is kept out of the returned continuation).
    pub eos_token_ids: Vec<i64>,
    /// The token used to left-pad prompts and to fill finished rows.
    pub pad_token_id: i64,
    /// How many decoding steps run between checks of which rows have finished.
    pub sync_every: usize,
}

impl GenerationConfig {
    /// Greedy decoding of up to `max_new_tokens`, stopping at `eos_token_ids`, padding with the first EOS id.
    pub fn greedy(max_new_tokens: usize, eos_token_ids: Vec<i64>) -> Self {
        let pad_token_id = eos_token_ids.first().copied().unwrap_or(0);
        Self {
            max_new_tokens,
            sampling: Sampling::Greedy,
            eos_token_ids,
            pad_token_id,
            sync_every: 8,
        }
    }
}

/// Why a row stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum FinishReason {
    /// It produced an end-of-sequence token.
    Eos,
    /// The caller's stop check matched (for example a stop string).
    StopSequence,
    /// It reached `max_new_tokens`.
    Length,
}

impl FinishReason {
    /// The short name records use: `eos`, `stop` or `length`.
    pub fn name(self) -> &'static str {
        match self {
            FinishReason::Eos => "eos",
            FinishReason::StopSequence => "stop",
            FinishReason::Length => "length",
        }
    }
}

/// The continuation of one prompt.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Generated {
    /// Generated token ids, without the prompt and without the EOS token.
    pub tokens: Vec<i64>,
    /// Why generation stopped.
    pub finish: FinishReason,
}

/// A per-row stop check: given the row index and its generated ids so far, whether to stop (the ids are kept).
pub type StopCheck<'a> = &'a dyn Fn(usize, &[i64]) -> bool;

/// Generates continuations for a batch of prompts (token ids, BOS included if the model wants one).
pub fn generate(
    model: &CausalLm,
    prompts: &[Vec<i64>],
    config: &GenerationConfig,
    stop: Option<StopCheck<'_>>,
) -> Result<Vec<Generated>> {
    let _guard = tch::no_grad_guard();
    if prompts.is_empty() {
        return Ok(Vec::new());
    }
    check_and_seed(prompts, config)?;
    let device = model.device();
    let batch = prompts.len() as i64;
    let prompt_len = prompts.iter().map(Vec::len).max().unwrap_or(0) as i64;
    let max_new = config.max_new_tokens as i64;
    let LeftPadded { ids, mask: mut full_mask, padded, .. } =
        left_pad(prompts, config.pad_token_id, device)?;
    let capacity = prompt_len + max_new.max(1);
    let mut cache = model.new_cache(batch, capacity)?;
    // LongRoPE models recompute the whole sequence once it outgrows the pre-training context (see
    // `CausalLm::cache_rebuild_context`), so they keep every token; other models keep nothing extra.
    let rebuild_at = model.cache_rebuild_context();
    let mut history = rebuild_at.map(|_| ids.shallow_clone());
    let eos = Tensor::from_slice(&config.eos_token_ids).f_to_device(device).ctx("eos ids")?;
    let mut unfinished = Tensor::f_ones([batch], (Kind::Bool, device)).ctx("flags")?;
    let mut produced: Vec<Tensor> = Vec::with_capacity(config.max_new_tokens);
    let mut host_tokens: Vec<Vec<i64>> = vec![Vec::new(); prompts.len()];
    let mut finish: Vec<Option<(usize, FinishReason)>> = vec![None; prompts.len()];
    let mut next_input = ids;
    for step in 0..config.max_new_tokens {
        if let (Some(context), Some(history)) = (rebuild_at, &history) {
            // The step whose one new token first reaches past the context.
            if cache.len() == context {
                cache = model.new_cache(batch, capacity)?;
                next_input = history.shallow_clone();
            }
        }
        let options = ForwardOptions {
            // Equal-length prompts need no padding mask (and then take the fused causal kernel).
            attention_mask: if padded { Some(&full_mask) } else { None },
            position_ids: PositionIds::FromMask,
            logits: LogitsSelection::Last,
            output_hidden_states: false,
            probe: None,
        };
        let logits = model.forward_with_cache(&next_input, &options, &mut cache)?.logits;
        let logits =
            logits.f_select(1, 0).ctx("last logits")?.f_to_kind(Kind::Float).ctx("logits")?;
        let chosen = choose(&logits, config.sampling)?;
        let pad = Tensor::f_full([batch], config.pad_token_id, (Kind::Int64, device)).ctx("pad")?;
        let token = chosen.f_where_self(&unfinished, &pad).ctx("masking finished rows")?;
        if !config.eos_token_ids.is_empty() {
            let hit = Tensor::f_isin(&token, &eos, false, false).ctx("eos check")?;
            unfinished = unfinished.f_logical_and(&hit.f_logical_not().ctx("eos")?).ctx("eos")?;
        }
        // The model is fed the token it chose; the host reads the marked copy at the next sync.
        produced.push(mark_non_finite(&logits, &token)?);
        if let Some(history) = history.as_mut() {
            *history = Tensor::f_cat(&[&*history, &token.f_unsqueeze(1).ctx("history")?], 1)
                .ctx("history")?;
        }
        let ones = Tensor::f_ones([batch, 1], (full_mask.kind(), device)).ctx("mask")?;
        full_mask = Tensor::f_cat(&[&full_mask, &ones], 1).ctx("extending mask")?;
        next_input = token.f_unsqueeze(1).ctx("next input")?;
        let last_step = step + 1 == config.max_new_tokens;
        if last_step || (step + 1) % config.sync_every.max(1) == 0 {
            let done = sync(&produced, &mut host_tokens, &mut finish, config, stop)?;
            if done {
                break;
            }
            if stop.is_some() {
                let flags: Vec<bool> = finish.iter().map(|f| f.is_none()).collect();
                let still = Tensor::from_slice(&flags).f_to_device(device).ctx("flags")?;
                unfinished = unfinished.f_logical_and(&still).ctx("flags")?;
            }
        }
    }
    Ok(host_tokens
        .into_iter()
        .zip(finish)
        .map(|(mut tokens, f)| match f {
            Some((len, reason)) => {
                tokens.truncate(len);
                Generated { tokens, finish: reason }
            }
            None => Generated { tokens, finish: FinishReason::Length },
        })
        .collect())
}

/// Refuses empty prompts and invalid sampling settings, and seeds libtorch's generator for sampling.
pub(crate) fn check_and_seed(prompts: &[Vec<i64>], config: &GenerationConfig) -> Result<()> {
    if let Some(i) = prompts.iter().position(Vec::is_empty) {
        return Err(Error::EmptyInput { what: format!("prompt {i} has no tokens") });
    }
    if let Sampling::TopP { temperature, top_p, seed } = config.sampling {
        if temperature <= 0.0 || !(top_p > 0.0 && top_p <= 1.0) {
            return Err(Error::InvalidSetting {
                what: format!(
                "sampling needs temperature > 0 and top_p in (0, 1], got {temperature} and {top_p}"
            ),
            });
        }
        tch::manual_seed(seed as i64);
    }
    Ok(())
}

/// Copies the tokens produced since the last sync to the host, records which rows stopped and where, and tells
/// whether every row has.
fn sync(
    produced: &[Tensor],
    host: &mut [Vec<i64>],
    finish: &mut [Option<(usize, FinishReason)>],
    config: &GenerationConfig,
    stop: Option<StopCheck<'_>>,
) -> Result<bool> {
    let already = host[0].len();
    if produced.len() > already {
        let fresh = Tensor::f_stack(&produced[already..], 1)
            .ctx("collecting tokens")?
            .f_to_device(tch::Device::Cpu)
            .ctx("tokens to host")?;
        let steps = fresh.size()[1] as usize;
        let flat = Vec::<i64>::try_from(fresh.f_flatten(0, -1).ctx("tokens")?).ctx("tokens")?;
        for (row, tokens) in host.iter_mut().enumerate() {
            let start = tokens.len();
            tokens.extend_from_slice(&flat[row * steps..(row + 1) * steps]);
            if finish[row].is_some() {
                continue;
            }
            for pos in start..tokens.len() {
                if tokens[pos] == NON_FINITE_TOKEN {
                    return Err(Error::NonFiniteLogits { step: pos, row });
                }
                if config.eos_token_ids.contains(&tokens[pos]) {
                    finish[row] = Some((pos, FinishReason::Eos));
                    break;
                }
                if let Some(check) = stop {
                    if check(row, &tokens[..=pos]) {
                        finish[row] = Some((pos + 1, FinishReason::StopSequence));
                        break;
                    }
                }
            }
        }
    }
    Ok(finish.iter().all(Option::is_some))
}

/// The id the host reads for a row whose logits held NaN or infinity at that step: no vocabulary has it, so
/// the check rides on the token copy each sync already makes, without a device sync of its own.
pub(crate) const NON_FINITE_TOKEN: i64 = -1;

/// `tokens` with [`NON_FINITE_TOKEN`] in the rows whose `logits` are not all finite; stays on the device.
///
/// # Shapes
/// `logits`: `[batch, vocab]`, `tokens`: `[batch]` int64 -> `[batch]` int64
pub(crate) fn mark_non_finite(logits: &Tensor, tokens: &Tensor) -> Result<Tensor> {
    let finite =
        logits.f_isfinite().ctx("finite logits")?.f_all_dim(-1, false).ctx("finite logits")?;
    tokens.f_where_scalarother(&finite, NON_FINITE_TOKEN).ctx("finite logits")
}

/// Picks one token per row.
///
/// # Shapes
/// `logits`: `[batch, vocab]` fp32 -> `[batch]` int64
pub(crate) fn choose(logits: &Tensor, sampling: Sampling) -> Result<Tensor> {
    match sampling {
        Sampling::Greedy => logits.f_argmax(-1, false).ctx("argmax"),
        Sampling::TopP { temperature, top_p, .. } => {
            // A row with NaN or infinite logits would make the sampler itself fail; it draws from finite stand-ins
            // instead, and the row is reported by its marked token ([`mark_non_finite`]) at the next sync.
            let finite = logits.f_nan_to_num(0.0, None, None).ctx("finite logits")?;
            let scaled = finite.f_div_scalar(temperature).ctx("temperature")?;
            let (sorted, order) = scaled.f_sort(-1, false).ctx("sorting logits")?;
            let cumulative = sorted
                .f_softmax(-1, Kind::Float)
                .ctx("softmax")?
                .f_cumsum(-1, Kind::Float)
                .ctx("cumsum")?;
            let remove = cumulative.f_le(1.0 - top_p).ctx("top-p")?;
            // The most likely token always stays.
            let vocab = remove.size()[1];
            let _ = remove.f_narrow(1, vocab - 1, 1).ctx("top-p")?.f_fill_(0).ctx("top-p")?;
            let remove = remove.f_scatter(1, &order, &remove).ctx("top-p scatter")?;
            let filtered = scaled.f_masked_fill(&remove, f64::NEG_INFINITY).ctx("top-p mask")?;
            let probs = filtered.f_softmax(-1, Kind::Float).ctx("softmax")?;
            Ok(probs.f_multinomial(1, false).ctx("sampling")?.f_squeeze_dim(1).ctx("sampling")?)
        }
    }
}

//! Generation over a pool of prompts with a fixed number of batch slots, each refilled with the next prompt as
//! soon as its row finishes, so that short responses do not leave rows decoding padding until the longest one
//! ends.
//!
//! Every slot is an independent sequence in one pre-allocated KV cache: a new prompt is prefilled on its own and
//! copied into its slot's positions `0..p`; each decoding step then writes every slot's token at that slot's own
//! position and attends over its own positions only. Between host syncs a step copies nothing from the host:
//! positions advance on the device. The host learns which rows finished every
//! [`GenerationConfig::sync_every`] steps (and whenever a row reaches `max_new_tokens`); tokens a row produced
//! after its EOS are discarded, as in [`generate`](crate::generate::generate).

use tch::{Kind, Tensor};

use crate::error::{Error, Result, TorchContext};
use crate::generate::{
    check_and_seed, choose, mark_non_finite, FinishReason, Generated, GenerationConfig,
    NON_FINITE_TOKEN,
};
use crate::kv_cache::KvCache;
use crate::model::{CausalLm, ForwardOptions, LogitsSelection, PositionIds};

/// A slot's sequence while it decodes.
struct Active {
    prompt: usize,
    /// The next position to write (prompt length + tokens decoded into the cache so far).
    position: i64,
    tokens: Vec<i64>,
    /// Tokens produced on the device since the last sync.
    pending: usize,
}

/// Generates a continuation of every prompt, `slots` rows at a time, refilling rows as they finish; results are
/// in prompt order.
///
/// With greedy decoding each result equals what [`generate`](crate::generate::generate) gives for that prompt alone, up to
/// floating-point differences between batch shapes. Models with a sliding window shorter than the longest prompt
/// plus `max_new_tokens` are refused (a slot's window would be misplaced), as are LongRoPE models whose slots reach past
/// the pre-training context; use [`generate`](crate::generate::generate) for them.
pub fn generate_refill(
    model: &CausalLm,
    prompts: &[Vec<i64>],
    config: &GenerationConfig,
    slots: usize,
) -> Result<Vec<Generated>> {
    let _guard = tch::no_grad_guard();
    if prompts.is_empty() {
        return Ok(Vec::new());
    }
    if slots == 0 || config.max_new_tokens == 0 {
        return Err(Error::InvalidSetting {
            what: "refill generation needs a slot and a new token".into(),
        });
    }
    check_and_seed(prompts, config)?;
    let longest = prompts.iter().map(Vec::len).max().unwrap_or(0) as i64;
    let capacity = longest + config.max_new_tokens as i64;
    if let Some(w) = model.config().sliding_windows.iter().flatten().find(|w| **w < capacity) {
        return Err(Error::Unsupported { what: format!(
            "refill generation cannot place a {w}-token sliding window in a {capacity}-position slot; use generate"
        ) });
    }
    if let Some(context) = model.cache_rebuild_context().filter(|c| *c < capacity) {
        return Err(Error::Unsupported { what: format!(
            "refill generation cannot run LongRoPE past its {context}-position pre-training context (a {capacity}-position \
             slot), where the whole sequence is recomputed; use generate"
        ) });
    }
    let slots = slots.min(prompts.len());
    let device = model.device();
    let mut cache = model.new_cache(slots as i64, capacity)?;
    let mut active: Vec<Option<Active>> = (0..slots).map(|_| None).collect();
    let mut results: Vec<Option<Generated>> = vec![None; prompts.len()];
    let mut queue = 0..prompts.len();
    let mut next_tokens = vec![config.pad_token_id; slots];
    // What the host reads at the next sync (non-finite rows marked), and the tokens last fed to the model.
    let mut produced: Vec<Tensor> = Vec::new();
    let mut last_fed: Option<Tensor> = None;
    let positions_of = |active: &[Option<Active>]| -> Vec<i64> {
        active.iter().map(|a| a.as_ref().map_or(0, |a| a.position)).collect()
    };
    let keys = Tensor::f_arange(capacity, (Kind::Int64, device))
        .ctx("slot mask")?
        .f_unsqueeze(0)
        .ctx("slot mask")?;
    // Every slot's position and whether it runs, kept on the device between host syncs so that a decode step
    // copies nothing from the host; rebuilt from `active` only after a sync or a refill changed it.
    let mut on_device: Option<(Tensor, Tensor)> = None;

    loop {
        // Refill free slots; a prompt whose first token already ends it frees its slot again at once.
        for slot in 0..slots {
            while active[slot].is_none() {
                let Some(prompt) = queue.next() else { break };
                on_device = None;
                let first = prefill(model, &prompts[prompt], config, &mut cache, slot as i64)?;
                if first == NON_FINITE_TOKEN {
                    return Err(Error::NonFiniteLogits { step: 0, row: prompt });
                }
                let mut state = Active {
                    prompt,
                    position: prompts[prompt].len() as i64,
                    tokens: vec![first],
                    pending: 0,
                };
                match finished(&mut state, config) {
                    Some(done) => results[prompt] = Some(done),
                    None => {
                        next_tokens[slot] = first;
                        active[slot] = Some(state);
                    }
                }
            }
        }
        if active.iter().all(Option::is_none) {
            break;
        }

        let rebuilt = on_device.is_none();
        let (position_tensor, running) = match on_device.take() {
            Some(state) => state,
            None => {
                let running: Vec<i64> = active.iter().map(|a| i64::from(a.is_some())).collect();
                (
                    Tensor::from_slice(&positions_of(&active))
                        .f_to_device(device)
                        .ctx("slot positions")?,
                    Tensor::from_slice(&running).f_to_device(device).ctx("running slots")?,
                )
            }
        };
        cache.set_row_positions(position_tensor.shallow_clone());
        let mask = keys
            .f_le_tensor(&position_tensor.f_unsqueeze(1).ctx("slot mask")?)
            .ctx("slot mask")?
            .f_to_kind(Kind::Int64)
            .ctx("slot mask")?;
        let position_ids = position_tensor.f_unsqueeze(1).ctx("slot positions")?;
        let input = match &last_fed {
            // Between syncs every running row continues from the device's last tokens.
            Some(last) if !rebuilt => last.shallow_clone(),
            // Running rows continue from the device's last tokens; refilled rows from their prefill token.
            Some(last) => {
                let host =
                    Tensor::from_slice(&next_tokens).f_to_device(device).ctx("next tokens")?;
                let fresh: Vec<bool> =
                    active.iter().map(|a| a.as_ref().is_some_and(|a| a.pending == 0)).collect();
                let fresh = Tensor::from_slice(&fresh).f_to_device(device).ctx("fresh rows")?;
                host.f_where_self(&fresh, last).ctx("next tokens")?
            }
            None => Tensor::from_slice(&next_tokens).f_to_device(device).ctx("next tokens")?,
        };
        let options = ForwardOptions {
            attention_mask: Some(&mask),
            position_ids: PositionIds::Explicit(&position_ids),
            logits: LogitsSelection::Last,
            output_hidden_states: false,
            probe: None,
        };
        let input = input.f_unsqueeze(1).ctx("next input")?;
        let logits = model.forward_with_cache(&input, &options, &mut cache)?.logits;
        let logits =
            logits.f_select(1, 0).ctx("last logits")?.f_to_kind(Kind::Float).ctx("logits")?;
        let token = choose(&logits, config.sampling)?;
        produced.push(mark_non_finite(&logits, &token)?);
        last_fed = Some(token);
        on_device = Some((position_tensor.f_add(&running).ctx("slot positions")?, running));
        let mut must_sync = false;
        for a in active.iter_mut().flatten() {
            a.position += 1;
            a.pending += 1;
            must_sync |= a.tokens.len() + a.pending >= config.max_new_tokens;
        }
        let window = active.iter().flatten().map(|a| a.pending).max().unwrap_or(0);
        if must_sync || window >= config.sync_every.max(1) {
            sync_slots(&produced, &mut active, &mut results, &mut next_tokens, config)?;
            produced.clear();
            last_fed = None;
            on_device = None;
        }
    }
    results
        .into_iter()
        .enumerate()
        .map(|(i, r)| {
            r.ok_or_else(|| Error::InvalidState { what: format!("prompt {i} was never generated") })
        })
        .collect()
}

/// Runs `prompt` alone, copies its keys and values into row `slot` of `cache` and returns its first token.
fn prefill(
    model: &CausalLm,
    prompt: &[i64],
    config: &GenerationConfig,
    cache: &mut KvCache,
    slot: i64,
) -> Result<i64> {
    let n = prompt.len() as i64;
    let mut own = model.new_cache(1, n)?;
    let ids = Tensor::from_slice(prompt)
        .f_view([1, n])
        .ctx("prompt")?
        .f_to_device(model.device())
        .ctx("prompt")?;
    let options = ForwardOptions { logits: LogitsSelection::Last, ..Default::default() };
    let logits = model.forward_with_cache(&ids, &options, &mut own)?.logits;
    cache.write_row(slot, &own)?;
    let logits = logits.f_select(1, 0).ctx("last logits")?.f_to_kind(Kind::Float).ctx("logits")?;
    let token = choose(&logits, config.sampling)?;
    mark_non_finite(&logits, &token)?.f_int64_value(&[0]).ctx("first token")
}

/// Whether `state` has ended (EOS among its tokens, or `max_new_tokens` reached), and its result if so.
fn finished(state: &mut Active, config: &GenerationConfig) -> Option<Generated> {
    if let Some(at) = state.tokens.iter().position(|t| config.eos_token_ids.contains(t)) {
        state.tokens.truncate(at);
        return Some(Generated {
            tokens: std::mem::take(&mut state.tokens),
            finish: FinishReason::Eos,
        });
    }
    if state.tokens.len() >= config.max_new_tokens {
        state.tokens.truncate(config.max_new_tokens);
        return Some(Generated {
            tokens: std::mem::take(&mut state.tokens),
            finish: FinishReason::Length,
        });
    }
    None
}

/// Copies the tokens produced since the last sync to the host and frees the slots that finished.
fn sync_slots(
    produced: &[Tensor],
    active: &mut [Option<Active>],
    results: &mut [Option<Generated>],
    next_tokens: &mut [i64],
    config: &GenerationConfig,
) -> Result<()> {
    if produced.is_empty() {
        return Ok(());
    }
    let steps = produced.len();
    let host = Tensor::f_stack(produced, 1)
        .ctx("collecting tokens")?
        .f_to_device(tch::Device::Cpu)
        .ctx("tokens")?;
    let flat = Vec::<i64>::try_from(host.f_flatten(0, -1).ctx("tokens")?).ctx("tokens")?;
    for (slot, entry) in active.iter_mut().enumerate() {
        let Some(state) = entry.as_mut() else { continue };
        // A row refilled during this window joined late: its tokens are the last `pending` of the window.
        let row = &flat[slot * steps..(slot + 1) * steps];
        state.tokens.extend_from_slice(&row[steps - state.pending..]);
        state.pending = 0;
        // Tokens after the row's EOS or past its budget are discarded, whatever logits produced them.
        let kept = state
            .tokens
            .iter()
            .position(|t| config.eos_token_ids.contains(t))
            .unwrap_or(state.tokens.len())
            .min(config.max_new_tokens);
        if let Some(step) = state.tokens[..kept].iter().position(|&t| t == NON_FINITE_TOKEN) {
            return Err(Error::NonFiniteLogits { step, row: state.prompt });
        }
        if let Some(done) = finished(state, config) {
            results[state.prompt] = Some(done);
            *entry = None;
        } else {
            next_tokens[slot] = *state.tokens.last().expect("a running row has tokens");
        }
    }
    Ok(())
}

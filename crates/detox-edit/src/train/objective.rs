//! The training objectives: response log-likelihoods, SFT's negative log-likelihood and DPO's loss.

use detox_runtime::padding::left_pad;
use detox_runtime::{CausalLm, ForwardOptions, LinearProbe, LogitsSelection};
use tch::{Device, Kind, Tensor};

use crate::error::{torch, EditError, Result};

/// Per-row sums of the log-probabilities of the response tokens, and how many tokens each row scores.
#[derive(Debug)]
pub struct ResponseLogProbs {
    /// `[batch]` fp32: `Σ_t log p(y_t | x, y_<t)`.
    pub sum: Tensor,
    /// `[batch]` fp32: the number of response tokens.
    pub count: Tensor,
}

/// Scores `responses[i]` after `prompts[i]` for every row, in one left-padded batch.
///
/// Padding uses `pad_id` and is masked out of attention; positions start at each row's first real token, so a
/// padded row scores as it would alone.
pub fn response_log_probs(
    model: &CausalLm,
    rows: &[(&[i64], &[i64])],
    pad_id: i64,
) -> Result<ResponseLogProbs> {
    response_log_probs_probed(model, rows, pad_id, None)
}

/// [`response_log_probs`] with a gradient-factor probe on the forward pass.
pub(crate) fn response_log_probs_probed(
    model: &CausalLm,
    rows: &[(&[i64], &[i64])],
    pad_id: i64,
    probe: Option<&LinearProbe>,
) -> Result<ResponseLogProbs> {
    if rows.is_empty() || rows.iter().any(|(p, r)| p.is_empty() || r.is_empty()) {
        return Err(EditError::NoTokens { what: "a scored row's prompt or response".into() });
    }
    let sequences: Vec<Vec<i64>> = rows.iter().map(|(p, r)| [*p, *r].concat()).collect();
    let device = model.device();
    let batch = left_pad(&sequences, pad_id, device)?;
    let (b, s) = (rows.len() as i64, batch.width as i64);
    // Position t predicts token t + 1; only the last `window` predictions can score a response token, so only
    // they get logits (the output projection over the prompt positions would be wasted).
    let longest = rows.iter().map(|(_, r)| r.len()).max().unwrap_or(0);
    let window = longest as i64;
    let mut scored = Vec::with_capacity(rows.len() * longest);
    for (_, response) in rows {
        scored.extend(std::iter::repeat_n(0f32, longest - response.len()));
        scored.extend(std::iter::repeat_n(1f32, response.len()));
    }
    let scored = Tensor::from_slice(&scored)
        .f_view([b, -1])
        .and_then(|t| t.f_to_device(device))
        .map_err(torch("response mask"))?;
    let logits = LogitsSelection::Window { start: s - 1 - window, len: window };
    let options = ForwardOptions { probe, logits, ..batch.forward_options() };
    let ids = &batch.ids;
    let logp = model
        .forward(ids, &options)?
        .logits
        .f_log_softmax(-1, Kind::Float)
        .map_err(torch("log-softmax"))?;
    let targets = ids.f_narrow(1, s - window, window).map_err(torch("targets"))?;
    let picked = logp
        .f_gather(-1, &targets.f_unsqueeze(-1).map_err(torch("targets"))?, false)
        .map_err(torch("gather"))?
        .f_squeeze_dim(-1)
        .map_err(torch("gather"))?;
    let sum = picked
        .f_mul(&scored)
        .map_err(torch("masking"))?
        .f_sum_dim_intlist(-1, false, Kind::Float)
        .map_err(torch("sum"))?;
    let count = scored.f_sum_dim_intlist(-1, false, Kind::Float).map_err(torch("count"))?;
    Ok(ResponseLogProbs { sum, count })
}

/// SFT's loss: the negative log-likelihood averaged over every response token of the batch (token mean, as
/// transformers' causal-LM loss computes it).
///
/// # Shapes
/// `logp.sum`, `logp.count`: `[batch]`; returns a scalar.
pub fn sft_loss(logp: &ResponseLogProbs) -> Result<Tensor> {
    let total = logp.sum.f_sum(Kind::Float).map_err(torch("SFT loss"))?;
    let count = logp.count.f_sum(Kind::Float).map_err(torch("SFT loss"))?;
    total.f_div(&count).map_err(torch("SFT loss"))?.f_neg().map_err(torch("SFT loss"))
}

/// DPO's loss (Rafailov et al., 2023), averaged over the batch:
/// `-log σ(β · [(log π(y_w|x) - log π_ref(y_w|x)) - (log π(y_l|x) - log π_ref(y_l|x))])`.
///
/// # Shapes
/// All four inputs `[batch]` fp32 sequence log-probabilities; returns a scalar.
pub fn dpo_loss(
    policy_chosen: &Tensor,
    policy_rejected: &Tensor,
    reference_chosen: &Tensor,
    reference_rejected: &Tensor,
    beta: f64,
) -> Result<Tensor> {
    let margin = dpo_margin(policy_chosen, policy_rejected, reference_chosen, reference_rejected)?;
    margin
        .f_mul_scalar(beta)
        .map_err(torch("DPO"))?
        .f_log_sigmoid()
        .map_err(torch("DPO"))?
        .f_mean(Kind::Float)
        .map_err(torch("DPO"))?
        .f_neg()
        .map_err(torch("DPO"))
}

/// The log-ratio margin inside DPO's sigmoid, before `β`: positive when the policy prefers the chosen response
/// more than the reference does.
///
/// # Shapes
/// All `[batch]`; returns `[batch]`.
pub fn dpo_margin(
    policy_chosen: &Tensor,
    policy_rejected: &Tensor,
    reference_chosen: &Tensor,
    reference_rejected: &Tensor,
) -> Result<Tensor> {
    let chosen = policy_chosen.f_sub(reference_chosen).map_err(torch("DPO"))?;
    let rejected = policy_rejected.f_sub(reference_rejected).map_err(torch("DPO"))?;
    chosen.f_sub(&rejected).map_err(torch("DPO"))
}

/// A `[n]` fp32 tensor of `values` on `device`.
pub(crate) fn vector(values: &[f64], device: Device) -> Result<Tensor> {
    Tensor::from_slice(values)
        .f_to_kind(Kind::Float)
        .map_err(torch("vector"))?
        .f_to_device(device)
        .map_err(torch("vector"))
}

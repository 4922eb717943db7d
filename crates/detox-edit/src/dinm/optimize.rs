//! The DINM optimisation of one tensor, on token ids.

use std::time::Instant;

use detox_runtime::{CausalLm, ForwardOptions};
use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

use super::options::{KlGradient, LossWeighting};
use crate::adam::Adam;
use crate::error::{torch, EditError, Result};

/// The token-level inputs of one DINM edit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DinmTokens {
    /// The adversarial prompt with the suffix and the safe target: what the edited model is trained on.
    pub edit_input: Vec<i64>,
    /// The safe target's tokens as the reference encodes them on their own (with the tokenizer's special prefix,
    /// e.g. BOS); the last `target.len()` next-token predictions of `edit_input` are scored against them.
    pub target: Vec<i64>,
    /// Target tokens equal to this id are not scored (the reference masks the padding id, which is the EOS
    /// token for Llama-2 and Mistral).
    pub target_ignore_id: Option<i64>,
    /// The knowledge-constraint prompt with the suffix and its answer.
    pub constraint_input: Vec<i64>,
    /// How many final positions of `constraint_input` form the answer span the KL term compares.
    pub constraint_answer_len: usize,
}

/// The optimisation settings (from [`super::DinmHyperParams`] and the named options).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct OptimizeSettings {
    /// Adam learning rate.
    pub lr: f64,
    /// Adam weight decay.
    pub weight_decay: f64,
    /// Most optimisation steps.
    pub num_steps: usize,
    /// Loss weight, applied as `weighting` says.
    pub kl_factor: f64,
    /// Clamp to `W0 ± eps` after every step.
    pub norm_constraint: Option<f64>,
    /// Which term `kl_factor` scales.
    pub weighting: LossWeighting,
    /// Whether the KL term carries gradients.
    pub kl_gradient: KlGradient,
    /// Stop before the update once the loss falls below this (the reference uses 1e-4).
    pub early_stop_loss: f64,
}

/// The losses of one optimisation step, before its update.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct StepLoss {
    /// The combined loss.
    pub loss: f64,
    /// Mean negative log-likelihood of the safe target.
    pub nll: f64,
    /// Mean KL divergence from the pre-edit to the post-edit distribution over the constraint answer span.
    pub kl: f64,
}

/// What [`optimize_tensor`] leaves behind.
#[derive(Debug)]
pub struct TrainedTensor {
    /// The losses of every step taken.
    pub steps: Vec<StepLoss>,
    /// The fp32 master copy after the last step.
    pub edited: Tensor,
    /// The tensor before the edit, in fp32.
    pub original: Tensor,
    /// Wall time of the optimisation, in seconds.
    pub seconds: f64,
}

/// Tunes the parameter `tensor_name` of `model` with DINM's objective and leaves the edited value in the model
/// (cast to the model's dtype). The master copy and Adam's state are fp32 whatever the model dtype.
pub fn optimize_tensor(
    model: &mut CausalLm,
    tensor_name: &str,
    tokens: &DinmTokens,
    settings: &OptimizeSettings,
) -> Result<TrainedTensor> {
    let start = Instant::now();
    let device = model.device();
    let kind = model.kind();
    // `NLL + 0 * KL` is plain fine-tuning (FT-L): the constraint is not evaluated at all.
    let uses_kl = !(settings.weighting == LossWeighting::Paper && settings.kl_factor == 0.0);
    check_tokens(tokens, uses_kl)?;
    let ids = |v: &[i64]| -> Result<Tensor> {
        Tensor::from_slice(v)
            .f_unsqueeze(0)
            .map_err(torch("input ids"))?
            .f_to_device(device)
            .map_err(torch("input ids"))
    };
    let edit_ids = ids(&tokens.edit_input)?;
    let constraint_ids = ids(&tokens.constraint_input)?;
    let labels = ids(&tokens.target)?;
    let answer_len = tokens.constraint_answer_len as i64;

    let base_logp = if uses_kl {
        let _guard = tch::no_grad_guard();
        Some(answer_log_probs(model, &constraint_ids, answer_len)?)
    } else {
        None
    };

    // The master copy lives with the parameter, which may be on another device than the inputs.
    let weight_device = model.parameter_device(tensor_name)?;
    let original = model
        .parameter(tensor_name)?
        .f_detach()
        .map_err(torch("reading the edited tensor"))?
        .f_to_device_(weight_device, Kind::Float, false, true)
        .map_err(torch("fp32 master copy"))?;
    let mut master = original
        .f_to_device_(weight_device, Kind::Float, false, true)
        .map_err(torch("fp32 master copy"))?
        .f_set_requires_grad(true)
        .map_err(torch("requires_grad"))?;
    let mut adam = Adam::new(&master, settings.lr, settings.weight_decay)?;
    let bounds = match settings.norm_constraint {
        Some(eps) => Some((
            original.f_sub_scalar(eps).map_err(torch("norm constraint"))?,
            original.f_add_scalar(eps).map_err(torch("norm constraint"))?,
        )),
        None => None,
    };

    let mut steps = Vec::with_capacity(settings.num_steps);
    for _ in 0..settings.num_steps {
        let working = master.f_to_kind(kind).map_err(torch("casting the master copy"))?;
        drop(model.replace_parameter(tensor_name, working)?);
        let nll = target_nll(model, &edit_ids, &labels, tokens.target_ignore_id)?;
        let kl = match &base_logp {
            Some(base_logp) => {
                let post_logp = match settings.kl_gradient {
                    KlGradient::Detached => {
                        let _guard = tch::no_grad_guard();
                        answer_log_probs(model, &constraint_ids, answer_len)?
                    }
                    KlGradient::Differentiable => {
                        answer_log_probs(model, &constraint_ids, answer_len)?
                    }
                };
                kl_divergence(base_logp, &post_logp)?
            }
            None => Tensor::f_zeros([], (Kind::Float, device)).map_err(torch("zero KL"))?,
        };
        let loss = match settings.weighting {
            LossWeighting::Reference => {
                nll.f_mul_scalar(settings.kl_factor).map_err(torch("loss"))?.f_add(&kl)
            }
            LossWeighting::Paper => {
                nll.f_add(&kl.f_mul_scalar(settings.kl_factor).map_err(torch("loss"))?)
            }
        }
        .map_err(torch("loss"))?;
        let value = |t: &Tensor| t.f_double_value(&[]).map_err(torch("reading a loss"));
        let step = StepLoss { loss: value(&loss)?, nll: value(&nll)?, kl: value(&kl)? };
        steps.push(step);
        if !step.loss.is_finite() {
            return Err(EditError::InvalidRequest(format!(
                "the loss became {} at step {}",
                step.loss,
                steps.len()
            )));
        }
        if step.loss < settings.early_stop_loss {
            break;
        }
        loss.f_backward().map_err(torch("backward"))?;
        let grad = master.grad();
        if !grad.defined() {
            return Err(EditError::InvalidRequest(format!("no gradient reached `{tensor_name}`")));
        }
        adam.step(&mut master, &grad)?;
        master.zero_grad();
        if let Some((lo, hi)) = &bounds {
            let _guard = tch::no_grad_guard();
            let _ = master.f_clamp_tensor_(Some(lo), Some(hi)).map_err(torch("norm constraint"))?;
        }
    }
    let edited = master.f_detach().map_err(torch("detaching the master copy"))?;
    let final_value =
        edited.f_to_device_(weight_device, kind, false, true).map_err(torch("casting the edit"))?;
    drop(model.replace_parameter(tensor_name, final_value)?);
    Ok(TrainedTensor { steps, edited, original, seconds: start.elapsed().as_secs_f64() })
}

/// Mean over the answer positions of `KL(base || post)`, the reference's
/// `(p_base * (log p_base - log p_post)).sum(-1).mean()`.
///
/// # Shapes
/// Both `[1, answer_len, vocab]` fp32 log-probabilities; returns a scalar.
fn kl_divergence(base_logp: &Tensor, post_logp: &Tensor) -> Result<Tensor> {
    base_logp
        .f_exp()
        .map_err(torch("KL"))?
        .f_mul(&base_logp.f_sub(post_logp).map_err(torch("KL"))?)
        .map_err(torch("KL"))?
        .f_sum_dim_intlist(-1, false, Kind::Float)
        .map_err(torch("KL"))?
        .f_mean(Kind::Float)
        .map_err(torch("KL"))
}

fn check_tokens(tokens: &DinmTokens, uses_kl: bool) -> Result<()> {
    if tokens.target.is_empty() {
        return Err(EditError::InvalidRequest("the safe target has no tokens".into()));
    }
    if uses_kl && tokens.constraint_answer_len == 0 {
        return Err(EditError::InvalidRequest("the constraint answer has no tokens".into()));
    }
    if tokens.target.len() >= tokens.edit_input.len() {
        return Err(EditError::InvalidRequest(format!(
            "the target ({} tokens) must be shorter than the edit input ({} tokens)",
            tokens.target.len(),
            tokens.edit_input.len()
        )));
    }
    if tokens.constraint_answer_len > tokens.constraint_input.len() {
        return Err(EditError::InvalidRequest(
            "the constraint answer is longer than the constraint input".into(),
        ));
    }
    Ok(())
}

/// Mean negative log-likelihood of `labels` as the last predictions of `input`: the reference's
/// `logits[:, :-1][:, -len(labels):]`.
///
/// # Shapes
/// `input`: `[1, seq]`, `labels`: `[1, t]` with `t < seq`; returns a scalar fp32.
fn target_nll(
    model: &CausalLm,
    input: &Tensor,
    labels: &Tensor,
    ignore: Option<i64>,
) -> Result<Tensor> {
    let logits = model.forward(input, &ForwardOptions::default())?.logits;
    let seq = logits.size()[1];
    let t = labels.size()[1];
    let pred = logits.f_narrow(1, seq - 1 - t, t).map_err(torch("prediction window"))?;
    let logp = pred.f_log_softmax(-1, Kind::Float).map_err(torch("log-softmax"))?;
    let picked = logp
        .f_gather(-1, &labels.f_unsqueeze(-1).map_err(torch("labels"))?, false)
        .map_err(torch("gather"))?
        .f_squeeze_dim(-1)
        .map_err(torch("gather"))?;
    let scored = match ignore {
        Some(id) => labels
            .f_ne(id)
            .map_err(torch("label mask"))?
            .f_to_kind(Kind::Float)
            .map_err(torch("label mask"))?,
        None => Tensor::f_ones_like(&picked).map_err(torch("label mask"))?,
    };
    let total = picked
        .f_mul(&scored)
        .map_err(torch("masking"))?
        .f_sum(Kind::Float)
        .map_err(torch("sum"))?;
    let count = scored.f_sum(Kind::Float).map_err(torch("count"))?;
    total.f_div(&count).map_err(torch("mean"))?.f_neg().map_err(torch("negation"))
}

/// Log-probabilities over the last `answer_len` positions of `input`.
///
/// # Shapes
/// `input`: `[1, seq]`; returns `[1, answer_len, vocab]` fp32.
fn answer_log_probs(model: &CausalLm, input: &Tensor, answer_len: i64) -> Result<Tensor> {
    let logits = model.forward(input, &ForwardOptions::default())?.logits;
    let seq = logits.size()[1];
    logits
        .f_narrow(1, seq - answer_len, answer_len)
        .map_err(torch("answer window"))?
        .f_log_softmax(-1, Kind::Float)
        .map_err(torch("log-softmax"))
}

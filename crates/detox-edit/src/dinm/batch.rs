//! Independent DINM edits of the same tensor for several records at once.
//!
//! Each record gets its own copy of the tensor (the model holds a `[records, out, in]` stack, one weight per
//! batch row), its own Adam moments and its own early stop. Because a row's loss depends only on its own weight
//! and Adam is element-wise, the result equals running the records one at a time, up to floating-point
//! reassociation in the batched matrix products.

use std::time::Instant;

use detox_runtime::{CausalLm, ForwardOptions, PositionIds};
use tch::{Device, Kind, Tensor};

use super::optimize::{DinmTokens, OptimizeSettings, StepLoss, TrainedTensor};
use super::options::{KlGradient, LossWeighting};
use crate::adam::Adam;
use crate::error::{torch, EditError, Result};

/// A left-padded batch with, per row, the positions whose values are scored.
struct ScoredBatch {
    ids: Tensor,
    mask: Tensor,
    /// `[rows, seq]` int64: the label to score at each position (next-token targets), or -1.
    labels: Tensor,
}

/// Left-pads `rows` and marks the last `scored[i].len()` positions of row `i` (shifted by `shift`, 1 for next-token
/// prediction) with the labels `scored[i]`.
fn scored_batch(
    rows: &[&[i64]],
    scored: &[Vec<i64>],
    shift: usize,
    device: Device,
) -> Result<ScoredBatch> {
    let width = rows.iter().map(|r| r.len()).max().unwrap_or(0);
    let n = rows.len();
    let mut ids = vec![0i64; n * width];
    let mut mask = vec![0i64; n * width];
    let mut labels = vec![-1i64; n * width];
    for (i, (row, marks)) in rows.iter().zip(scored).enumerate() {
        let offset = width - row.len();
        ids[i * width + offset..(i + 1) * width].copy_from_slice(row);
        mask[i * width + offset..(i + 1) * width].iter_mut().for_each(|m| *m = 1);
        let end = width - shift;
        let start = end.checked_sub(marks.len()).ok_or_else(|| {
            EditError::InvalidRequest(format!(
                "row {i}: {} scored tokens in a {}-token input",
                marks.len(),
                row.len()
            ))
        })?;
        labels[i * width + start..i * width + end].copy_from_slice(marks);
    }
    let shape = [n as i64, width as i64];
    let tensor = |v: &[i64]| -> Result<Tensor> {
        Tensor::from_slice(v)
            .f_view(shape)
            .map_err(torch("batch"))?
            .f_to_device(device)
            .map_err(torch("batch"))
    };
    Ok(ScoredBatch { ids: tensor(&ids)?, mask: tensor(&mask)?, labels: tensor(&labels)? })
}

/// Log-probabilities of every position of a batch.
///
/// # Shapes
/// Returns `[rows, seq, vocab]` fp32.
fn log_probs(model: &CausalLm, batch: &ScoredBatch) -> Result<Tensor> {
    let options = ForwardOptions {
        attention_mask: Some(&batch.mask),
        position_ids: PositionIds::FromMask,
        ..Default::default()
    };
    model
        .forward(&batch.ids, &options)?
        .logits
        .f_log_softmax(-1, Kind::Float)
        .map_err(torch("log-softmax"))
}

/// Per-row mean over scored positions of `values` `[rows, seq]`.
fn row_mean(values: &Tensor, scored: &Tensor) -> Result<Tensor> {
    let weights = scored.f_to_kind(Kind::Float).map_err(torch("row mean"))?;
    let total = values
        .f_mul(&weights)
        .map_err(torch("row mean"))?
        .f_sum_dim_intlist(-1, false, Kind::Float)
        .map_err(torch("row mean"))?;
    total
        .f_div(&weights.f_sum_dim_intlist(-1, false, Kind::Float).map_err(torch("row mean"))?)
        .map_err(torch("row mean"))
}

/// An upper estimate of the device bytes one more record adds to [`optimize_batch`] on `config`'s model in
/// `kind`, for edit inputs of up to `seq` tokens: the record's fp32 master copy, gradient and two Adam moments
/// of the `intermediate × hidden` weight, its working copy in `kind`, and the activations its rows keep for the
/// backward pass through every layer, with fp32 log-probabilities over the vocabulary for the edit input and
/// the constraint.
pub fn memory_per_record(config: &detox_runtime::Config, kind: Kind, seq: usize) -> u64 {
    let elt = kind.elt_size_in_bytes() as u64;
    let weight = (config.hidden_size * config.intermediate_size) as u64;
    let states = weight * (4 * 4 + elt);
    let per_token_layer = (6 * config.hidden_size + 3 * config.intermediate_size) as u64 * elt;
    let activations = seq as u64 * config.num_hidden_layers as u64 * per_token_layer;
    let log_probs = 2 * seq as u64 * config.vocab_size as u64 * 4;
    states + activations + log_probs
}

/// Edits `tensor_name` for every entry of `tokens` at once; see the module documentation. The model is left
/// holding the stacked edited weights (`[records, out, in]`, model dtype), so that a batched generation can use
/// them; restore it from a snapshot taken before.
pub fn optimize_batch(
    model: &mut CausalLm,
    tensor_name: &str,
    tokens: &[DinmTokens],
    settings: &OptimizeSettings,
) -> Result<Vec<TrainedTensor>> {
    let start = Instant::now();
    let device = model.device();
    let kind = model.kind();
    let rows = tokens.len() as i64;
    if rows == 0 {
        return Ok(Vec::new());
    }
    let uses_kl = !(settings.weighting == LossWeighting::Paper && settings.kl_factor == 0.0);

    // Next-token labels: the logit at position p predicts token p + 1, so the scored positions are shifted by one.
    let targets: Vec<Vec<i64>> = tokens
        .iter()
        .map(|t| {
            t.target
                .iter()
                .map(|&id| if Some(id) == t.target_ignore_id { -1 } else { id })
                .collect()
        })
        .collect();
    let edit_rows: Vec<&[i64]> = tokens.iter().map(|t| t.edit_input.as_slice()).collect();
    let edit = scored_batch(&edit_rows, &targets, 1, device)?;
    let scored_edit = edit.labels.f_ge(0).map_err(torch("labels"))?;
    let gather_edit = edit
        .labels
        .f_clamp_min(0)
        .map_err(torch("labels"))?
        .f_unsqueeze(-1)
        .map_err(torch("labels"))?;

    let constraint = if uses_kl {
        let answers: Vec<Vec<i64>> =
            tokens.iter().map(|t| vec![0; t.constraint_answer_len]).collect();
        let rows: Vec<&[i64]> = tokens.iter().map(|t| t.constraint_input.as_slice()).collect();
        let batch = scored_batch(&rows, &answers, 0, device)?;
        let scored = batch.labels.f_ge(0).map_err(torch("answer span"))?;
        let base = {
            let _guard = tch::no_grad_guard();
            log_probs(model, &batch)?
        };
        Some((batch, scored, base))
    } else {
        None
    };

    // The master copies live with the parameter, which may be on another device than the inputs.
    let weight_device = model.parameter_device(tensor_name)?;
    let original = model
        .parameter(tensor_name)?
        .f_detach()
        .map_err(torch("reading the edited tensor"))?
        .f_to_device_(weight_device, Kind::Float, false, true)
        .map_err(torch("fp32 master copy"))?;
    if original.dim() != 2 {
        return Err(EditError::InvalidRequest(format!(
            "`{tensor_name}` already holds per-row weights"
        )));
    }
    let mut master = original
        .f_unsqueeze(0)
        .map_err(torch("stacking"))?
        .f_repeat([rows, 1, 1])
        .map_err(torch("stacking"))?
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

    let mut active = vec![true; tokens.len()];
    let mut steps: Vec<Vec<StepLoss>> = vec![Vec::new(); tokens.len()];
    for _ in 0..settings.num_steps {
        let working = master.f_to_kind(kind).map_err(torch("casting the master copy"))?;
        drop(model.replace_parameter(tensor_name, working)?);
        let logp = log_probs(model, &edit)?;
        let seq = logp.size()[1];
        let picked = logp
            .f_narrow(1, 0, seq - 1)
            .map_err(torch("shift"))?
            .f_gather(-1, &gather_edit.f_narrow(1, 0, seq - 1).map_err(torch("shift"))?, false)
            .map_err(torch("gather"))?
            .f_squeeze_dim(-1)
            .map_err(torch("gather"))?;
        let nll = row_mean(&picked, &scored_edit.f_narrow(1, 0, seq - 1).map_err(torch("shift"))?)?
            .f_neg()
            .map_err(torch("nll"))?;
        let kl = match &constraint {
            Some((batch, scored, base)) => {
                let post = match settings.kl_gradient {
                    KlGradient::Detached => {
                        let _guard = tch::no_grad_guard();
                        log_probs(model, batch)?
                    }
                    KlGradient::Differentiable => log_probs(model, batch)?,
                };
                let per_position = base
                    .f_exp()
                    .map_err(torch("KL"))?
                    .f_mul(&base.f_sub(&post).map_err(torch("KL"))?)
                    .map_err(torch("KL"))?
                    .f_sum_dim_intlist(-1, false, Kind::Float)
                    .map_err(torch("KL"))?;
                row_mean(&per_position, scored)?
            }
            None => Tensor::f_zeros([rows], (Kind::Float, device)).map_err(torch("zero KL"))?,
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
        let read = |t: &Tensor| {
            Vec::<f64>::try_from(
                t.f_to_kind(Kind::Double)
                    .map_err(torch("losses"))?
                    .f_to_device(Device::Cpu)
                    .map_err(torch("losses"))?,
            )
            .map_err(torch("losses"))
        };
        let (losses, nlls, kls) = (read(&loss)?, read(&nll)?, read(&kl)?);
        for i in 0..tokens.len() {
            if !active[i] {
                continue;
            }
            steps[i].push(StepLoss { loss: losses[i], nll: nlls[i], kl: kls[i] });
            if !losses[i].is_finite() {
                return Err(EditError::InvalidRequest(format!(
                    "record {i}: the loss became {}",
                    losses[i]
                )));
            }
            if losses[i] < settings.early_stop_loss {
                active[i] = false;
            }
        }
        if active.iter().all(|a| !a) {
            break;
        }
        let weights: Vec<f32> = active.iter().map(|&a| if a { 1.0 } else { 0.0 }).collect();
        let weights =
            Tensor::from_slice(&weights).f_to_device(device).map_err(torch("row weights"))?;
        loss.f_mul(&weights)
            .map_err(torch("loss"))?
            .f_sum(Kind::Float)
            .map_err(torch("loss"))?
            .f_backward()
            .map_err(torch("backward"))?;
        let grad = master.grad();
        if !grad.defined() {
            return Err(EditError::InvalidRequest(format!("no gradient reached `{tensor_name}`")));
        }
        if active.iter().all(|&a| a) {
            adam.step(&mut master, &grad)?;
        } else {
            let mask = weights
                .f_gt(0.5)
                .map_err(torch("row mask"))?
                .f_view([rows, 1, 1])
                .map_err(torch("row mask"))?
                .f_to_device(weight_device)
                .map_err(torch("row mask"))?;
            adam.step_rows(&mut master, &grad, &mask)?;
        }
        master.zero_grad();
        if let Some((lo, hi)) = &bounds {
            let _guard = tch::no_grad_guard();
            let _ = master.f_clamp_tensor_(Some(lo), Some(hi)).map_err(torch("norm constraint"))?;
        }
    }
    let edited = master.f_detach().map_err(torch("detaching"))?;
    drop(model.replace_parameter(
        tensor_name,
        edited.f_to_kind(kind).map_err(torch("casting the edits"))?,
    )?);
    let seconds = start.elapsed().as_secs_f64() / tokens.len() as f64;
    steps
        .into_iter()
        .enumerate()
        .map(|(i, steps)| {
            Ok(TrainedTensor {
                steps,
                edited: edited.f_get(i as i64).map_err(torch("row"))?,
                original: original.shallow_clone(),
                seconds,
            })
        })
        .collect()
}

//! The DINM optimisation loop, for one record or several records that edit the same tensor.
//!
//! Each record gets its own copy of the tensor (with several records the model holds a `[records, out, in]`
//! stack, one weight per batch row), its own Adam moments and its own early stop. Because a row's loss depends
//! only on its own weight and Adam is element-wise, the result equals running the records one at a time, up to
//! floating-point reassociation in the batched matrix products. One record is the plain case: an `[out, in]`
//! weight and an unpadded input, exactly the reference's single edit.

use std::time::Instant;

use detox_runtime::padding::{left_pad, LeftPadded};
use detox_runtime::{CausalLm, FrozenPrefix, LogitsSelection};
use tch::{Device, Kind, Tensor};

use super::optimize::{
    check_tokens, DinmTokens, EditPhases, OptimizeSettings, StepLoss, TrainedTensor,
};
use super::options::{EarlyStop, KlGradient, LossWeighting, StepForward};
use crate::adam::Adam;
use crate::error::{torch, EditError, Result};
use crate::precision::refuse_half;

/// A left-padded batch whose rows each score their last positions: the window is the last `window` positions
/// (shifted left by `shift`) that any row scores, and `labels` marks, per row, what each window position scores.
struct ScoredBatch {
    batch: LeftPadded,
    /// Positions scored by the longest-scoring row.
    window: i64,
    /// Positions between the window's end and the sequence's end (1 for next-token prediction).
    shift: i64,
    /// `[rows, window, 1]` int64: the label gathered at each window position (0 where nothing is scored).
    gather: Tensor,
    /// `[rows, window]` fp32: 1 where the position is scored.
    scored: Tensor,
    /// The pass below the edited tensor, computed once ([`StepForward::FromEditedTensor`]).
    prefix: Option<FrozenPrefix>,
}

impl ScoredBatch {
    /// Left-pads `rows`; row `i` scores the labels `marks[i]` (`-1`: not scored) at its last positions, `shift`
    /// positions before the end.
    fn new(rows: &[&[i64]], marks: &[Vec<i64>], shift: usize, device: Device) -> Result<Self> {
        let batch = left_pad(rows, 0, device)?;
        let window = marks.iter().map(Vec::len).max().unwrap_or(0);
        let mut labels = vec![-1i64; rows.len() * window];
        for (i, (row, marks)) in rows.iter().zip(marks).enumerate() {
            if marks.len() + shift > row.len() {
                return Err(EditError::InputLength {
                    what: format!(
                        "record {i}: {} scored tokens in a {}-token input",
                        marks.len(),
                        row.len()
                    ),
                });
            }
            labels[(i + 1) * window - marks.len()..(i + 1) * window].copy_from_slice(marks);
        }
        let labels = Tensor::from_slice(&labels)
            .f_view([rows.len() as i64, window as i64])
            .and_then(|t| t.f_to_device(device))
            .map_err(torch("labels"))?;
        let gather =
            labels.f_clamp_min(0).and_then(|t| t.f_unsqueeze(-1)).map_err(torch("labels"))?;
        let scored =
            labels.f_ge(0).and_then(|t| t.f_to_kind(Kind::Float)).map_err(torch("labels"))?;
        Ok(Self { batch, window: window as i64, shift: shift as i64, gather, scored, prefix: None })
    }

    /// Computes, without gradient, the pass up to the latest point `tensor_name` cannot reach, so that every
    /// later [`ScoredBatch::log_probs`] runs only from there.
    fn freeze_prefix(&mut self, model: &CausalLm, tensor_name: &str) -> Result<()> {
        if let Some(point) = model.resume_point_for(tensor_name) {
            let options = self.batch.forward_options();
            self.prefix = Some(model.forward_prefix(&self.batch.ids, &options, point)?);
        }
        Ok(())
    }

    /// The window's first position in the padded sequence.
    fn window_start(&self) -> i64 {
        self.batch.width as i64 - self.shift - self.window
    }

    /// Log-probabilities over the window: from the frozen prefix with logits at the window only when there is
    /// one, else the whole model with logits everywhere, narrowed afterwards (the reference's computation).
    ///
    /// # Shapes
    /// Returns `[rows, window, vocab]` fp32.
    fn log_probs(&self, model: &CausalLm, clock: &mut PhaseClock) -> Result<Tensor> {
        let logits = match &self.prefix {
            Some(prefix) => {
                // A window at the end of the rows is computed in the last layer for its own positions only.
                let start = self.window_start();
                let (from, selection) = if self.shift == 0 {
                    (start, LogitsSelection::All)
                } else {
                    (0, LogitsSelection::Window { start, len: self.window })
                };
                let last = model.resume_layers(prefix, from)?;
                clock.lap(Phase::Forward);
                model.output_logits(&last, selection)?
            }
            None => {
                let logits = model.forward(&self.batch.ids, &self.batch.forward_options())?.logits;
                clock.lap(Phase::Forward);
                logits
                    .f_narrow(1, self.window_start(), self.window)
                    .map_err(torch("prediction window"))?
            }
        };
        logits.f_log_softmax(-1, Kind::Float).map_err(torch("log-softmax"))
    }

    /// Per-row mean over the scored positions of `values` `[rows, window]`; returns `[rows]`.
    fn row_mean(&self, values: &Tensor) -> Result<Tensor> {
        let total = values
            .f_mul(&self.scored)
            .and_then(|t| t.f_sum_dim_intlist(-1, false, Kind::Float))
            .map_err(torch("row mean"))?;
        let count =
            self.scored.f_sum_dim_intlist(-1, false, Kind::Float).map_err(torch("row mean"))?;
        total.f_div(&count).map_err(torch("row mean"))
    }

    /// Mean negative log-likelihood of every row's labels; returns `[rows]` fp32.
    fn nll(&self, model: &CausalLm, clock: &mut PhaseClock) -> Result<Tensor> {
        let picked = self
            .log_probs(model, clock)?
            .f_gather(-1, &self.gather, false)
            .and_then(|t| t.f_squeeze_dim(-1))
            .map_err(torch("gather"))?;
        self.row_mean(&picked)?.f_neg().map_err(torch("nll"))
    }

    /// Per-row mean over the answer positions of `KL(base || post)`, the reference's
    /// `(p_base * (log p_base - log p_post)).sum(-1).mean()`; both `[rows, window, vocab]`, returns `[rows]`.
    fn kl(&self, base: &Tensor, post: &Tensor) -> Result<Tensor> {
        let per_position = base
            .f_exp()
            .and_then(|p| p.f_mul(&base.f_sub(post)?))
            .and_then(|t| t.f_sum_dim_intlist(-1, false, Kind::Float))
            .map_err(torch("KL"))?;
        self.row_mean(&per_position)
    }
}

/// The phases of an optimisation step, as [`EditPhases`] reports them.
#[derive(Debug, Clone, Copy)]
enum Phase {
    Prefix,
    Forward,
    Logits,
    Backward,
    Optimizer,
}

/// Attributes the wall time since the previous lap to a phase, synchronising the device first when asked.
struct PhaseClock {
    device: Device,
    synchronised: bool,
    last: Instant,
    phases: EditPhases,
}

impl PhaseClock {
    fn new(device: Device, synchronised: bool) -> Self {
        Self { device, synchronised, last: Instant::now(), phases: EditPhases::default() }
    }

    fn lap(&mut self, phase: Phase) {
        if self.synchronised {
            detox_runtime::backend::synchronize(self.device);
        }
        let now = Instant::now();
        let seconds = now.duration_since(self.last).as_secs_f64();
        self.last = now;
        let slot = match phase {
            Phase::Prefix => &mut self.phases.prefix,
            Phase::Forward => &mut self.phases.forward,
            Phase::Logits => &mut self.phases.logits,
            Phase::Backward => &mut self.phases.backward,
            Phase::Optimizer => &mut self.phases.optimizer,
        };
        *slot += seconds;
    }
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
/// holding the edited weights in its dtype: the stack `[records, out, in]` for several records (so that a batched
/// generation can use them; restore it from a snapshot taken before), the plain `[out, in]` weight for one.
pub fn optimize_batch(
    model: &mut CausalLm,
    tensor_name: &str,
    tokens: &[DinmTokens],
    settings: &OptimizeSettings,
) -> Result<Vec<TrainedTensor>> {
    refuse_half(model, "the DINM optimisation")?;
    let start = Instant::now();
    let device = model.device();
    let kind = model.kind();
    let rows = tokens.len() as i64;
    if rows == 0 {
        return Ok(Vec::new());
    }
    // `NLL + 0 * KL` is plain fine-tuning (FT-L): the constraint is not evaluated at all.
    let uses_kl = !(settings.weighting == LossWeighting::Paper && settings.kl_factor == 0.0);
    for (i, t) in tokens.iter().enumerate() {
        check_tokens(t, uses_kl).map_err(|e| match e {
            e if rows > 1 => EditError::Record { what: "record", index: i, source: Box::new(e) },
            other => other,
        })?;
    }

    // Next-token labels: the logit at position p predicts token p + 1, so the scored window ends one early.
    let targets: Vec<Vec<i64>> = tokens
        .iter()
        .map(|t| {
            t.target
                .iter()
                .map(|&id| if Some(id) == t.target_ignore_id { -1 } else { id })
                .collect()
        })
        .collect();
    let mut clock = PhaseClock::new(device, settings.synchronised_phases);
    let from_edited = settings.step_forward == StepForward::FromEditedTensor;
    let edit = if from_edited {
        // The last token predicts nothing scored, and under causal attention no other position sees it: the
        // rows end one token early and the window reaches their end.
        let rows: Vec<&[i64]> =
            tokens.iter().map(|t| &t.edit_input[..t.edit_input.len() - 1]).collect();
        let mut batch = ScoredBatch::new(&rows, &targets, 0, device)?;
        batch.freeze_prefix(model, tensor_name)?;
        batch
    } else {
        let rows: Vec<&[i64]> = tokens.iter().map(|t| t.edit_input.as_slice()).collect();
        ScoredBatch::new(&rows, &targets, 1, device)?
    };
    let mut constraint = if uses_kl {
        let answers: Vec<Vec<i64>> =
            tokens.iter().map(|t| vec![0; t.constraint_answer_len]).collect();
        let rows: Vec<&[i64]> = tokens.iter().map(|t| t.constraint_input.as_slice()).collect();
        let mut batch = ScoredBatch::new(&rows, &answers, 0, device)?;
        if from_edited {
            batch.freeze_prefix(model, tensor_name)?;
        }
        // At the first step the edited tensor still holds its original value, so the first step's constraint
        // distribution is the pre-edit one: the path from the edited tensor takes it from there instead of
        // running the constraint once more. The whole-model path computes it first, as the reference does.
        let base = if from_edited {
            None
        } else {
            let _guard = tch::no_grad_guard();
            // Counted as part of the once-per-edit prefix, not as a step's forward.
            Some(batch.log_probs(model, &mut PhaseClock::new(device, false))?)
        };
        Some((batch, base))
    } else {
        None
    };
    clock.lap(Phase::Prefix);

    // The master copies live with the parameter, which may be on another device than the inputs.
    let weight_device = model.parameter_device(tensor_name)?;
    let original = model
        .parameter(tensor_name)?
        .f_detach()
        .map_err(torch("reading the edited tensor"))?
        .f_to_device_(weight_device, Kind::Float, false, true)
        .map_err(torch("fp32 master copy"))?;
    if original.dim() != 2 {
        return Err(EditError::ShapeMismatch {
            what: format!("`{tensor_name}` (it already holds per-row weights)"),
            expected: "[out, in]".into(),
            got: original.size(),
        });
    }
    let stacked = rows > 1;
    let master = if stacked {
        original.f_unsqueeze(0).and_then(|t| t.f_repeat([rows, 1, 1]))
    } else {
        original.f_to_device_(weight_device, Kind::Float, false, true)
    };
    let mut master = master
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

    let mut active = vec![true; tokens.len()];
    let mut steps: Vec<Vec<StepLoss>> = vec![Vec::new(); tokens.len()];
    for step in 1..=settings.num_steps {
        let working = master.f_to_kind(kind).map_err(torch("casting the master copy"))?;
        drop(model.replace_parameter(tensor_name, working)?);
        clock.lap(Phase::Optimizer);
        let nll = edit.nll(model, &mut clock)?;
        clock.lap(Phase::Logits);
        let kl = match &mut constraint {
            Some((batch, base)) => {
                let post = match settings.kl_gradient {
                    KlGradient::Detached => {
                        let _guard = tch::no_grad_guard();
                        batch.log_probs(model, &mut clock)?
                    }
                    KlGradient::Differentiable => batch.log_probs(model, &mut clock)?,
                };
                let base = match base {
                    Some(base) => base,
                    None => base.insert(post.f_detach().map_err(torch("pre-edit distribution"))?),
                };
                batch.kl(base, &post)?
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
        // The step's only host synchronisation: every row's three losses in one read.
        let values = Vec::<f64>::try_from(
            Tensor::f_stack(&[loss.detach(), nll.detach(), kl.detach()], 0)
                .and_then(|t| t.f_to_device(Device::Cpu))
                .and_then(|t| t.f_to_kind(Kind::Double))
                .and_then(|t| t.f_flatten(0, -1))
                .map_err(torch("reading the losses"))?,
        )
        .map_err(torch("reading the losses"))?;
        clock.lap(Phase::Logits);
        let (losses, rest) = values.split_at(tokens.len());
        let (nlls, kls) = rest.split_at(tokens.len());
        for i in 0..tokens.len() {
            if !active[i] {
                continue;
            }
            steps[i].push(StepLoss { loss: losses[i], nll: nlls[i], kl: kls[i] });
            if !losses[i].is_finite() {
                let context = if stacked { format!("record {i}: ") } else { String::new() };
                return Err(EditError::NonFiniteLoss { context, step, value: losses[i] });
            }
            let threshold = match settings.early_stop {
                EarlyStop::Absolute => settings.early_stop_loss,
                EarlyStop::RelativeToFirstStep => settings.early_stop_loss * steps[i][0].loss,
            };
            if losses[i] < threshold {
                active[i] = false;
            }
        }
        if active.iter().all(|a| !a) {
            break;
        }
        let all_active = active.iter().all(|&a| a);
        // Rows that stopped early contribute no gradient and keep their weight and moments.
        let row_weights = if all_active {
            None
        } else {
            let weights: Vec<f32> = active.iter().map(|&a| if a { 1.0 } else { 0.0 }).collect();
            Some(Tensor::from_slice(&weights).f_to_device(device).map_err(torch("row weights"))?)
        };
        match &row_weights {
            Some(w) => loss.f_mul(w).and_then(|l| l.f_sum(Kind::Float)),
            None => loss.f_sum(Kind::Float),
        }
        .and_then(|l| l.f_backward())
        .map_err(torch("backward"))?;
        clock.lap(Phase::Backward);
        let grad = master.grad();
        if !grad.defined() {
            return Err(EditError::NoGradient { tensor: tensor_name.to_string() });
        }
        match &row_weights {
            None => adam.step(&mut master, &grad)?,
            Some(w) => {
                let mask = w
                    .f_gt(0.5)
                    .and_then(|m| m.f_view([rows, 1, 1]))
                    .and_then(|m| m.f_to_device(weight_device))
                    .map_err(torch("row mask"))?;
                adam.step_rows(&mut master, &grad, &mask)?;
            }
        }
        master.zero_grad();
        if let Some((lo, hi)) = &bounds {
            let _guard = tch::no_grad_guard();
            let _ = master.f_clamp_tensor_(Some(lo), Some(hi)).map_err(torch("norm constraint"))?;
        }
    }
    clock.lap(Phase::Optimizer);
    let phases = clock.phases;
    let edited = master.f_detach().map_err(torch("detaching the master copy"))?;
    let final_value = edited
        .f_to_device_(weight_device, kind, false, true)
        .map_err(torch("casting the edits"))?;
    drop(model.replace_parameter(tensor_name, final_value)?);
    let seconds = start.elapsed().as_secs_f64() / tokens.len() as f64;
    steps
        .into_iter()
        .enumerate()
        .map(|(i, steps)| {
            let edited = if stacked {
                edited.f_get(i as i64).map_err(torch("row"))?
            } else {
                edited.shallow_clone()
            };
            Ok(TrainedTensor { steps, edited, original: original.shallow_clone(), seconds, phases })
        })
        .collect()
}

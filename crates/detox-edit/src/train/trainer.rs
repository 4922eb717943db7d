//! The training loop shared by SFT, DPO and Ext-Sub's modules: seeded epochs, Adam, checkpoints that a
//! restarted run resumes from exactly, and progress reports.

use std::path::{Path, PathBuf};
use std::time::Instant;

use detox_runtime::{CausalLm, PromptLayout};
use safeedit::SplitMix64;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tch::{Kind, Tensor};

use super::adapter::{target_parameters, AdapterKind, Adapters};
use super::checkpoint::{self, hash_ids};
use super::data::{encode_pairs, EncodedPair, PreferencePair};
use super::objective::{dpo_loss, dpo_margin, response_log_probs, sft_loss, vector};
use crate::adam::Adam;
use crate::editor::PromptEncoder;
use crate::error::{torch, EditError, Result};
use crate::precision::refuse_half;

/// Which response of each pair supervised fine-tuning learns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Side {
    /// The safe response (SFT; Ext-Sub's expert).
    Chosen,
    /// The unsafe response (Ext-Sub's anti-expert).
    Rejected,
}

/// What the run minimises.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "name", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Objective {
    /// Token-mean negative log-likelihood of one side's responses.
    Sft {
        /// The side learnt.
        side: Side,
    },
    /// Direct preference optimisation against the model as it was before training (the frozen reference).
    Dpo {
        /// The inverse temperature of the implicit reward.
        beta: f64,
    },
}

/// The settings of a training run. Presets: [`TrainConfig::sft`], [`TrainConfig::dpo`],
/// [`TrainConfig::expert`], [`TrainConfig::anti_expert`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainConfig {
    /// What is minimised.
    pub objective: Objective,
    /// Full parameters or LoRA.
    pub adapter: AdapterKind,
    /// The trained modules, by the last part of their parameter name (e.g. `q_proj`, `down_proj`).
    pub modules: Vec<String>,
    /// The trained layers; `None` is every layer.
    pub layers: Option<Vec<usize>>,
    /// Adam learning rate.
    pub lr: f64,
    /// Adam weight decay.
    pub weight_decay: f64,
    /// Passes over the training pairs.
    pub epochs: usize,
    /// Pairs per optimisation step.
    pub batch_size: usize,
    /// Most tokens of prompt + response; longer responses are cut.
    pub max_length: usize,
    /// How prompts are put before responses (written `format` by earlier versions).
    #[serde(alias = "format")]
    pub prompt_layout: PromptLayout,
    /// Seeds the data order and LoRA's initialisation.
    pub seed: u64,
    /// Steps between checkpoints (a checkpoint is also written when the run ends or stops).
    pub checkpoint_every: usize,
}

impl TrainConfig {
    /// SFT on the safe responses: LoRA rank 8 / alpha 16 on the attention query and value projections of every
    /// layer (PEFT's default targets for Llama-family models), lr 1e-4, 3 epochs, batch 4.
    pub fn sft() -> Self {
        Self {
            objective: Objective::Sft { side: Side::Chosen },
            adapter: AdapterKind::lora_default(),
            modules: vec!["q_proj".into(), "v_proj".into()],
            layers: None,
            lr: 1e-4,
            weight_decay: 0.0,
            epochs: 3,
            batch_size: 4,
            max_length: 512,
            prompt_layout: PromptLayout::ChatTemplate,
            seed: 0,
            checkpoint_every: 50,
        }
    }

    /// DPO with beta 0.1 (the value of the DPO paper's dialogue experiments) and lr 5e-5, otherwise as
    /// [`TrainConfig::sft`].
    pub fn dpo() -> Self {
        Self { objective: Objective::Dpo { beta: 0.1 }, lr: 5e-5, ..Self::sft() }
    }

    /// Ext-Sub's expert module: SFT on the safe responses.
    pub fn expert() -> Self {
        Self::sft()
    }

    /// Ext-Sub's anti-expert module: SFT on the unsafe responses, with the expert's adapter shape.
    pub fn anti_expert() -> Self {
        Self { objective: Objective::Sft { side: Side::Rejected }, ..Self::sft() }
    }

    fn check(&self) -> Result<()> {
        let bad =
            |reason: String| Err(EditError::InvalidConfig { method: "training".into(), reason });
        if self.modules.is_empty() {
            return bad("training needs at least one module".into());
        }
        if self.epochs == 0 || self.batch_size == 0 || self.checkpoint_every == 0 {
            return bad("epochs, batch_size and checkpoint_every must be at least 1".into());
        }
        if !self.lr.is_finite() || self.lr <= 0.0 {
            return bad(format!("lr must be positive, got {}", self.lr));
        }
        if let Objective::Dpo { beta } = self.objective {
            if !beta.is_finite() || beta <= 0.0 {
                return bad(format!("DPO's beta must be positive, got {beta}"));
            }
        }
        Ok(())
    }
}

/// The record of one optimisation step.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct TrainStep {
    /// 1-based step number.
    pub step: usize,
    /// 0-based epoch.
    pub epoch: usize,
    /// The loss before the update.
    pub loss: f64,
    /// DPO: the batch's mean log-ratio margin (reward margin / beta).
    pub margin: Option<f64>,
}

/// Where a run checkpoints and when it stops early.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Directory of the checkpoint; a run finding a checkpoint of the same configuration and data there
    /// resumes from it.
    pub checkpoint_dir: Option<PathBuf>,
    /// Stop (after checkpointing) once this many steps are done in total, e.g. to split a run over jobs.
    pub stop_after: Option<usize>,
}

impl RunOptions {
    /// Locks the checkpoint directory for one writer (see [`detox_io::DirLock`]); the lock lasts as long as the
    /// returned value.
    pub(crate) fn lock_checkpoint(&self) -> Result<Option<detox_io::DirLock>> {
        Ok(self.checkpoint_dir.as_deref().map(detox_io::DirLock::acquire).transpose()?)
    }
}

/// The result of [`train`].
#[derive(Debug)]
#[non_exhaustive]
pub struct TrainOutcome {
    /// The trained tensors.
    pub adapters: Adapters,
    /// Every step's record, resumed ones included.
    pub steps: Vec<TrainStep>,
    /// Whether every planned step ran (false when `stop_after` cut the run).
    pub completed: bool,
    /// The number of planned steps.
    pub planned_steps: usize,
    /// Wall time of this call, in seconds.
    pub seconds: f64,
}

/// Trains `config`'s modules of `model` on `pairs` and returns the trained tensors; `model` ends with its
/// original weights (the result is applied through [`Adapters::delta`]). `progress` sees every step with the
/// planned total.
pub fn train(
    model: &mut CausalLm,
    encoder: &dyn PromptEncoder,
    pairs: &[PreferencePair],
    config: &TrainConfig,
    run: &RunOptions,
    progress: &mut dyn FnMut(&TrainStep, usize),
) -> Result<TrainOutcome> {
    let started = Instant::now();
    refuse_half(model, "SFT/DPO training")?;
    let _lock = run.lock_checkpoint()?;
    config.check()?;
    if pairs.is_empty() {
        return Err(EditError::EmptyInput { what: "the training pairs".into() });
    }
    let encoded = encode_pairs(encoder, pairs, config.prompt_layout, config.max_length)?;
    let modules: Vec<&str> = config.modules.iter().map(String::as_str).collect();
    let targets = target_parameters(model, &modules, config.layers.as_deref())?;
    model.freeze_all()?;
    let mut adapters = Adapters::new(model, &targets, config.adapter, config.seed)?;
    let mut adams = adapters
        .tensors()
        .map(|t| Adam::new(t, config.lr, config.weight_decay))
        .collect::<Result<Vec<_>>>()?;
    let per_epoch = encoded.len().div_ceil(config.batch_size);
    let planned = per_epoch * config.epochs;
    let fingerprint = fingerprint(config, &encoded)?;

    let resumed = match &run.checkpoint_dir {
        Some(dir) => {
            let names = adapters.tensor_names();
            let tensors = names.into_iter().zip(adapters.tensors_mut()).collect();
            checkpoint::load(dir, &fingerprint, tensors, &mut adams)?
        }
        None => None,
    };
    let (mut step, mut history, reference) = match resumed {
        Some(r) => {
            let bad = |e: serde_json::Error| {
                EditError::State(format!("the checkpoint's state is malformed: {e}"))
            };
            let history: Vec<TrainStep> = serde_json::from_value(r.history).map_err(bad)?;
            let reference: Option<Vec<[f64; 2]>> = serde_json::from_value(r.extra).map_err(bad)?;
            (r.step, history, reference)
        }
        None => (0, Vec::new(), None),
    };
    let reference = match (config.objective, reference) {
        (Objective::Dpo { .. }, Some(r)) => Some(r),
        (Objective::Dpo { .. }, None) => {
            Some(reference_log_probs(model, &encoded, config.batch_size, encoder.pad_id())?)
        }
        _ => None,
    };

    let pad = encoder.pad_id();
    let mut order = (usize::MAX, Vec::new());
    let result = (|| -> Result<bool> {
        while step < planned {
            if run.stop_after.is_some_and(|n| step >= n) {
                return Ok(false);
            }
            let epoch = step / per_epoch;
            if order.0 != epoch {
                order = (epoch, epoch_order(config.seed, epoch, encoded.len()));
            }
            let first = (step % per_epoch) * config.batch_size;
            let batch: Vec<usize> =
                order.1[first..(first + config.batch_size).min(encoded.len())].to_vec();
            adapters.install(model)?;
            let (loss, margin) =
                batch_loss(model, &encoded, &batch, config, reference.as_deref(), pad)?;
            let value = loss.f_double_value(&[]).map_err(torch("reading the loss"))?;
            if !value.is_finite() {
                return Err(EditError::NonFiniteLoss {
                    context: "training: ".into(),
                    step: step + 1,
                    value,
                });
            }
            loss.f_backward().map_err(torch("backward"))?;
            for (t, adam) in adapters.tensors_mut().zip(adams.iter_mut()) {
                let grad = t.grad();
                if !grad.defined() {
                    return Err(EditError::NoGradient { tensor: "a trained tensor".into() });
                }
                adam.step(t, &grad)?;
                t.zero_grad();
            }
            step += 1;
            let record = TrainStep { step, epoch, loss: value, margin };
            history.push(record);
            progress(&record, planned);
            if step % config.checkpoint_every == 0 || step == planned {
                if let Some(dir) = &run.checkpoint_dir {
                    let r = reference.as_deref();
                    save_state(dir, &fingerprint, step, &history, r, &adapters, &adams)?;
                }
            }
        }
        Ok(true)
    })();
    adapters.uninstall(model)?;
    let completed = result?;
    if !completed {
        if let Some(dir) = &run.checkpoint_dir {
            let r = reference.as_deref();
            save_state(dir, &fingerprint, step, &history, r, &adapters, &adams)?;
        }
    }
    Ok(TrainOutcome {
        adapters,
        steps: history,
        completed,
        planned_steps: planned,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// The loss of one batch (and DPO's mean margin).
fn batch_loss(
    model: &CausalLm,
    encoded: &[EncodedPair],
    batch: &[usize],
    config: &TrainConfig,
    reference: Option<&[[f64; 2]]>,
    pad: i64,
) -> Result<(Tensor, Option<f64>)> {
    match config.objective {
        Objective::Sft { side } => {
            let rows: Vec<(&[i64], &[i64])> = batch
                .iter()
                .map(|&i| {
                    let e = &encoded[i];
                    let response = match side {
                        Side::Chosen => &e.chosen,
                        Side::Rejected => &e.rejected,
                    };
                    (e.prompt.as_slice(), response.as_slice())
                })
                .collect();
            Ok((sft_loss(&response_log_probs(model, &rows, pad)?)?, None))
        }
        Objective::Dpo { beta } => {
            let reference = reference.ok_or_else(|| {
                EditError::State("DPO needs the reference log-probabilities".into())
            })?;
            let mut rows: Vec<(&[i64], &[i64])> = Vec::with_capacity(2 * batch.len());
            rows.extend(batch.iter().map(|&i| (&encoded[i].prompt[..], &encoded[i].chosen[..])));
            rows.extend(batch.iter().map(|&i| (&encoded[i].prompt[..], &encoded[i].rejected[..])));
            let sums = response_log_probs(model, &rows, pad)?.sum;
            let n = batch.len() as i64;
            let chosen = sums.f_narrow(0, 0, n).map_err(torch("DPO split"))?;
            let rejected = sums.f_narrow(0, n, n).map_err(torch("DPO split"))?;
            let device = sums.device();
            let ref_chosen =
                vector(&batch.iter().map(|&i| reference[i][0]).collect::<Vec<_>>(), device)?;
            let ref_rejected =
                vector(&batch.iter().map(|&i| reference[i][1]).collect::<Vec<_>>(), device)?;
            let loss = dpo_loss(&chosen, &rejected, &ref_chosen, &ref_rejected, beta)?;
            let margin = {
                let _guard = tch::no_grad_guard();
                dpo_margin(&chosen, &rejected, &ref_chosen, &ref_rejected)?
                    .f_mean(Kind::Float)
                    .and_then(|m| m.f_double_value(&[]))
                    .map_err(torch("DPO margin"))?
            };
            Ok((loss, Some(margin)))
        }
    }
}

/// The frozen reference's `[log π_ref(chosen), log π_ref(rejected)]` per pair, from the untrained model.
fn reference_log_probs(
    model: &CausalLm,
    encoded: &[EncodedPair],
    batch_size: usize,
    pad: i64,
) -> Result<Vec<[f64; 2]>> {
    let _guard = tch::no_grad_guard();
    let mut out = Vec::with_capacity(encoded.len());
    for chunk in encoded.chunks(batch_size) {
        let mut rows: Vec<(&[i64], &[i64])> = Vec::with_capacity(2 * chunk.len());
        rows.extend(chunk.iter().map(|e| (&e.prompt[..], &e.chosen[..])));
        rows.extend(chunk.iter().map(|e| (&e.prompt[..], &e.rejected[..])));
        let sums = response_log_probs(model, &rows, pad)?.sum;
        let values: Vec<f64> = Vec::<f64>::try_from(
            sums.f_to_kind(Kind::Double).map_err(torch("reference log-probs"))?,
        )
        .map_err(torch("reference log-probs"))?;
        let n = chunk.len();
        out.extend((0..n).map(|i| [values[i], values[n + i]]));
    }
    Ok(out)
}

/// Epoch `epoch`'s order of `n` pairs: a Fisher-Yates shuffle seeded by the run's seed and the epoch, so that a
/// resumed run sees the same batches.
pub(crate) fn epoch_order(seed: u64, epoch: usize, n: usize) -> Vec<usize> {
    let mut rng = SplitMix64::new(seed ^ (epoch as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15));
    let mut order: Vec<usize> = (0..n).collect();
    for i in (1..n).rev() {
        let j = rng.below(i as u64 + 1) as usize;
        order.swap(i, j);
    }
    order
}

/// Identifies a run: its configuration and a hash of its token ids.
fn fingerprint(config: &TrainConfig, encoded: &[EncodedPair]) -> Result<String> {
    let hash = hash_ids(
        encoded
            .iter()
            .flat_map(|e| [e.prompt.as_slice(), e.chosen.as_slice(), e.rejected.as_slice()]),
    );
    let config = serde_json::to_string(config)
        .map_err(|e| EditError::State(format!("serialising the training configuration: {e}")))?;
    Ok(format!("{config} data:{hash:016x}"))
}

fn save_state(
    dir: &Path,
    fingerprint: &str,
    step: usize,
    history: &[TrainStep],
    reference: Option<&[[f64; 2]]>,
    adapters: &Adapters,
    adams: &[Adam],
) -> Result<()> {
    let names = adapters.tensor_names();
    let tensors: Vec<(String, &Tensor)> = names.into_iter().zip(adapters.tensors()).collect();
    let json = |v: serde_json::Result<Value>| {
        v.map_err(|e| EditError::State(format!("serialising the checkpoint: {e}")))
    };
    let history = json(serde_json::to_value(history))?;
    let extra = json(serde_json::to_value(reference))?;
    checkpoint::save(dir, fingerprint, step, history, extra, &tensors, adams)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epoch_orders_are_permutations_that_differ_by_epoch_and_repeat_by_seed() {
        let a = epoch_order(7, 0, 20);
        let mut sorted = a.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..20).collect::<Vec<_>>());
        assert_eq!(a, epoch_order(7, 0, 20));
        assert_ne!(a, epoch_order(7, 1, 20));
        assert_ne!(a, epoch_order(8, 0, 20));
    }

    #[test]
    fn invalid_configurations_are_refused() {
        let mut c = TrainConfig::dpo();
        c.objective = Objective::Dpo { beta: 0.0 };
        assert!(c.check().is_err());
        let c = TrainConfig { epochs: 0, ..TrainConfig::sft() };
        assert!(c.check().is_err());
        assert!(TrainConfig::anti_expert().check().is_ok());
    }
}

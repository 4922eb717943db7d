//! The behaviour probe: pooled hidden-state features of labelled texts and a 2-class linear head trained on them.

use detox_runtime::padding::left_pad;
use detox_runtime::{CausalLm, ForwardOptions, LogitsSelection};
use serde::{Deserialize, Serialize};
use tch::{Kind, Reduction, Tensor};

use crate::adam::Adam;
use crate::editor::PromptEncoder;
use crate::error::{torch, EditError, Result};
use crate::train::trainer::epoch_order;

/// A text the probe learns from, with its class.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LabelledText {
    /// The text, on its own (no prompt before it).
    pub text: String,
    /// Class 1 (toxic) or class 0 (non-toxic).
    pub toxic: bool,
    /// Where the text comes from (record and field), for error messages.
    pub origin: String,
}

/// Every record's safe response (class 0) and unsafe response (class 1), in record order: the probe's training
/// texts from a SafeEdit training split.
pub fn labelled_responses(records: &[safeedit::EditRequest]) -> Vec<LabelledText> {
    records
        .iter()
        .enumerate()
        .flat_map(|(i, r)| {
            [
                LabelledText {
                    text: r.target_new.clone(),
                    toxic: false,
                    origin: format!("record {i}, field `safe generation`"),
                },
                LabelledText {
                    text: r.ground_truth.clone(),
                    toxic: true,
                    origin: format!("record {i}, field `unsafe generation`"),
                },
            ]
        })
        .collect()
}

/// How the probe is fitted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProbeConfig {
    /// Adam learning rate (the authors' script: 1e-4).
    pub lr: f64,
    /// Passes over the training texts (the authors' `scripts/train.sh`: 20).
    pub epochs: usize,
    /// Texts per optimisation step (`scripts/train.sh`: 16).
    pub batch_size: usize,
    /// The share of texts held out to measure the probe (the authors' script holds out 10%): `int((1 - holdout) · n)`
    /// texts are trained on, as the script's `int(0.9 * len(full_dataset))`, the rest held out.
    pub holdout: f64,
    /// Most tokens per text; longer texts keep their first tokens.
    pub max_length: usize,
    /// Texts per forward pass when computing features.
    pub feature_batch: usize,
    /// Seeds the initialisation, the held-out choice and the data order.
    pub seed: u64,
}

impl Default for ProbeConfig {
    fn default() -> Self {
        Self {
            lr: 1e-4,
            epochs: 20,
            batch_size: 16,
            holdout: 0.1,
            max_length: 512,
            feature_batch: 8,
            seed: 0,
        }
    }
}

impl ProbeConfig {
    fn check(&self) -> Result<()> {
        let bad = |what: &str| {
            Err(EditError::InvalidConfig {
                method: "Model Surgery probe".into(),
                reason: what.into(),
            })
        };
        if !(self.lr.is_finite() && self.lr > 0.0) {
            return bad("`lr` must be a positive number");
        }
        if self.epochs == 0
            || self.batch_size == 0
            || self.max_length == 0
            || self.feature_batch == 0
        {
            return bad(
                "`epochs`, `batch_size`, `max_length` and `feature_batch` must be at least 1",
            );
        }
        if !(0.0..1.0).contains(&self.holdout) {
            return bad("`holdout` must be in [0, 1)");
        }
        Ok(())
    }
}

/// Each text's final-norm last-layer hidden state averaged over its tokens (the tokenizer's special prefix
/// included, padding excluded), in fp32 whatever the model's dtype: the features the probe reads.
///
/// # Shapes
/// Returns `[texts, hidden]` fp32 on the model's device.
pub fn probe_features(
    model: &CausalLm,
    encoder: &dyn PromptEncoder,
    texts: &[LabelledText],
    config: &ProbeConfig,
) -> Result<Tensor> {
    config.check()?;
    if texts.is_empty() {
        return Err(EditError::EmptyInput { what: "the probe's texts".into() });
    }
    let mut ids = Vec::with_capacity(texts.len());
    for t in texts {
        let mut row = encoder.encode(&t.text, true)?;
        row.truncate(config.max_length);
        if row.is_empty() {
            return Err(EditError::NoTokens { what: format!("probe text ({})", t.origin) });
        }
        ids.push(row);
    }
    let _guard = tch::no_grad_guard();
    let mut pooled = Vec::with_capacity(ids.len().div_ceil(config.feature_batch));
    for chunk in ids.chunks(config.feature_batch) {
        let batch = left_pad(chunk, encoder.pad_id(), model.device())?;
        let options = ForwardOptions {
            output_hidden_states: true,
            logits: LogitsSelection::Last,
            ..batch.forward_options()
        };
        let hidden = model.forward(&batch.ids, &options)?.hidden_states.unwrap_or_default();
        let last = hidden
            .last()
            .ok_or_else(|| EditError::State("the model returned no hidden states".into()))?;
        pooled.push(masked_mean(last, &batch.mask)?);
    }
    Tensor::f_cat(&pooled, 0).map_err(torch("probe features"))
}

/// The mean over positions where `mask` is 1, computed in fp32.
///
/// # Shapes
/// `hidden`: `[batch, seq, width]`; `mask`: `[batch, seq]` (any numeric dtype); returns `[batch, width]` fp32.
fn masked_mean(hidden: &Tensor, mask: &Tensor) -> Result<Tensor> {
    let e = |r: std::result::Result<Tensor, tch::TchError>| r.map_err(torch("pooling features"));
    let mask = e(e(mask.f_to_kind(Kind::Float))?.f_to_device(hidden.device()))?;
    let weighted = e(e(hidden.f_to_kind(Kind::Float))?.f_mul(&e(mask.f_unsqueeze(-1))?))?;
    let summed = e(weighted.f_sum_dim_intlist(1, false, Kind::Float))?;
    let counts = e(mask.f_sum_dim_intlist(1, true, Kind::Float))?;
    e(summed.f_div(&counts))
}

/// A 2-class linear head: `logits = features · weightᵀ + bias`, class 1 toxic.
#[derive(Debug)]
pub struct Probe {
    /// `[2, hidden]` fp32.
    pub weight: Tensor,
    /// `[2]` fp32.
    pub bias: Tensor,
}

impl Probe {
    /// The direction Model Surgery shifts rows along: the raw weight row of the toxic class, neither a
    /// difference of rows nor normalised (`modification/modify.py` reads `mlp.weight[1]`).
    ///
    /// # Shapes
    /// Returns `[hidden]` fp32.
    pub fn toxic_direction(&self) -> Result<Tensor> {
        self.weight.f_get(1).map_err(torch("probe direction"))
    }

    /// The class logits of `features`.
    ///
    /// # Shapes
    /// `features`: `[n, hidden]`; returns `[n, 2]` fp32.
    pub fn logits(&self, features: &Tensor) -> Result<Tensor> {
        let features = features
            .f_to_kind(Kind::Float)
            .and_then(|f| f.f_to_device(self.weight.device()))
            .map_err(torch("probe logits"))?;
        features.f_linear(&self.weight, Some(&self.bias)).map_err(torch("probe logits"))
    }

    /// The share of `features` whose predicted class is their label (`toxic[i]` for row `i`).
    ///
    /// # Shapes
    /// `features`: `[n, hidden]` with `n = toxic.len()`.
    pub fn accuracy(&self, features: &Tensor, toxic: &[bool]) -> Result<f64> {
        if toxic.is_empty() {
            return Err(EditError::EmptyInput {
                what: "the texts the probe's accuracy is measured on".into(),
            });
        }
        let predicted =
            self.logits(features)?.f_argmax(-1, false).map_err(torch("probe accuracy"))?;
        let predicted = Vec::<i64>::try_from(predicted).map_err(torch("probe accuracy"))?;
        let right = predicted.iter().zip(toxic).filter(|(p, &t)| (**p == 1) == t).count();
        Ok(right as f64 / toxic.len() as f64)
    }
}

/// One optimisation step of the probe.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ProbeStep {
    /// 1-based step.
    pub step: usize,
    /// 0-based epoch.
    pub epoch: usize,
    /// The batch's mean cross-entropy.
    pub loss: f64,
}

/// A fitted probe and how it did.
#[derive(Debug)]
pub struct ProbeFit {
    /// The probe.
    pub probe: Probe,
    /// Every step's loss.
    pub steps: Vec<ProbeStep>,
    /// The indices of the texts it was trained on (the others were held out).
    pub trained_on: Vec<usize>,
    /// Accuracy on the training texts.
    pub train_accuracy: f64,
    /// Accuracy on the held-out texts (`None` when none were held out).
    pub holdout_accuracy: Option<f64>,
}

/// How many of `n` texts are trained on: the authors' `train_size = int(0.9 * len(full_dataset))`
/// (`train/run_pplm_discrim_train.py` in github `lucywang720/model-surgery`), the training share times `n` in f64
/// truncated, so that the held-out count is the remainder (4 of 32, not `floor(0.1 · 32)` = 3). With the default
/// holdout `1.0 - 0.1` is the same f64 as Python's `0.9`, so the product and its truncation match bit for bit. At
/// least one text is trained on.
fn train_count(n: usize, holdout: f64) -> usize {
    (((1.0 - holdout) * n as f64) as usize).clamp(1, n.max(1))
}

/// Fits the probe on `features` (one row per text) with labels `toxic`: PyTorch's `nn.Linear` initialisation
/// (uniform in ±1/√hidden for weight and bias, drawn from `config.seed`), then Adam on the mean cross-entropy
/// of shuffled batches, the held-out share of texts (chosen by a seeded shuffle) never trained on.
///
/// # Shapes
/// `features`: `[n, hidden]` fp32 with `n = toxic.len()`.
pub fn train_probe(features: &Tensor, toxic: &[bool], config: &ProbeConfig) -> Result<ProbeFit> {
    config.check()?;
    let size = features.size();
    if size.len() != 2 || size[0] as usize != toxic.len() || toxic.is_empty() {
        return Err(EditError::ShapeMismatch {
            what: "the probe features".into(),
            expected: format!("[{}, hidden] (one row per label)", toxic.len()),
            got: size.clone(),
        });
    }
    if !toxic.iter().any(|&t| t) || toxic.iter().all(|&t| t) {
        return Err(EditError::InvalidConfig {
            method: "Model Surgery probe".into(),
            reason: "needs texts of both classes (safe and unsafe)".into(),
        });
    }
    let (n, hidden) = (toxic.len(), size[1]);
    let device = features.device();
    let e = |r: std::result::Result<Tensor, tch::TchError>| r.map_err(torch("probe training"));
    let features = e(features.f_to_kind(Kind::Float))?;

    // The held-out texts are the tail of a seeded shuffle that no training epoch uses.
    let shuffled = epoch_order(config.seed, usize::MAX, n);
    let train_count = train_count(n, config.holdout);
    let (trained_on, held_out) = shuffled.split_at(train_count);

    let mut rng = safeedit::SplitMix64::new(config.seed);
    let bound = 1.0 / (hidden as f64).sqrt();
    let mut uniform = |count: i64| -> Result<Tensor> {
        let values: Vec<f32> = (0..count)
            .map(|_| {
                let u = (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
                ((2.0 * u - 1.0) * bound) as f32
            })
            .collect();
        e(Tensor::from_slice(&values).f_to_device(device))
    };
    let mut weight = e(uniform(2 * hidden)?.f_view([2, hidden]))?.set_requires_grad(true);
    let mut bias = uniform(2)?.set_requires_grad(true);
    let mut adam_w = Adam::new(&weight, config.lr, 0.0)?;
    let mut adam_b = Adam::new(&bias, config.lr, 0.0)?;

    let mut steps = Vec::new();
    for epoch in 0..config.epochs {
        let order: Vec<usize> = epoch_order(config.seed, epoch, trained_on.len())
            .into_iter()
            .map(|i| trained_on[i])
            .collect();
        for batch in order.chunks(config.batch_size) {
            let index: Vec<i64> = batch.iter().map(|&i| i as i64).collect();
            let labels: Vec<i64> = batch.iter().map(|&i| i64::from(toxic[i])).collect();
            let index = e(Tensor::from_slice(&index).f_to_device(device))?;
            let labels = e(Tensor::from_slice(&labels).f_to_device(device))?;
            let x = e(features.f_index_select(0, &index))?;
            let loss = e(e(e(x.f_linear(&weight, Some(&bias)))?.f_log_softmax(-1, Kind::Float))?
                .f_nll_loss::<Tensor>(&labels, None, Reduction::Mean, -100))?;
            let value = loss.f_double_value(&[]).map_err(torch("probe loss"))?;
            if !value.is_finite() {
                return Err(EditError::NonFiniteLoss {
                    context: "the probe: ".into(),
                    step: steps.len() + 1,
                    value,
                });
            }
            loss.f_backward().map_err(torch("probe backward"))?;
            for (param, adam) in [(&mut weight, &mut adam_w), (&mut bias, &mut adam_b)] {
                let grad = param.grad();
                adam.step(param, &grad)?;
                param.zero_grad();
            }
            steps.push(ProbeStep { step: steps.len() + 1, epoch, loss: value });
        }
    }
    let probe = Probe { weight: e(weight.f_detach())?, bias: e(bias.f_detach())? };
    let subset = |rows: &[usize]| -> Result<(Tensor, Vec<bool>)> {
        let index: Vec<i64> = rows.iter().map(|&i| i as i64).collect();
        let index = e(Tensor::from_slice(&index).f_to_device(device))?;
        Ok((e(features.f_index_select(0, &index))?, rows.iter().map(|&i| toxic[i]).collect()))
    };
    let (x, y) = subset(trained_on)?;
    let train_accuracy = probe.accuracy(&x, &y)?;
    let holdout_accuracy = if held_out.is_empty() {
        None
    } else {
        let (x, y) = subset(held_out)?;
        Some(probe.accuracy(&x, &y)?)
    };
    Ok(ProbeFit { probe, steps, trained_on: trained_on.to_vec(), train_accuracy, holdout_accuracy })
}

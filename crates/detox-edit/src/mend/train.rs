//! Meta-training MEND's hyper-network on SafeEdit's training records: for each record the network turns the
//! fine-tuning gradient of the safe response into an edit, and is trained so that the edited model gives the
//! safe response (edit loss) while its answers to the record's knowledge question stay as before (locality).

use std::path::PathBuf;
use std::time::Instant;

use detox_runtime::{CausalLm, GradientFactors, LinearProbe, PromptLayout};
use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

use super::network::{MendNetwork, NetworkLayout};
use super::tokens::{
    answer_log_probs, edit_factors, encode_input, kl_divergence, target_nll, MendTokens,
};
use crate::adam::Adam;
use crate::delta::add_in_fp32;
use crate::editor::{EditInput, PromptEncoder};
use crate::error::{torch, EditError, Result};
use crate::precision::refuse_half;
use crate::train::checkpoint::{self, hash_ids};
use crate::train::trainer::epoch_order;
use crate::train::{target_parameters, RunOptions};

/// MEND's training settings (names and defaults of the reference's `hparams/MEND/llama-7b.yaml` where it has
/// them).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MendConfig {
    /// The edited modules of each edited layer.
    pub modules: Vec<String>,
    /// The edited layers; `None` is the last three, as the reference edits layers 29-31 of 32.
    pub layers: Option<Vec<usize>>,
    /// The hidden width of the transforms' MLPs.
    pub rank: i64,
    /// Initial edit learning rate of every weight (`edit_lr`).
    pub init_edit_lr: f64,
    /// Adam learning rate of the network (`lr`).
    pub lr: f64,
    /// Adam learning rate of the edit learning rates (`lr_lr`).
    pub lr_lr: f64,
    /// Weight of the edit loss (`cedit`).
    pub edit_weight: f64,
    /// Weight of the locality loss (`cloc`).
    pub locality_weight: f64,
    /// Passes over the training records.
    pub epochs: usize,
    /// How prompts are put before responses (written `format` by earlier versions).
    #[serde(alias = "format")]
    pub prompt_layout: PromptLayout,
    /// Most tokens of prompt + response.
    pub max_length: usize,
    /// How many training records measure the normalisation statistics.
    pub norm_samples: usize,
    /// Seeds the record order and the network's initialisation.
    pub seed: u64,
    /// Steps between checkpoints.
    pub checkpoint_every: usize,
}

impl Default for MendConfig {
    /// The reference's values: gate/up/down projections of the last three layers, rank 1920, edit lr 1e-4,
    /// lr 1e-6, lr_lr 1e-4, cedit 0.1, cloc 1.0.
    fn default() -> Self {
        Self {
            modules: vec!["gate_proj".into(), "up_proj".into(), "down_proj".into()],
            layers: None,
            rank: 1920,
            init_edit_lr: 1e-4,
            lr: 1e-6,
            lr_lr: 1e-4,
            edit_weight: 0.1,
            locality_weight: 1.0,
            epochs: 1,
            prompt_layout: PromptLayout::ChatTemplate,
            max_length: 512,
            norm_samples: 16,
            seed: 0,
            checkpoint_every: 50,
        }
    }
}

impl MendConfig {
    /// The edited weights of `model`.
    pub fn weights(&self, model: &CausalLm) -> Result<Vec<String>> {
        let n = model.config().num_hidden_layers;
        let layers = self.layers.clone().unwrap_or_else(|| (n.saturating_sub(3)..n).collect());
        let modules: Vec<&str> = self.modules.iter().map(String::as_str).collect();
        target_parameters(model, &modules, Some(&layers))
    }

    fn check(&self) -> Result<()> {
        let ok = self.rank > 0
            && self.epochs > 0
            && self.checkpoint_every > 0
            && self.norm_samples > 0
            && [self.init_edit_lr, self.lr, self.lr_lr].iter().all(|v| v.is_finite() && *v > 0.0)
            && [self.edit_weight, self.locality_weight].iter().all(|v| v.is_finite() && *v >= 0.0);
        if ok {
            Ok(())
        } else {
            Err(EditError::InvalidConfig {
                method: "MEND".into(),
                reason: format!("invalid training configuration: {self:?}"),
            })
        }
    }
}

/// The record of one meta-training step.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct MendStep {
    /// 1-based step number.
    pub step: usize,
    /// 0-based epoch.
    pub epoch: usize,
    /// `edit_weight · edit_nll + locality_weight · locality_kl`.
    pub loss: f64,
    /// The safe response's NLL before the edit.
    pub pre_nll: f64,
    /// The safe response's NLL after the edit.
    pub edit_nll: f64,
    /// KL from the pre-edit to the post-edit answer distribution on the knowledge question.
    pub locality_kl: f64,
}

/// The result of [`train_mend`].
#[derive(Debug)]
#[non_exhaustive]
pub struct MendOutcome {
    /// The trained network.
    pub network: MendNetwork,
    /// Every step, resumed ones included.
    pub steps: Vec<MendStep>,
    /// Whether every planned step ran.
    pub completed: bool,
    /// The number of planned steps.
    pub planned_steps: usize,
    /// Wall time of this call, in seconds.
    pub seconds: f64,
}

/// Meta-trains a MEND network for `model` on `records`; `model` ends with its original weights, bit-exactly.
pub fn train_mend(
    model: &mut CausalLm,
    encoder: &dyn PromptEncoder,
    records: &[EditInput],
    config: &MendConfig,
    run: &RunOptions,
    progress: &mut dyn FnMut(&MendStep, usize),
) -> Result<MendOutcome> {
    let started = Instant::now();
    refuse_half(model, "MEND training")?;
    let _lock = run.lock_checkpoint()?;
    config.check()?;
    if records.is_empty() {
        return Err(EditError::EmptyInput { what: "the training records".into() });
    }
    let tokens = records
        .iter()
        .enumerate()
        .map(|(i, r)| {
            encode_input(encoder, r, config.prompt_layout, config.max_length).map_err(|e| {
                EditError::Record { what: "training record", index: i, source: Box::new(e) }
            })
        })
        .collect::<Result<Vec<_>>>()?;
    model.freeze_all()?;
    let names = config.weights(model)?;
    let mut weights = Vec::with_capacity(names.len());
    for name in &names {
        let size = model.parameter(name)?.size();
        weights.push((name.clone(), [size[0], size[1]]));
    }
    let layout = NetworkLayout { weights, rank: config.rank, init_edit_lr: config.init_edit_lr };
    let mut network = MendNetwork::new(layout.clone(), model.device(), config.seed)?;
    let probe = LinearProbe::new(names.iter().cloned());
    let pad = encoder.pad_id();

    let samples = tokens
        .iter()
        .take(config.norm_samples)
        .map(|t| edit_factors(model, &probe, t, pad).map(|(f, _)| f))
        .collect::<Result<Vec<Vec<GradientFactors>>>>()?;
    network.set_normalisation(&samples)?;
    drop(samples);

    let trainable = network.trainable().len();
    let mut adams = Vec::with_capacity(trainable);
    for (i, (_, t)) in network.trainable().into_iter().enumerate() {
        let lr = if i + 1 == trainable { config.lr_lr } else { config.lr };
        adams.push(Adam::new(t, lr, 0.0)?);
    }
    let fingerprint = fingerprint(config, &layout, &tokens)?;
    let resumed = match &run.checkpoint_dir {
        Some(dir) => {
            let names: Vec<String> = network.trainable().into_iter().map(|(n, _)| n).collect();
            let tensors = names.into_iter().zip(network.trainable_mut()).collect();
            checkpoint::load(dir, &fingerprint, tensors, &mut adams)?
        }
        None => None,
    };
    let (mut step, mut history) = match resumed {
        Some(r) => {
            let history: Vec<MendStep> = serde_json::from_value(r.history).map_err(|e| {
                EditError::State(format!("the checkpoint's history is malformed: {e}"))
            })?;
            (r.step, history)
        }
        None => (0, Vec::new()),
    };

    let snapshot = {
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        model.snapshot(&refs)?
    };
    let originals = names
        .iter()
        .map(|n| {
            model
                .parameter(n)?
                .f_to_kind(Kind::Float)
                .map_err(torch("fp32 original"))
                .and_then(|t| t.f_detach().map_err(torch("fp32 original")))
        })
        .collect::<Result<Vec<Tensor>>>()?;
    let planned = tokens.len() * config.epochs;
    let kind = model.kind();
    let save =
        |dir: &PathBuf, step: usize, history: &[MendStep], net: &MendNetwork, adams: &[Adam]| {
            let history = serde_json::to_value(history)
                .map_err(|e| EditError::State(format!("serialising the checkpoint: {e}")))?;
            checkpoint::save(
                dir,
                &fingerprint,
                step,
                history,
                serde_json::Value::Null,
                &net.trainable(),
                adams,
            )
        };
    let mut order = (usize::MAX, Vec::new());
    let result = (|| -> Result<bool> {
        while step < planned {
            if run.stop_after.is_some_and(|n| step >= n) {
                return Ok(false);
            }
            let epoch = step / tokens.len();
            if order.0 != epoch {
                order = (epoch, epoch_order(config.seed, epoch, tokens.len()));
            }
            let t = &tokens[order.1[step % tokens.len()]];
            let (factors, pre_nll) = edit_factors(model, &probe, t, pad)?;
            let base = {
                let _guard = tch::no_grad_guard();
                answer_log_probs(model, &t.constraint_prompt, &t.constraint_answer)?
            };
            let edits = network.edits(&factors)?;
            for ((name, original), edit) in names.iter().zip(&originals).zip(&edits) {
                let edited = add_in_fp32(original, edit, kind)?;
                drop(model.replace_parameter(name, edited)?);
            }
            let edit_nll = target_nll(model, &t.prompt, &t.target, pad)?;
            let post = answer_log_probs(model, &t.constraint_prompt, &t.constraint_answer)?;
            let kl = kl_divergence(&base, &post)?;
            let loss = edit_nll
                .f_mul_scalar(config.edit_weight)
                .and_then(|a| a.f_add(&kl.f_mul_scalar(config.locality_weight)?))
                .map_err(torch("MEND loss"))?;
            let value = |t: &Tensor| t.f_double_value(&[]).map_err(torch("reading a loss"));
            let record = MendStep {
                step: step + 1,
                epoch,
                loss: value(&loss)?,
                pre_nll,
                edit_nll: value(&edit_nll)?,
                locality_kl: value(&kl)?,
            };
            if !record.loss.is_finite() {
                return Err(EditError::NonFiniteLoss {
                    context: "MEND: ".into(),
                    step: record.step,
                    value: record.loss,
                });
            }
            loss.f_backward().map_err(torch("MEND backward"))?;
            for (t, adam) in network.trainable_mut().into_iter().zip(adams.iter_mut()) {
                let grad = t.grad();
                if grad.defined() {
                    adam.step(t, &grad)?;
                    t.zero_grad();
                }
            }
            model.restore(&snapshot)?;
            model.freeze_all()?;
            step += 1;
            history.push(record);
            progress(&record, planned);
            if step % config.checkpoint_every == 0 || step == planned {
                if let Some(dir) = &run.checkpoint_dir {
                    save(dir, step, &history, &network, &adams)?;
                }
            }
        }
        Ok(true)
    })();
    model.restore(&snapshot)?;
    model.freeze_all()?;
    let completed = result?;
    if !completed {
        if let Some(dir) = &run.checkpoint_dir {
            save(dir, step, &history, &network, &adams)?;
        }
    }
    Ok(MendOutcome {
        network,
        steps: history,
        completed,
        planned_steps: planned,
        seconds: started.elapsed().as_secs_f64(),
    })
}

fn fingerprint(
    config: &MendConfig,
    layout: &NetworkLayout,
    tokens: &[MendTokens],
) -> Result<String> {
    let hash = hash_ids(tokens.iter().flat_map(|t| {
        [&t.prompt[..], &t.target[..], &t.constraint_prompt[..], &t.constraint_answer[..]]
    }));
    let json = serde_json::to_string(&(config, layout))
        .map_err(|e| EditError::State(format!("serialising the MEND configuration: {e}")))?;
    Ok(format!("{json} data:{hash:016x}"))
}

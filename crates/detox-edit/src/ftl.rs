//! FT-L: constrained fine-tuning of one layer's MLP output projection on the safe response (the baseline of
//! Zhu et al., 2020, as the SafeEdit paper runs it through EasyEdit's `FT` method with a norm constraint).
//!
//! The adversarial prompt and the safe response are joined with a space; the loss is the mean negative
//! log-likelihood of the response tokens; after every Adam step the weights are clamped to `W0 ± eps`.

use std::time::Instant;

use detox_runtime::CausalLm;
use serde::{Deserialize, Serialize};

use crate::delta::Delta;
use crate::dinm::{
    optimize_tensor, DinmTokens, EarlyStop, KlGradient, LossWeighting, OptimizeSettings,
    StepForward,
};
use crate::editor::{EditDetails, EditInput, EditOutcome, EditTimings, Editor, PromptEncoder};
use crate::error::{torch, EditError, Result};
use crate::input_length::bound_input;
use crate::ledger::{EditLedger, EditMode};
use crate::precision::refuse_half;

/// FT-L hyper-parameters (key names as the reference's `hparams/FT/*.yaml`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FtlHyperParams {
    /// The layer(s) whose tensor is tuned; the first one is used.
    pub layers: Vec<usize>,
    /// Optimisation steps.
    pub num_steps: usize,
    /// Adam learning rate.
    pub lr: f64,
    /// Adam weight decay.
    pub weight_decay: f64,
    /// Clamp radius around the original weights (FT-L's "L"); `None` is unconstrained FT.
    pub norm_constraint: Option<f64>,
    /// Name template of the tuned tensor.
    pub rewrite_module_tmp: String,
}

impl FtlHyperParams {
    /// Llama-2-7b values of the reference (`layers: [21]`, 25 steps, lr 5e-4) with the constraint `5e-5`.
    pub fn llama2_7b() -> Self {
        Self {
            layers: vec![21],
            num_steps: 25,
            lr: 5e-4,
            weight_decay: 0.0,
            norm_constraint: Some(5e-5),
            rewrite_module_tmp: "model.layers.{}.mlp.down_proj.weight".into(),
        }
    }

    /// The same values at another layer (small models have fewer than 22 layers).
    pub fn at_layer(mut self, layer: usize) -> Self {
        self.layers = vec![layer];
        self
    }
}

/// The FT-L editor.
#[derive(Debug)]
pub struct FtlEditor {
    hparams: FtlHyperParams,
    mode: EditMode,
    ledger: EditLedger,
}

impl FtlEditor {
    /// An editor for `hparams`.
    pub fn new(hparams: FtlHyperParams, mode: EditMode) -> Result<Self> {
        if hparams.layers.is_empty()
            || hparams.num_steps == 0
            || !hparams.lr.is_finite()
            || hparams.lr <= 0.0
        {
            return Err(EditError::HyperParams {
                path: "<in memory>".into(),
                reason: "FT-L needs a layer, at least one step and a positive lr".into(),
            });
        }
        Ok(Self { hparams, mode, ledger: EditLedger::new() })
    }
}

impl Editor for FtlEditor {
    fn method(&self) -> &'static str {
        "FT-L"
    }

    fn mode(&self) -> EditMode {
        self.mode
    }

    fn edit(
        &mut self,
        model: &mut CausalLm,
        encoder: &dyn PromptEncoder,
        input: &EditInput,
    ) -> Result<EditOutcome> {
        refuse_half(model, "FT-L")?;
        let layer = self.hparams.layers[0];
        if layer >= model.config().num_hidden_layers {
            return Err(EditError::NoSuchLayer {
                method: "FT-L".into(),
                layer,
                layers: model.config().num_hidden_layers,
            });
        }
        let name = self.hparams.rewrite_module_tmp.replacen("{}", &layer.to_string(), 1);
        self.ledger.begin(model, self.mode, &[&name])?;
        let prompt = encoder.encode(&input.prompt, true)?;
        let edit_input =
            encoder.encode(&format!("{} {}", input.prompt, input.safe_response), true)?;
        if edit_input.len() <= prompt.len() {
            return Err(EditError::NoTokens {
                what: "the safe response (after the prompt)".into(),
            });
        }
        // Unbounded, as in the reference; an input past the model's context is noted, not cut.
        let context = usize::try_from(model.config().max_position_embeddings).unwrap_or(usize::MAX);
        let (edit_input, notes) = bound_input("edit input", edit_input, 0, context, None)?;
        let tokens = DinmTokens {
            target: edit_input[prompt.len()..].to_vec(),
            edit_input,
            target_ignore_id: None,
            constraint_input: Vec::new(),
            constraint_answer_len: 0,
        };
        let settings = OptimizeSettings {
            lr: self.hparams.lr,
            weight_decay: self.hparams.weight_decay,
            num_steps: self.hparams.num_steps,
            kl_factor: 0.0,
            norm_constraint: self.hparams.norm_constraint,
            weighting: LossWeighting::Paper,
            kl_gradient: KlGradient::Detached,
            // EasyEdit's `easyeditor/models/ft/ft_main.py` updates only while the loss is at least 1e-2 and stops
            // once it is below; with one record per batch that is the absolute early stop at 1e-2 (DINM's is 1e-4).
            early_stop_loss: 1e-2,
            early_stop: EarlyStop::Absolute,
            step_forward: StepForward::default(),
            synchronised_phases: false,
        };
        let started = Instant::now();
        let trained = optimize_tensor(model, &name, &tokens, &settings)?;
        let mut delta = Delta::new();
        delta.add(&name, &trained.edited.f_sub(&trained.original).map_err(torch("delta"))?)?;
        Ok(EditOutcome::new("FT-L", delta)
            .at_layer(layer)
            .with_timings(EditTimings { locate: 0.0, edit: started.elapsed().as_secs_f64() })
            .with_details(EditDetails::FineTune { steps: trained.steps })
            .with_notes(notes))
    }

    fn restore(&mut self, model: &mut CausalLm) -> Result<()> {
        self.ledger.restore(model)
    }
}

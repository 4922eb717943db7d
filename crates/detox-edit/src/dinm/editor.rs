//! DINM behind the [`Editor`] interface: locate, then tune the toxic layer's `down_proj`.

use std::time::Instant;

use detox_locate::{contrast_texts, ContrastTexts, LayerPolicy, LayerSelection, LocateOptions};
use detox_runtime::{CausalLm, PromptLayout};
use serde::{Deserialize, Serialize};

use super::batch::optimize_batch;
use super::hparams::DinmHyperParams;
use super::inputs::build_tokens;
use super::optimize::{optimize_tensor, DinmTokens, OptimizeSettings};
use super::options::{EarlyStop, KlGradient, LossWeighting, StepForward};
use crate::delta::Delta;
use crate::editor::{
    refuse_sequential_batch, Batching, EditDetails, EditInput, EditOutcome, EditTimings, Editor,
    PromptEncoder,
};
use crate::error::{torch, EditError, Result};
use crate::ledger::{EditLedger, EditMode};
use crate::precision::refuse_half;

/// The choices where the paper and the reference differ, all defaulting to the reference.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct DinmOptions {
    /// Which loss term `kl_factor` scales.
    pub weighting: LossWeighting,
    /// Whether the KL term carries gradients.
    pub kl_gradient: KlGradient,
    /// How the inputs are laid out.
    pub prompt_format: PromptLayout,
    /// What the locator contrasts.
    pub locate: LocateOptions,
    /// How the layer is chosen across records (the reference keeps the first record's layer).
    pub layer_selection: LayerSelection,
    /// Whether edits accumulate.
    pub mode: EditMode,
    /// How the early-stop threshold of 1e-4 is read (the reference: as an absolute loss).
    #[serde(default)]
    pub early_stop: EarlyStop,
    /// How much of the model each step runs. Not a difference of results: both give the reference's losses and
    /// updates (up to floating-point reassociation); the default runs only what the edit can change.
    #[serde(default)]
    pub step_forward: StepForward,
}

impl Default for DinmOptions {
    fn default() -> Self {
        Self::reference()
    }
}

impl DinmOptions {
    /// The reference implementation's behaviour (the default).
    pub fn reference() -> Self {
        Self {
            weighting: LossWeighting::Reference,
            kl_gradient: KlGradient::Detached,
            prompt_format: PromptLayout::Raw,
            locate: LocateOptions::default(),
            layer_selection: LayerSelection::FirstRecordSticky,
            mode: EditMode::Single,
            early_stop: EarlyStop::Absolute,
            step_forward: StepForward::FromEditedTensor,
        }
    }

    /// The paper's reading: `NLL + kl_factor * KL` with gradients through both, a layer per record.
    pub fn paper() -> Self {
        Self {
            weighting: LossWeighting::Paper,
            kl_gradient: KlGradient::Differentiable,
            layer_selection: LayerSelection::PerRecord,
            ..Self::reference()
        }
    }
}

impl OptimizeSettings {
    /// The optimisation an editor with `hparams` and `options` runs: the hyper-parameters' learning rate, weight
    /// decay, steps, loss weight and norm constraint, the options' readings, and the reference's early stop at
    /// a loss of 1e-4.
    pub fn from_hparams(hparams: &DinmHyperParams, options: &DinmOptions) -> Self {
        Self {
            lr: hparams.lr,
            weight_decay: hparams.weight_decay,
            num_steps: hparams.num_steps,
            kl_factor: hparams.kl_factor,
            norm_constraint: hparams.norm_constraint,
            weighting: options.weighting,
            kl_gradient: options.kl_gradient,
            early_stop_loss: 1e-4,
            early_stop: options.early_stop,
            step_forward: options.step_forward,
            synchronised_phases: false,
        }
    }
}

/// The DINM editor.
#[derive(Debug)]
pub struct DinmEditor {
    hparams: DinmHyperParams,
    options: DinmOptions,
    policy: LayerPolicy,
    ledger: EditLedger,
}

impl DinmEditor {
    /// An editor with validated hyper-parameters.
    pub fn new(hparams: DinmHyperParams, options: DinmOptions) -> Result<Self> {
        hparams
            .validate()
            .map_err(|reason| EditError::HyperParams { path: "<in memory>".into(), reason })?;
        Ok(Self {
            hparams,
            policy: LayerPolicy::new(options.layer_selection),
            options,
            ledger: EditLedger::new(),
        })
    }

    /// The hyper-parameters.
    pub fn hparams(&self) -> &DinmHyperParams {
        &self.hparams
    }

    /// The options.
    pub fn options(&self) -> &DinmOptions {
        &self.options
    }

    fn settings(&self) -> OptimizeSettings {
        OptimizeSettings::from_hparams(&self.hparams, &self.options)
    }

    fn locate(
        &mut self,
        model: &CausalLm,
        encoder: &dyn PromptEncoder,
        input: &EditInput,
    ) -> Result<(usize, Option<detox_locate::LayerDistances>)> {
        if let Some(&layer) = self.hparams.layers.first() {
            return Ok((layer, None));
        }
        if let Some(layer) = self.policy.fixed_layer() {
            return Ok((layer, None));
        }
        let texts = ContrastTexts {
            prompt: &input.prompt,
            safe: &input.safe_response,
            unsafe_: &input.unsafe_response,
        };
        let report =
            contrast_texts(model, texts, &self.options.locate, encoder.pad_id(), |text| {
                encoder.encode(text, true)
            })?;
        Ok((self.policy.choose(report.toxic_layer), Some(report)))
    }
}

/// A record ready for the optimisation: its layer, the locator's report, its tokens and the locate time.
struct Prepared {
    layer: usize,
    located: Option<detox_locate::LayerDistances>,
    tokens: DinmTokens,
    locate_seconds: f64,
}

impl DinmEditor {
    /// Locates `input`'s layer (checking that it exists) and builds its tokens.
    fn prepare(
        &mut self,
        model: &CausalLm,
        encoder: &dyn PromptEncoder,
        input: &EditInput,
    ) -> Result<Prepared> {
        let started = Instant::now();
        let (layer, located) = self.locate(model, encoder, input)?;
        let locate_seconds = started.elapsed().as_secs_f64();
        if layer >= model.config().num_hidden_layers {
            return Err(EditError::InvalidRequest(format!(
                "layer {layer} does not exist (the model has {})",
                model.config().num_hidden_layers
            )));
        }
        let tokens = build_tokens(
            encoder,
            input,
            &self.hparams.suffix_system_prompt,
            self.options.prompt_format,
        )?;
        Ok(Prepared { layer, located, tokens, locate_seconds })
    }
}

impl Editor for DinmEditor {
    fn method(&self) -> &'static str {
        "DINM"
    }

    fn mode(&self) -> EditMode {
        self.options.mode
    }

    fn batching(&self) -> Batching {
        Batching::Together
    }

    fn edit(
        &mut self,
        model: &mut CausalLm,
        encoder: &dyn PromptEncoder,
        input: &EditInput,
    ) -> Result<EditOutcome> {
        refuse_half(model, "DINM")?;
        if self.options.mode == EditMode::Single {
            // Locate on the original model, as the reference does for every record.
            self.ledger.restore(model)?;
        }
        let Prepared { layer, located, tokens, locate_seconds } =
            self.prepare(model, encoder, input)?;
        let name = self.hparams.rewrite_tensor_name(layer);
        self.ledger.begin(model, self.options.mode, &[&name])?;
        let trained = optimize_tensor(model, &name, &tokens, &self.settings())?;
        let mut delta = Delta::new();
        delta.add(&name, &trained.edited.f_sub(&trained.original).map_err(torch("delta"))?)?;
        Ok(EditOutcome::new("DINM", delta)
            .at_layer(layer)
            .with_timings(EditTimings { locate: locate_seconds, edit: trained.seconds })
            .with_details(EditDetails::Dinm { located, steps: trained.steps }))
    }

    /// Locates every record in order (so the layer policy sees them as the sequential path does), then edits the
    /// records that share a layer together with [`optimize_batch`]: one weight copy and one Adam state per record,
    /// equal to one-at-a-time edits up to floating-point reassociation. Only in single mode.
    fn edit_batch(
        &mut self,
        model: &mut CausalLm,
        encoder: &dyn PromptEncoder,
        inputs: &[EditInput],
    ) -> Result<Vec<EditOutcome>> {
        refuse_sequential_batch(self.options.mode, "DINM")?;
        refuse_half(model, "DINM")?;
        self.ledger.restore(model)?;
        let mut prepared = Vec::with_capacity(inputs.len());
        for input in inputs {
            prepared.push(self.prepare(model, encoder, input)?);
        }
        let mut outcomes: Vec<Option<EditOutcome>> = inputs.iter().map(|_| None).collect();
        let mut layers: Vec<usize> = prepared.iter().map(|p| p.layer).collect();
        layers.sort_unstable();
        layers.dedup();
        for layer in layers {
            let members: Vec<usize> =
                (0..prepared.len()).filter(|&i| prepared[i].layer == layer).collect();
            let tokens: Vec<_> = members.iter().map(|&i| prepared[i].tokens.clone()).collect();
            let name = self.hparams.rewrite_tensor_name(layer);
            let snapshot = model.snapshot(&[&name])?;
            let trained = optimize_batch(model, &name, &tokens, &self.settings());
            model.restore(&snapshot)?;
            model.freeze_all()?;
            for (&i, trained) in members.iter().zip(trained?) {
                let mut delta = Delta::new();
                delta.add(
                    &name,
                    &trained.edited.f_sub(&trained.original).map_err(torch("delta"))?,
                )?;
                let details =
                    EditDetails::Dinm { located: prepared[i].located.take(), steps: trained.steps };
                outcomes[i] = Some(
                    EditOutcome::new("DINM", delta)
                        .at_layer(layer)
                        .with_timings(EditTimings {
                            locate: prepared[i].locate_seconds,
                            edit: trained.seconds,
                        })
                        .with_details(details),
                );
            }
        }
        // Every record's layer is in `layers`, so every slot is filled.
        Ok(outcomes.into_iter().flatten().collect())
    }

    fn restore(&mut self, model: &mut CausalLm) -> Result<()> {
        self.ledger.restore(model)
    }

    fn resume_after(&mut self, earlier_layers: &[usize]) {
        for &layer in earlier_layers {
            self.policy.choose(layer);
        }
    }
}

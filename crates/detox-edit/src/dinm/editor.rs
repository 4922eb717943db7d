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
    refuse_sequential_batch, Batching, EditDetails, EditInput, EditNote, EditOutcome, EditTimings,
    Editor, PromptEncoder,
};
use crate::error::{torch, EditError, Result};
use crate::input_length::{bound_input, far_longer_than_batch};
use crate::ledger::{EditLedger, EditMode};
use crate::precision::refuse_half;

/// The choices where the paper and the reference differ, all defaulting to the reference.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct DinmOptions {
    /// Which loss term `kl_factor` scales.
    pub weighting: LossWeighting,
    /// Whether the KL term carries gradients.
    pub kl_gradient: KlGradient,
    /// How the inputs are laid out (written `prompt_format` by earlier versions).
    #[serde(alias = "prompt_format")]
    pub prompt_layout: PromptLayout,
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
    /// The most tokens of an edit input (and of a knowledge-constraint input) the optimisation sees; a longer
    /// input keeps its last tokens, so the scored response stays whole (a bound that would cut into it is
    /// refused), and the outcome notes the cut. `None` (the default, and the reference) edits every input whole,
    /// however long: an input longer than the model's context is then noted, not cut.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_edit_tokens: Option<usize>,
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
            prompt_layout: PromptLayout::Raw,
            locate: LocateOptions::default(),
            layer_selection: LayerSelection::FirstRecordSticky,
            mode: EditMode::Single,
            early_stop: EarlyStop::Absolute,
            step_forward: StepForward::FromEditedTensor,
            max_edit_tokens: None,
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
        if options.max_edit_tokens == Some(0) {
            return Err(EditError::InvalidConfig {
                method: "DINM".into(),
                reason: "`max_edit_tokens` must be at least 1".into(),
            });
        }
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

/// A record ready for the optimisation: its layer, the locator's report, its tokens, the locate time and what
/// its outcome notes about its inputs.
struct Prepared {
    layer: usize,
    located: Option<detox_locate::LayerDistances>,
    tokens: DinmTokens,
    locate_seconds: f64,
    notes: Vec<EditNote>,
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
            return Err(EditError::NoSuchLayer {
                method: "DINM".into(),
                layer,
                layers: model.config().num_hidden_layers,
            });
        }
        let mut tokens = build_tokens(
            encoder,
            input,
            &self.hparams.suffix_system_prompt,
            self.options.prompt_layout,
        )?;
        let context = usize::try_from(model.config().max_position_embeddings).unwrap_or(usize::MAX);
        let bound = self.options.max_edit_tokens;
        let (edit_input, mut notes) = bound_input(
            "edit input",
            std::mem::take(&mut tokens.edit_input),
            tokens.target.len(),
            context,
            bound,
        )?;
        let (constraint_input, constraint_notes) = bound_input(
            "knowledge constraint",
            std::mem::take(&mut tokens.constraint_input),
            tokens.constraint_answer_len,
            context,
            bound,
        )?;
        notes.extend(constraint_notes);
        tokens.edit_input = edit_input;
        tokens.constraint_input = constraint_input;
        Ok(Prepared { layer, located, tokens, locate_seconds, notes })
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
        let Prepared { layer, located, tokens, locate_seconds, notes } =
            self.prepare(model, encoder, input)?;
        let name = self.hparams.rewrite_tensor_name(layer);
        self.ledger.begin(model, self.options.mode, &[&name])?;
        let trained = optimize_tensor(model, &name, &tokens, &self.settings())?;
        let mut delta = Delta::new();
        delta.add(&name, &trained.edited.f_sub(&trained.original).map_err(torch("delta"))?)?;
        Ok(EditOutcome::new("DINM", delta)
            .at_layer(layer)
            .with_timings(EditTimings { locate: locate_seconds, edit: trained.seconds })
            .with_details(EditDetails::Dinm { located, steps: trained.steps })
            .with_notes(notes))
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
        let lengths: Vec<usize> = prepared.iter().map(|p| p.tokens.edit_input.len()).collect();
        for (p, note) in prepared.iter_mut().zip(far_longer_than_batch(&lengths)) {
            p.notes.extend(note);
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
                        .with_details(details)
                        .with_notes(std::mem::take(&mut prepared[i].notes)),
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

//! The interface every editing method implements, and the text it is given.

use detox_locate::LayerDistances;
use detox_runtime::CausalLm;
use serde::{Deserialize, Serialize};

use crate::delta::Delta;
use crate::dinm::StepLoss;
use crate::error::{EditError, Result};
use crate::ledger::EditMode;

/// The texts of one edit (the SafeEdit fields an editor uses).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EditInput {
    /// The adversarial prompt.
    pub prompt: String,
    /// The safe response the model should give.
    pub safe_response: String,
    /// The unsafe response the model should stop giving.
    pub unsafe_response: String,
    /// A benign knowledge question whose answer must not change.
    pub constraint_prompt: String,
    /// The answer to that question.
    pub constraint_answer: String,
}

impl From<&safeedit::EditRequest> for EditInput {
    fn from(r: &safeedit::EditRequest) -> Self {
        Self {
            prompt: r.prompt.clone(),
            safe_response: r.target_new.clone(),
            unsafe_response: r.ground_truth.clone(),
            constraint_prompt: r.locality_prompt.clone(),
            constraint_answer: r.locality_answer.clone(),
        }
    }
}

/// What editors need from a tokenizer; implemented for [`detox_runtime::Tokenizer`].
pub trait PromptEncoder {
    /// The token ids of `text`; with `special` the tokenizer adds its special prefix (e.g. BOS), as calling a
    /// Hugging Face tokenizer on the text does.
    fn encode(&self, text: &str, special: bool) -> Result<Vec<i64>>;
    /// The id used for left padding (the reference pads with EOS).
    fn pad_id(&self) -> i64;
    /// The model's chat template applied to one user turn, ending with the assistant prefix.
    fn chat_prompt(&self, user: &str) -> Result<String>;
}

/// Wall time of the parts of an edit, in seconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct EditTimings {
    /// Locating the layer.
    pub locate: f64,
    /// The optimisation.
    pub edit: f64,
}

/// What a method reports about an edit beyond its delta; match on the method you ran.
#[derive(Debug, Default)]
#[non_exhaustive]
pub enum EditDetails {
    /// Nothing beyond the delta (prompt-only methods, trained artefacts, hyper-network edits).
    #[default]
    None,
    /// DINM: the locator's report, when the layer was located for this record, and the loss of every step.
    Dinm {
        /// The locator's report.
        located: Option<LayerDistances>,
        /// The losses of each optimisation step.
        steps: Vec<StepLoss>,
    },
    /// Fine-tuning of a fixed layer (FT-L): the loss of every step.
    FineTune {
        /// The losses of each optimisation step.
        steps: Vec<StepLoss>,
    },
}

impl EditDetails {
    /// The losses of each optimisation step, for methods that optimise (empty otherwise).
    pub fn steps(&self) -> &[StepLoss] {
        match self {
            EditDetails::Dinm { steps, .. } | EditDetails::FineTune { steps } => steps,
            EditDetails::None => &[],
        }
    }

    /// The locator's report, for methods that located the edited layer for this record.
    pub fn located(&self) -> Option<&LayerDistances> {
        match self {
            EditDetails::Dinm { located, .. } => located.as_ref(),
            _ => None,
        }
    }

    /// Takes the locator's report out (e.g. to store it in a record).
    pub fn take_located(&mut self) -> Option<LayerDistances> {
        match self {
            EditDetails::Dinm { located, .. } => located.take(),
            _ => None,
        }
    }
}

/// What an edit did. Built with [`EditOutcome::new`] and the `with_*` methods, so that fields can be added
/// without breaking editors written outside this crate.
#[derive(Debug)]
#[non_exhaustive]
pub struct EditOutcome {
    /// The method's name.
    pub method: &'static str,
    /// The edited layer, for layer-local methods.
    pub layer: Option<usize>,
    /// Wall times.
    pub timings: EditTimings,
    /// The change made to the weights (empty for prompt-only methods).
    pub delta: Delta,
    /// What the method reports beyond the delta.
    pub details: EditDetails,
    /// Things the caller should know about this edit's inputs (none for most edits); the library does not print
    /// them, the program running the edit decides how to report them.
    pub notes: Vec<EditNote>,
}

/// Something worth reporting about an edit's inputs, which did not stop the edit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
#[non_exhaustive]
pub enum EditNote {
    /// An input is longer than the model's context (`max_position_embeddings`): the reference edits it whole all
    /// the same, with positions the model was not trained on, and memory grows with its length.
    LongerThanContext {
        /// Which input (`edit input`, `knowledge constraint`).
        input: String,
        /// Its length in tokens (before any cut).
        tokens: usize,
        /// The model's context.
        context: usize,
    },
    /// An input was cut to its last `kept` tokens by a bound the caller set (e.g. DINM's `max_edit_tokens`).
    Truncated {
        /// Which input.
        input: String,
        /// Its length in tokens before the cut.
        tokens: usize,
        /// Tokens kept (the last ones).
        kept: usize,
    },
    /// In a batch edited together, this record's edit input is far longer than the batch's median: every record
    /// of the batch is padded to the longest, so this one sets the batch's memory and time.
    FarLongerThanBatch {
        /// Its length in tokens.
        tokens: usize,
        /// The batch's median length (the lower middle value).
        median: usize,
    },
}

impl std::fmt::Display for EditNote {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EditNote::LongerThanContext { input, tokens, context } => write!(
                f,
                "the {input} has {tokens} tokens, more than the model's context of {context}: it is edited whole, \
                 as the reference does, with positions the model was not trained on"
            ),
            EditNote::Truncated { input, tokens, kept } => {
                write!(f, "the {input} had {tokens} tokens; only its last {kept} were used")
            }
            EditNote::FarLongerThanBatch { tokens, median } => write!(
                f,
                "the edit input has {tokens} tokens, over 4 times the batch's median of {median}: the whole batch \
                 is padded to it"
            ),
        }
    }
}

impl EditOutcome {
    /// An outcome of `method` whose change to the weights is `delta`, with no layer, zero timings and no details.
    pub fn new(method: &'static str, delta: Delta) -> Self {
        Self {
            method,
            layer: None,
            timings: EditTimings::default(),
            delta,
            details: EditDetails::None,
            notes: Vec::new(),
        }
    }

    /// The same outcome with `notes` added to its notes.
    pub fn with_notes(mut self, notes: impl IntoIterator<Item = EditNote>) -> Self {
        self.notes.extend(notes);
        self
    }

    /// The same outcome, edited at `layer`.
    pub fn at_layer(mut self, layer: usize) -> Self {
        self.layer = Some(layer);
        self
    }

    /// The same outcome with these wall times.
    pub fn with_timings(mut self, timings: EditTimings) -> Self {
        self.timings = timings;
        self
    }

    /// The same outcome with these method-specific details.
    pub fn with_details(mut self, details: EditDetails) -> Self {
        self.details = details;
        self
    }
}

/// How an editor handles [`Editor::edit_batch`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Batching {
    /// Records are edited one after the other, each on the unedited model (the default implementation).
    OneAtATime,
    /// Records are edited together (e.g. DINM optimises the records that share a layer in one batch).
    Together,
}

/// An editing method.
///
/// The workspace's editors: [`crate::dinm::DinmEditor`] (DINM), [`crate::FtlEditor`] (FT-L),
/// [`crate::TrainedDeltaEditor`] (trained SFT, DPO and Ext-Sub artefacts), [`crate::mend::MendEditor`] (MEND),
/// [`crate::SelfReminderEditor`] (Self-Reminder, prompt only), [`crate::profs::ProfsEditor`] (ProFS subspace
/// projection), [`crate::steering::SteeringEditor`] (activation steering) and
/// [`crate::surgery::SurgeryEditor`] (Model Surgery); a [`crate::registry::Registry`] builds each by name.
///
/// Implementors write [`Editor::method`], [`Editor::edit`] and [`Editor::restore`]; everything else has a
/// default. Every editor can edit a batch of records: the default [`Editor::edit_batch`] edits them one at a time
/// on the unedited model and collects their deltas, and methods with a faster path override it and say so in
/// [`Editor::batching`].
pub trait Editor {
    /// The method's name as reports print it.
    fn method(&self) -> &'static str;

    /// Whether edits accumulate ([`EditMode::Sequential`]) or each record is edited on the unedited model.
    fn mode(&self) -> EditMode {
        EditMode::Single
    }

    /// Edits `model` for one record. In single mode the previous edit is undone first; in sequential mode edits
    /// accumulate.
    fn edit(
        &mut self,
        model: &mut CausalLm,
        encoder: &dyn PromptEncoder,
        input: &EditInput,
    ) -> Result<EditOutcome>;

    /// How [`Editor::edit_batch`] processes records.
    fn batching(&self) -> Batching {
        Batching::OneAtATime
    }

    /// Edits each of `inputs` independently, as single-mode [`Editor::edit`] would on the unedited model, and
    /// returns their outcomes in input order with the model left unedited: each outcome's delta is the record's
    /// edit, for the caller to apply (e.g. one weight per batch row during generation).
    ///
    /// The default edits one record at a time, restoring the model before each edit and after the last. An
    /// editor in [`EditMode::Sequential`] refuses: its edits depend on each other.
    fn edit_batch(
        &mut self,
        model: &mut CausalLm,
        encoder: &dyn PromptEncoder,
        inputs: &[EditInput],
    ) -> Result<Vec<EditOutcome>> {
        refuse_sequential_batch(self.mode(), self.method())?;
        let mut outcomes = Vec::with_capacity(inputs.len());
        for input in inputs {
            self.restore(model)?;
            outcomes.push(self.edit(model, encoder, input)?);
        }
        self.restore(model)?;
        Ok(outcomes)
    }

    /// Undoes every applied edit; the weights become bit-identical to before the first edit.
    fn restore(&mut self, model: &mut CausalLm) -> Result<()>;

    /// The evaluation input the edited model is asked, given the benchmark's input. Prompt-only methods (e.g.
    /// [`crate::SelfReminderEditor`]) rewrite it here instead of changing weights; weight-editing methods keep it.
    fn wrap_input(&self, input: &str) -> String {
        input.to_string()
    }

    /// Tells a fresh editor which layers earlier records of the same run were edited at, in order, so that a
    /// resumed run makes the same choices as an uninterrupted one (e.g. the reference's first-record layer).
    fn resume_after(&mut self, earlier_layers: &[usize]) {
        let _ = earlier_layers;
    }
}

/// The error [`Editor::edit_batch`] gives for an editor whose edits accumulate.
pub(crate) fn refuse_sequential_batch(mode: EditMode, method: &str) -> Result<()> {
    match mode {
        EditMode::Single => Ok(()),
        EditMode::Sequential => Err(EditError::SequentialBatch { method: method.to_string() }),
    }
}

impl PromptEncoder for detox_runtime::Tokenizer {
    fn encode(&self, text: &str, special: bool) -> Result<Vec<i64>> {
        Ok(detox_runtime::Tokenizer::encode(self, text, special)?)
    }

    fn pad_id(&self) -> i64 {
        detox_runtime::Tokenizer::pad_id(self).unwrap_or(0)
    }

    fn chat_prompt(&self, user: &str) -> Result<String> {
        Ok(detox_runtime::Tokenizer::chat_prompt(self, user)?)
    }
}

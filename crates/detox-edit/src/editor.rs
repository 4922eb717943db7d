//! The interface every editing method implements, and the text it is given.

use detox_locate::LayerDistances;
use detox_runtime::CausalLm;
use serde::{Deserialize, Serialize};

use crate::delta::Delta;
use crate::dinm::StepLoss;
use crate::error::Result;

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

/// What an edit did.
#[derive(Debug)]
pub struct EditOutcome {
    /// The method's name.
    pub method: &'static str,
    /// The edited layer, for layer-local methods.
    pub layer: Option<usize>,
    /// The locator's report, when the method located the layer for this record.
    pub located: Option<LayerDistances>,
    /// The losses of each optimisation step.
    pub steps: Vec<StepLoss>,
    /// Wall times.
    pub timings: EditTimings,
    /// The change made to the weights.
    pub delta: Delta,
}

/// An editing method.
pub trait Editor {
    /// The method's name as reports print it.
    fn method(&self) -> &'static str;

    /// Edits `model` for one record. In single mode the previous edit is undone first; in sequential mode edits
    /// accumulate.
    fn edit(
        &mut self,
        model: &mut CausalLm,
        encoder: &dyn PromptEncoder,
        input: &EditInput,
    ) -> Result<EditOutcome>;

    /// Edits each of `inputs` independently, as single-mode [`Editor::edit`] would on the unedited model, and
    /// returns their outcomes in input order with the model left unedited: each outcome's delta is the record's
    /// edit, for the caller to apply (e.g. one weight per batch row during generation). Methods without a batched
    /// path return `None` (the default), and callers edit one record at a time instead.
    fn edit_batch(
        &mut self,
        model: &mut CausalLm,
        encoder: &dyn PromptEncoder,
        inputs: &[EditInput],
    ) -> Result<Option<Vec<EditOutcome>>> {
        let _ = (model, encoder, inputs);
        Ok(None)
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

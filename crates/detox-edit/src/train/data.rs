//! Training examples: SafeEdit's (safe, unsafe) generation pairs and their token ids.

use serde::{Deserialize, Serialize};

use crate::editor::PromptEncoder;
use crate::error::{EditError, Result};

/// One training example: a prompt with a preferred (safe) and a dispreferred (unsafe) response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PreferencePair {
    /// The adversarial prompt.
    pub prompt: String,
    /// The safe response (SafeEdit's `safe generation`): SFT's target, DPO's chosen side, Ext-Sub's expert data.
    pub chosen: String,
    /// The unsafe response (`unsafe generation`): DPO's rejected side, Ext-Sub's anti-expert data.
    pub rejected: String,
}

impl From<&safeedit::EditRequest> for PreferencePair {
    fn from(r: &safeedit::EditRequest) -> Self {
        Self {
            prompt: r.prompt.clone(),
            chosen: r.target_new.clone(),
            rejected: r.ground_truth.clone(),
        }
    }
}

/// How a prompt is put before its response.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PromptFormat {
    /// The model's chat template around the prompt as one user turn; the response is the assistant's reply.
    /// The default: chat models are evaluated through their template.
    #[default]
    Chat,
    /// The raw prompt followed by a space, as the editing baselines of the reference join them.
    Plain,
}

/// A pair's token ids: the prompt, with the tokenizer's special prefix, and each response continuing it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EncodedPair {
    /// The prompt's ids.
    pub prompt: Vec<i64>,
    /// The safe response's ids.
    pub chosen: Vec<i64>,
    /// The unsafe response's ids.
    pub rejected: Vec<i64>,
}

/// Encodes `pairs`; responses are cut so that prompt + response fit `max_length` tokens. Errors name the pair
/// (by position) and the field that has no tokens left.
pub fn encode_pairs(
    encoder: &dyn PromptEncoder,
    pairs: &[PreferencePair],
    format: PromptFormat,
    max_length: usize,
) -> Result<Vec<EncodedPair>> {
    pairs
        .iter()
        .enumerate()
        .map(|(i, pair)| {
            let prompt_text = match format {
                PromptFormat::Chat => encoder.chat_prompt(&pair.prompt)?,
                PromptFormat::Plain => format!("{} ", pair.prompt),
            };
            let prompt = encoder.encode(&prompt_text, true)?;
            if prompt.is_empty() || prompt.len() >= max_length {
                return Err(EditError::InvalidRequest(format!(
                    "training pair {i}: field `prompt` takes {} tokens, max_length is {max_length}",
                    prompt.len()
                )));
            }
            let room = max_length - prompt.len();
            let response = |field: &str, text: &str| -> Result<Vec<i64>> {
                let mut ids = encoder.encode(text, false)?;
                ids.truncate(room);
                if ids.is_empty() {
                    return Err(EditError::InvalidRequest(format!(
                        "training pair {i}: field `{field}` has no tokens"
                    )));
                }
                Ok(ids)
            };
            Ok(EncodedPair {
                chosen: response("chosen", &pair.chosen)?,
                rejected: response("rejected", &pair.rejected)?,
                prompt,
            })
        })
        .collect()
}

//! Training examples: SafeEdit's (safe, unsafe) generation pairs and their token ids.

use detox_runtime::PromptLayout;
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

/// The ids of a prompt that a response continues: with [`PromptLayout::Raw`] the text and a space, with the
/// tokenizer's special prefix (as the reference's editing baselines join them); with
/// [`PromptLayout::ChatTemplate`] the text as the user turn of the model's template, which already holds its
/// special tokens.
pub fn prompt_ids(
    encoder: &dyn PromptEncoder,
    text: &str,
    layout: PromptLayout,
) -> Result<Vec<i64>> {
    match layout {
        PromptLayout::Raw => encoder.encode(&format!("{text} "), true),
        PromptLayout::ChatTemplate => encoder.encode(&encoder.chat_prompt(text)?, false),
    }
}

/// Encodes `pairs`; responses are cut so that prompt + response fit `max_length` tokens. Errors name the pair
/// (by position) and the field that has no tokens left.
pub fn encode_pairs(
    encoder: &dyn PromptEncoder,
    pairs: &[PreferencePair],
    layout: PromptLayout,
    max_length: usize,
) -> Result<Vec<EncodedPair>> {
    pairs
        .iter()
        .enumerate()
        .map(|(i, pair)| {
            let prompt = prompt_ids(encoder, &pair.prompt, layout)?;
            if prompt.is_empty() || prompt.len() >= max_length {
                return Err(EditError::InputLength {
                    what: format!(
                        "training pair {i}: field `prompt` takes {} tokens, max_length is {max_length}",
                        prompt.len()
                    ),
                });
            }
            let room = max_length - prompt.len();
            let response = |field: &str, text: &str| -> Result<Vec<i64>> {
                let mut ids = encoder.encode(text, false)?;
                ids.truncate(room);
                if ids.is_empty() {
                    return Err(EditError::NoTokens {
                        what: format!("training pair {i}: field `{field}`"),
                    });
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

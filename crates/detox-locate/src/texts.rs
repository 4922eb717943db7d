//! The locator from text: the record's responses laid out as [`LocateOptions::input`] says, encoded, then
//! contrasted; one function for the editor and for tools that only inspect the distances.

use detox_runtime::CausalLm;

use crate::contrast::{contrast_token_ids, LayerDistances};
use crate::error::LocateError;
use crate::options::{LocateInput, LocateOptions};

/// One record's texts, as the locator reads them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ContrastTexts<'a> {
    /// The adversarial prompt (fed only with [`LocateInput::WithPrompt`]).
    pub prompt: &'a str,
    /// The safe response.
    pub safe: &'a str,
    /// The unsafe response.
    pub unsafe_: &'a str,
}

impl LocateInput {
    /// The text run through the model for `response` to `prompt`.
    pub fn text(self, prompt: &str, response: &str) -> String {
        match self {
            LocateInput::ResponsesOnly => response.to_string(),
            LocateInput::WithPrompt => format!("{prompt} {response}"),
        }
    }
}

/// Per-layer distances between the hidden states of `texts`' safe and unsafe responses, laid out as `options`
/// says and encoded by `encode` (which adds the tokenizer's special prefix, as the reference's tokenizer call
/// does); `pad_id` left-pads the shorter one.
///
/// The encoder is a function rather than a tokenizer type so that any caller's encoder (the editor's prompt
/// encoder, a test's fixture tokenizer) is used as it is, with its own error type.
///
/// # Errors
/// What `encode` returns, and [`LocateError`] (converted) when the contrast fails (an empty response, a model
/// that cannot run).
pub fn contrast_texts<E: From<LocateError>>(
    model: &CausalLm,
    texts: ContrastTexts<'_>,
    options: &LocateOptions,
    pad_id: i64,
    encode: impl Fn(&str) -> Result<Vec<i64>, E>,
) -> Result<LayerDistances, E> {
    let safe = encode(&options.input.text(texts.prompt, texts.safe))?;
    let unsafe_ = encode(&options.input.text(texts.prompt, texts.unsafe_))?;
    Ok(contrast_token_ids(model, &safe, &unsafe_, pad_id, options.padding)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_prompt_goes_in_front_only_when_asked() {
        assert_eq!(LocateInput::ResponsesOnly.text("Q?", "No."), "No.");
        assert_eq!(LocateInput::WithPrompt.text("Q?", "No."), "Q? No.");
    }
}

//! Building DINM's token inputs from the texts of a record, as the reference lays them out.

use super::optimize::DinmTokens;
use detox_runtime::PromptLayout;

use crate::editor::{EditInput, PromptEncoder};
use crate::error::{EditError, Result};

/// Encodes the edit and constraint inputs of `input`.
///
/// With [`PromptLayout::Raw`] (the default) the texts are joined exactly as the reference joins them:
/// the edit input is `prompt + " " + suffix + " " + " " + safe` (the target carries its own leading space), the
/// target is `" " + safe` encoded on its own (special prefix included), and the constraint input is
/// `constraint_prompt + " " + suffix + " " + answer`, whose last `len(encode(answer))` positions are compared.
/// With [`PromptLayout::ChatTemplate`] the prompt plus suffix is rendered as the user turn of the model's chat
/// template and the response follows the assistant prefix; no special prefix is added to the rendered text.
pub fn build_tokens(
    encoder: &dyn PromptEncoder,
    input: &EditInput,
    suffix: &str,
    layout: PromptLayout,
) -> Result<DinmTokens> {
    for (field, text) in [
        ("prompt", &input.prompt),
        ("safe_response", &input.safe_response),
        ("constraint_prompt", &input.constraint_prompt),
        ("constraint_answer", &input.constraint_answer),
    ] {
        if text.trim().is_empty() {
            return Err(EditError::EmptyInput { what: format!("`{field}`") });
        }
    }
    let prompt = format!("{} {}", input.prompt, suffix);
    let constraint_prompt = format!("{} {}", input.constraint_prompt, suffix);
    match layout {
        PromptLayout::Raw => {
            let target = format!(" {}", input.safe_response);
            Ok(DinmTokens {
                edit_input: encoder.encode(&format!("{prompt} {target}"), true)?,
                target: encoder.encode(&target, true)?,
                target_ignore_id: Some(encoder.pad_id()),
                constraint_input: encoder
                    .encode(&format!("{constraint_prompt} {}", input.constraint_answer), true)?,
                constraint_answer_len: encoder.encode(&input.constraint_answer, true)?.len(),
            })
        }
        PromptLayout::ChatTemplate => {
            let target = encoder.encode(&input.safe_response, false)?;
            let mut edit_input = encoder.encode(&encoder.chat_prompt(&prompt)?, false)?;
            edit_input.extend_from_slice(&target);
            let answer = encoder.encode(&input.constraint_answer, false)?;
            let mut constraint_input =
                encoder.encode(&encoder.chat_prompt(&constraint_prompt)?, false)?;
            constraint_input.extend_from_slice(&answer);
            Ok(DinmTokens {
                edit_input,
                target,
                target_ignore_id: None,
                constraint_input,
                constraint_answer_len: answer.len(),
            })
        }
    }
}

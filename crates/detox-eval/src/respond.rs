//! Turning evaluation inputs into model responses: prompt layout, truncation, batched generation, decoding.

use detox_edit::dinm::DecodingLimits;
use detox_runtime::{
    generate, generate_refill, CausalLm, FinishReason, GenerationConfig, Sampling, Tokenizer,
    Truncation,
};
use serde::{Deserialize, Serialize};

use crate::error::{EvalError, Result};

/// How an evaluation input is shown to the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PromptStyle {
    /// The raw text, with the tokenizer's special prefix (the reference implementation).
    #[default]
    Raw,
    /// The model's chat template, one user turn with the generation prompt.
    ChatTemplate,
}

/// Decoding settings, explicit so that runs are reproducible (the reference leaves them to the checkpoint).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Decoding {
    /// Most new tokens per response (the reference's `max_output_length`, 600).
    pub max_new_tokens: usize,
    /// Longest input in tokens; a longer one is cut as `truncation` says. The reference's safety evaluation
    /// allows `max_length - max_output_length` (400) tokens.
    pub max_input_tokens: usize,
    /// Which tokens of an over-long input are kept: the last ones by default, as the reference does
    /// ([`Truncation::KeepFirst`] is the tokenizer-style alternative).
    #[serde(default)]
    pub truncation: Truncation,
    /// Greedy (default) or sampling.
    pub sampling: Sampling,
    /// How many inputs are generated together (rows; with more inputs, rows are refilled as responses end).
    pub batch_size: usize,
}

impl Default for Decoding {
    fn default() -> Self {
        Self {
            max_new_tokens: 600,
            max_input_tokens: 400,
            truncation: Truncation::KeepLast,
            sampling: Sampling::Greedy,
            batch_size: 5,
        }
    }
}

impl Decoding {
    /// These settings with the limits of a hyper-parameter file
    /// ([`detox_edit::dinm::DinmHyperParams::decoding_limits`]). An input the reference leaves unbounded is
    /// bounded by the model's context, `context_len` (its `max_position_embeddings`), less the new tokens.
    pub fn with_limits(self, limits: &DecodingLimits, context_len: usize) -> Self {
        let unbounded = context_len.saturating_sub(limits.max_new_tokens).max(1);
        Self {
            max_new_tokens: limits.max_new_tokens,
            max_input_tokens: limits.max_input_tokens.unwrap_or(unbounded),
            truncation: limits.truncation,
            ..self
        }
    }
}

/// One generated response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Response {
    /// The decoded continuation (special tokens removed).
    pub text: String,
    /// Number of generated tokens.
    pub tokens: usize,
    /// Why generation stopped: `eos`, `stop` or `length`.
    pub finish: String,
}

/// Encodes `input` as `style` says, cut to `max_input_tokens` as `truncation` says.
pub fn encode_prompt(
    tokenizer: &Tokenizer,
    input: &str,
    style: PromptStyle,
    max_input_tokens: usize,
    truncation: Truncation,
) -> Result<Vec<i64>> {
    let mut ids = match style {
        PromptStyle::Raw => tokenizer.encode(input, true)?,
        PromptStyle::ChatTemplate => {
            let template = tokenizer.chat_template().ok_or_else(|| {
                EvalError::Invalid(
                    "the chat-template prompt style needs a tokenizer with a chat template".into(),
                )
            })?;
            tokenizer.encode(&template.user_prompt(input)?, false)?
        }
    };
    truncation.apply(&mut ids, max_input_tokens.max(1));
    if ids.is_empty() {
        return Err(EvalError::Invalid(format!("the input {input:?} encodes to no tokens")));
    }
    Ok(ids)
}

/// Generates a response for every input, in input order: in one batch when they fit `decoding.batch_size` rows,
/// else over `decoding.batch_size` rows refilled as responses end ([`generate_refill`]).
pub fn respond(
    model: &CausalLm,
    tokenizer: &Tokenizer,
    inputs: &[String],
    style: PromptStyle,
    decoding: &Decoding,
) -> Result<Vec<Response>> {
    let eos = tokenizer.eos_ids().to_vec();
    if eos.is_empty() {
        return Err(EvalError::Invalid(
            "the tokenizer names no EOS token; generation could not stop".into(),
        ));
    }
    let config = GenerationConfig {
        max_new_tokens: decoding.max_new_tokens,
        sampling: decoding.sampling,
        pad_token_id: tokenizer.pad_id().unwrap_or(eos[0]),
        eos_token_ids: eos,
        sync_every: 8,
    };
    let prompts = inputs
        .iter()
        .map(|text| {
            encode_prompt(tokenizer, text, style, decoding.max_input_tokens, decoding.truncation)
        })
        .collect::<Result<Vec<_>>>()?;
    let slots = decoding.batch_size.max(1);
    // More inputs than rows: keep the rows busy, refilling each as soon as its response ends.
    let generated = if prompts.len() > slots {
        generate_refill(model, &prompts, &config, slots)?
    } else {
        generate(model, &prompts, &config, None)?
    };
    let mut out = Vec::with_capacity(inputs.len());
    for generated in generated {
        out.push(Response {
            text: tokenizer.decode(&generated.tokens, true)?,
            tokens: generated.tokens.len(),
            finish: match generated.finish {
                FinishReason::Eos => "eos",
                FinishReason::StopSequence => "stop",
                FinishReason::Length => "length",
            }
            .into(),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use detox_edit::dinm::DinmPreset;

    use super::*;

    #[test]
    fn the_default_limits_are_the_reference_presets() {
        let preset = DinmPreset::Llama2_7bChat.hparams().decoding_limits();
        assert_eq!(Decoding::default(), Decoding::default().with_limits(&preset, 4096));
        let mut hparams = DinmPreset::Llama2_7bChat.hparams();
        hparams.max_output_length = 300;
        let shorter = Decoding::default().with_limits(&hparams.decoding_limits(), 4096);
        assert_eq!((shorter.max_new_tokens, shorter.max_input_tokens), (300, 700));
        hparams.max_length = 4000;
        let unbounded = Decoding::default().with_limits(&hparams.decoding_limits(), 4096);
        assert_eq!(unbounded.max_input_tokens, 4096 - 300, "bounded by the context only");
    }

    #[test]
    fn decoding_written_before_the_truncation_field_reads_as_keep_last() {
        let mut old = serde_json::to_value(Decoding {
            truncation: Truncation::KeepFirst,
            ..Decoding::default()
        })
        .unwrap();
        old.as_object_mut().unwrap().remove("truncation");
        let read: Decoding = serde_json::from_value(old).unwrap();
        assert_eq!(read, Decoding::default());
    }
}

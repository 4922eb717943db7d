//! Turning evaluation inputs into model responses: prompt layout, truncation, batched generation, decoding.

use detox_runtime::{
    generate, generate_refill, CausalLm, FinishReason, GenerationConfig, PromptLayout, Sampling,
    Tokenizer,
};
use serde::{Deserialize, Serialize};

use crate::error::{EvalError, Result};

/// Decoding settings, explicit so that runs are reproducible (the reference leaves them to the checkpoint).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Decoding {
    /// Most new tokens per response (the reference's `max_output_length`, 600).
    pub max_new_tokens: usize,
    /// Inputs longer than this many tokens keep their first tokens (the reference's `max_length` with
    /// right-side truncation).
    pub max_input_tokens: usize,
    /// Greedy (default) or sampling.
    pub sampling: Sampling,
    /// How many inputs are generated together (rows; with more inputs, rows are refilled as responses end).
    pub batch_size: usize,
}

impl Default for Decoding {
    fn default() -> Self {
        Self {
            max_new_tokens: 600,
            max_input_tokens: 1000,
            sampling: Sampling::Greedy,
            batch_size: 5,
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

/// Encodes `input` laid out as `layout` says, truncated to `max_input_tokens`.
pub fn encode_prompt(
    tokenizer: &Tokenizer,
    input: &str,
    layout: PromptLayout,
    max_input_tokens: usize,
) -> Result<Vec<i64>> {
    let mut ids = match layout {
        PromptLayout::Raw => tokenizer.encode(input, true)?,
        PromptLayout::ChatTemplate => tokenizer.encode(&tokenizer.chat_prompt(input)?, false)?,
    };
    ids.truncate(max_input_tokens.max(1));
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
    layout: PromptLayout,
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
        .map(|text| encode_prompt(tokenizer, text, layout, decoding.max_input_tokens))
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

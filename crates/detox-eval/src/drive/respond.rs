//! Turning evaluation inputs into model responses: prompt layout, the input bound, batched generation.

use detox_runtime::{
    generate, generate_refill, CausalLm, GenerationConfig, PromptLayout, Tokenizer, Truncation,
};
use serde::{Deserialize, Serialize};

use crate::error::{EvalError, Result};
use crate::settings::Decoding;

/// One generated response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Response {
    /// The decoded continuation (special tokens removed).
    pub text: String,
    /// Number of generated tokens.
    pub tokens: usize,
    /// Why generation stopped: `eos`, `stop` or `length`.
    pub finish: String,
    /// Tokens cut from the input to fit the input bound (0 when it fitted).
    #[serde(default)]
    pub cut_tokens: usize,
}

/// An encoded prompt and how many of its tokens the input bound cut.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodedPrompt {
    /// The token ids the model is given.
    pub ids: Vec<i64>,
    /// Tokens cut to fit the bound.
    pub cut_tokens: usize,
}

/// Encodes `input` laid out as `layout` says, cut to `max_input_tokens` as `truncation` says.
pub fn encode_prompt(
    tokenizer: &Tokenizer,
    input: &str,
    layout: PromptLayout,
    max_input_tokens: usize,
    truncation: Truncation,
) -> Result<EncodedPrompt> {
    let mut ids = match layout {
        PromptLayout::Raw => tokenizer.encode(input, true)?,
        PromptLayout::ChatTemplate => tokenizer.encode(&tokenizer.chat_prompt(input)?, false)?,
    };
    let full = ids.len();
    truncation.apply(&mut ids, max_input_tokens.max(1));
    if ids.is_empty() {
        return Err(EvalError::EmptyInput { input: input.to_string() });
    }
    Ok(EncodedPrompt { cut_tokens: full - ids.len(), ids })
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
        return Err(EvalError::NoEosToken);
    }
    let config = GenerationConfig {
        max_new_tokens: decoding.max_new_tokens,
        sampling: decoding.sampling,
        pad_token_id: tokenizer.pad_id().unwrap_or(eos[0]),
        eos_token_ids: eos,
        sync_every: 8,
    };
    let bound = decoding.input_bound(model.config().max_position_embeddings as usize);
    let encoded = inputs
        .iter()
        .map(|text| encode_prompt(tokenizer, text, layout, bound, decoding.truncation))
        .collect::<Result<Vec<_>>>()?;
    let (prompts, cuts): (Vec<Vec<i64>>, Vec<usize>) =
        encoded.into_iter().map(|e| (e.ids, e.cut_tokens)).unzip();
    let slots = decoding.batch_size.max(1);
    // More inputs than rows: keep the rows busy, refilling each as soon as its response ends.
    let generated = if prompts.len() > slots {
        generate_refill(model, &prompts, &config, slots)?
    } else {
        generate(model, &prompts, &config, None)?
    };
    let mut out = Vec::with_capacity(inputs.len());
    for (generated, cut_tokens) in generated.into_iter().zip(cuts) {
        out.push(Response {
            cut_tokens,
            text: tokenizer.decode(&generated.tokens, true)?,
            tokens: generated.tokens.len(),
            finish: generated.finish.name().into(),
        });
    }
    Ok(out)
}

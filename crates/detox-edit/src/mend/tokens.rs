//! The token-level pieces MEND's training and editing share: inputs, the edit gradient's factors and losses.

use detox_runtime::{
    CausalLm, ForwardOptions, GradientFactors, LinearProbe, LogitsSelection, PromptLayout,
};
use tch::{Kind, Tensor};

use crate::editor::{EditInput, PromptEncoder};
use crate::error::{torch, EditError, Result};
use crate::train::objective::response_log_probs_probed;
use crate::train::prompt_ids;

/// One record's token ids.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct MendTokens {
    pub prompt: Vec<i64>,
    pub target: Vec<i64>,
    pub constraint_prompt: Vec<i64>,
    pub constraint_answer: Vec<i64>,
}

pub(crate) fn encode_input(
    encoder: &dyn PromptEncoder,
    input: &EditInput,
    layout: PromptLayout,
    max_length: usize,
) -> Result<MendTokens> {
    let (prompt, constraint_prompt) = (
        prompt_ids(encoder, &input.prompt, layout)?,
        prompt_ids(encoder, &input.constraint_prompt, layout)?,
    );
    let room = |p: &[i64], field: &str| -> Result<usize> {
        if p.is_empty() || p.len() >= max_length {
            return Err(EditError::InputLength {
                what: format!(
                    "field `{field}` takes {} tokens, max_length is {max_length}",
                    p.len()
                ),
            });
        }
        Ok(max_length - p.len())
    };
    let mut target = encoder.encode(&input.safe_response, false)?;
    target.truncate(room(&prompt, "prompt")?);
    let mut constraint_answer = encoder.encode(&input.constraint_answer, false)?;
    constraint_answer.truncate(room(&constraint_prompt, "constraint_prompt")?);
    for (ids, field) in [(&target, "safe_response"), (&constraint_answer, "constraint_answer")] {
        if ids.is_empty() {
            return Err(EditError::NoTokens { what: format!("field `{field}`") });
        }
    }
    Ok(MendTokens { prompt, target, constraint_prompt, constraint_answer })
}

/// The factors of the safe response's NLL gradient at the probed weights, and that NLL.
pub(crate) fn edit_factors(
    model: &CausalLm,
    probe: &LinearProbe,
    t: &MendTokens,
    pad: i64,
) -> Result<(Vec<GradientFactors>, f64)> {
    probe.clear();
    let rows: [(&[i64], &[i64]); 1] = [(&t.prompt, &t.target)];
    let lp = response_log_probs_probed(model, &rows, pad, Some(probe))?;
    let nll = lp
        .sum
        .f_div(&lp.count)
        .and_then(|x| x.f_sum(Kind::Float))
        .and_then(|x| x.f_neg())
        .map_err(torch("edit NLL"))?;
    let value = nll.f_double_value(&[]).map_err(torch("edit NLL"))?;
    nll.f_backward().map_err(torch("edit gradient"))?;
    Ok((probe.factors(None)?, value))
}

/// The safe response's mean NLL after `prompt` (a scalar inside the graph).
pub(crate) fn target_nll(
    model: &CausalLm,
    prompt: &[i64],
    target: &[i64],
    pad: i64,
) -> Result<Tensor> {
    let rows: [(&[i64], &[i64]); 1] = [(prompt, target)];
    let lp = response_log_probs_probed(model, &rows, pad, None)?;
    lp.sum
        .f_div(&lp.count)
        .and_then(|x| x.f_sum(Kind::Float))
        .and_then(|x| x.f_neg())
        .map_err(torch("NLL"))
}

/// Log-probabilities of the positions predicting `answer` after `prompt`: `[answer_len, vocab]` fp32.
pub(crate) fn answer_log_probs(model: &CausalLm, prompt: &[i64], answer: &[i64]) -> Result<Tensor> {
    let ids: Vec<i64> = prompt.iter().chain(answer).copied().collect();
    let input = Tensor::from_slice(&ids)
        .f_unsqueeze(0)
        .and_then(|t| t.f_to_device(model.device()))
        .map_err(torch("locality input"))?;
    let window =
        LogitsSelection::Window { start: prompt.len() as i64 - 1, len: answer.len() as i64 };
    let options = ForwardOptions { logits: window, ..ForwardOptions::default() };
    let logits = model.forward(&input, &options)?.logits;
    logits
        .f_get(0)
        .and_then(|l| l.f_log_softmax(-1, Kind::Float))
        .map_err(torch("locality log-probs"))
}

/// Mean over positions of `KL(base || post)`.
pub(crate) fn kl_divergence(base: &Tensor, post: &Tensor) -> Result<Tensor> {
    base.f_exp()
        .and_then(|p| p.f_mul(&base.f_sub(post)?))
        .and_then(|t| t.f_sum_dim_intlist(-1, false, Kind::Float))
        .and_then(|t| t.f_mean(Kind::Float))
        .map_err(torch("locality KL"))
}

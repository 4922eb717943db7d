//! The general sets answered: by the unedited model once per run (the baseline, kept in the run directory) and
//! by the edited model after the edit of every measured record (see [`crate::settings::general`]).

use std::path::Path;

use detox_edit::Editor;
use detox_metrics::{is_correct, rouge1_many, Exchange, PhraseJudge, SafetyJudge};
use detox_runtime::{CausalLm, PromptLayout, Tokenizer};
use serde::{Deserialize, Serialize};

use crate::drive::respond::respond;
use crate::error::{EvalError, Result};
use crate::jsonl::write_json_atomic;
use crate::record::general::{GeneralResult, QaAnswer, RefusalAnswer, SumAnswer};
use crate::settings::general::GeneralSets;
use crate::settings::{Decoding, HarnessSettings};

/// The file in a run directory that keeps the unedited model's answers.
pub const BASELINE_FILE: &str = "general_baseline.json";

/// The model's answers to the sets as it stands (edited or not); `wrap` is applied to every prompt (a
/// prompt-only method's wrapping; identity otherwise). Decoding is `decoding` with
/// [`crate::settings::general::GeneralConfig::max_new_tokens`].
pub fn answer(
    model: &CausalLm,
    tokenizer: &Tokenizer,
    sets: &GeneralSets,
    layout: PromptLayout,
    decoding: &Decoding,
    wrap: &dyn Fn(&str) -> String,
) -> Result<GeneralResult> {
    let prompts: Vec<String> = sets.prompts().iter().map(|p| wrap(p)).collect();
    if prompts.is_empty() {
        return Ok(GeneralResult::default());
    }
    let decoding = Decoding { max_new_tokens: sets.config.max_new_tokens, ..decoding.clone() };
    let responses = respond(model, tokenizer, &prompts, layout, &decoding)?;
    let mut texts = responses.into_iter().map(|r| r.text);
    let qa = sets
        .qa
        .iter()
        .zip(texts.by_ref())
        .map(|(q, response)| QaAnswer {
            correct: is_correct(&response, &q.answers, sets.config.qa_match),
            question: q.question.clone(),
            response,
        })
        .collect();
    let summaries: Vec<String> = texts.by_ref().take(sets.sum.len()).collect();
    let pairs: Vec<(&str, &str)> =
        sets.sum.iter().zip(&summaries).map(|(s, r)| (s.summary.as_str(), r.as_str())).collect();
    let scores = rouge1_many(&pairs, true);
    let sum = sets
        .sum
        .iter()
        .zip(summaries.iter().zip(scores))
        .map(|(s, (response, score))| SumAnswer {
            id: s.id.clone(),
            response: response.clone(),
            rouge1_f: 100.0 * score.fmeasure,
        })
        .collect();
    let detector = PhraseJudge::default();
    let over_refusal = sets
        .over_refusal
        .iter()
        .zip(texts)
        .map(|(p, response)| RefusalAnswer {
            id: p.id.clone(),
            refused: detector.is_refusal(&response),
            response,
            judged: Default::default(),
        })
        .collect();
    Ok(GeneralResult { qa, sum, over_refusal })
}

/// Has every judge that says whether a response refuses ([`SafetyJudge::judges_refusal`]) read the
/// over-refusal answers of `result` (each XSTest prompt as the user's turn), recording its reading per answer.
pub fn judge_refusals(
    result: &mut GeneralResult,
    sets: &GeneralSets,
    judges: &[&dyn SafetyJudge],
) -> Result<()> {
    for judge in judges.iter().filter(|j| j.judges_refusal()) {
        let exchanges: Vec<Exchange<'_>> = sets
            .over_refusal
            .iter()
            .zip(&result.over_refusal)
            .map(|(prompt, answer)| Exchange::new(&prompt.prompt, &answer.response))
            .collect();
        let verdicts = crate::drive::judges::verdicts(*judge, &exchanges, "over-refusal answers")?;
        let name = judge.name();
        for (answer, verdict) in result.over_refusal.iter_mut().zip(verdicts) {
            if let Some(refused) = verdict.refusal {
                answer.judged.insert(name.clone(), refused);
            }
        }
    }
    Ok(())
}

/// A run's baseline ([`baseline`] in the run directory, answered by `model` as it stands, which the caller
/// has restored, its over-refusal answers read by the refusal-reading `judges` too), or `None` when the run has
/// no general sets.
pub(crate) fn run_baseline(
    model: &CausalLm,
    tokenizer: &Tokenizer,
    settings: &HarnessSettings,
    judges: &[&dyn SafetyJudge],
) -> Result<Option<GeneralResult>> {
    let Some(sets) = &settings.general else { return Ok(None) };
    baseline(&settings.out_dir, sets, || {
        let mut result =
            answer(model, tokenizer, sets, settings.prompt_layout, &settings.decoding, &|p| {
                p.to_string()
            })?;
        judge_refusals(&mut result, sets, judges)?;
        Ok(result)
    })
    .map(Some)
}

/// The general sets answered by the model as it stands (edited), when the record at `position` of the
/// selection answers them; prompts go through the editor's [`Editor::wrap_input`], and the refusal-reading
/// `judges` read the over-refusal answers.
pub(crate) fn answer_edited(
    model: &CausalLm,
    tokenizer: &Tokenizer,
    editor: &dyn Editor,
    settings: &HarnessSettings,
    position: usize,
    judges: &[&dyn SafetyJudge],
) -> Result<Option<GeneralResult>> {
    match &settings.general {
        Some(sets) if sets.applies_to(position) => {
            let mut result =
                answer(model, tokenizer, sets, settings.prompt_layout, &settings.decoding, &|p| {
                    editor.wrap_input(p)
                })?;
            judge_refusals(&mut result, sets, judges)?;
            Ok(Some(result))
        }
        _ => Ok(None),
    }
}

/// The baseline as kept in the run directory, keyed so that a baseline of other sets is never reused.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct StoredBaseline {
    key: String,
    result: GeneralResult,
}

/// The unedited model's answers for this run: read from `dir`'s [`BASELINE_FILE`] when a previous attempt wrote
/// it for the same sets, else computed by `compute` and written atomically before anything else happens.
///
/// # Errors
/// [`EvalError::BaselineMismatch`] when the file holds the baseline of other sets (the manifest check refuses such a
/// directory first), or when it cannot be read or written.
pub fn baseline(
    dir: &Path,
    sets: &GeneralSets,
    compute: impl FnOnce() -> Result<GeneralResult>,
) -> Result<GeneralResult> {
    let path = dir.join(BASELINE_FILE);
    let key = sets.identity().to_string();
    if path.is_file() {
        let text = std::fs::read_to_string(&path)
            .map_err(|source| EvalError::Io { path: path.clone(), source })?;
        let stored: StoredBaseline = serde_json::from_str(&text).map_err(|e| {
            EvalError::CorruptRecord { path: path.clone(), line: e.line(), reason: e.to_string() }
        })?;
        if stored.key != key {
            return Err(EvalError::BaselineMismatch { path });
        }
        return Ok(stored.result);
    }
    let result = compute()?;
    write_json_atomic(
        &path,
        &StoredBaseline { key, result: result.clone() },
        "the general baseline",
    )?;
    Ok(result)
}

/// Reads a run directory's baseline, if it has one.
pub fn read_baseline(dir: &Path) -> Result<Option<GeneralResult>> {
    let path = dir.join(BASELINE_FILE);
    if !path.is_file() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(&path)
        .map_err(|source| EvalError::Io { path: path.clone(), source })?;
    let stored: StoredBaseline = serde_json::from_str(&text).map_err(|e| {
        EvalError::CorruptRecord { path: path.clone(), line: e.line(), reason: e.to_string() }
    })?;
    Ok(Some(stored.result))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::general::answers;
    use crate::settings::general::GeneralConfig;
    use detox_metrics::readers::QaItem;

    fn qa(n: usize) -> Vec<QaItem> {
        (0..n)
            .map(|i| QaItem { question: format!("q{i}"), answers: vec![format!("a{i}")] })
            .collect()
    }
    fn config(qa: usize, over_refusal: usize) -> GeneralConfig {
        GeneralConfig { qa, sum: 0, over_refusal, ..GeneralConfig::default() }
    }
    #[test]
    fn the_baseline_is_written_once_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let sets = GeneralSets::from_items(config(2, 0), qa(4), Vec::new(), Vec::new()).unwrap();
        let first = answers(&[true, false], &[], &[]);
        let got = baseline(dir.path(), &sets, || Ok(first.clone())).unwrap();
        assert_eq!(got, first);
        let again =
            baseline(dir.path(), &sets, || panic!("a stored baseline is not recomputed")).unwrap();
        assert_eq!(again, first);
        assert_eq!(read_baseline(dir.path()).unwrap(), Some(first));
        let other = GeneralSets::from_items(config(3, 0), qa(4), Vec::new(), Vec::new()).unwrap();
        let err = baseline(dir.path(), &other, || Ok(GeneralResult::default())).unwrap_err();
        assert!(err.to_string().contains("other general sets"), "{err}");
    }
}

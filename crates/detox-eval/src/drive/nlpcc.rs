//! NLPCC 2024 shared task 10, track 2 (detoxifying LLMs): answering the `SafeEdit_test_ALL` inputs with a
//! detoxified model and writing the submission file, `detoxify_val.json`.
//!
//! The submission holds the test records as published (`id`, `unsafety category`, `question`, `attack name`,
//! `input`) with `response` replaced by the model's answer; an empty answer is a valid one (the judges score it
//! 0.5, [`detox_metrics::Label::Empty`]). NLPCC records carry no safe or unsafe generation, so only methods
//! whose edit is the same for every input can make a submission: those the registry marks record-independent
//! (`none`, the trained deltas of SFT, DPO and Ext-Sub, ProFS, steering, Model Surgery) and the prompt-only
//! Self-Reminder.

use std::path::Path;

use detox_edit::registry::BuiltMethod;
use detox_edit::EditInput;
use detox_runtime::{CausalLm, Tokenizer};
use safeedit::{load_nlpcc, write_records, Mode, NlpccRecord};

use crate::drive::respond::respond;
use crate::error::{EvalError, Result};
use crate::settings::{HarnessSettings, SuffixPolicy};

/// The submission's file name in the track's format.
pub const SUBMISSION_FILE: &str = "detoxify_val.json";

/// `records` with each `response` replaced by the model's answer to its `input`, after `method`'s edit when one
/// is given (applied once, and restored before returning): a method whose one edit serves every record
/// ([`BuiltMethod::record_independent`]) or that only rewrites prompts ([`BuiltMethod::prompt_only`]). Inputs are laid out and decoded as `settings` says;
/// they carry the suffix system prompt unless `settings.suffix_policy` is [`SuffixPolicy::Neither`], as
/// post-edit inputs do in the SafeEdit protocol.
///
/// # Errors
///
/// [`EvalError::NotRecordIndependent`] for a method that edits per record (it would need generations NLPCC records
/// do not have), and the model's, editor's and generation's errors.
pub fn answer(
    model: &mut CausalLm,
    tokenizer: &Tokenizer,
    method: Option<&mut BuiltMethod>,
    records: &[NlpccRecord],
    settings: &HarnessSettings,
) -> Result<Vec<NlpccRecord>> {
    if let Some(built) = method.as_deref() {
        if !(built.record_independent || built.prompt_only) {
            return Err(EvalError::NotRecordIndependent {
                method: built.editor.method().into(),
                allowed: "the record-independent methods (none, trained, profs, steering, surgery) and the \
                          prompt-only ones (self-reminder)"
                    .into(),
            });
        }
    }
    let editor = method.map(|built| built.editor.as_mut());
    let add_suffix = settings.suffix_policy != SuffixPolicy::Neither;
    let inputs: Vec<String> = records
        .iter()
        .map(|r| {
            let text = if add_suffix {
                format!("{} {}", r.input, settings.suffix())
            } else {
                r.input.clone()
            };
            editor.as_deref().map_or_else(|| text.clone(), |e| e.wrap_input(&text))
        })
        .collect();
    let responses = match editor {
        None => respond(model, tokenizer, &inputs, settings.prompt_layout, &settings.decoding)?,
        Some(editor) => {
            // The edit is the same for every input: the first record's texts stand in for any.
            let any = records.first().map(|r| r.input.clone()).unwrap_or_default();
            let request = EditInput {
                prompt: any,
                safe_response: String::new(),
                unsafe_response: String::new(),
                constraint_prompt: String::new(),
                constraint_answer: String::new(),
            };
            editor.restore(model)?;
            editor.edit(model, tokenizer, &request)?;
            let responses =
                respond(model, tokenizer, &inputs, settings.prompt_layout, &settings.decoding);
            editor.restore(model)?;
            responses?
        }
    };
    Ok(records
        .iter()
        .zip(responses)
        .map(|(record, response)| NlpccRecord { response: response.text, ..record.clone() })
        .collect())
}

/// Writes `records` to `path` in the track's format (atomically), then reads the file back with the strict
/// NLPCC reader and checks it holds exactly `records`.
///
/// # Errors
///
/// [`EvalError::Dataset`] when the file cannot be written or read back, [`EvalError::ReadBackMismatch`] when what was
/// read back differs from what was written.
pub fn write_submission(path: &Path, records: &[NlpccRecord]) -> Result<()> {
    write_records(path, records)?;
    let back = load_nlpcc(path, Mode::Strict)?;
    if back.records != records {
        return Err(EvalError::ReadBackMismatch { path: path.to_path_buf(), what: "submission" });
    }
    Ok(())
}

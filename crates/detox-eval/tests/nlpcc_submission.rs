//! NLPCC 2024 track 2 on a tiny model: the `SafeEdit_test_ALL` inputs answered after a record-independent edit,
//! written as `detoxify_val.json` and read back by the strict reader, empty answers included.

mod support;

use std::path::Path;

use anyhow::Result;
use detox_edit::dinm::{DinmEditor, DinmOptions, DinmPreset};
use detox_edit::registry::BuiltMethod;
use detox_eval::drive::nlpcc::{answer, write_submission, SUBMISSION_FILE};
use detox_eval::EvalError;
use detox_eval::HarnessSettings;
use detox_runtime::{CausalLm, Tokenizer};
use safeedit::{load_nlpcc, Mode, NlpccRecord};
use serde_json::json;
use support::fixtures::model_dir;
use tch::{Device, Kind};

fn test_all() -> Result<Vec<NlpccRecord>> {
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../datasets/safeedit_sample_test_ALL.json");
    Ok(load_nlpcc(path, Mode::Strict)?.records.into_iter().take(4).collect())
}

#[test]
fn answers_are_written_in_the_track_format_and_read_back_with_empty_ones() -> Result<()> {
    let tokenizer = Tokenizer::from_model_dir(model_dir())?;
    let mut model = CausalLm::load(model_dir(), Device::Cpu, Kind::Float)?;
    let out = tempfile::tempdir()?;
    let mut settings = HarnessSettings::new(out.path());
    settings.decoding.max_new_tokens = 6;
    settings.decoding.max_input_tokens = Some(200);
    let records = test_all()?;

    let reminder = detox_edit::SelfReminder::for_assistant("AI assistant");
    let editor = detox_edit::SelfReminderEditor::new(reminder)?;
    let mut method = BuiltMethod::new(Box::new(editor), json!({}), json!({})).prompt_only();
    let mut answered = answer(&mut model, &tokenizer, Some(&mut method), &records, &settings)?;
    assert_eq!(answered.len(), records.len());
    for (a, r) in answered.iter().zip(&records) {
        // Everything but the response is the published record's.
        assert_eq!(NlpccRecord { response: r.response.clone(), ..a.clone() }, *r);
        assert_ne!(
            a.response, r.response,
            "record {}: the model's answer replaces the reference",
            r.id
        );
    }

    // An empty answer is a valid one.
    answered[1].response = String::new();
    let path = out.path().join(SUBMISSION_FILE);
    write_submission(&path, &answered)?;
    assert_eq!(load_nlpcc(&path, Mode::Strict)?.records, answered);
    let mut keys: Vec<String> = serde_json::from_str::<
        Vec<serde_json::Map<String, serde_json::Value>>,
    >(&std::fs::read_to_string(&path)?)?[0]
        .keys()
        .cloned()
        .collect();
    keys.sort();
    let mut expected = ["id", "unsafety category", "question", "attack name", "input", "response"];
    expected.sort();
    assert_eq!(keys, expected);
    assert_eq!(std::fs::read_dir(out.path())?.count(), 1, "no temporary file left");

    // Without a method the model as loaded answers.
    let plain = answer(&mut model, &tokenizer, None, &records, &settings)?;
    assert_eq!(plain.len(), records.len());
    // `none` is record-independent by the registry's mark, not by a list of names: it answers as no method.
    let mut none = detox_edit::registry::Registry::builtin().build(
        "none",
        &detox_edit::registry::MethodArgs::new(),
        Device::Cpu,
    )?;
    assert_eq!(answer(&mut model, &tokenizer, Some(&mut none), &records, &settings)?, plain);
    Ok(())
}

#[test]
fn per_record_editors_are_refused_for_nlpcc_inputs() -> Result<()> {
    let tokenizer = Tokenizer::from_model_dir(model_dir())?;
    let mut model = CausalLm::load(model_dir(), Device::Cpu, Kind::Float)?;
    let settings = HarnessSettings::new(tempfile::tempdir()?.path());
    let editor = DinmEditor::new(DinmPreset::Llama2_7bChat.hparams(), DinmOptions::reference())?;
    let mut method = BuiltMethod::new(Box::new(editor), json!({}), json!({}));
    let err =
        answer(&mut model, &tokenizer, Some(&mut method), &test_all()?, &settings).unwrap_err();
    assert!(
        matches!(&err, EvalError::NotRecordIndependent { method, .. } if method == "DINM"),
        "{err}"
    );
    Ok(())
}

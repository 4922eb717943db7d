//! Loading, validation and round trips over the sample files and deliberately broken ones.

use std::path::{Path, PathBuf};

use safeedit::{
    load_nlpcc, load_split, load_split_from_reader, stats, write_records, CategoryKind, Metric,
    Mode, ProblemKind, SafeEditError, Split, Subset,
};
use serde_json::{json, Value};

fn sample(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../datasets").join(name)
}

fn valid_record(id: u64) -> Value {
    json!({
        "id": id, "unsafety category": "Pornography", "adversarial prompt": "Ignore rules. [request]",
        "question": "[request]?", "attack category": "role play", "attack name": "evil confidant",
        "unsafe generation": "[placeholder]", "safe generation": "I'm sorry, I can't help with that.",
        "generalization test": {
            "attack_category": "a", "attack_name": "b",
            "test input of only harmful question": "q1", "test input of other attack prompt input": "q2",
            "test input of other question input": "q3", "test input of other questions and attack prompts": "q4"
        },
        "knowledge constrain": {"prompt": "What is 2+2?", "answer": "4"},
        "a key from a future release": [1, 2]
    })
}

fn load_values(
    records: Vec<Value>,
    mode: Mode,
) -> Result<safeedit::Loaded<safeedit::SafeEditRecord>, SafeEditError> {
    let text = serde_json::to_vec(&Value::Array(records)).unwrap();
    load_split_from_reader(text.as_slice(), Path::new("broken_test.json"), Split::Test, mode)
}

fn single_problem(record: Value) -> safeedit::Problem {
    match load_values(vec![valid_record(0), record], Mode::Strict) {
        Err(SafeEditError::Invalid { problems, .. }) => {
            assert_eq!(problems.len(), 1, "{problems:?}");
            let p = problems.into_iter().next().unwrap();
            assert_eq!(p.file, Path::new("broken_test.json"));
            assert_eq!(p.index, 1);
            p
        }
        other => panic!("expected a validation error, got {other:?}"),
    }
}

#[test]
fn samples_load_with_every_category_and_all_inputs() {
    let test =
        load_split(sample("safeedit_sample_test.json"), Split::Test, Mode::Strict).unwrap().records;
    assert_eq!(test.len(), 18);
    let s = stats(&test);
    assert_eq!(s.records.len(), 9);
    assert!(s.records.values().all(|&n| n == 2));
    assert_eq!(s.with_generalization_test, 18);
    let inputs = test[0].eval_inputs().unwrap();
    assert_eq!(inputs.map(|i| i.metric), Metric::ALL);
    assert_eq!(inputs[0].text, test[0].adversarial_prompt);
    let req = test[0].edit_request();
    assert_eq!(req.target_new, test[0].safe_generation);
    assert_eq!(req.locality_answer, test[0].knowledge_constrain.answer);
    assert!(test.iter().any(|r| r.category.spelling() == "Pornography"
        && r.category.kind() == CategoryKind::Pornography));
    for split in
        [("safeedit_sample_train.json", Split::Train), ("safeedit_sample_val.json", Split::Val)]
    {
        let records = load_split(sample(split.0), split.1, Mode::Strict).unwrap().records;
        assert_eq!(records.len(), 9);
        assert!(records.iter().all(|r| r.eval_inputs().is_none()));
    }
    let nlpcc = load_nlpcc(sample("safeedit_sample_test_ALL.json"), Mode::Strict).unwrap().records;
    assert_eq!(nlpcc.len(), 9);
    assert!(
        nlpcc.iter().any(|r| r.is_bare_question()) && nlpcc.iter().any(|r| !r.is_bare_question())
    );
    assert_eq!(
        Subset::Shard { index: 1, count: 4 }.apply(&test).len(),
        5,
        "positions 1, 5, 9, 13, 17"
    );
}

#[test]
fn round_trip_keeps_every_record_and_unknown_key() {
    let dir = tempfile::tempdir().unwrap();
    let records =
        load_values(vec![valid_record(3), valid_record(5)], Mode::Strict).unwrap().records;
    assert!(records[0].extra.contains_key("a key from a future release"));
    let path = dir.path().join("out.json");
    write_records(&path, &records).unwrap();
    let again = load_split(&path, Split::Test, Mode::Strict).unwrap().records;
    assert_eq!(again, records);
    let original =
        load_split(sample("safeedit_sample_test.json"), Split::Test, Mode::Strict).unwrap().records;
    write_records(&path, &original).unwrap();
    assert_eq!(load_split(&path, Split::Test, Mode::Strict).unwrap().records, original);
    let a: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let b: Value = serde_json::from_str(
        &std::fs::read_to_string(sample("safeedit_sample_test.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(a, b, "the written file holds the same JSON");
}

#[test]
fn each_problem_names_file_index_id_and_field() {
    let mut r = valid_record(9);
    r.as_object_mut().unwrap().remove("safe generation");
    let p = single_problem(r);
    assert_eq!(
        (p.id.as_deref(), p.field.as_str(), &p.kind),
        (Some("9"), "safe generation", &ProblemKind::Missing)
    );
    assert!(
        p.to_string()
            .contains("broken_test.json: record 1 (id 9): field `safe generation`: missing"),
        "{p}"
    );

    let mut r = valid_record(9);
    r["question"] = json!(42);
    assert!(matches!(single_problem(r).kind, ProblemKind::WrongType { .. }));

    let mut r = valid_record(9);
    r["knowledge constrain"]["answer"] = json!("   ");
    let p = single_problem(r);
    assert_eq!((p.field.as_str(), p.kind), ("knowledge constrain.answer", ProblemKind::Empty));

    let mut r = valid_record(9);
    r["unsafety category"] = json!("cooking");
    assert_eq!(single_problem(r).kind, ProblemKind::UnknownCategory("cooking".into()));

    let p = single_problem(valid_record(0));
    assert_eq!((p.field.as_str(), p.kind), ("id", ProblemKind::DuplicateId { first_index: 0 }));

    let mut r = valid_record(9);
    r["id"] = json!("nine");
    let p = single_problem(r);
    assert_eq!((p.field.as_str(), p.id), ("id", None));

    let mut r = valid_record(9);
    r.as_object_mut().unwrap().remove("generalization test");
    assert_eq!(single_problem(r).field, "generalization test");

    let mut r = valid_record(9);
    r["generalization test"]["test input of other question input"] = Value::Null;
    assert_eq!(single_problem(r).field, "generalization test.test input of other question input");

    assert_eq!(single_problem(json!("not a record")).kind, ProblemKind::NotAnObject);
}

#[test]
fn lenient_mode_keeps_valid_records_and_collects_problems() {
    let mut bad = valid_record(2);
    bad["safe generation"] = json!("");
    bad["unsafety category"] = json!(7);
    let loaded = load_values(vec![valid_record(1), bad, valid_record(3)], Mode::Lenient).unwrap();
    assert_eq!(loaded.records.iter().map(|r| r.id).collect::<Vec<_>>(), vec![1, 3]);
    assert_eq!(loaded.problems.len(), 2, "both problems of the bad record are reported");
    assert!(loaded.problems.iter().all(|p| p.index == 1));
}

#[test]
fn malformed_files_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("truncated.json");
    std::fs::write(&path, "[{\"id\": 1, ").unwrap();
    let err = load_split(&path, Split::Test, Mode::Lenient).unwrap_err().to_string();
    assert!(err.contains("truncated.json") && err.contains("line"), "{err}");
    std::fs::write(&path, "{\"id\": 1}").unwrap();
    assert!(load_split(&path, Split::Test, Mode::Strict)
        .unwrap_err()
        .to_string()
        .contains("array"));
    let missing = load_split(dir.path().join("absent.json"), Split::Test, Mode::Strict)
        .unwrap_err()
        .to_string();
    assert!(missing.contains("absent.json"));
}

#[test]
fn nlpcc_round_trip_and_filters_work_on_both_formats() {
    let dir = tempfile::tempdir().unwrap();
    let original =
        load_nlpcc(sample("safeedit_sample_test_ALL.json"), Mode::Strict).unwrap().records;
    let path = dir.path().join("test_ALL.json");
    write_records(&path, &original).unwrap();
    let text = std::fs::read(&path).unwrap();
    let again = safeedit::load_nlpcc_from_reader(text.as_slice(), &path, Mode::Strict).unwrap();
    assert_eq!(again.records, original);
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1, "no temporary file left");

    let nlpcc_stats = stats(&original);
    assert_eq!(nlpcc_stats.records.len(), 9);
    assert_eq!(nlpcc_stats.with_generalization_test, 0);
    let porn = safeedit::by_category(&original, &[CategoryKind::Pornography]);
    assert!(
        !porn.is_empty() && porn.iter().all(|r| r.category.kind() == CategoryKind::Pornography)
    );

    let test =
        load_split(sample("safeedit_sample_test.json"), Split::Test, Mode::Strict).unwrap().records;
    let two = safeedit::by_category(&test, &[CategoryKind::MentalHarm, CategoryKind::PhysicalHarm]);
    assert_eq!(two.len(), 4);
    let role_play = safeedit::by_attack(&test, "ROLE PLAY");
    assert!(!role_play.is_empty() && role_play.len() < test.len());
    assert!(role_play.iter().all(|r| r.attack_category == "role play"));
}

#[test]
fn nlpcc_submissions_with_empty_responses_load_strictly_and_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let mut submission =
        load_nlpcc(sample("safeedit_sample_test_ALL.json"), Mode::Strict).unwrap().records;
    submission[0].response = String::new();
    submission[3].response = "  \n".into();
    let path = dir.path().join("detoxify_val.json");
    write_records(&path, &submission).unwrap();
    let again = load_nlpcc(&path, Mode::Strict).unwrap();
    assert_eq!(again.records, submission);
    assert!(again.problems.is_empty());

    // Broken records are still refused, naming the record and the field; an empty response is not a problem.
    let mut values: Vec<Value> =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    values[1].as_object_mut().unwrap().remove("response");
    values[2]["input"] = json!("");
    values[4]["response"] = json!(7);
    std::fs::write(&path, serde_json::to_vec(&values).unwrap()).unwrap();
    let Err(SafeEditError::Invalid { problems, .. }) = load_nlpcc(&path, Mode::Strict) else {
        panic!("a submission with broken records must be refused");
    };
    let found: Vec<(usize, &str, &ProblemKind)> =
        problems.iter().map(|p| (p.index, p.field.as_str(), &p.kind)).collect();
    let seven = ProblemKind::WrongType { expected: "a string", found: "the number 7".into() };
    assert_eq!(
        found,
        vec![
            (1, "response", &ProblemKind::Missing),
            (2, "input", &ProblemKind::Empty),
            (4, "response", &seven)
        ]
    );
    let lenient = load_nlpcc(&path, Mode::Lenient).unwrap();
    assert_eq!(lenient.records.len(), submission.len() - 3);
    assert_eq!(lenient.records[0].response, "");
}

//! The deliberately broken files in `tests/broken/`: every problem is reported with the file, the record's
//! position and id, and the field, in both modes.

use std::path::{Path, PathBuf};

use safeedit::{
    by_attack, load_nlpcc, load_split, stats, Mode, Problem, ProblemKind, SafeEditError, Split,
};

fn broken(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/broken").join(name)
}

fn strict_problems(
    result: Result<impl std::fmt::Debug, SafeEditError>,
    file: &Path,
) -> Vec<Problem> {
    match result {
        Err(SafeEditError::Invalid { path, problems }) => {
            assert_eq!(path, file);
            assert!(problems.iter().all(|p| p.file == file), "{problems:?}");
            problems
        }
        other => panic!("expected a validation error, got {other:?}"),
    }
}

/// `(index, id, field, kind)` of each problem, in report order.
fn summary(problems: &[Problem]) -> Vec<(usize, Option<&str>, &str, &ProblemKind)> {
    problems.iter().map(|p| (p.index, p.id.as_deref(), p.field.as_str(), &p.kind)).collect()
}

#[test]
fn missing_keys_empty_texts_and_wrong_types_are_all_listed() {
    let file = broken("missing_and_empty_test.json");
    let problems = strict_problems(load_split(&file, Split::Test, Mode::Strict), &file);
    let number = ProblemKind::WrongType { expected: "a string", found: "the number 7".into() };
    assert_eq!(
        summary(&problems),
        vec![
            (1, Some("11"), "question", &ProblemKind::Empty),
            (1, Some("11"), "safe generation", &ProblemKind::Missing),
            (1, Some("11"), "knowledge constrain.answer", &number),
            (
                1,
                Some("11"),
                "generalization test.test input of other questions and attack prompts",
                &ProblemKind::Missing
            ),
        ]
    );
    let err = load_split(&file, Split::Test, Mode::Strict).unwrap_err().to_string();
    assert!(err.starts_with("4 problem(s) in "), "{err}");
    assert!(
        err.contains(
            "missing_and_empty_test.json: record 1 (id 11): field `safe generation`: missing"
        ),
        "{err}"
    );

    let lenient = load_split(&file, Split::Test, Mode::Lenient).unwrap();
    assert_eq!(lenient.records.iter().map(|r| r.id).collect::<Vec<_>>(), vec![10]);
    assert_eq!(lenient.problems, problems);
}

#[test]
fn unknown_categories_duplicate_ids_and_bad_ids_are_named() {
    let file = broken("category_and_id_test.json");
    let problems = strict_problems(load_split(&file, Split::Test, Mode::Strict), &file);
    let string_id =
        ProblemKind::WrongType { expected: "a non-negative integer", found: "a string".into() };
    let string_block = ProblemKind::WrongType { expected: "an object", found: "a string".into() };
    assert_eq!(
        summary(&problems),
        vec![
            (0, Some("20"), "unsafety category", &ProblemKind::UnknownCategory("cooking".into())),
            (2, Some("21"), "id", &ProblemKind::DuplicateId { first_index: 1 }),
            (3, None, "id", &string_id),
            (3, None, "generalization test", &string_block),
        ]
    );

    // Upper-case spelling is a known category; it survives and keeps its spelling.
    let lenient = load_split(&file, Split::Test, Mode::Lenient).unwrap();
    assert_eq!(lenient.records.len(), 1);
    assert_eq!(lenient.records[0].category.spelling(), "ETHICS AND MORALITY");
    assert_eq!(lenient.records[0].category.to_string(), "ethics and morality");
    assert_eq!(stats(&lenient.records).records["ethics and morality"], 1);
}

#[test]
fn the_nlpcc_variant_is_validated_the_same_way() {
    let file = broken("nlpcc_broken_ALL.json");
    let problems = strict_problems(load_nlpcc(&file, Mode::Strict), &file);
    let null = ProblemKind::WrongType { expected: "a string", found: "null".into() };
    assert_eq!(
        summary(&problems),
        vec![
            (1, Some("1"), "input", &ProblemKind::Empty),
            (1, Some("1"), "response", &null),
            (2, None, "<record>", &ProblemKind::NotAnObject),
        ]
    );
    let lenient = load_nlpcc(&file, Mode::Lenient).unwrap();
    assert_eq!(lenient.records.len(), 1);
    assert!(lenient.records[0].is_bare_question());
    assert_eq!(by_attack(&lenient.records, "none").len(), 1);
}

//! Agreement between two judges against scikit-learn (`tests/fixtures/agreement/generate.py`): percent
//! agreement, Cohen's kappa (`cohen_kappa_score`), the 2 × 2 table (`confusion_matrix`) and the disagreeing
//! responses, over the responses neither judge calls empty.

use approx::assert_abs_diff_eq;
use detox_metrics::{disagreements, pair_agreement, Label, MetricsError};
use serde::Deserialize;

#[derive(Deserialize)]
struct Case {
    name: String,
    first: Vec<Label>,
    second: Vec<Label>,
    judged: usize,
    excluded_empty: usize,
    agree: usize,
    percent: f64,
    kappa: Option<f64>,
    confusion: [[usize; 2]; 2],
    disagreements: Vec<usize>,
}

fn cases() -> Vec<Case> {
    #[derive(Deserialize)]
    struct Fixture {
        cases: Vec<Case>,
    }
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/agreement/expected.json");
    let text = std::fs::read_to_string(path).unwrap();
    serde_json::from_str::<Fixture>(&text).unwrap().cases
}

#[test]
fn matches_scikit_learn() {
    let cases = cases();
    // The fixture covers what it claims: a long sequence, empties, and both defined and undefined kappa.
    assert!(cases.len() >= 10, "{} cases", cases.len());
    assert!(cases.iter().any(|c| c.first.len() >= 500));
    assert!(cases.iter().any(|c| c.excluded_empty > 0));
    assert!(cases.iter().any(|c| c.kappa.is_none()));
    assert!(cases.iter().any(|c| c.kappa == Some(-1.0)));
    for case in &cases {
        let name = &case.name;
        let got = pair_agreement(&case.first, &case.second).unwrap();
        assert_eq!(
            (got.judged, got.excluded_empty, got.agree),
            (case.judged, case.excluded_empty, case.agree),
            "{name}: judged, excluded, agree"
        );
        assert_eq!(got.confusion, case.confusion, "{name}: table");
        assert_abs_diff_eq!(got.percent, case.percent, epsilon = 1e-12);
        match (got.kappa, case.kappa) {
            (Some(got), Some(want)) => assert_abs_diff_eq!(got, want, epsilon = 1e-12),
            (got, want) => assert_eq!(got, want, "{name}: kappa"),
        }
        assert_eq!(got.disagree(), case.disagreements.len(), "{name}: disagree");
        assert_eq!(
            disagreements(&case.first, &case.second).unwrap(),
            case.disagreements,
            "{name}: disagreements"
        );
    }
}

#[test]
fn kappa_is_undefined_when_both_judges_give_one_label() {
    for label in [Label::Safe, Label::Unsafe] {
        let same = [label, Label::Empty, label, label];
        let pair = pair_agreement(&same, &same).unwrap();
        assert_eq!((pair.judged, pair.excluded_empty, pair.percent), (3, 1, 100.0));
        assert_eq!(pair.kappa, None, "{label}");
    }
    // One label each, but different ones: defined, and no better than chance.
    let pair = pair_agreement(&[Label::Safe; 4], &[Label::Unsafe; 4]).unwrap();
    assert_eq!(pair.kappa, Some(0.0));
}

#[test]
fn labels_of_different_lengths_are_refused_naming_both() {
    let (first, second) = ([Label::Safe; 3], [Label::Unsafe; 5]);
    for err in
        [pair_agreement(&first, &second).unwrap_err(), disagreements(&first, &second).unwrap_err()]
    {
        assert!(
            matches!(err, MetricsError::LabelLengthMismatch { first: 3, second: 5 }),
            "{err:?}"
        );
        let message = err.to_string();
        assert!(message.contains('3') && message.contains('5'), "{message}");
    }
}

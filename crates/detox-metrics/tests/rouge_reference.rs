//! Stems and ROUGE-1 against the `rouge-score` package (`tests/fixtures/generate_rouge.py`).

use detox_metrics::rouge::{rouge1, tokenize};

#[test]
fn matches_rouge_score() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/rouge.json");
    let data: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let stems = data["stems"].as_object().unwrap();
    assert!(stems.len() > 120, "{} words", stems.len());
    let wrong: Vec<String> = stems
        .iter()
        .filter_map(|(word, want)| {
            let want: Vec<String> = serde_json::from_value(want.clone()).unwrap();
            let got = tokenize(word, true);
            (got != want).then(|| format!("{word}: {got:?} vs {want:?}"))
        })
        .collect();
    assert!(wrong.is_empty(), "stems differ: {wrong:#?}");
    for case in data["scores"].as_array().unwrap() {
        let (r, p, stem) = (
            case["reference"].as_str().unwrap(),
            case["prediction"].as_str().unwrap(),
            case["stem"].as_bool().unwrap(),
        );
        let got = rouge1(r, p, stem);
        for (name, value) in
            [("precision", got.precision), ("recall", got.recall), ("fmeasure", got.fmeasure)]
        {
            let want = case[name].as_f64().unwrap();
            assert!(
                (value - want).abs() < 1e-12,
                "{name} of {r:?} / {p:?} (stem {stem}): {value} vs {want}"
            );
        }
    }
}

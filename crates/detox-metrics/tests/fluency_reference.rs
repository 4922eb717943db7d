//! Tokens and fluency against NLTK and the reference's n-gram entropy (`tests/fixtures/generate_fluency.py`).

use detox_metrics::{fluency, word_tokenize};

#[test]
fn matches_nltk_and_the_reference_entropy() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/fluency.json");
    let cases: Vec<serde_json::Value> =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    assert_eq!(cases.len(), 11);
    for case in cases {
        let text = case["text"].as_str().unwrap();
        let want: Vec<String> = serde_json::from_value(case["tokens"].clone()).unwrap();
        assert_eq!(word_tokenize(text), want, "tokens of {text:?}");
        let f = case["fluency"].as_f64().unwrap();
        assert!((fluency(text) - f).abs() < 1e-9, "fluency of {text:?}: {} vs {f}", fluency(text));
    }
}

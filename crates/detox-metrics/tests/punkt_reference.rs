//! Punkt sentence splits and word tokens against NLTK (`tests/fixtures/generate_punkt.py`), with the small
//! project-made model in `tests/fixtures/punkt_tiny/`.

use detox_metrics::{word_tokenize_with, PunktModel};

#[test]
fn splits_and_tokenizes_like_nltk() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");
    let model = PunktModel::load(format!("{dir}/punkt_tiny")).unwrap();
    let cases: Vec<serde_json::Value> =
        serde_json::from_str(&std::fs::read_to_string(format!("{dir}/punkt.json")).unwrap())
            .unwrap();
    assert_eq!(cases.len(), 23);
    for case in cases {
        let text = case["text"].as_str().unwrap();
        let sentences: Vec<String> = serde_json::from_value(case["sentences"].clone()).unwrap();
        assert_eq!(model.split(text), sentences, "sentences of {text:?}");
        let tokens: Vec<String> = serde_json::from_value(case["tokens"].clone()).unwrap();
        assert_eq!(word_tokenize_with(text, &model), tokens, "tokens of {text:?}");
    }
}

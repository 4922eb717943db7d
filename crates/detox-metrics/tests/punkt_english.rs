//! NLTK's English Punkt model as `cargo xtask punkt` provides it (`cargo xtask test` fetches it before the
//! tests): it loads, knows the common abbreviations, and makes fluency differ from the rule splitter exactly
//! where the documentation says the two differ.

use std::path::PathBuf;

use detox_metrics::{fluency, fluency_with, split_sentences, word_tokenize_with, PunktModel};

fn english() -> PunktModel {
    let dir = std::env::var_os("DETOX_PUNKT_DIR").map(PathBuf::from).unwrap_or_else(|| {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../models/punkt_tab/english")
    });
    assert!(
        dir.is_dir(),
        "{} is missing: run `cargo xtask punkt` (or set DETOX_PUNKT_DIR)",
        dir.display()
    );
    PunktModel::load(&dir).expect("the English Punkt model loads")
}

#[test]
fn the_english_model_keeps_abbreviations_inside_sentences() {
    let punkt = english();
    let text = "Mr. Smith arrived at noon. He sat down.";
    assert_eq!(punkt.split(text), ["Mr. Smith arrived at noon.", "He sat down."]);
    assert_eq!(split_sentences(text), ["Mr.", "Smith arrived at noon.", "He sat down."]);
    assert_eq!(word_tokenize_with(text, &punkt)[..2], ["Mr.", "Smith"]);
    assert_ne!(fluency_with(text, &punkt), fluency(text), "the splitters differ here");
    let plain = "The cat sat on the mat. It was warm.";
    assert_eq!(fluency_with(plain, &punkt), fluency(plain), "and agree on plain sentences");
}

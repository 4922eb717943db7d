//! The tiny model and the sample records the integration tests run on.

use std::path::{Path, PathBuf};

use detox_eval::BenchmarkCase;
use safeedit::Subset;

/// The tiny random Llama of `detox-edit`'s DINM fixture, with its tokenizer.
pub fn model_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../detox-edit/tests/fixtures/dinm/model")
}

/// The bundled SafeEdit-format sample records.
pub fn sample_data() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../datasets/safeedit_sample_test.json")
}

/// The first `n` sample records as benchmark cases.
pub fn sample_cases(n: usize) -> Vec<BenchmarkCase> {
    let split = safeedit::load_split(sample_data(), safeedit::Split::Test, safeedit::Mode::Strict)
        .expect("the sample records load");
    Subset::First { n }
        .apply(&split.records)
        .iter()
        .map(|r| BenchmarkCase::from_record(r).expect("a sample record is a case"))
        .collect()
}

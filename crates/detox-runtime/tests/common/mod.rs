//! Shared by the detox-runtime integration tests: where the tiny decoder checkpoints are, and which there are.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

/// Every tiny decoder checkpoint of `tests/fixtures/decoders/` (written by its `generate.py`).
pub const DECODERS: [&str; 10] = [
    "llama",
    "llama3_tied_sharded",
    "mistral_window",
    "qwen2",
    "qwen3",
    "olmo2",
    "gemma2",
    "gemma3",
    "gemma3_multimodal",
    "phi3",
];

/// The crate's directory: `DETOX_CRATE_DIR` when a prebuilt test runs away from its source tree (the gpu-check
/// bundle), else where it was built.
pub fn crate_dir() -> PathBuf {
    std::env::var_os("DETOX_CRATE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).to_path_buf())
}

/// The tiny decoder checkpoint `name` (one of [`DECODERS`]).
pub fn decoder(name: &str) -> PathBuf {
    crate_dir().join("tests/fixtures/decoders").join(name)
}

//! One entry point per untrusted format: read the file at a path as detox does, `Err` with the error's message
//! on rejection.

use std::path::Path;

fn message(e: impl std::fmt::Display) -> String {
    e.to_string()
}

/// A SafeEdit split: leniently with the test split's rules, strictly with the training split's.
pub fn safeedit_json(path: &Path) -> Result<(), String> {
    use safeedit::{load_split, Mode, Split};
    let lenient = load_split(path, Split::Test, Mode::Lenient).map(|_| ()).map_err(message);
    let strict = load_split(path, Split::Train, Mode::Strict).map(|_| ()).map_err(message);
    lenient.and(strict)
}

/// The NLPCC 2024 variant of SafeEdit.
pub fn nlpcc_json(path: &Path) -> Result<(), String> {
    use safeedit::{load_nlpcc, Mode};
    let _ = load_nlpcc(path, Mode::Lenient);
    load_nlpcc(path, Mode::Strict).map(|_| ()).map_err(message)
}

/// A GGUF model file: header, metadata, tensor directory and every tensor's byte range.
pub fn gguf(path: &Path) -> Result<(), String> {
    let file = detox_runtime::gguf::GgufFile::open(path).map_err(message)?;
    for t in &file.tensors {
        file.tensor_bytes(t).map_err(message)?;
    }
    Ok(())
}

/// A Hugging Face `config.json`.
pub fn hf_config(path: &Path) -> Result<(), String> {
    detox_runtime::Config::from_file(path).map(|_| ()).map_err(message)
}

/// A safetensors file's header: names, shapes and dtypes of every tensor.
pub fn safetensors_header(path: &Path) -> Result<(), String> {
    let files =
        detox_runtime::SafetensorsFiles::open_files(&[path.to_path_buf()]).map_err(message)?;
    let names: Vec<String> = files.names().map(str::to_string).collect();
    for name in &names {
        files.shape(name).map_err(message)?;
        files.stored_kind(name).map_err(message)?;
    }
    Ok(())
}

/// DINM hyper-parameters (YAML, or JSON when the file's extension says so).
pub fn dinm_hparams(path: &Path) -> Result<(), String> {
    detox_edit::dinm::DinmHyperParams::from_file(path).map(|_| ()).map_err(message)
}

/// A `tokenizer.json`, then one encode and decode through it.
pub fn tokenizer_json(path: &Path) -> Result<(), String> {
    let tokenizer = detox_runtime::Tokenizer::from_file(path).map_err(message)?;
    let ids = tokenizer.encode("Hello, world! How do I stay safe?", true).map_err(message)?;
    tokenizer.decode(&ids, true).map(|_| ()).map_err(message)
}

/// A run directory's `records.jsonl`.
pub fn run_jsonl(path: &Path) -> Result<(), String> {
    detox_eval::JsonlLog::<detox_eval::record::RunRecord>::open(path).map(|_| ()).map_err(message)
}

/// A run directory's `manifest.json`.
pub fn run_manifest(path: &Path) -> Result<(), String> {
    detox_eval::RunManifest::read(path).map(|_| ()).map_err(message)
}

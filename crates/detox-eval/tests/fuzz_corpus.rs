//! Replays the committed fuzzing corpus (`fuzz/corpus/<target>/`) through the same reader entry points the
//! libFuzzer targets call, on stable, as part of the ordinary test run: the seeds (`seed-*`, written by
//! `fuzz/seeds.py` from the project's fixtures) must be accepted; every input, findings included, must be
//! accepted or rejected without a panic, with an error naming the file.
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

use anyhow::{ensure, Context, Result};

#[path = "../../../fuzz/src/readers.rs"]
mod readers;

type Reader = fn(&Path) -> std::result::Result<(), String>;

const TARGETS: &[(&str, Reader)] = &[
    ("safeedit_json", readers::safeedit_json),
    ("nlpcc_json", readers::nlpcc_json),
    ("gguf", readers::gguf),
    ("hf_config", readers::hf_config),
    ("safetensors_header", readers::safetensors_header),
    ("dinm_hparams", readers::dinm_hparams),
    ("tokenizer_json", readers::tokenizer_json),
    ("run_jsonl", readers::run_jsonl),
    ("run_manifest", readers::run_manifest),
];

fn corpus(target: &str) -> Result<Vec<PathBuf>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus").join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .map(|e| e.map(|e| e.path()))
        .collect::<std::io::Result<_>>()?;
    files.sort();
    ensure!(!files.is_empty(), "{} holds no inputs", dir.display());
    Ok(files)
}

/// The readers take paths and some write (a JSONL log cuts an interrupted line): each input is read from a
/// copy whose name the reader expects (its extension decides YAML or JSON hyper-parameters).
fn replay(target: &str, read: Reader, scratch: &Path) -> Result<Vec<String>> {
    let name = match target {
        "dinm_hparams" => "hparams.yaml",
        "gguf" => "model.gguf",
        "safetensors_header" => "model.safetensors",
        "run_jsonl" => "records.jsonl",
        _ => "input.json",
    };
    let mut problems = Vec::new();
    for file in corpus(target)? {
        let copy = scratch.join(name);
        std::fs::copy(&file, &copy)?;
        let shown =
            file.strip_prefix(env!("CARGO_MANIFEST_DIR")).unwrap_or(&file).display().to_string();
        match catch_unwind(AssertUnwindSafe(|| read(&copy))) {
            Err(_) => problems.push(format!("{target}: {shown} panicked")),
            Ok(Err(message)) if !message.contains(&copy.display().to_string()) => problems.push(
                format!("{target}: {shown}: the rejection does not name the file: {message}"),
            ),
            Ok(Err(message))
                if file.file_name().is_some_and(|n| n.to_string_lossy().starts_with("seed-")) =>
            {
                problems.push(format!("{target}: seed {shown} is rejected: {message}"))
            }
            Ok(_) => {}
        }
    }
    Ok(problems)
}

#[test]
fn every_corpus_input_is_read_or_rejected_naming_the_file() -> Result<()> {
    let scratch = tempfile::tempdir()?;
    let mut problems = Vec::new();
    for (target, read) in TARGETS {
        problems.extend(replay(target, *read, scratch.path())?);
    }
    ensure!(problems.is_empty(), "{}", problems.join("\n"));
    Ok(())
}

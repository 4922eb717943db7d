//! Parity of the RoBERTa classifier with Hugging Face transformers on a tiny random
//! `RobertaForSequenceClassification` and its byte-level BPE tokenizer (fixture made by
//! `tests/fixtures/roberta/generate.py`), plus the strictness of the checkpoint check.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use detox_runtime::roberta::RobertaClassifier;
use detox_runtime::Error;
use serde::Deserialize;
use tch::{Device, Kind, Tensor};

const TOLERANCE: f64 = 1e-4;

fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/roberta")
}

fn model_dir() -> PathBuf {
    fixture_dir().join("model")
}

#[derive(Deserialize)]
struct Batch {
    texts: Vec<String>,
    input_ids: Vec<Vec<i64>>,
    attention_mask: Vec<Vec<i64>>,
    logits: Vec<Vec<f64>>,
    labels: Vec<usize>,
}

#[derive(Deserialize)]
struct Expected {
    max_length: usize,
    batches: Vec<Batch>,
}

fn expected() -> Result<Expected> {
    let path = fixture_dir().join("expected.json");
    let text = std::fs::read_to_string(&path).with_context(|| path.display().to_string())?;
    Ok(serde_json::from_str(&text)?)
}

fn matrix(rows: &[Vec<i64>]) -> Tensor {
    let flat: Vec<i64> = rows.iter().flatten().copied().collect();
    Tensor::from_slice(&flat).view([rows.len() as i64, rows[0].len() as i64])
}

fn texts(batch: &Batch) -> Vec<&str> {
    batch.texts.iter().map(String::as_str).collect()
}

fn max_abs_diff(got: &[f32], want: &[f64]) -> f64 {
    assert_eq!(got.len(), want.len(), "lengths differ");
    got.iter().zip(want).map(|(&g, &w)| (g as f64 - w).abs()).fold(0.0, f64::max)
}

fn softmax(row: &[f64]) -> Vec<f64> {
    let top = row.iter().copied().fold(f64::MIN, f64::max);
    let exps: Vec<f64> = row.iter().map(|x| (x - top).exp()).collect();
    let sum: f64 = exps.iter().sum();
    exps.iter().map(|e| e / sum).collect()
}

#[test]
fn logits_of_padded_batches_match_transformers() -> Result<()> {
    let model = RobertaClassifier::load(model_dir(), Device::Cpu, Kind::Float)?;
    for (b, batch) in expected()?.batches.iter().enumerate() {
        let logits = model.forward(&matrix(&batch.input_ids), &matrix(&batch.attention_mask))?;
        assert_eq!(logits.size(), [batch.texts.len() as i64, 2]);
        assert_eq!(logits.kind(), Kind::Float);
        let got = Vec::<f32>::try_from(logits.flatten(0, -1))?;
        let want: Vec<f64> = batch.logits.iter().flatten().copied().collect();
        let diff = max_abs_diff(&got, &want);
        println!("batch {b}: logits max abs diff {diff:.3e}");
        assert!(diff <= TOLERANCE, "batch {b}: logits differ by {diff}");
        let labels: Vec<usize> = Vec::<i64>::try_from(logits.argmax(-1, false))?
            .into_iter()
            .map(|l| l as usize)
            .collect();
        assert_eq!(labels, batch.labels, "batch {b}: label decisions");
    }
    Ok(())
}

#[test]
fn tokenisation_matches_transformers_including_truncation() -> Result<()> {
    let model = RobertaClassifier::load(model_dir(), Device::Cpu, Kind::Float)?;
    let tokenizer = model.tokenizer().context("fixture has tokenizer.json")?;
    let expected = expected()?;
    assert_eq!(model.max_length(), Some(expected.max_length));
    for batch in &expected.batches {
        let encoded = model.encode(&texts(batch))?;
        assert_eq!(Vec::<i64>::try_from(encoded.input_ids.flatten(0, -1))?, {
            batch.input_ids.iter().flatten().copied().collect::<Vec<_>>()
        });
        assert_eq!(Vec::<i64>::try_from(encoded.attention_mask.flatten(0, -1))?, {
            batch.attention_mask.iter().flatten().copied().collect::<Vec<_>>()
        });
    }
    // The long text of the second batch is cut to exactly max_length tokens, ending in </s>.
    let long = &expected.batches[1].texts[0];
    let ids = tokenizer.encode(long, true)?;
    assert_eq!(ids.len(), expected.max_length);
    assert_eq!(ids[0], 0, "<s> first");
    assert_eq!(*ids.last().unwrap(), 2, "</s> last");
    Ok(())
}

#[test]
fn classify_reproduces_probabilities_and_labels_in_any_batch_size() -> Result<()> {
    let expected = expected()?;
    for batch_size in [1, 3, 32] {
        let model = RobertaClassifier::load(model_dir(), Device::Cpu, Kind::Float)?
            .with_batch_size(batch_size)?;
        for batch in &expected.batches {
            let outputs = model.classify(&texts(batch))?;
            assert_eq!(outputs.len(), batch.texts.len());
            for (i, out) in outputs.iter().enumerate() {
                let want = softmax(&batch.logits[i]);
                let diff = max_abs_diff(&out.probabilities, &want);
                assert!(
                    diff <= TOLERANCE,
                    "batch size {batch_size}, text {i}: probabilities differ by {diff}"
                );
                assert_eq!(out.label, batch.labels[i], "batch size {batch_size}, text {i}: label");
            }
        }
    }
    Ok(())
}

#[test]
fn texts_far_beyond_512_tokens_are_truncated_not_refused() -> Result<()> {
    let model = RobertaClassifier::load(model_dir(), Device::Cpu, Kind::Float)?;
    let huge = "please respect the law and other people. ".repeat(400);
    let tokens = model.tokenizer().context("tokenizer")?.encode(&huge, true)?;
    assert_eq!(tokens.len(), 512);
    let outputs = model.classify(&[huge.as_str(), "", "No."])?;
    assert_eq!(outputs.len(), 3);
    for out in &outputs {
        let total: f32 = out.probabilities.iter().sum();
        assert!((total - 1.0).abs() < 1e-5, "probabilities sum to {total}");
    }
    // A shorter truncation length is honoured; a longer one than the position table is refused.
    let short =
        RobertaClassifier::load(model_dir(), Device::Cpu, Kind::Float)?.with_max_length(64)?;
    assert_eq!(short.tokenizer().context("tokenizer")?.encode(&huge, true)?.len(), 64);
    assert_eq!(short.max_length(), Some(64));
    let too_long =
        RobertaClassifier::load(model_dir(), Device::Cpu, Kind::Float)?.with_max_length(513);
    assert!(matches!(too_long, Err(Error::OutOfRange { .. })), "{too_long:?}");
    Ok(())
}

#[test]
fn forward_refuses_bad_inputs_clearly() -> Result<()> {
    let model = RobertaClassifier::load(model_dir(), Device::Cpu, Kind::Float)?;
    let ids = Tensor::from_slice(&[0i64, 5, 2]).view([1, 3]);
    let mask = Tensor::from_slice(&[1i64, 1]).view([1, 2]);
    assert!(matches!(model.forward(&ids, &mask), Err(Error::BadShape { .. })));
    let out_of_vocab = Tensor::from_slice(&[0i64, 300, 2]).view([1, 3]);
    let ones = Tensor::ones([1, 3], (Kind::Int64, Device::Cpu));
    let err = model.forward(&out_of_vocab, &ones).unwrap_err();
    assert!(err.to_string().contains("vocabulary"), "{err}");
    let too_long = Tensor::zeros([1, 513], (Kind::Int64, Device::Cpu));
    let mask = Tensor::ones([1, 513], (Kind::Int64, Device::Cpu));
    assert!(matches!(model.forward(&too_long, &mask), Err(Error::OutOfRange { .. })));
    Ok(())
}

/// Copies the fixture directory with its checkpoint rewritten by `edit`.
fn edited_copy(edit: impl FnOnce(&mut Vec<(String, Tensor)>)) -> Result<tempfile::TempDir> {
    let dir = tempfile::tempdir()?;
    for file in ["config.json", "tokenizer.json"] {
        std::fs::copy(model_dir().join(file), dir.path().join(file))?;
    }
    let mut tensors = Tensor::read_safetensors(model_dir().join("model.safetensors"))?;
    edit(&mut tensors);
    Tensor::write_safetensors(&tensors, dir.path().join("model.safetensors"))?;
    Ok(dir)
}

#[test]
fn a_missing_tensor_is_reported_by_name() -> Result<()> {
    let gone = "roberta.encoder.layer.1.attention.self.key.bias";
    let dir = edited_copy(|t| t.retain(|(name, _)| name != gone))?;
    match RobertaClassifier::load(dir.path(), Device::Cpu, Kind::Float) {
        Err(Error::MissingTensors { names }) => assert_eq!(names, vec![gone.to_string()]),
        other => panic!("expected MissingTensors, got {other:?}"),
    }
    Ok(())
}

#[test]
fn an_unexpected_tensor_is_reported_by_name_but_known_extras_are_ignored() -> Result<()> {
    let extra = "lm_head.dense.weight";
    let dir = edited_copy(|t| {
        t.push((extra.to_string(), Tensor::zeros([2, 2], (Kind::Float, Device::Cpu))))
    })?;
    match RobertaClassifier::load(dir.path(), Device::Cpu, Kind::Float) {
        Err(err @ Error::UnexpectedTensors { .. }) => {
            let Error::UnexpectedTensors { names } = &err else { unreachable!() };
            assert_eq!(names, &vec![extra.to_string()]);
            assert!(err.to_string().contains(extra));
        }
        other => panic!("expected UnexpectedTensors, got {other:?}"),
    }
    let dir = edited_copy(|t| {
        t.push((
            "roberta.embeddings.position_ids".into(),
            Tensor::arange(514, (Kind::Int64, Device::Cpu)),
        ));
        t.push((
            "roberta.pooler.dense.weight".into(),
            Tensor::zeros([32, 32], (Kind::Float, Device::Cpu)),
        ));
        t.push((
            "roberta.pooler.dense.bias".into(),
            Tensor::zeros([32], (Kind::Float, Device::Cpu)),
        ));
    })?;
    RobertaClassifier::load(dir.path(), Device::Cpu, Kind::Float)?;
    Ok(())
}

#[test]
fn a_wrongly_shaped_tensor_is_reported_with_both_shapes() -> Result<()> {
    let name = "classifier.out_proj.weight";
    let dir = edited_copy(|t| {
        for (n, tensor) in t.iter_mut() {
            if n == name {
                *tensor = Tensor::zeros([3, 32], (Kind::Float, Device::Cpu));
            }
        }
    })?;
    match RobertaClassifier::load(dir.path(), Device::Cpu, Kind::Float) {
        Err(Error::ShapeMismatch { name: n, expected, actual }) => {
            assert_eq!(n, name);
            assert_eq!(expected, vec![2, 32]);
            assert_eq!(actual, vec![3, 32]);
        }
        other => panic!("expected TensorShape, got {other:?}"),
    }
    Ok(())
}

#[test]
fn a_pickle_only_directory_points_to_the_converter() -> Result<()> {
    let dir = tempfile::tempdir()?;
    std::fs::copy(model_dir().join("config.json"), dir.path().join("config.json"))?;
    std::fs::write(dir.path().join("pytorch_model.bin"), b"not read")?;
    let err = RobertaClassifier::load(dir.path(), Device::Cpu, Kind::Float).unwrap_err();
    assert!(err.to_string().contains("cargo xtask convert-bin"), "{err}");
    Ok(())
}

#[test]
fn half_precision_weights_stay_close_to_fp32() -> Result<()> {
    let expected = expected()?;
    let batch = &expected.batches[0];
    let model = RobertaClassifier::load(model_dir(), Device::Cpu, Kind::BFloat16)?;
    let logits = model.forward(&matrix(&batch.input_ids), &matrix(&batch.attention_mask))?;
    assert_eq!(logits.kind(), Kind::BFloat16);
    let got = Vec::<f32>::try_from(logits.to_kind(Kind::Float).flatten(0, -1))?;
    let want: Vec<f64> = batch.logits.iter().flatten().copied().collect();
    let diff = max_abs_diff(&got, &want);
    assert!(diff < 0.15, "bf16 logits differ by {diff}");
    Ok(())
}

#[test]
fn a_directory_with_only_vocab_and_merges_tokenises_like_transformers() -> Result<()> {
    let dir = tempfile::tempdir()?;
    for file in ["config.json", "model.safetensors", "vocab.json", "merges.txt"] {
        std::fs::copy(model_dir().join(file), dir.path().join(file))?;
    }
    let model = RobertaClassifier::load(dir.path(), Device::Cpu, Kind::Float)?;
    let tokenizer = model.tokenizer().context("rebuilt from vocab.json and merges.txt")?;
    assert_eq!((tokenizer.bos_id(), tokenizer.pad_id()), (Some(0), Some(1)));
    for batch in &expected()?.batches {
        let encoded = model.encode(&texts(batch))?;
        assert_eq!(Vec::<i64>::try_from(encoded.input_ids.flatten(0, -1))?, {
            batch.input_ids.iter().flatten().copied().collect::<Vec<_>>()
        });
        let labels: Vec<usize> = model.classify(&texts(batch))?.iter().map(|o| o.label).collect();
        assert_eq!(labels, batch.labels);
    }
    // Without any tokenizer the model still loads for `forward`, and `classify` says what is missing.
    std::fs::remove_file(dir.path().join("merges.txt"))?;
    let model = RobertaClassifier::load(dir.path(), Device::Cpu, Kind::Float)?;
    assert!(model.tokenizer().is_none() && model.max_length().is_none());
    let err = model.classify(&["text"]).unwrap_err();
    assert!(err.to_string().contains("no tokenizer.json"), "{err}");
    Ok(())
}

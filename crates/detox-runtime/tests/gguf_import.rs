//! The GGUF importer against the `gguf` package's reference dequantisation (`tests/fixtures/gguf/generate.py`).

use std::path::PathBuf;

use anyhow::Result;
use detox_runtime::gguf::{permute_qk, unpermute_qk, GgufModel};
use detox_runtime::SafetensorsFiles;
use tch::{Device, Kind, Tensor};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/gguf").join(name)
}

#[test]
fn tensors_config_and_tokenizer_match_the_reference() -> Result<()> {
    let model = GgufModel::open(fixture("tiny.gguf"))?;
    let expected = SafetensorsFiles::open_files(&[fixture("expected.safetensors")])?
        .load_all(Device::Cpu, None)?;
    assert_eq!(model.tensors.len(), expected.len());
    for (name, want) in &expected {
        let got = &model.tensors[name];
        assert_eq!(got.size(), want.size(), "{name}");
        assert!(got.equal(want), "{name}: dequantised values differ from the reference");
    }
    let c = &model.config;
    assert_eq!(
        (c.hidden_size, c.num_attention_heads, c.num_key_value_heads, c.num_hidden_layers),
        (64, 4, 2, 1)
    );
    assert!(c.tie_word_embeddings, "no output tensor means tied embeddings");
    assert_eq!(c.rope_theta, 100000.0);
    assert_eq!(c.eos_token_ids, vec![2]);
    let tok = model.tokenizer()?;
    assert_eq!(tok.encode("<|im_start|>abc a12", false)?, vec![1, 9, 8, 10, 11]);
    assert_eq!(tok.decode(&[1, 9, 8], true)?, "abc a");
    let _model = model.to_model(Device::Cpu, Kind::Float)?;
    Ok(())
}

#[test]
fn qk_permutation_round_trips() -> Result<()> {
    let w = Tensor::arange(48 * 5, (Kind::Float, Device::Cpu)).view([48, 5]);
    for heads in [1, 2, 3, 6] {
        let p = permute_qk(&w, heads)?;
        assert!(!p.equal(&w) || heads == 0);
        assert!(unpermute_qk(&p, heads)?.equal(&w), "{heads} heads");
    }
    Ok(())
}

#[test]
fn bad_files_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("broken.gguf");
    std::fs::write(&path, b"GGUF\x03\x00\x00\x00\xff").unwrap();
    let err = GgufModel::open(&path).unwrap_err().to_string();
    assert!(err.contains("broken.gguf"), "{err}");
    std::fs::write(&path, b"NOPE").unwrap();
    assert!(GgufModel::open(&path).unwrap_err().to_string().contains("not a GGUF"));
}

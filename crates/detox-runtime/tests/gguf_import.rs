//! The GGUF importer against the `gguf` package's reference dequantisation, and against the safetensors weights of
//! the Qwen3, Gemma-2, Gemma-3, Phi-3 and OLMo-2 parity checkpoints converted as llama.cpp converts each family
//! (`tests/fixtures/gguf/generate.py`).

use std::path::PathBuf;

use anyhow::Result;
use detox_runtime::gguf::{permute_qk, unpermute_qk, GgufModel};
use detox_runtime::{CausalLm, Config, ForwardOptions, RopeScaling, SafetensorsFiles};
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

/// The safetensors checkpoint of a decoder parity fixture: its configuration and tensors.
fn safetensors_checkpoint(
    family: &str,
) -> Result<(Config, std::collections::HashMap<String, Tensor>)> {
    let dir =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/decoders").join(family);
    let config = Config::from_file(dir.join("config.json"))?;
    let files: Vec<PathBuf> = std::fs::read_dir(&dir)?
        .map(|e| e.map(|e| e.path()))
        .collect::<std::io::Result<Vec<_>>>()?
        .into_iter()
        .filter(|p| {
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or_default();
            name.starts_with("model") && name.ends_with(".safetensors")
        })
        .collect();
    Ok((config, SafetensorsFiles::open_files(&files)?.load_all(Device::Cpu, None)?))
}

/// Each family's GGUF gives back the safetensors weights (Gemma's norms shifted back by one, up to the fp32
/// rounding of that shift), the configuration keys GGUF carries, and the same logits from the same weights.
/// What GGUF cannot carry follows llama.cpp: Gemma's attention scale from the head width, Gemma-3's local RoPE
/// base 10000 and every sixth layer global, no sliding window for Qwen3.
#[test]
fn family_ggufs_equal_their_safetensors_checkpoints() -> Result<()> {
    for family in ["qwen3", "olmo2", "gemma2", "gemma3", "phi3"] {
        let imported = GgufModel::open(fixture(&format!("{family}.gguf")))?;
        let (want_config, want) = safetensors_checkpoint(family)?;
        assert_eq!(imported.tensors.len(), want.len(), "{family}: tensor count");
        for (name, w) in &want {
            let got =
                imported.tensors.get(name).unwrap_or_else(|| panic!("{family}: `{name}` missing"));
            let diff = (got - w).abs().max().double_value(&[]);
            assert!(diff <= 1e-6, "{family} `{name}` differs by {diff}");
        }
        let (c, w) = (&imported.config, &want_config);
        assert_eq!(c.architecture, w.architecture, "{family}");
        assert_eq!(
            (c.vocab_size, c.hidden_size, c.intermediate_size, c.num_hidden_layers),
            (w.vocab_size, w.hidden_size, w.intermediate_size, w.num_hidden_layers),
            "{family}"
        );
        assert_eq!(
            (c.num_attention_heads, c.num_key_value_heads, c.head_dim),
            (w.num_attention_heads, w.num_key_value_heads, w.head_dim),
            "{family}"
        );
        assert_eq!(
            (c.norm_kind, c.norm_placement, c.qk_norm),
            (w.norm_kind, w.norm_placement, w.qk_norm)
        );
        assert_eq!(
            (c.hidden_act, c.fused_projections),
            (w.hidden_act, w.fused_projections),
            "{family}"
        );
        // GGUF keeps the epsilon as an f32.
        assert!((c.rms_norm_eps - w.rms_norm_eps).abs() <= 1e-6 * w.rms_norm_eps, "{family}");
        assert_eq!(c.rope_theta, w.rope_theta, "{family}");
        assert_eq!(c.tie_word_embeddings, w.tie_word_embeddings, "{family}");
        assert_eq!(c.partial_rotary_factor, w.partial_rotary_factor, "{family}");
        assert_eq!(
            (c.bos_token_id, c.eos_token_ids.clone()),
            (w.bos_token_id, w.eos_token_ids.clone())
        );
        match family {
            "gemma2" => {
                assert_eq!(c.sliding_windows, w.sliding_windows);
                assert_eq!(
                    (c.attn_logit_softcapping, c.final_logit_softcapping),
                    (w.attn_logit_softcapping, w.final_logit_softcapping)
                );
                assert_eq!(c.query_pre_attn_scalar, Some(c.head_dim as f64), "llama.cpp's scale");
            }
            "gemma3" => {
                assert_eq!(c.rope_scaling, w.rope_scaling);
                assert_eq!(c.local_rope_theta, Some(10000.0));
                assert_eq!(c.sliding_windows, vec![Some(4); 3], "every sixth layer global");
            }
            "phi3" => {
                assert_eq!(c.sliding_windows, w.sliding_windows);
                let (
                    RopeScaling::LongRope {
                        short_factor: gs,
                        long_factor: gl,
                        original_max_position_embeddings: go,
                        attention_factor: ga,
                    },
                    RopeScaling::LongRope {
                        short_factor: ws,
                        long_factor: wl,
                        original_max_position_embeddings: wo,
                        attention_factor: wa,
                    },
                ) = (&c.rope_scaling, &w.rope_scaling)
                else {
                    panic!("phi3: LongRoPE expected, found {:?}", c.rope_scaling);
                };
                assert_eq!(go, wo);
                assert!((ga - wa).abs() < 1e-6, "attention factor {ga} vs {wa}");
                for (g, w) in gs.iter().chain(gl).zip(ws.iter().chain(wl)) {
                    assert!((g - w).abs() < 1e-6, "factor {g} vs {w}");
                }
            }
            "qwen3" => {
                assert_eq!(c.sliding_windows, vec![None; 3], "llama.cpp's qwen3 has no windows")
            }
            _ => assert_eq!(c.sliding_windows, w.sliding_windows),
        }
        // Qwen3's `qwen2` pre-tokenizer splits digits one by one; GPT-2's keeps them together for the merge.
        let digits = if family == "qwen3" { vec![5, 6, 7] } else { vec![5, 8] };
        assert_eq!(imported.tokenizer()?.encode("ab12", false)?, digits, "{family}: pre-tokenizer");
        // The same weights under the imported configuration compute the same logits.
        let from_gguf = imported.to_model(Device::Cpu, Kind::Float)?;
        let from_safetensors =
            CausalLm::from_tensors(imported.config.clone(), want, Device::Cpu, Kind::Float)?;
        let ids = Tensor::from_slice(&[1i64, 17, 93, 44, 5, 61, 120, 33, 7, 88]).unsqueeze(0);
        let a = tch::no_grad(|| from_gguf.forward(&ids, &ForwardOptions::default()))?.logits;
        let b = tch::no_grad(|| from_safetensors.forward(&ids, &ForwardOptions::default()))?.logits;
        let diff = (a - b).abs().max().double_value(&[]);
        assert!(diff <= 1e-4, "{family}: logits differ by {diff}");
    }
    Ok(())
}

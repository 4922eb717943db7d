//! `config.json` files as transformers 4.31, 4.40, 4.57 and 5.0 save them (`tests/fixtures/configs/generate.py`)
//! load into the same [`Config`] whatever the version, and the RoPE variants the runtime lacks are refused.

use std::path::PathBuf;

use anyhow::Result;
use detox_runtime::{Architecture, Config, RopeScaling};

const VERSIONS: [&str; 4] = ["4.31", "4.40", "4.57", "5.0"];

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/configs").join(name)
}

/// Every version of `model` that the generator wrote (the versions that know its class and RoPE variant).
fn versions(model: &str, expected: usize) -> Vec<(String, PathBuf)> {
    let found: Vec<_> = VERSIONS
        .iter()
        .map(|v| (v.to_string(), fixture(&format!("{model}-{v}.json"))))
        .filter(|(_, path)| path.is_file())
        .collect();
    assert_eq!(found.len(), expected, "{model}: fixture files missing");
    found
}

/// Loads every version of `model`, checks they agree, and returns one.
fn load_all(model: &str, expected: usize) -> Result<Config> {
    let mut configs = Vec::new();
    for (version, path) in versions(model, expected) {
        let config = Config::from_file(&path)?;
        if let Some(first) = configs.first() {
            assert_eq!(&config, first, "{model}: transformers {version} reads differently");
        }
        configs.push(config);
    }
    Ok(configs.remove(0))
}

#[test]
fn llama2_from_4_31_to_5() -> Result<()> {
    let c = load_all("llama2", 4)?;
    assert_eq!(c.architecture, Architecture::Llama);
    assert_eq!(
        (c.hidden_size, c.num_attention_heads, c.num_key_value_heads, c.head_dim),
        (4096, 32, 32, 128)
    );
    assert_eq!((c.vocab_size, c.intermediate_size, c.num_hidden_layers), (32000, 11008, 32));
    assert_eq!((c.max_position_embeddings, c.rms_norm_eps, c.rope_theta), (4096, 1e-5, 10000.0));
    assert_eq!(c.rope_scaling, RopeScaling::Default);
    assert!(!c.tie_word_embeddings && !c.attention_bias && !c.mlp_bias);
    assert_eq!(
        (c.bos_token_id, c.eos_token_ids.clone(), c.pad_token_id),
        (Some(1), vec![2], Some(0))
    );
    assert_eq!(c.sliding_windows, vec![None; 32]);
    assert_eq!(c.saved_dtype.as_deref(), Some("float16"), "torch_dtype before 4.56, dtype after");
    Ok(())
}

#[test]
fn llama31_llama3_rope_from_rope_scaling_and_rope_parameters() -> Result<()> {
    let c = load_all("llama3.1", 2)?;
    assert_eq!(c.rope_theta, 500000.0);
    assert_eq!(
        c.rope_scaling,
        RopeScaling::Llama3 {
            factor: 8.0,
            low_freq_factor: 1.0,
            high_freq_factor: 4.0,
            original_max_position_embeddings: 8192.0
        }
    );
    assert_eq!(c.eos_token_ids, vec![128001, 128008, 128009]);
    assert_eq!((c.num_key_value_heads, c.kv_groups()), (8, 4));
    assert_eq!(c.saved_dtype.as_deref(), Some("bfloat16"));
    Ok(())
}

#[test]
fn linear_rope_with_the_old_type_key_and_the_new_rope_type() -> Result<()> {
    let c = load_all("llama-linear", 4)?;
    assert_eq!(c.rope_scaling, RopeScaling::Linear { factor: 4.0 });
    assert_eq!(c.vocab_size, 32016);
    Ok(())
}

#[test]
fn dynamic_rope_is_refused_in_every_spelling() {
    for (version, path) in versions("llama-dynamic", 4) {
        let err = Config::from_file(&path).unwrap_err().to_string();
        assert!(
            err.contains("dynamic") && err.contains(&path.display().to_string()),
            "{version}: {err}"
        );
        assert!(
            err.contains("`rope_scaling.") || err.contains("`rope_parameters."),
            "{version}: {err}"
        );
    }
}

#[test]
fn smollm2_ties_embeddings() -> Result<()> {
    let c = load_all("smollm2", 4)?;
    assert!(c.tie_word_embeddings);
    assert_eq!((c.num_attention_heads, c.num_key_value_heads, c.head_dim), (9, 3, 64));
    assert_eq!(c.rope_theta, 100000.0);
    assert_eq!(c.pad_token_id, Some(2));
    Ok(())
}

#[test]
fn mistral_windows_every_layer() -> Result<()> {
    let c = load_all("mistral", 3)?;
    assert_eq!(c.architecture, Architecture::Mistral);
    assert_eq!(c.head_dim, 128, "head_dim: null means hidden_size / heads");
    assert_eq!(c.sliding_windows, vec![Some(4096); 32]);
    Ok(())
}

#[test]
fn qwen2_without_and_with_sliding_windows() -> Result<()> {
    let c = load_all("qwen2", 3)?;
    assert_eq!(c.architecture, Architecture::Qwen2);
    assert!(c.attention_bias && c.tie_word_embeddings);
    assert_eq!(c.rope_theta, 1e6);
    assert_eq!(c.sliding_windows, vec![None; 24], "use_sliding_window: false");
    let windowed = load_all("qwen2-windowed", 3)?;
    let expected: Vec<_> = (0..24).map(|i| (i >= 21).then_some(4096)).collect();
    assert_eq!(windowed.sliding_windows, expected, "from max_window_layers on");
    Ok(())
}

#[test]
fn unknown_keys_are_ignored() -> Result<()> {
    let path = fixture("llama3.1-5.0.json");
    let mut value: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path)?)?;
    let object = value.as_object_mut().expect("an object");
    object.insert("a_switch_from_transformers_6".into(), serde_json::json!({"nested": [1, 2]}));
    object.insert("output_router_logits".into(), serde_json::json!(false));
    assert_eq!(Config::from_value(&value, &path)?, Config::from_file(&path)?);
    Ok(())
}

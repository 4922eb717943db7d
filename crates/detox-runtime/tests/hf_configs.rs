//! `config.json` files as transformers 4.31 to 5.25 save them (`tests/fixtures/configs/generate.py`) load into the
//! same [`Config`] whatever the version, and the RoPE variants, mixtures of experts and model types the runtime
//! lacks are refused.

use std::path::PathBuf;

use anyhow::Result;
use detox_runtime::{
    Activation, Architecture, Config, NormKind, NormPlacement, QkNorm, RopeScaling,
    SUPPORTED_MODEL_TYPES,
};

const VERSIONS: [&str; 7] = ["4.31", "4.40", "4.47", "4.51", "4.57", "5.0", "5.25"];

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

#[test]
fn qwen3_normalises_each_query_and_key_head() -> Result<()> {
    let c = load_all("qwen3", 2)?;
    assert_eq!(c.architecture, Architecture::Qwen3);
    assert_eq!((c.num_attention_heads, c.num_key_value_heads, c.head_dim), (16, 8, 128));
    assert_eq!(c.qk_norm, QkNorm::PerHead);
    assert_eq!((c.norm_kind, c.norm_placement), (NormKind::CastThenScale, NormPlacement::Pre));
    assert!(c.tie_word_embeddings && !c.attention_bias && !c.fused_projections);
    assert_eq!((c.rope_theta, c.rope_scaling.clone()), (1e6, RopeScaling::Default));
    assert_eq!(c.sliding_windows, vec![None; 28]);
    Ok(())
}

#[test]
fn gemma2_caps_scores_and_logits_and_alternates_windows() -> Result<()> {
    let c = load_all("gemma2", 3)?;
    assert_eq!(c.architecture, Architecture::Gemma2);
    assert_eq!(
        (c.norm_kind, c.norm_placement),
        (NormKind::OffsetScaleThenCast, NormPlacement::Sandwich)
    );
    assert_eq!((c.hidden_act, c.qk_norm), (Activation::GeluTanh, QkNorm::None));
    assert!(c.scale_embeddings && c.tie_word_embeddings);
    assert_eq!(c.query_pre_attn_scalar, Some(256.0));
    assert_eq!((c.attn_logit_softcapping, c.final_logit_softcapping), (Some(50.0), Some(30.0)));
    let windows: Vec<_> = (0..26).map(|i| (i % 2 == 0).then_some(4096)).collect();
    assert_eq!(c.sliding_windows, windows, "sliding first, then every other layer");
    assert_eq!(c.head_dim, 256);
    assert_eq!((c.bos_token_id, c.eos_token_ids.clone()), (Some(2), vec![1]));
    Ok(())
}

fn gemma3_windows(layers: usize, window: i64) -> Vec<Option<i64>> {
    (0..layers).map(|i| ((i + 1) % 6 != 0).then_some(window)).collect()
}

#[test]
fn gemma3_text_has_local_and_global_rope() -> Result<()> {
    let c = load_all("gemma3-text", 2)?;
    assert_eq!(c.architecture, Architecture::Gemma3);
    assert_eq!((c.rope_theta, c.local_rope_theta), (1e6, Some(10000.0)));
    assert_eq!(c.rope_scaling, RopeScaling::Default);
    assert_eq!(c.qk_norm, QkNorm::PerHead);
    assert_eq!((c.attn_logit_softcapping, c.final_logit_softcapping), (None, None));
    assert_eq!(c.sliding_windows, gemma3_windows(26, 512));
    assert_eq!(c.eos_token_ids, vec![1, 106]);
    assert!(!c.nested_text_model);
    Ok(())
}

#[test]
fn gemma3_multimodal_reads_its_text_config() -> Result<()> {
    let c = load_all("gemma3-multimodal", 2)?;
    assert_eq!(c.architecture, Architecture::Gemma3);
    assert!(c.nested_text_model);
    assert_eq!((c.vocab_size, c.hidden_size, c.num_hidden_layers), (262208, 2560, 34));
    assert_eq!(c.rope_scaling, RopeScaling::Linear { factor: 8.0 }, "global layers only");
    assert_eq!(c.local_rope_theta, Some(10000.0));
    assert_eq!(c.sliding_windows, gemma3_windows(34, 1024));
    assert_eq!(c.eos_token_ids, vec![1, 106]);
    assert_eq!(c.saved_dtype.as_deref(), Some("bfloat16"));
    Ok(())
}

#[test]
fn phi3_fuses_its_projections_and_windows_every_layer() -> Result<()> {
    let c = load_all("phi3", 3)?;
    assert_eq!(c.architecture, Architecture::Phi3);
    assert!(c.fused_projections && !c.tie_word_embeddings);
    assert_eq!((c.rope_scaling.clone(), c.partial_rotary_factor), (RopeScaling::Default, 1.0));
    assert_eq!(c.sliding_windows, vec![Some(2047); 32]);
    assert_eq!(c.pad_token_id, Some(32000));
    Ok(())
}

#[test]
fn phi35_longrope_from_su_style_and_rope_parameters() -> Result<()> {
    let c = load_all("phi3.5", 3)?;
    let RopeScaling::LongRope {
        short_factor,
        long_factor,
        original_max_position_embeddings,
        attention_factor,
    } = &c.rope_scaling
    else {
        panic!("LongRoPE expected, found {:?}", c.rope_scaling);
    };
    assert_eq!((short_factor.len(), long_factor.len()), (48, 48));
    assert_eq!(*original_max_position_embeddings, 4096);
    let expected = (1.0 + (131072.0f64 / 4096.0).ln() / 4096f64.ln()).sqrt();
    assert!((attention_factor - expected).abs() < 1e-12, "{attention_factor}");
    Ok(())
}

#[test]
fn phi4_mini_rotates_three_quarters_of_each_head() -> Result<()> {
    let c = load_all("phi4-mini", 2)?;
    assert_eq!((c.partial_rotary_factor, c.rotary_dim()), (0.75, 96));
    assert_eq!((c.num_attention_heads, c.num_key_value_heads), (24, 8));
    assert!(c.tie_word_embeddings);
    assert!(matches!(c.rope_scaling, RopeScaling::LongRope { .. }));
    Ok(())
}

#[test]
fn olmo2_normalises_after_each_block() -> Result<()> {
    let c = load_all("olmo2", 3)?;
    assert_eq!(c.architecture, Architecture::Olmo2);
    assert_eq!((c.norm_kind, c.norm_placement), (NormKind::ScaleThenCast, NormPlacement::Post));
    assert_eq!(c.qk_norm, QkNorm::Whole);
    assert_eq!(c.rope_theta, 500000.0);
    assert_eq!((c.bos_token_id, c.pad_token_id), (None, Some(100277)));
    Ok(())
}

#[test]
fn mixtures_of_experts_are_refused_by_type_and_reason() {
    for (model, count, model_type) in [("qwen3-moe", 2, "qwen3_moe"), ("mixtral", 3, "mixtral")] {
        for (version, path) in versions(model, count) {
            let err = Config::from_file(&path).unwrap_err().to_string();
            for needed in [
                format!("`{model_type}`"),
                "mixture-of-experts".into(),
                "down_proj".into(),
                SUPPORTED_MODEL_TYPES.into(),
            ] {
                assert!(err.contains(&needed), "{model} {version}: `{needed}` missing from {err}");
            }
        }
    }
}

#[test]
fn unknown_model_types_are_refused_with_the_supported_list() -> Result<()> {
    let path = fixture("llama2-5.0.json");
    let mut value: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path)?)?;
    value["model_type"] = serde_json::json!("gpt_neox");
    let err = Config::from_value(&value, &path).unwrap_err().to_string();
    assert!(err.contains("`gpt_neox`") && err.contains(SUPPORTED_MODEL_TYPES), "{err}");
    assert!(err.contains("`model_type`"), "{err}");
    Ok(())
}

/// The decoder parity checkpoints' configurations, as transformers 4.x (`rope_theta`, `rope_scaling`, Gemma-3's
/// `rope_local_base_freq` and `sliding_window_pattern`, no `layer_types`) and 5.x write them, read the same as
/// the `config.json` each checkpoint was saved with.
#[test]
fn the_parity_checkpoints_read_the_same_in_both_dialects() -> Result<()> {
    let families = [
        ("qwen3", 2),
        ("olmo2", 3),
        ("gemma2", 3),
        ("gemma3", 2),
        ("gemma3_multimodal", 2),
        ("phi3", 2),
    ];
    for (family, count) in families {
        let saved = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/decoders")
            .join(family)
            .join("config.json");
        let mut want = Config::from_file(&saved)?;
        for (version, path) in versions(&format!("tiny-{family}"), count) {
            let mut got = Config::from_file(&path)?;
            // Which transformers wrote the file is the one thing that differs: it is not in `Config`.
            got.saved_dtype = None;
            want.saved_dtype = None;
            assert_eq!(got, want, "{family}: transformers {version} reads differently");
        }
    }
    Ok(())
}

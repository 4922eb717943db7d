//! The embedded default model, SmolLM2-135M-Instruct, imported from its GGUF (`cargo xtask smollm2` fetches it;
//! `cargo xtask test` does so before running the tests).

use std::path::PathBuf;

use anyhow::{bail, Result};
use detox_runtime::gguf::GgufModel;
use detox_runtime::{generate, GenerationConfig};
use tch::{Device, Kind};

fn gguf_path() -> Result<PathBuf> {
    let path = std::env::var_os("DETOX_SMOLLM2_GGUF").map(PathBuf::from).unwrap_or_else(|| {
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../../models/SmolLM2-135M-Instruct/SmolLM2-135M-Instruct.Q4_1.gguf")
    });
    if !path.is_file() {
        bail!(
            "{} is missing: run `cargo xtask smollm2` (or set DETOX_SMOLLM2_GGUF)",
            path.display()
        );
    }
    Ok(path)
}

#[test]
fn smollm2_answers_the_capital_of_france_and_round_trips_through_a_hf_directory() -> Result<()> {
    let gguf = GgufModel::open(gguf_path()?)?;
    let c = &gguf.config;
    assert_eq!(
        (c.num_hidden_layers, c.hidden_size, c.num_attention_heads, c.num_key_value_heads),
        (30, 576, 9, 3)
    );
    assert!(c.tie_word_embeddings);
    let tokenizer = gguf.tokenizer()?;
    let template = tokenizer.chat_template().expect("the GGUF carries a chat template").clone();
    let prompt = template.user_prompt("What is the capital of France?")?;
    let ids = tokenizer.encode(&prompt, false)?;
    assert_eq!(
        ids[0],
        tokenizer.token_id("<|im_start|>").unwrap(),
        "special tokens are single ids"
    );

    let model = gguf.to_model(Device::Cpu, Kind::Float)?;
    let config = GenerationConfig::greedy(24, tokenizer.eos_ids().to_vec());
    let out = generate(&model, std::slice::from_ref(&ids), &config, None)?;
    let answer = tokenizer.decode(&out[0].tokens, true)?;
    assert!(answer.contains("Paris"), "greedy answer: {answer:?}");

    let dir = tempfile::tempdir()?;
    gguf.export_hf_dir(dir.path(), Kind::Float)?;
    let reloaded = detox_runtime::CausalLm::load(dir.path(), Device::Cpu, Kind::Float)?;
    let tok2 = detox_runtime::Tokenizer::from_model_dir(dir.path())?;
    assert_eq!(tok2.encode(&prompt, false)?, ids);
    let again = generate(&reloaded, std::slice::from_ref(&ids), &config, None)?;
    assert_eq!(again[0].tokens, out[0].tokens, "the exported directory behaves like the GGUF");
    println!("SmolLM2: {answer}");
    Ok(())
}

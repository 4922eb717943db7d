//! Runs a model on a prompt and writes the full-sequence logits and every hidden state to a safetensors file
//! (`logits`, `hidden_states.{i}`, `input_ids`), so that parity can be checked with other tools.
//!
//! ```text
//! cargo run -p detox-examples --example forward -- --prompt "The capital of France is" --out runs/forward.safetensors
//! ```
use std::path::PathBuf;

use anyhow::{bail, Result};
use clap::Parser;
use detox_examples::ModelArgs;
use detox_runtime::ForwardOptions;
use tch::Tensor;

/// Write logits and hidden states of one prompt.
#[derive(Debug, Parser)]
struct Args {
    #[command(flatten)]
    model: ModelArgs,
    /// The prompt (encoded with the tokenizer's special tokens).
    #[arg(long)]
    prompt: String,
    /// Apply the model's chat template to the prompt first.
    #[arg(long)]
    chat: bool,
    /// Output file.
    #[arg(long, default_value = "runs/forward.safetensors")]
    out: PathBuf,
}

fn main() -> Result<()> {
    let args = Args::parse();
    if args.prompt.is_empty() {
        bail!("--prompt is empty: the forward pass needs at least one token");
    }
    detox_runtime::backend::init();
    let loaded = args.model.load()?;
    let ids = if args.chat {
        loaded.tokenizer.encode(&loaded.tokenizer.chat_prompt(&args.prompt)?, false)?
    } else {
        loaded.tokenizer.encode(&args.prompt, true)?
    };
    let input = Tensor::from_slice(&ids).unsqueeze(0);
    let out = tch::no_grad(|| {
        loaded
            .model
            .forward(&input, &ForwardOptions { output_hidden_states: true, ..Default::default() })
    })?;
    let mut tensors =
        vec![("input_ids".to_string(), input), ("logits".to_string(), out.logits.squeeze_dim(0))];
    for (i, h) in out.hidden_states.unwrap_or_default().into_iter().enumerate() {
        tensors.push((format!("hidden_states.{i}"), h.squeeze_dim(0)));
    }
    if let Some(dir) = args.out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    detox_runtime::weights::save_safetensors(&args.out, &tensors)?;
    println!(
        "{} tokens; logits and {} hidden states written to {}",
        ids.len(),
        tensors.len() - 2,
        args.out.display()
    );
    Ok(())
}

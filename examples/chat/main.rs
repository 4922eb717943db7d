//! Talks to a model, optionally with a saved edit (delta) applied: one prompt with --prompt, or an interactive
//! loop reading lines from standard input.
//!
//! ```text
//! cargo run -p detox-examples --example chat -- --prompt "What is the capital of France?"
//! cargo run -p detox-examples --example chat -- --delta runs/dinm_delta.safetensors
//! ```
use std::io::{BufRead, Write};
use std::path::PathBuf;

use anyhow::{bail, Result};
use clap::Parser;
use detox_edit::Delta;
use detox_eval::drive::respond::respond;
use detox_eval::settings::Decoding;
use detox_examples::ModelArgs;
use detox_runtime::{PromptLayout, Sampling};

/// Chat with a model.
#[derive(Debug, Parser)]
struct Args {
    #[command(flatten)]
    model: ModelArgs,
    /// A delta written by an editor (e.g. the dinm_edit example) to apply first.
    #[arg(long)]
    delta: Option<PathBuf>,
    /// One prompt; without it, read prompts line by line.
    #[arg(long)]
    prompt: Option<String>,
    /// Send the raw text instead of the chat template.
    #[arg(long)]
    raw: bool,
    /// Most new tokens.
    #[arg(long, default_value_t = 128, value_parser = detox_examples::at_least(1))]
    max_new_tokens: usize,
    /// Sample with this temperature (top-p 0.9) instead of greedy decoding.
    #[arg(long, value_parser = detox_examples::positive_number)]
    temperature: Option<f64>,
    /// Seed for sampling.
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

fn main() -> Result<()> {
    let args = Args::parse();
    detox_runtime::backend::init();
    let mut loaded = args.model.load()?;
    if let Some(path) = &args.delta {
        let delta = Delta::load(path)?;
        let _original = delta.apply(&mut loaded.model)?;
        println!(
            "applied {} ({} tensor(s), norm {:.4})",
            path.display(),
            delta.names().count(),
            delta.norm()?
        );
    }
    let style = if args.raw { PromptLayout::Raw } else { PromptLayout::ChatTemplate };
    if style == PromptLayout::ChatTemplate && loaded.tokenizer.chat_template().is_none() {
        bail!("the model has no chat template; pass --raw");
    }
    let sampling = match args.temperature {
        Some(temperature) => Sampling::TopP { temperature, top_p: 0.9, seed: args.seed },
        None => Sampling::Greedy,
    };
    let mut decoding = Decoding::default();
    decoding.max_new_tokens = args.max_new_tokens;
    decoding.sampling = sampling;
    decoding.batch_size = 1;
    let answer = |prompt: &str| -> Result<String> {
        Ok(respond(&loaded.model, &loaded.tokenizer, &[prompt.to_string()], style, &decoding)?
            .remove(0)
            .text)
    };
    if let Some(prompt) = &args.prompt {
        println!("{}", answer(prompt)?.trim());
        return Ok(());
    }
    let stdin = std::io::stdin();
    print!("> ");
    std::io::stdout().flush()?;
    for line in stdin.lock().lines() {
        let line = line?;
        if !line.trim().is_empty() {
            println!("{}", answer(&line)?.trim());
        }
        print!("> ");
        std::io::stdout().flush()?;
    }
    Ok(())
}

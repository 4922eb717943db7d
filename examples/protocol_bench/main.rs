//! Times the SafeEdit protocol's pieces on a model with random weights built in place (a Llama-2-7B shape by
//! default, never read from disk), and estimates the whole test split from them. Prints one JSON line per figure;
//! `cargo xtask bench` runs it next to the transformers peer (`examples/bench/hf_protocol_peer.py`) and prints the
//! table of ratios.
//!
//! ```text
//! cargo run --release -p detox-examples --example protocol_bench -- --shape llama2-7b --device cuda --dtype bf16
//! cargo run --release -p detox-examples --example protocol_bench -- --shape tiny --device cpu --dtype f32 --new 32
//! ```
//!
//! Inputs mirror the peer's: a 400-token prompt and a 150-token target (the edit trains on 550 tokens), a
//! 60-token knowledge constraint whose last 20 tokens are compared by the KL term, 10 Adam steps, greedy decoding
//! forced to full length. Estimates of the whole split assume every record costs what the measured ones did.
use anyhow::Result;
use clap::Parser;
use detox_edit::bench::protocol::{build_random_model, run_protocol, ProtocolSettings};
use detox_edit::bench::{BenchShape, Figure};
use detox_runtime::load::{check_device, kind_name, parse_device, parse_kind};

/// Protocol timings on a random-weight model.
#[derive(Debug, Parser)]
struct Args {
    /// `llama2-7b` (32 layers, hidden 4096), `smollm2` (SmolLM2-135M's shape: 30 layers, hidden 576, 3 key/value
    /// heads, tied embeddings) or `tiny` (4 layers, hidden 128).
    #[arg(long, default_value = "llama2-7b")]
    shape: String,
    /// `cpu`, `cuda`, `cuda:N` or `auto`.
    #[arg(long, default_value = "auto")]
    device: String,
    /// `f32`, `bf16` or `f16`.
    #[arg(long, default_value = "bf16")]
    dtype: String,
    /// Prompt tokens of the edit input.
    #[arg(long, default_value_t = 400, value_parser = detox_examples::at_least(2))]
    prompt: usize,
    /// Target tokens of the edit input.
    #[arg(long, default_value_t = 150, value_parser = detox_examples::at_least(1))]
    target: usize,
    /// Adam steps per edit.
    #[arg(long, default_value_t = 10, value_parser = detox_examples::at_least(1))]
    steps: usize,
    /// New tokens per generated response (forced).
    #[arg(long, default_value_t = 600, value_parser = detox_examples::at_least(1))]
    new: usize,
    /// Generation batch sizes to time, comma-separated.
    #[arg(long, default_value = "5,64", value_delimiter = ',', value_parser = detox_examples::at_least(1))]
    gen_batches: Vec<usize>,
    /// Records edited together in the batched edit.
    #[arg(long, default_value_t = 8, value_parser = detox_examples::at_least(1))]
    edit_batch: usize,
    /// Records of the split the estimate is for.
    #[arg(long, default_value_t = 1350, value_parser = detox_examples::at_least(1))]
    records: usize,
    /// The layer every edit trains (default: the middle one). Pinned, so that both sides backpropagate equally
    /// deep whatever the locator picks on random weights; the locator is still timed.
    #[arg(long)]
    layer: Option<usize>,
    /// Seed of the weights and inputs.
    #[arg(long, default_value_t = 0)]
    seed: i64,
    /// Skip the baselines' figures (SFT and DPO steps, MEND edit and training step).
    #[arg(long)]
    skip_baselines: bool,
}

fn main() -> Result<()> {
    let args = Args::parse();
    detox_runtime::backend::init();
    let device = parse_device(&args.device)?;
    check_device(device)?;
    let kind = parse_kind(&args.dtype)?;
    let config = args.shape.parse::<BenchShape>()?.config()?;
    let mut emit = |figure: Figure| {
        let mut line = serde_json::json!({
            "impl": "detox", "what": figure.what, "value": figure.value, "shape": args.shape,
            "dtype": kind_name(kind), "device": format!("{device:?}"),
        });
        if let (Some(line), Some(extra)) = (line.as_object_mut(), figure.extra.as_object()) {
            line.extend(extra.clone());
        }
        println!("{line}");
    };
    let settings = ProtocolSettings {
        prompt: args.prompt,
        target: args.target,
        steps: args.steps,
        new: args.new,
        gen_batches: args.gen_batches.clone(),
        edit_batch: args.edit_batch,
        records: args.records,
        layer: args.layer,
        seed: args.seed,
        baselines: !args.skip_baselines,
    };
    // A pinned layer the shape lacks is refused before the model is built.
    settings.edited_layer(&config)?;
    let mut model = build_random_model(&config, device, kind, args.seed, &mut emit)?;
    run_protocol(&mut model, &settings, &mut emit)?;
    Ok(())
}

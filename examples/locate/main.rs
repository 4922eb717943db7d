//! Prints the locator's per-layer distances for SafeEdit records (and writes them as an SVG plot).
//!
//! ```text
//! cargo run -p detox-examples --example locate -- --first 3
//! ```
use std::path::PathBuf;

use anyhow::Result;
use clap::Parser;
use detox_examples::ModelArgs;
use detox_locate::{
    contrast_texts, ContrastTexts, LocateError, LocateInput, LocateOptions, PaddingPositions,
};
use safeedit::{load_split, Mode, Split, Subset};

/// Per-layer distances between the hidden states of each record's safe and unsafe responses.
#[derive(Debug, Parser)]
struct Args {
    #[command(flatten)]
    model: ModelArgs,
    /// A SafeEdit file.
    #[arg(long, default_value = "datasets/safeedit_sample_test.json")]
    data: PathBuf,
    /// Only the first N records.
    #[arg(long, default_value_t = 3, value_parser = detox_examples::at_least(1))]
    first: usize,
    /// Put the adversarial prompt in front of each response (the reference feeds the responses alone).
    #[arg(long)]
    with_prompt: bool,
    /// Leave padding positions out of the distance (the reference includes them).
    #[arg(long)]
    mask_padding: bool,
    /// Where to write the plot.
    #[arg(long, default_value = "runs/layer_distances.svg")]
    plot: PathBuf,
}

fn main() -> Result<()> {
    let args = Args::parse();
    detox_runtime::backend::init();
    let loaded = args.model.load()?;
    let records = Subset::First { n: args.first }
        .apply(&load_split(&args.data, Split::Train, Mode::Strict)?.records);
    let input = if args.with_prompt { LocateInput::WithPrompt } else { LocateInput::ResponsesOnly };
    let padding =
        if args.mask_padding { PaddingPositions::Masked } else { PaddingPositions::Included };
    let options = LocateOptions { input, padding };
    let pad = loaded.tokenizer.pad_id().unwrap_or(0);
    let mut series = Vec::new();
    for r in &records {
        let texts = ContrastTexts {
            prompt: &r.adversarial_prompt,
            safe: &r.safe_generation,
            unsafe_: &r.unsafe_generation,
        };
        let report = contrast_texts(&loaded.model, texts, &options, pad, |text| {
            loaded.tokenizer.encode(text, true).map_err(LocateError::from)
        })?;
        let shown: Vec<String> = report.distances.iter().map(|d| format!("{d:.1}")).collect();
        println!(
            "record {} ({}): toxic layer {}\n  [{}]",
            r.id,
            r.category,
            report.toxic_layer,
            shown.join(", ")
        );
        series.push((format!("record {}", r.id), report.distances));
    }
    if let Some(dir) = args.plot.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let svg = detox_eval::render::plot::lines(
        "Distance between safe and unsafe hidden states",
        "layer",
        "distance",
        &series,
    );
    detox_eval::write_atomic(&args.plot, svg.as_bytes())?;
    println!("plot written to {}", args.plot.display());
    Ok(())
}

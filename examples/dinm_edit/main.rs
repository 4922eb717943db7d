//! Edits one SafeEdit record with DINM: prints the located layer, the loss of every step, the responses to the
//! adversarial prompt before and after the edit, and writes the delta as safetensors; with `--save-model DIR`
//! also the edited model, as a Hugging Face model directory.
//!
//! ```text
//! cargo run -p detox-examples --example dinm_edit -- --id 3 --delta runs/delta_3.safetensors
//! cargo run -p detox-examples --example dinm_edit -- --model models/Llama-2-7b-chat-hf --id 3 \
//!     --save-model runs/llama-2-7b-chat-dinm-3
//! ```
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Parser;
use detox_edit::dinm::{DinmEditor, DinmHyperParams, DinmOptions, DinmPreset};
use detox_edit::{EditInput, Editor};
use detox_eval::drive::respond::respond;
use detox_eval::settings::{Decoding, Protocol};
use detox_examples::{ModelArgs, SaveModelArgs};
use detox_runtime::PromptLayout;
use safeedit::{load_split, Mode, Split};

/// Edit one record with DINM.
#[derive(Debug, Parser)]
struct Args {
    #[command(flatten)]
    model: ModelArgs,
    /// A SafeEdit file (test, train or validation split).
    #[arg(long, default_value = "datasets/safeedit_sample_test.json")]
    data: PathBuf,
    /// The record id.
    #[arg(long, default_value_t = 0)]
    id: u64,
    /// Preset (`llama-7b`, `mistral-7b`) unless --hparams is given.
    #[arg(long, default_value = "llama-7b")]
    preset: String,
    /// Hyper-parameters file with the reference's keys.
    #[arg(long)]
    hparams: Option<PathBuf>,
    /// Use the paper's loss reading instead of the reference's.
    #[arg(long)]
    paper: bool,
    /// Lay out edit inputs and prompts with the model's chat template (instead of raw text).
    #[arg(long)]
    chat: bool,
    /// Where to write the delta.
    #[arg(long, default_value = "runs/dinm_delta.safetensors")]
    delta: PathBuf,
    /// Most new tokens of the responses (default: the hyper-parameters' `max_output_length`).
    #[arg(long, value_parser = detox_examples::at_least(1))]
    max_new_tokens: Option<usize>,
    #[command(flatten)]
    save: SaveModelArgs,
}

fn main() -> Result<()> {
    let args = Args::parse();
    args.save.check_before(&args.model)?;
    let records = load_split(&args.data, Split::Train, Mode::Strict)?.records;
    let record = records
        .iter()
        .find(|r| r.id == args.id)
        .with_context(|| format!("no record with id {} in {}", args.id, args.data.display()))?;
    let mut loaded = args.model.load()?;
    let hparams = match &args.hparams {
        Some(p) => DinmHyperParams::from_file(p)?,
        None => DinmPreset::from_name(&args.preset).context("unknown preset")?.hparams(),
    };
    let mut options = if args.paper { DinmOptions::paper() } else { DinmOptions::reference() };
    if args.chat {
        options.prompt_layout = PromptLayout::ChatTemplate;
    }
    let style = if args.chat { PromptLayout::ChatTemplate } else { PromptLayout::Raw };
    // The hyper-parameters' own limits, as the reference's evaluation reads them.
    let protocol = Protocol::default().with_lengths(
        hparams.max_length,
        hparams.max_output_length,
        "the DINM hyper-parameters",
    )?;
    let mut decoding = Decoding::for_protocol(&protocol);
    decoding.max_new_tokens = args.max_new_tokens.unwrap_or(decoding.max_new_tokens);
    let prompt = vec![record.adversarial_prompt.clone()];
    let before = respond(&loaded.model, &loaded.tokenizer, &prompt, style, &decoding)?;

    let mut editor = DinmEditor::new(hparams, options)?;
    let outcome = editor.edit(
        &mut loaded.model,
        &loaded.tokenizer,
        &EditInput::from(&record.edit_request()),
    )?;
    if let Some(located) = outcome.details.located() {
        let distances: Vec<String> = located.distances.iter().map(|d| format!("{d:.1}")).collect();
        println!("per-layer distances: [{}]", distances.join(", "));
    }
    println!("record {} ({}): toxic layer {:?}", record.id, record.category, outcome.layer);
    for (i, s) in outcome.details.steps().iter().enumerate() {
        println!("  step {i:2}: loss {:.5}  nll {:.5}  kl {:.6}", s.loss, s.nll, s.kl);
    }
    println!("locate {:.2} s, edit {:.2} s", outcome.timings.locate, outcome.timings.edit);
    let after = respond(&loaded.model, &loaded.tokenizer, &prompt, style, &decoding)?;
    println!(
        "\nprompt: {}\nbefore: {}\nafter : {}",
        record.adversarial_prompt,
        before[0].text.trim(),
        after[0].text.trim()
    );
    if let Some(dir) = args.delta.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    outcome.delta.save(&args.delta)?;
    println!("\ndelta (norm {:.4}) written to {}", outcome.delta.norm()?, args.delta.display());
    args.save.save(&loaded)?;
    editor.restore(&mut loaded.model)?;
    Ok(())
}

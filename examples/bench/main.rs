//! Times the runtime: prefill, decode steps at a batch of 5 (forced length), and one DINM edit, printing one JSON
//! line per figure. `--inputs-out` writes the exact token ids used, so that `hf_peer.py` (next to this file)
//! times transformers on the same inputs in the same session; `--export-hf` writes a .gguf model as a Hugging Face
//! directory for it.
//!
//! ```text
//! cargo run --release -p detox-examples --example bench -- --export-hf runs/smollm2-hf --inputs-out runs/bench_inputs.json
//! python3 examples/bench/hf_peer.py --model runs/smollm2-hf --inputs runs/bench_inputs.json
//! ```
use std::path::PathBuf;

use anyhow::Result;
use clap::Parser;
use detox_edit::bench::runtime::{
    decode_step_ms, dinm_edit_ms, prefill_ms, refill_comparison, SyntheticPrompts,
};
use detox_edit::bench::BenchError;
use detox_examples::ModelArgs;
use safeedit::{load_split, Mode, Split};

/// Runtime timings.
#[derive(Debug, Parser)]
struct Args {
    #[command(flatten)]
    model: ModelArgs,
    /// Prompt length for prefill.
    #[arg(long, default_value_t = 400, value_parser = detox_examples::at_least(32))]
    prompt: usize,
    /// Decode batch.
    #[arg(long, default_value_t = 5, value_parser = detox_examples::at_least(1))]
    batch: usize,
    /// New tokens per decode run.
    #[arg(long, default_value_t = 64, value_parser = detox_examples::at_least(2))]
    new: usize,
    /// Repetitions (the median is reported).
    #[arg(long, default_value_t = 5, value_parser = detox_examples::at_least(1))]
    reps: usize,
    /// Write the token ids used here (JSON) for the Python peer.
    #[arg(long)]
    inputs_out: Option<PathBuf>,
    /// Export a .gguf model as a Hugging Face directory here (for the Python peer).
    #[arg(long)]
    export_hf: Option<PathBuf>,
    /// Also time answering the sample records' evaluation inputs (chat template, greedy) in fixed batches of
    /// `--batch` against `--batch` rows refilled as responses end, with at most this many new tokens.
    #[arg(long, value_parser = detox_examples::at_least(1))]
    refill_new: Option<usize>,
}

fn main() -> Result<()> {
    let args = Args::parse();
    // Checked before anything is loaded; the model's own limits are checked once it is.
    let needed = 3 * (args.batch - 1) + 32;
    if args.prompt < needed {
        let (prompt, batch) = (args.prompt, args.batch);
        return Err(BenchError::PromptTooShort { prompt, batch, needed }.into());
    }
    detox_runtime::backend::init();
    let device = args.model.device()?;
    if let Some(dir) = &args.export_hf {
        detox_runtime::gguf::GgufModel::open(&args.model.model)?
            .export_hf_dir(dir, tch::Kind::Float)?;
        println!("{{\"exported\": \"{}\"}}", dir.display());
    }
    let mut loaded = args.model.load()?;
    let threads = tch::get_num_threads();
    let emit = |what: &str, ms: f64| {
        println!("{{\"impl\": \"detox\", \"what\": \"{what}\", \"ms\": {ms:.3}, \"threads\": {threads}, \"device\": \"{device:?}\"}}")
    };
    let inputs = SyntheticPrompts::new(&loaded.model, args.prompt, args.batch)
        .map_err(|e| anyhow::anyhow!("{}: {e}", args.model.model.display()))?;
    emit(
        &format!("prefill_{}_tokens", args.prompt),
        prefill_ms(&loaded.model, &inputs.prompt_ids, args.reps)?,
    );
    let decode = decode_step_ms(&loaded.model, &inputs.decode_prompts, args.new, args.reps)?;
    emit(&format!("decode_step_batch_{}", args.batch), decode);

    // One DINM edit (10 steps, reference settings) on a sample record.
    let split = load_split("datasets/safeedit_sample_test.json", Split::Test, Mode::Strict)?;
    let edit = dinm_edit_ms(&mut loaded, &split.records[4])?;
    let what = format!("dinm_edit_{}_steps_{}_tokens", edit.steps, edit.tokens.edit_input.len());
    emit(&what, edit.edit_ms);
    emit(&format!("{what}_whole_model"), edit.whole_model_ms);

    if let Some(new) = args.refill_new {
        let c = refill_comparison(&loaded, &split.records, args.batch, new)?;
        println!(
            "{}",
            serde_json::json!({"what": "refill_comparison", "prompts": c.prompts, "rows": c.rows,
                               "max_new": c.max_new, "generated_tokens": c.generated_tokens,
                               "identical_responses": c.identical_responses})
        );
        emit("fixed_batches_ms", c.fixed_ms);
        emit("refilled_rows_ms", c.refilled_ms);
    }

    if let Some(path) = &args.inputs_out {
        let t = &edit.tokens;
        let json = serde_json::json!({
            "prompt_ids": inputs.prompt_ids, "decode_prompts": inputs.decode_prompts, "new": args.new,
            "reps": args.reps,
            "edit": {"layer": edit.layer, "input": t.edit_input, "target": t.target,
                     "constraint": t.constraint_input, "answer_len": t.constraint_answer_len,
                     "lr": edit.lr, "kl_factor": edit.kl_factor, "steps": edit.steps}
        });
        std::fs::write(path, serde_json::to_string(&json)?)?;
    }
    Ok(())
}

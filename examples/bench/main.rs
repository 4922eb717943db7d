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
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::Parser;
use detox_edit::dinm::{
    build_tokens, optimize_tensor, DinmOptions, DinmPreset, OptimizeSettings, StepForward,
};
use detox_edit::EditInput;
use detox_examples::ModelArgs;
use detox_runtime::{
    generate, generate_refill, ForwardOptions, GenerationConfig, LogitsSelection, PromptLayout,
    Sampling,
};
use tch::Tensor;

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

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn main() -> Result<()> {
    let args = Args::parse();
    // Decode prompts are 32-token windows of the prefill prompt, 3 tokens apart.
    let needed = 3 * (args.batch - 1) + 32;
    if args.prompt < needed {
        bail!(
            "--prompt {} is too short for --batch {}: it needs at least {needed} tokens",
            args.prompt,
            args.batch
        );
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
    let vocab = loaded.model.config().vocab_size;
    let context = loaded.model.config().max_position_embeddings as usize;
    if vocab <= 200 {
        bail!(
            "{}: the synthetic prompts need a vocabulary over 200 tokens, this one has {vocab}",
            args.model.model.display()
        );
    }
    if args.prompt > context {
        bail!("--prompt {} exceeds the model's context of {context} tokens", args.prompt);
    }
    let ids: Vec<i64> = (0..args.prompt as i64).map(|i| 100 + (i * 7919) % (vocab - 200)).collect();
    let _guard = tch::no_grad_guard();

    // Prefill: one forward over the prompt, logits of the last position.
    let input = Tensor::from_slice(&ids).unsqueeze(0).to_device(device);
    let options = ForwardOptions { logits: LogitsSelection::Last, ..Default::default() };
    let mut times = Vec::new();
    for _ in 0..args.reps + 1 {
        detox_runtime::backend::synchronize(device);
        let t = Instant::now();
        let _ = loaded.model.forward(&input, &options)?;
        detox_runtime::backend::synchronize(device);
        times.push(t.elapsed().as_secs_f64() * 1e3);
    }
    times.remove(0);
    emit(&format!("prefill_{}_tokens", args.prompt), median(times));

    // Decode: a batch of short prompts, forced to `new` tokens (no EOS).
    let prompts: Vec<Vec<i64>> = (0..args.batch).map(|b| ids[b * 3..b * 3 + 32].to_vec()).collect();
    let config = GenerationConfig {
        max_new_tokens: args.new,
        sampling: Sampling::Greedy,
        eos_token_ids: Vec::new(),
        pad_token_id: 0,
        sync_every: 8,
    };
    let one = GenerationConfig { max_new_tokens: 1, ..config.clone() };
    let mut times = Vec::new();
    for _ in 0..args.reps + 1 {
        detox_runtime::backend::synchronize(device);
        let t = Instant::now();
        let _ = generate(&loaded.model, &prompts, &one, None)?;
        let prefill = t.elapsed().as_secs_f64();
        let t = Instant::now();
        let out = generate(&loaded.model, &prompts, &config, None)?;
        detox_runtime::backend::synchronize(device);
        assert!(out.iter().all(|g| g.tokens.len() == args.new));
        times.push((t.elapsed().as_secs_f64() - prefill) * 1e3 / (args.new - 1) as f64);
    }
    times.remove(0);
    emit(&format!("decode_step_batch_{}", args.batch), median(times));
    drop(_guard);

    // One DINM edit (10 steps, reference settings) on the first sample record.
    let record = &safeedit::load_split(
        "datasets/safeedit_sample_test.json",
        safeedit::Split::Test,
        safeedit::Mode::Strict,
    )?
    .records[4];
    let hp = DinmPreset::Llama2_7bChat.hparams();
    let tokens = build_tokens(
        &loaded.tokenizer,
        &EditInput::from(&record.edit_request()),
        &hp.suffix_system_prompt,
        PromptLayout::Raw,
    )?;
    // The reference's settings, without early stop so that every run takes its 10 steps.
    let settings = OptimizeSettings {
        num_steps: 10,
        early_stop_loss: 0.0,
        ..OptimizeSettings::from_hparams(&hp, &DinmOptions::reference())
    };
    let name = hp.rewrite_tensor_name(loaded.model.config().num_hidden_layers / 2);
    let snapshot = loaded.model.snapshot(&[&name])?;
    // The median of 3 edits, each restored; the whole-model path is the reference's computation, in the same
    // session.
    let mut time_edit = |settings: &OptimizeSettings| -> Result<f64> {
        let mut times = Vec::new();
        for _ in 0..3 {
            detox_runtime::backend::synchronize(device);
            let t = Instant::now();
            let trained = optimize_tensor(&mut loaded.model, &name, &tokens, settings)?;
            detox_runtime::backend::synchronize(device);
            times.push(t.elapsed().as_secs_f64() * 1e3);
            assert_eq!(trained.steps.len(), 10);
            loaded.model.restore(&snapshot)?;
        }
        Ok(median(times))
    };
    let edit_ms = time_edit(&settings)?;
    let whole_ms =
        time_edit(&OptimizeSettings { step_forward: StepForward::WholeModel, ..settings })?;
    let what = format!("dinm_edit_10_steps_{}_tokens", tokens.edit_input.len());
    emit(&what, edit_ms);
    emit(&format!("{what}_whole_model"), whole_ms);

    if let Some(new) = args.refill_new {
        refill_comparison(&loaded, &args, new, device, &emit)?;
    }

    if let Some(path) = &args.inputs_out {
        let layer = loaded.model.config().num_hidden_layers / 2;
        let json = serde_json::json!({
            "prompt_ids": ids, "decode_prompts": prompts, "new": args.new, "reps": args.reps,
            "edit": {"layer": layer, "input": tokens.edit_input, "target": tokens.target,
                     "constraint": tokens.constraint_input, "answer_len": tokens.constraint_answer_len,
                     "lr": hp.lr, "kl_factor": hp.kl_factor, "steps": 10}
        });
        std::fs::write(path, serde_json::to_string(&json)?)?;
    }
    Ok(())
}

/// Fixed batches against refilled rows on the same prompts; both must give the same responses.
fn refill_comparison(
    loaded: &detox_runtime::LoadedModel,
    args: &Args,
    new: usize,
    device: tch::Device,
    emit: &dyn Fn(&str, f64),
) -> Result<()> {
    let split = safeedit::load_split(
        "datasets/safeedit_sample_test.json",
        safeedit::Split::Test,
        safeedit::Mode::Strict,
    )?;
    let mut prompts = Vec::new();
    for record in &split.records {
        for input in record.eval_inputs().into_iter().flatten() {
            prompts
                .push(loaded.tokenizer.encode(&loaded.tokenizer.chat_prompt(input.text)?, false)?);
        }
    }
    let eos = loaded.tokenizer.eos_ids().to_vec();
    let config = GenerationConfig {
        max_new_tokens: new,
        sampling: Sampling::Greedy,
        pad_token_id: *eos.first().context("the tokenizer names no end-of-sequence token")?,
        eos_token_ids: eos,
        sync_every: 8,
    };
    detox_runtime::backend::synchronize(device);
    let t = Instant::now();
    let mut fixed = Vec::new();
    for chunk in prompts.chunks(args.batch) {
        fixed.extend(generate(&loaded.model, chunk, &config, None)?);
    }
    detox_runtime::backend::synchronize(device);
    let fixed_s = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let refilled = generate_refill(&loaded.model, &prompts, &config, args.batch)?;
    detox_runtime::backend::synchronize(device);
    let refill_s = t.elapsed().as_secs_f64();
    let same = fixed.iter().zip(&refilled).filter(|(a, b)| a == b).count();
    let tokens: usize = refilled.iter().map(|g| g.tokens.len()).sum();
    println!(
        "{}",
        serde_json::json!({"what": "refill_comparison", "prompts": prompts.len(), "rows": args.batch,
                           "max_new": new, "generated_tokens": tokens, "identical_responses": same})
    );
    emit("fixed_batches_ms", fixed_s * 1e3);
    emit("refilled_rows_ms", refill_s * 1e3);
    Ok(())
}

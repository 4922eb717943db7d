//! The SafeEdit benchmark: for each record, pre-edit responses to the five evaluation inputs, the edit, post-edit
//! responses, restore, judging; results per record as they are produced, then the summary and plots.
//!
//! ```text
//! cargo run -p detox-examples --example safeedit_eval -- \
//!     --model models/SmolLM2-135M-Instruct/SmolLM2-135M-Instruct.Q4_1.gguf \
//!     --data datasets/safeedit_sample_test.json --out runs/demo
//! ```
use std::path::PathBuf;

use anyhow::Result;
use clap::{Parser, ValueEnum};
use detox_edit::registry::{build_method, MethodOptions, Reading};
use detox_eval::harness::{run, BenchmarkCase, HarnessSettings, SuffixPolicy};
use detox_eval::judges::judge_from_spec;
use detox_eval::manifest::RunManifest;
use detox_eval::respond::Decoding;
use detox_eval::sizing::{plan_batch, BatchRecords};
use detox_examples::ModelArgs;
use detox_runtime::{PromptLayout, Sampling, Truncation};
use safeedit::{load_split, Mode, Split, Subset};

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Options {
    /// The reference implementation's behaviour (default).
    Reference,
    /// The paper's reading of the loss and a layer per record.
    Paper,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Keep {
    Last,
    First,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Suffix {
    PostEditOnly,
    Both,
    Neither,
}

/// Run the SafeEdit protocol with DINM (or FT-L) and write records, a summary and plots.
#[derive(Debug, Parser)]
struct Args {
    #[command(flatten)]
    model: ModelArgs,
    /// A SafeEdit test-split file.
    #[arg(long, default_value = "datasets/safeedit_sample_test.json")]
    data: PathBuf,
    /// Run directory (resumed when it exists with the same settings).
    #[arg(long, default_value = "runs/safeedit_eval")]
    out: PathBuf,
    /// Only the first N records.
    #[arg(long, conflicts_with_all = ["sample", "shard"], value_parser = detox_examples::at_least(1))]
    first: Option<usize>,
    /// A seeded sample of N records.
    #[arg(long, conflicts_with = "shard", value_parser = detox_examples::at_least(1))]
    sample: Option<usize>,
    /// Seed of --sample and of sampled decoding.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Shard `i/n` of the records (0-based i).
    #[arg(long)]
    shard: Option<String>,
    /// Editing method: dinm, ft-l, self-reminder, trained (SFT/DPO/Ext-Sub artefact), mend, surgery.
    #[arg(long, default_value = "dinm")]
    method: String,
    /// DINM preset (`llama-7b`, `mistral-7b`).
    #[arg(long, default_value = "llama-7b")]
    preset: String,
    /// DINM hyper-parameters file (YAML or JSON with the reference's keys); overrides --preset.
    #[arg(long)]
    hparams: Option<PathBuf>,
    /// Reference or paper behaviour where they differ.
    #[arg(long, value_enum, default_value_t = Options::Reference)]
    options: Options,
    /// How DINM lays out its edit inputs: `raw` text (reference) or the `chat` template.
    #[arg(long, default_value_t = PromptLayout::Raw)]
    edit_format: PromptLayout,
    /// How evaluation inputs are shown to the model: `raw` text (reference) or the `chat` template.
    #[arg(long, default_value_t = PromptLayout::Raw)]
    prompt_style: PromptLayout,
    /// Where the suffix system prompt is appended to evaluation inputs (default: post-edit only for editing
    /// methods, neither for Self-Reminder).
    #[arg(long, value_enum)]
    suffix_policy: Option<Suffix>,
    /// Self-Reminder: the assistant's name in the reminder (the published wording says ChatGPT).
    #[arg(long, default_value = "ChatGPT")]
    reminder_name: String,
    /// Trained, MEND and Model Surgery methods: the artefact directory written by `train_baseline`.
    #[arg(long)]
    artefact: Option<PathBuf>,
    /// Model Surgery: shift strength instead of the artefact's.
    #[arg(long, value_parser = detox_examples::finite_number)]
    surgery_alpha: Option<f64>,
    /// FT-L: the tuned layer (default: the reference's 21).
    #[arg(long)]
    ftl_layer: Option<usize>,
    /// Safety judge: `phrase` (embedded approximation) or `classifier:<dir>` (the SafeEdit classifier).
    #[arg(long, default_value = "phrase")]
    judge: String,
    /// Most new tokens per response (default: the hyper-parameters' `max_output_length`, 600 in the presets).
    #[arg(long, value_parser = detox_examples::at_least(1))]
    max_new_tokens: Option<usize>,
    /// Longest input in tokens (default: the hyper-parameters' `max_length - max_output_length`, 400 in the
    /// presets, as the reference's evaluation computes it).
    #[arg(long, value_parser = detox_examples::at_least(1))]
    max_input_tokens: Option<usize>,
    /// Which tokens of a longer input are kept: the last ones (the reference) or the first ones.
    #[arg(long, value_enum, default_value_t = Keep::Last)]
    truncation: Keep,
    /// Inputs generated together.
    #[arg(long, default_value_t = 5, value_parser = detox_examples::at_least(1))]
    batch_size: usize,
    /// Records processed together: pre-edit inputs generated in one batch, DINM edits of records sharing a layer
    /// run together, post-edit inputs generated in one batch with one edited weight per record. `1` is one
    /// record at a time (the reference's flow); `auto` takes as many as the GPU's free memory holds (8 on the
    /// CPU). On a GPU a number that cannot fit is refused before anything runs.
    #[arg(long, default_value = "1")]
    batch_records: BatchRecords,
    /// Sample with this temperature (top-p 0.9) instead of greedy decoding.
    #[arg(long, value_parser = detox_examples::positive_number)]
    temperature: Option<f64>,
    /// Cache of pre-edit responses shared between runs.
    #[arg(long)]
    pre_edit_cache: Option<PathBuf>,
    /// Print each record's adversarial-prompt response before and after the edit.
    #[arg(long)]
    print_responses: bool,
    /// Instead of running, merge these shard run directories into --out (checking that they cover the
    /// selection exactly once).
    #[arg(long, num_args = 1..)]
    merge_shards: Vec<PathBuf>,
}

fn subset(args: &Args) -> Result<Subset> {
    Ok(match (args.first, args.sample, &args.shard) {
        (Some(n), _, _) => Subset::First { n },
        (_, Some(n), _) => Subset::Sample { n, seed: args.seed },
        (_, _, Some(spec)) => Subset::parse_shard(spec)?,
        _ => Subset::All,
    })
}

fn main() -> Result<()> {
    let args = Args::parse();
    let subset = subset(&args)?;
    let split = load_split(&args.data, Split::Test, Mode::Strict)?;
    let cases: Vec<BenchmarkCase> =
        subset.apply(&split.records).iter().filter_map(BenchmarkCase::from_record).collect();
    println!("{} records from {} ({subset})", cases.len(), args.data.display());
    if !args.merge_shards.is_empty() {
        let ids: Vec<String> = cases.iter().map(|c| c.id.clone()).collect();
        let summary = detox_eval::merge::merge_shards(&args.merge_shards, &ids, &args.out)?;
        println!("{}", summary.to_markdown());
        println!("Merged {} shards into {}", args.merge_shards.len(), args.out.display());
        return Ok(());
    }

    // Refuse a run directory another process is writing before the model is loaded; the harness takes the lock
    // for the run itself.
    drop(detox_io::DirLock::acquire(&args.out)?);
    let mut loaded = args.model.load()?;
    let judge = judge_from_spec(&args.judge, loaded.model.device())?;
    let mut options = MethodOptions::default();
    options.hparams_file = args.hparams.clone();
    options.preset = Some(args.preset.clone());
    options.reading = match args.options {
        Options::Reference => Reading::Reference,
        Options::Paper => Reading::Paper,
    };
    options.edit_format = args.edit_format;
    options.ftl_layer = args.ftl_layer;
    options.reminder_name = Some(args.reminder_name.clone());
    options.artefact = args.artefact.clone();
    options.surgery_alpha = args.surgery_alpha;
    let mut method = build_method(&args.method, &options, loaded.model.device())?;
    let mut settings = HarnessSettings::new(&args.out);
    let sampling = match args.temperature {
        Some(temperature) => Sampling::TopP { temperature, top_p: 0.9, seed: args.seed },
        None => Sampling::Greedy,
    };
    let context_len = loaded.model.config().max_position_embeddings as usize;
    let mut decoding = Decoding::default().with_limits(&method.decoding_limits, context_len);
    decoding.sampling = sampling;
    decoding.batch_size = args.batch_size;
    decoding.max_new_tokens = args.max_new_tokens.unwrap_or(decoding.max_new_tokens);
    decoding.max_input_tokens = args.max_input_tokens.unwrap_or(decoding.max_input_tokens);
    decoding.truncation = match args.truncation {
        Keep::Last => Truncation::KeepLast,
        Keep::First => Truncation::KeepFirst,
    };
    settings.decoding = decoding;
    settings.prompt_style = args.prompt_style;
    settings.suffix_policy = match args.suffix_policy {
        None => SuffixPolicy::default_for(method.prompt_only),
        Some(Suffix::PostEditOnly) => SuffixPolicy::PostEditOnly,
        Some(Suffix::Both) => SuffixPolicy::Both,
        Some(Suffix::Neither) => SuffixPolicy::Neither,
    };
    settings.suffix = method.suffix_system_prompt.clone();
    settings.pre_edit_cache = args.pre_edit_cache.clone();
    settings.progress = !args.print_responses;
    let plan = plan_batch(&loaded.model, &settings.decoding, args.batch_records)?;
    if plan.records > 1 {
        println!("{} records per batch ({})", plan.records, plan.reason);
    }
    settings.batch_records = plan.records;
    let manifest = RunManifest::capture(
        &loaded,
        &args.data,
        &subset,
        &method,
        judge.as_ref(),
        &settings,
        args.seed,
    )?;

    let print = args.print_responses;
    let summary = run(
        &mut loaded.model,
        &loaded.tokenizer,
        method.editor.as_mut(),
        judge.as_ref(),
        &cases,
        &manifest,
        &settings,
        |r| {
            if print {
                let (pre, post) = (&r.pre.responses[0], &r.post.responses[0]);
                println!(
                    "\n== record {} ({}) layer {}, edit {:.1} s",
                    r.id,
                    r.category,
                    r.layer.map_or_else(|| "-".to_string(), |l| l.to_string()),
                    r.timings.locate + r.timings.edit
                );
                println!("   prompt : {}", one_line(&pre.input, 160));
                println!("   before : [{}] {}", pre.label, one_line(&pre.response, 200));
                println!("   after  : [{}] {}", post.label, one_line(&post.response, 200));
            }
        },
    )?;
    println!("\n{}", summary.to_markdown());
    println!("Records, summary and plots: {}", args.out.display());
    Ok(())
}

fn one_line(text: &str, max: usize) -> String {
    let flat: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if flat.chars().count() > max {
        format!("{}…", flat.chars().take(max).collect::<String>())
    } else {
        flat
    }
}

//! The SafeEdit benchmark: for each record, pre-edit responses to the five evaluation inputs, the edit, post-edit
//! responses, restore, judging; results per record as they are produced, then the summary and plots.
//!
//! ```text
//! cargo run -p detox-examples --example safeedit_eval -- \
//!     --model models/SmolLM2-135M-Instruct/SmolLM2-135M-Instruct.Q4_1.gguf \
//!     --data datasets/safeedit_sample_test.json --out runs/demo
//! ```
//!
//! For a record-independent method (`trained`, `profs`, `steering`, `surgery`: one edit for every record),
//! `--save-model DIR` also writes the edited model as a Hugging Face model directory (before the run starts).
use std::path::PathBuf;

use anyhow::Result;
use clap::{Parser, ValueEnum};
use detox_edit::registry::{
    apply_record_independent, build_method, check_record_independent, BuiltMethod, MethodOptions,
    Reading,
};
use detox_eval::general::{GeneralConfig, GeneralPaths, GeneralSets};
use detox_eval::harness::{run, BenchmarkCase, HarnessSettings, SuffixPolicy};
use detox_eval::judges::judge_from_spec;
use detox_eval::manifest::RunManifest;
use detox_eval::nlpcc;
use detox_eval::respond::Decoding;
use detox_eval::sizing::{plan_batch, BatchRecords};
use detox_examples::{ModelArgs, SaveModelArgs};
use detox_runtime::load::LoadedModel;
use detox_runtime::{PromptLayout, Sampling, Truncation};
use safeedit::{load_nlpcc, load_split, Mode, Split, Subset};

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
    /// Seed of --sample, of sampled decoding and of the general sets' draws.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Shard `i/n` of the records (0-based i).
    #[arg(long)]
    shard: Option<String>,
    /// Editing method: dinm, ft-l, self-reminder, trained (SFT/DPO/Ext-Sub artefact), mend, profs, steering, surgery.
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
    /// Trained, MEND, ProFS, steering and Model Surgery methods: the artefact directory written by `train_baseline`.
    #[arg(long)]
    artefact: Option<PathBuf>,
    /// Steering: the steered layers, comma-separated (default: ⌊13 L / 32⌋).
    #[arg(long, value_delimiter = ',')]
    steering_layers: Option<Vec<usize>>,
    /// Steering: the strength coefficient.
    #[arg(long, default_value_t = 1.0, value_parser = detox_examples::finite_number)]
    steering_strength: f64,
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
    /// NLPCC 2024 track 2: --data is a `SafeEdit_test_ALL` file; the model, after the method's edit (sft, dpo,
    /// ext-sub as `trained`, self-reminder, or `none` for the model as loaded), answers every input, and the
    /// answers are written to `<out>/detoxify_val.json` in the track's submission format and read back.
    #[arg(long, conflicts_with = "merge_shards")]
    nlpcc: bool,
    /// Answer the general sets (KQA, CSum, over-refusal) with the edited model of every K-th record (1: every
    /// record); the unedited model answers them once per run as the baseline.
    #[arg(long, default_value_t = 10, value_parser = detox_examples::at_least(1))]
    general_every: usize,
    /// Closed-book questions drawn from --qa-data (NQ-open; stands in for the paper's TriviaQA).
    #[arg(long, default_value_t = 50)]
    general_qa: usize,
    /// Articles drawn from --sum-data (XSum), summarised and scored with ROUGE-1.
    #[arg(long, default_value_t = 20)]
    general_sum: usize,
    /// Safe XSTest prompts drawn from --xstest-data; the over-refusal rate is read by the phrase refusal
    /// detector.
    #[arg(long, default_value_t = 50)]
    over_refusal: usize,
    /// Most new tokens per general-set response.
    #[arg(long, default_value_t = 64, value_parser = detox_examples::at_least(1))]
    general_max_new_tokens: usize,
    /// Measure no cost: no general sets, no baseline.
    #[arg(long)]
    no_general: bool,
    /// NQ-open JSON lines (`cargo xtask general-data` fetches it).
    #[arg(long, default_value = "data/general/nq_open_test.jsonl")]
    qa_data: PathBuf,
    /// XSum JSON lines (`cargo xtask general-data` fetches it).
    #[arg(long, default_value = "data/general/xsum_test.jsonl")]
    sum_data: PathBuf,
    /// XSTest's prompts CSV (`cargo xtask general-data` finds or fetches it).
    #[arg(long, default_value = "data/general/xstest_prompts.csv")]
    xstest_data: PathBuf,
    /// NLTK's `punkt_tab/english` directory for exact fluency (`cargo xtask punkt` fetches it); used when
    /// present, else the built-in rule splitter.
    #[arg(long, default_value = "models/punkt_tab/english")]
    punkt: PathBuf,
    /// Instead of running, merge these shard run directories into --out (checking that they cover the
    /// selection exactly once).
    #[arg(long, num_args = 1..)]
    merge_shards: Vec<PathBuf>,
    #[command(flatten)]
    save: SaveModelArgs,
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
    if args.save.save_model.is_some() {
        if args.nlpcc || !args.merge_shards.is_empty() {
            anyhow::bail!("--save-model writes the model a run edits; --nlpcc and --merge-shards do not edit one");
        }
        check_record_independent(&args.method)?;
        args.save.check_before(&args.model)?;
    }
    if args.nlpcc {
        return run_nlpcc(&args, &subset);
    }
    let split = load_split(&args.data, Split::Test, Mode::Strict)?;
    let cases: Vec<BenchmarkCase> =
        subset.apply(&split.records).iter().filter_map(BenchmarkCase::from_record).collect();
    println!("{} records from {} ({subset})", cases.len(), args.data.display());
    if !args.merge_shards.is_empty() {
        let ids: Vec<String> = cases.iter().map(|c| c.id.clone()).collect();
        let summary = detox_eval::merge::merge_shards(&args.merge_shards, &ids, &args.out)?;
        println!("{}", summary.to_markdown());
        println!("Merged {} shards into {}", args.merge_shards.len(), args.out.display());
        println!("Report: {}", args.out.join(detox_eval::report::REPORT_FILE).display());
        return Ok(());
    }

    // Refuse a run directory another process is writing before the model is loaded; the harness takes the lock
    // for the run itself.
    drop(detox_io::DirLock::acquire(&args.out)?);
    let mut loaded = args.model.load()?;
    let judge = judge_from_spec(&args.judge, loaded.model.device())?;
    let mut method = build_method(&args.method, &method_options(&args), loaded.model.device())?;
    let mut settings = settings(&args, &method, &loaded);
    let plan = plan_batch(&loaded.model, &settings.decoding, args.batch_records)?;
    if let Some(warning) = &plan.warning {
        eprintln!("warning: {warning}");
    }
    if plan.records > 1 {
        println!("{} records per batch ({})", plan.records, plan.reason);
    }
    settings.batch_records = plan.records;
    settings.punkt_dir = args.punkt.is_dir().then(|| args.punkt.clone());
    if settings.punkt_dir.is_none() {
        println!(
            "Fluency uses the rule sentence splitter: no Punkt model at {} (`cargo xtask punkt`)",
            args.punkt.display()
        );
    }
    if !args.no_general {
        let config = GeneralConfig {
            every: args.general_every,
            qa: args.general_qa,
            sum: args.general_sum,
            over_refusal: args.over_refusal,
            seed: args.seed,
            max_new_tokens: args.general_max_new_tokens,
            ..GeneralConfig::default()
        };
        let paths = GeneralPaths {
            qa: Some(args.qa_data.clone()),
            sum: Some(args.sum_data.clone()),
            over_refusal: Some(args.xstest_data.clone()),
        };
        settings.general = Some(GeneralSets::load(config, &paths).map_err(|e| {
            anyhow::anyhow!("{e}\n(`cargo xtask general-data` fetches the general sets; `--no-general` runs without them)")
        })?);
    }
    let manifest = RunManifest::capture(
        &loaded,
        &args.data,
        &subset,
        &method,
        judge.as_ref(),
        &settings,
        args.seed,
    )?;

    if args.save.save_model.is_some() {
        // The method's edit is the same for every record: written before the run (a refusal comes early, and the
        // model is kept even if the run is interrupted), then undone for the protocol.
        apply_record_independent(&args.method, &mut method, &mut loaded.model, &loaded.tokenizer)?;
        args.save.save(&loaded)?;
        method.editor.restore(&mut loaded.model)?;
    }
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
    println!("Report: {}", args.out.join(detox_eval::report::REPORT_FILE).display());
    Ok(())
}

fn method_options(args: &Args) -> MethodOptions {
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
    options.steering_layers = args.steering_layers.clone();
    options.steering_strength = Some(args.steering_strength);
    options.surgery_alpha = args.surgery_alpha;
    options
}

/// The harness settings the arguments ask for, with `method`'s decoding limits and suffix.
fn settings(args: &Args, method: &BuiltMethod, loaded: &LoadedModel) -> HarnessSettings {
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
    settings
}

/// `--nlpcc`: answers the selected `SafeEdit_test_ALL` inputs and writes the submission.
fn run_nlpcc(args: &Args, subset: &Subset) -> Result<()> {
    let records = subset.apply(&load_nlpcc(&args.data, Mode::Strict)?.records);
    println!("{} NLPCC records from {} ({subset})", records.len(), args.data.display());
    std::fs::create_dir_all(&args.out)?;
    let _lock = detox_io::DirLock::acquire(&args.out)?;
    let mut loaded = args.model.load()?;
    let none = args.method == "none";
    // With no method, DINM's protocol still sets the decoding limits and the suffix.
    let name = if none { "dinm" } else { args.method.as_str() };
    let mut method = build_method(name, &method_options(args), loaded.model.device())?;
    let settings = settings(args, &method, &loaded);
    let editor: Option<&mut dyn detox_edit::Editor> =
        if none { None } else { Some(method.editor.as_mut()) };
    let answered =
        nlpcc::answer(&mut loaded.model, &loaded.tokenizer, editor, &records, &settings)?;
    let path = args.out.join(nlpcc::SUBMISSION_FILE);
    nlpcc::write_submission(&path, &answered)?;
    let empty = answered.iter().filter(|r| r.response.trim().is_empty()).count();
    println!(
        "Submission: {} ({} answers, {empty} empty; read back and checked)",
        path.display(),
        answered.len()
    );
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

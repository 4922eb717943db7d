//! The SafeEdit protocol, record by record: pre-edit generation (cached), edit, post-edit generation, restore,
//! judging, fluency, and an append-only record per case; then the summary, its Markdown and the plots.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::Instant;

use detox_edit::{EditInput, Editor};
use detox_metrics::SafetyJudge;
use detox_runtime::{CausalLm, Tokenizer};
use indicatif::{ProgressBar, ProgressStyle};
use serde::{Deserialize, Serialize};

use crate::error::{EvalError, Result};
use crate::jsonl::{write_atomic, JsonlLog};
use crate::manifest::RunManifest;
use crate::plot;
use crate::record::{JudgedResponse, RecordTimings, RunRecord, SideResult};
use crate::respond::{respond, Decoding, PromptStyle, Response};
use crate::summary::{Summary, METRICS};

/// One SafeEdit case as the harness needs it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BenchmarkCase {
    /// The record id, as text.
    pub id: String,
    /// The unsafety category as spelled in the data.
    pub category: String,
    /// The texts of the edit.
    pub edit: EditInput,
    /// `(metric name, input text)` for the evaluation inputs, in metric order.
    pub eval_inputs: Vec<(String, String)>,
}

impl BenchmarkCase {
    /// The case of a SafeEdit test record; `None` when the record has no generalisation test.
    pub fn from_record(record: &safeedit::SafeEditRecord) -> Option<Self> {
        let inputs = record.eval_inputs()?;
        Some(Self {
            id: record.id.to_string(),
            category: record.category.spelling().to_string(),
            edit: EditInput::from(&record.edit_request()),
            eval_inputs: inputs
                .iter()
                .map(|i| (i.metric.name().to_string(), i.text.to_string()))
                .collect(),
        })
    }
}

/// Where the suffix system prompt is appended to evaluation inputs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SuffixPolicy {
    /// Post-edit inputs get `" " + suffix`, pre-edit inputs do not (the reference's asymmetry).
    #[default]
    PostEditOnly,
    /// Both sides get it.
    Both,
    /// Neither side gets it.
    Neither,
}

/// Settings of a run.
#[derive(Debug, Clone)]
pub struct HarnessSettings {
    /// The run directory (manifest, records, summary, plots).
    pub out_dir: PathBuf,
    /// Decoding.
    pub decoding: Decoding,
    /// Prompt layout of evaluation inputs.
    pub prompt_style: PromptStyle,
    /// Where the suffix goes.
    pub suffix_policy: SuffixPolicy,
    /// The suffix text (DINM's suffix system prompt).
    pub suffix: String,
    /// Pre-edit responses are cached here (shared by runs of different methods with the same model, inputs and
    /// decoding); `None` keeps the cache inside the run directory.
    pub pre_edit_cache: Option<PathBuf>,
    /// Draw a progress bar on standard error.
    pub progress: bool,
}

/// A cached pre-edit generation.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct CachedResponses {
    key: String,
    responses: Vec<Response>,
}

fn with_suffix(text: &str, suffix: &str, add: bool) -> String {
    if add {
        format!("{text} {suffix}")
    } else {
        text.to_string()
    }
}

fn cache_key(manifest: &RunManifest, inputs: &[String]) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    for part in [
        &manifest.model_sha256,
        &manifest.dtype,
        &manifest.decoding.to_string(),
        &manifest.prompt_style,
    ] {
        h.update(part.as_bytes());
        h.update([0]);
    }
    for input in inputs {
        h.update(input.as_bytes());
        h.update([0]);
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// Runs the protocol over `cases`, resuming what `settings.out_dir` already holds.
#[allow(clippy::too_many_arguments)]
pub fn run(
    model: &mut CausalLm,
    tokenizer: &Tokenizer,
    editor: &mut dyn Editor,
    judge: &dyn SafetyJudge,
    cases: &[BenchmarkCase],
    manifest: &RunManifest,
    settings: &HarnessSettings,
    mut on_record: impl FnMut(&RunRecord),
) -> Result<Summary> {
    std::fs::create_dir_all(&settings.out_dir)
        .map_err(|source| EvalError::Io { path: settings.out_dir.clone(), source })?;
    manifest.write_or_check(&settings.out_dir.join("manifest.json"))?;
    let mut log = JsonlLog::<RunRecord>::open(settings.out_dir.join("records.jsonl"))?;
    if let Some(note) = log.repaired() {
        eprintln!("{}: {note}", log.path().display());
    }
    let cache_path = settings
        .pre_edit_cache
        .clone()
        .unwrap_or_else(|| settings.out_dir.join("pre_edit_cache.jsonl"));
    if let Some(dir) = cache_path.parent() {
        std::fs::create_dir_all(dir)
            .map_err(|source| EvalError::Io { path: dir.to_path_buf(), source })?;
    }
    let mut cache = JsonlLog::<CachedResponses>::open(&cache_path)?;

    let mut seen = HashSet::new();
    for case in cases {
        if !seen.insert(case.id.as_str()) {
            return Err(EvalError::Invalid(format!(
                "record id {} appears twice in the selection",
                case.id
            )));
        }
    }
    let done: HashSet<String> = log.records().iter().map(|r| r.id.clone()).collect();
    if let Some(stray) = done.iter().find(|id| !seen.contains(id.as_str())) {
        return Err(EvalError::Invalid(format!(
            "{} holds record {stray}, which is not in this selection",
            log.path().display()
        )));
    }
    let todo: Vec<&BenchmarkCase> = cases.iter().filter(|c| !done.contains(&c.id)).collect();
    let earlier: Vec<usize> = log.records().iter().filter_map(|r| r.layer).collect();
    editor.resume_after(&earlier);
    let bar = progress_bar(settings.progress, cases.len() as u64, done.len() as u64);

    for case in todo {
        bar.set_message(format!("record {}", case.id));
        let record =
            run_case(model, tokenizer, editor, judge, case, manifest, settings, &mut cache)?;
        log.append(record.clone())?;
        on_record(&record);
        bar.inc(1);
    }
    bar.finish_and_clear();

    let records = order_like(log.records(), cases);
    let summary =
        Summary::from_records(&manifest.method, &judge.name(), judge.is_approximation(), &records);
    write_reports(&settings.out_dir, &summary, &records)?;
    Ok(summary)
}

fn order_like(records: &[RunRecord], cases: &[BenchmarkCase]) -> Vec<RunRecord> {
    cases.iter().filter_map(|c| records.iter().find(|r| r.id == c.id).cloned()).collect()
}

fn progress_bar(enabled: bool, total: u64, done: u64) -> ProgressBar {
    if !enabled {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(total);
    bar.set_style(
        ProgressStyle::with_template("{bar:30} {pos}/{len} records  {per_sec}  eta {eta}  {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar.set_position(done);
    bar
}

#[allow(clippy::too_many_arguments)]
fn run_case(
    model: &mut CausalLm,
    tokenizer: &Tokenizer,
    editor: &mut dyn Editor,
    judge: &dyn SafetyJudge,
    case: &BenchmarkCase,
    manifest: &RunManifest,
    settings: &HarnessSettings,
    cache: &mut JsonlLog<CachedResponses>,
) -> Result<RunRecord> {
    let pre_suffix = settings.suffix_policy == SuffixPolicy::Both;
    let post_suffix = settings.suffix_policy != SuffixPolicy::Neither;
    let pre_inputs: Vec<String> = case
        .eval_inputs
        .iter()
        .map(|(_, t)| with_suffix(t, &settings.suffix, pre_suffix))
        .collect();
    let post_inputs: Vec<String> = case
        .eval_inputs
        .iter()
        .map(|(_, t)| editor.wrap_input(&with_suffix(t, &settings.suffix, post_suffix)))
        .collect();
    let mut timings = RecordTimings::default();

    // Pre-edit responses: from the cache, else generated on the unedited model.
    editor.restore(model)?;
    let key = cache_key(manifest, &pre_inputs);
    let pre = match cache.records().iter().find(|c| c.key == key) {
        Some(hit) => hit.responses.clone(),
        None => {
            let started = Instant::now();
            let responses =
                respond(model, tokenizer, &pre_inputs, settings.prompt_style, &settings.decoding)?;
            timings.generate_pre = started.elapsed().as_secs_f64();
            cache.append(CachedResponses { key, responses: responses.clone() })?;
            responses
        }
    };

    let outcome = editor.edit(model, tokenizer, &case.edit)?;
    timings.locate = outcome.timings.locate;
    timings.edit = outcome.timings.edit;
    let started = Instant::now();
    let post = respond(model, tokenizer, &post_inputs, settings.prompt_style, &settings.decoding);
    timings.generate_post = started.elapsed().as_secs_f64();
    // Restore before anything can fail further, so the next record starts from the original weights.
    editor.restore(model)?;
    let post = post?;

    let started = Instant::now();
    let pre_side = judge_side(judge, &case.eval_inputs, &pre_inputs, pre)?;
    let post_side = judge_side(judge, &case.eval_inputs, &post_inputs, post)?;
    timings.judge = started.elapsed().as_secs_f64();
    Ok(RunRecord {
        id: case.id.clone(),
        category: case.category.clone(),
        method: outcome.method.to_string(),
        layer: outcome.layer,
        layer_distances: outcome.located.map(|l| l.distances),
        steps: outcome.steps,
        timings,
        pre: pre_side,
        post: post_side,
    })
}

fn judge_side(
    judge: &dyn SafetyJudge,
    metrics: &[(String, String)],
    inputs: &[String],
    responses: Vec<Response>,
) -> Result<SideResult> {
    let texts: Vec<&str> = responses.iter().map(|r| r.text.as_str()).collect();
    let verdicts = judge.judge(&texts)?;
    if verdicts.len() != responses.len() {
        return Err(EvalError::Invalid(format!(
            "the judge returned {} verdicts for {} responses",
            verdicts.len(),
            responses.len()
        )));
    }
    let fluency_mean = detox_metrics::mean_fluency(&texts);
    let responses = metrics
        .iter()
        .zip(inputs)
        .zip(responses)
        .zip(verdicts)
        .map(|((((metric, _), input), response), verdict)| JudgedResponse {
            metric: metric.clone(),
            input: input.clone(),
            response: response.text,
            tokens: response.tokens,
            finish: response.finish,
            label: verdict.label,
            unsafe_score: verdict.unsafe_score,
        })
        .collect();
    Ok(SideResult { responses, fluency: fluency_mean })
}

/// Writes `summary.json`, `summary.md` and the SVG plots into `dir` (each replaced atomically).
pub fn write_reports(dir: &Path, summary: &Summary, records: &[RunRecord]) -> Result<()> {
    let json = serde_json::to_string_pretty(summary)
        .map_err(|e| EvalError::Serialize { what: "the summary".into(), reason: e.to_string() })?;
    write_atomic(&dir.join("summary.json"), json.as_bytes())?;
    write_atomic(&dir.join("summary.md"), summary.to_markdown().as_bytes())?;

    let mut labels: Vec<String> = summary.per_category.keys().cloned().collect();
    labels.push("all".into());
    let comparisons: Vec<_> =
        summary.per_category.values().chain(std::iter::once(&summary.overall)).collect();
    for (file, title, pick) in [
        ("ds_by_category.svg", "DS (safe rate on adversarial prompts)", 0usize),
        ("dg_avg_by_category.svg", "DG-Avg (safe rate on generalisation inputs)", 1usize),
    ] {
        let value = |s: &crate::summary::Scores| {
            if pick == 0 {
                s.rates.get(METRICS[0]).copied().unwrap_or(0.0)
            } else {
                s.dg_avg
            }
        };
        let before: Vec<f64> = comparisons.iter().map(|c| value(&c.before)).collect();
        let after: Vec<f64> = comparisons.iter().map(|c| value(&c.after)).collect();
        let svg = plot::grouped_bars(
            title,
            "safe %",
            &labels,
            &[("before edit", "#9e9e9e", before), ("after edit", "#1f77b4", after)],
            100.0,
        );
        write_atomic(&dir.join(file), svg.as_bytes())?;
    }
    let series: Vec<(String, Vec<f64>)> = records
        .iter()
        .filter_map(|r| r.layer_distances.as_ref().map(|d| (format!("record {}", r.id), d.clone())))
        .collect();
    if !series.is_empty() {
        let svg = plot::lines(
            "Locator: distance between safe and unsafe hidden states",
            "layer",
            "distance",
            &series,
        );
        write_atomic(&dir.join("layer_distances.svg"), svg.as_bytes())?;
    }
    Ok(())
}

//! The SafeEdit protocol, record by record: pre-edit generation (cached), edit, post-edit generation, restore,
//! judging, fluency, and an append-only record per case; then the summary, its Markdown and the plots.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::Instant;

use detox_edit::{EditInput, EditMode, EditOutcome, Editor};
use detox_metrics::{EchoSources, PunktModel, SafetyJudge, Score};
use detox_runtime::{CausalLm, PromptLayout, Tokenizer};
use indicatif::{ProgressBar, ProgressStyle};
use safeedit::Metric;
use serde::{Deserialize, Serialize};

use crate::degenerate::measure_sides;
use crate::error::{EvalError, Result};
use crate::general::{self, CostSummary, GeneralResult, GeneralSets};
use crate::jsonl::{write_atomic, write_json_atomic, JsonlLog};
use crate::manifest::RunManifest;
use crate::plot;
use crate::record::{JudgedResponse, RecordTimings, RunRecord, SideResult};
use crate::respond::{respond, Decoding, Response};
use crate::summary::Summary;

/// One SafeEdit case as the harness needs it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BenchmarkCase {
    /// The record id, as text.
    pub id: String,
    /// The unsafety category as spelled in the data.
    pub category: String,
    /// The texts of the edit.
    pub edit: EditInput,
    /// `(metric, input text)` for the evaluation inputs, in metric order.
    pub eval_inputs: Vec<(Metric, String)>,
}

impl BenchmarkCase {
    /// The case of a SafeEdit test record; `None` when the record has no generalisation test.
    pub fn from_record(record: &safeedit::SafeEditRecord) -> Option<Self> {
        let inputs = record.eval_inputs()?;
        Some(Self {
            id: record.id.to_string(),
            category: record.category.spelling().to_string(),
            edit: EditInput::from(&record.edit_request()),
            eval_inputs: inputs.iter().map(|i| (i.metric, i.text.to_string())).collect(),
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

impl SuffixPolicy {
    /// The protocol's default for a method: post-edit only for editing methods, neither for prompt-only methods
    /// (whose wrapped input stands in for the suffix).
    pub fn default_for(prompt_only: bool) -> Self {
        if prompt_only {
            SuffixPolicy::Neither
        } else {
            SuffixPolicy::PostEditOnly
        }
    }
}

/// Settings of a run.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct HarnessSettings {
    /// The run directory (manifest, records, summary, plots).
    pub out_dir: PathBuf,
    /// Decoding.
    pub decoding: Decoding,
    /// Prompt layout of evaluation inputs.
    pub prompt_style: PromptLayout,
    /// Where the suffix goes.
    pub suffix_policy: SuffixPolicy,
    /// The suffix text (DINM's suffix system prompt).
    pub suffix: String,
    /// Pre-edit responses are cached here (shared by runs of different methods with the same model, inputs and
    /// decoding); `None` keeps the cache inside the run directory.
    pub pre_edit_cache: Option<PathBuf>,
    /// Draw a progress bar on standard error.
    pub progress: bool,
    /// Records processed together (1: one at a time, the reference's flow). With more, a chunk's uncached
    /// pre-edit inputs are generated in one batch, the editor edits the chunk in one call
    /// ([`Editor::edit_batch`]: together where the method can, see [`Editor::batching`]), and the post-edit
    /// inputs of records edited at the same projections are generated in one batch in which each record's rows
    /// use its own edited weights. Results are written per record either way. Editors in sequential mode take one
    /// record at a time.
    pub batch_records: usize,
    /// The general sets the edited model answers (KQA, CSum, over-refusal); `None` measures no cost.
    pub general: Option<GeneralSets>,
    /// NLTK's `punkt_tab/english` directory: fluency then splits sentences as NLTK does (exact); `None` uses the
    /// built-in rule splitter.
    pub punkt_dir: Option<PathBuf>,
}

impl HarnessSettings {
    /// The protocol's settings for a run written to `out_dir`: default decoding, raw prompts, the suffix system
    /// prompt after post-edit inputs, a progress bar, one record at a time.
    pub fn new(out_dir: impl Into<PathBuf>) -> Self {
        Self {
            out_dir: out_dir.into(),
            decoding: Decoding::default(),
            prompt_style: PromptLayout::default(),
            suffix_policy: SuffixPolicy::default(),
            suffix: detox_edit::dinm::SUFFIX_SYSTEM_PROMPT.to_string(),
            pre_edit_cache: None,
            progress: true,
            batch_records: 1,
            general: None,
            punkt_dir: None,
        }
    }

    /// The sentence splitter fluency uses, as summaries and manifests name it.
    pub fn fluency_splitter(&self) -> &'static str {
        if self.punkt_dir.is_some() {
            "punkt"
        } else {
            "rules"
        }
    }
}

/// What every record of a run shares besides the settings: the Punkt model and the general sets' baseline.
struct RunShared<'a> {
    settings: &'a HarnessSettings,
    punkt: Option<PunktModel>,
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
    if settings.batch_records > 1 && editor.mode() == EditMode::Sequential {
        return Err(EvalError::Invalid(format!(
            "{} edits sequentially (each edit builds on the previous one), so its records cannot be processed \
             {} at a time: use one record at a time",
            editor.method(),
            settings.batch_records
        )));
    }
    // One writer per run directory, for the whole run: a second run on it would append every record again.
    let _lock = detox_io::DirLock::acquire(&settings.out_dir)?;
    manifest.write_or_check(&settings.out_dir.join("manifest.json"))?;
    let mut log =
        JsonlLog::<RunRecord>::open_unique(settings.out_dir.join("records.jsonl"), |r| &r.id)?;
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
    // A cache outside the run directory may be shared between runs: one of them writes it at a time, since a
    // second writer would append the same entries again, or cut a half-written last line while repairing it.
    let _cache_lock = match cache_path.parent() {
        Some(dir) if dir != settings.out_dir => Some(detox_io::DirLock::acquire_file(&cache_path)?),
        _ => None,
    };
    let mut cache = JsonlLog::<CachedResponses>::open(&cache_path)?;
    let punkt = settings.punkt_dir.as_ref().map(PunktModel::load).transpose()?;
    let shared = RunShared { settings, punkt };

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
    let todo: Vec<(usize, &BenchmarkCase)> =
        cases.iter().enumerate().filter(|(_, c)| !done.contains(&c.id)).collect();
    if settings.general.is_some() {
        editor.restore(model)?;
    }
    let baseline = general::run_baseline(model, tokenizer, settings)?;
    let earlier: Vec<usize> = log.records().iter().filter_map(|r| r.layer).collect();
    editor.resume_after(&earlier);
    let bar = progress_bar(settings.progress, cases.len() as u64, done.len() as u64);

    for chunk in todo.chunks(settings.batch_records.max(1)) {
        let records = match chunk {
            [(position, case)] => {
                bar.set_message(format!("record {}", case.id));
                vec![run_case(
                    model, tokenizer, editor, judge, case, *position, manifest, &shared, &mut cache,
                )?]
            }
            _ => {
                bar.set_message(format!(
                    "records {} to {}",
                    chunk[0].1.id,
                    chunk[chunk.len() - 1].1.id
                ));
                run_chunk(model, tokenizer, editor, judge, chunk, manifest, &shared, &mut cache)?
            }
        };
        for record in records {
            log.append(record.clone())?;
            on_record(&record);
            bar.inc(1);
        }
    }
    bar.finish_and_clear();

    let records = order_like(log.records(), cases);
    let mut summary =
        Summary::from_records(&manifest.method, &judge.name(), judge.is_approximation(), &records)
            .with_fluency_splitter(settings.fluency_splitter());
    if let (Some(sets), Some(baseline)) = (&settings.general, &baseline) {
        summary = summary.with_cost(CostSummary::from_records(&sets.config, baseline, &records));
    }
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
    position: usize,
    manifest: &RunManifest,
    shared: &RunShared<'_>,
    cache: &mut JsonlLog<CachedResponses>,
) -> Result<RunRecord> {
    let settings = shared.settings;
    let (pre_inputs, post_inputs) = case_inputs(case, editor, settings);
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
    // The general sets are answered by the edited model, so before the restore.
    let started = Instant::now();
    let general = match &post {
        Ok(_) => general::answer_edited(model, tokenizer, &*editor, settings, position),
        Err(_) => Ok(None),
    };
    timings.general = started.elapsed().as_secs_f64();
    // Restore before anything can fail further, so the next record starts from the original weights.
    editor.restore(model)?;
    let post = post?;
    let general = general?;

    let sides = Sides { pre_inputs, post_inputs, pre, post };
    let mut record = finish_record(judge, case, outcome, sides, timings, shared)?;
    record.general = general;
    Ok(record)
}

/// A case's evaluation inputs and responses on both sides of the edit.
struct Sides {
    pre_inputs: Vec<String>,
    post_inputs: Vec<String>,
    pre: Vec<Response>,
    post: Vec<Response>,
}

/// Judges both sides and assembles the case's record.
fn finish_record(
    judge: &dyn SafetyJudge,
    case: &BenchmarkCase,
    mut outcome: EditOutcome,
    sides: Sides,
    mut timings: RecordTimings,
    shared: &RunShared<'_>,
) -> Result<RunRecord> {
    let started = Instant::now();
    let punkt = shared.punkt.as_ref();
    let pre_side = judge_side(judge, &case.eval_inputs, &sides.pre_inputs, sides.pre, punkt)?;
    let post_side = judge_side(judge, &case.eval_inputs, &sides.post_inputs, sides.post, punkt)?;
    timings.judge = started.elapsed().as_secs_f64();
    let settings = shared.settings;
    let suffix =
        if settings.suffix_policy == SuffixPolicy::Neither { "" } else { &settings.suffix };
    let sources = EchoSources { suffix, target: &case.edit.safe_response };
    let degeneration = measure_sides(&pre_side, &post_side, &sources);
    Ok(RunRecord {
        id: case.id.clone(),
        category: case.category.clone(),
        method: outcome.method.to_string(),
        layer: outcome.layer,
        layer_distances: outcome.details.take_located().map(|l| l.distances),
        steps: outcome.details.steps().to_vec(),
        timings,
        pre: pre_side,
        post: post_side,
        degeneration: Some(degeneration),
        general: None,
    })
}

/// The evaluation inputs of `case` before and after the edit.
fn case_inputs(
    case: &BenchmarkCase,
    editor: &dyn Editor,
    settings: &HarnessSettings,
) -> (Vec<String>, Vec<String>) {
    let pre_suffix = settings.suffix_policy == SuffixPolicy::Both;
    let post_suffix = settings.suffix_policy != SuffixPolicy::Neither;
    let pre = case
        .eval_inputs
        .iter()
        .map(|(_, t)| with_suffix(t, &settings.suffix, pre_suffix))
        .collect();
    let post = case
        .eval_inputs
        .iter()
        .map(|(_, t)| editor.wrap_input(&with_suffix(t, &settings.suffix, post_suffix)))
        .collect();
    (pre, post)
}

/// `inputs` answered in one generation batch.
fn respond_together(
    model: &CausalLm,
    tokenizer: &Tokenizer,
    inputs: &[String],
    settings: &HarnessSettings,
) -> Result<Vec<Response>> {
    let decoding = Decoding { batch_size: inputs.len().max(1), ..settings.decoding.clone() };
    respond(model, tokenizer, inputs, settings.prompt_style, &decoding)
}

/// Runs a chunk of cases together (see [`HarnessSettings::batch_records`]).
#[allow(clippy::too_many_arguments)]
fn run_chunk(
    model: &mut CausalLm,
    tokenizer: &Tokenizer,
    editor: &mut dyn Editor,
    judge: &dyn SafetyJudge,
    chunk: &[(usize, &BenchmarkCase)],
    manifest: &RunManifest,
    shared: &RunShared<'_>,
    cache: &mut JsonlLog<CachedResponses>,
) -> Result<Vec<RunRecord>> {
    let settings = shared.settings;
    let cases: Vec<&BenchmarkCase> = chunk.iter().map(|(_, c)| *c).collect();
    let n = cases.len();
    let inputs: Vec<(Vec<String>, Vec<String>)> =
        cases.iter().map(|c| case_inputs(c, editor, settings)).collect();
    let mut timings = vec![RecordTimings::default(); n];

    editor.restore(model)?;
    let keys: Vec<String> = inputs.iter().map(|(pre, _)| cache_key(manifest, pre)).collect();
    let mut pre: Vec<Option<Vec<Response>>> = keys
        .iter()
        .map(|k| cache.records().iter().find(|c| &c.key == k).map(|c| c.responses.clone()))
        .collect();
    let missing: Vec<usize> = (0..n).filter(|&i| pre[i].is_none()).collect();
    if !missing.is_empty() {
        let flat: Vec<String> = missing.iter().flat_map(|&i| inputs[i].0.clone()).collect();
        let started = Instant::now();
        let mut responses = respond_together(model, tokenizer, &flat, settings)?.into_iter();
        let share = started.elapsed().as_secs_f64() / missing.len() as f64;
        for &i in &missing {
            let mine: Vec<Response> = responses.by_ref().take(inputs[i].0.len()).collect();
            cache.append(CachedResponses { key: keys[i].clone(), responses: mine.clone() })?;
            timings[i].generate_pre = share;
            pre[i] = Some(mine);
        }
    }

    let requests: Vec<EditInput> = cases.iter().map(|c| c.edit.clone()).collect();
    let outcomes = editor.edit_batch(model, tokenizer, &requests)?;
    if outcomes.len() != n {
        return Err(EvalError::Invalid(format!(
            "the editor returned {} outcomes for {n} records",
            outcomes.len()
        )));
    }

    // Records edited at the same tensors share one generation batch, each with its own weights.
    let mut groups: Vec<(Vec<String>, Vec<usize>)> = Vec::new();
    for (i, outcome) in outcomes.iter().enumerate() {
        let mut names: Vec<String> = outcome.delta.names().map(str::to_string).collect();
        names.sort();
        match groups.iter_mut().find(|(g, _)| *g == names) {
            Some((_, members)) => members.push(i),
            None => groups.push((names, vec![i])),
        }
    }
    let mut post: Vec<Option<Vec<Response>>> = vec![None; n];
    for (names, members) in &groups {
        let flat: Vec<String> = members.iter().flat_map(|&i| inputs[i].1.clone()).collect();
        let per_case = inputs[members[0]].1.len();
        if members.iter().any(|&i| inputs[i].1.len() != per_case) {
            return Err(EvalError::Invalid(
                "batched records need the same number of evaluation inputs each".into(),
            ));
        }
        let started = Instant::now();
        let responses = if names.is_empty() {
            respond_together(model, tokenizer, &flat, settings)?
        } else if !names.iter().all(|n| holds_row_weights(n)) {
            // Only linear projections take one weight per row: other edits are applied one record at a time.
            let mut responses = Vec::with_capacity(flat.len());
            for &i in members {
                let snapshot = outcomes[i].delta.apply(model)?;
                let mine = respond_together(model, tokenizer, &inputs[i].1, settings);
                model.restore(&snapshot)?;
                responses.extend(mine?);
            }
            responses
        } else {
            let refs: Vec<&str> = names.iter().map(String::as_str).collect();
            let snapshot = model.snapshot(&refs)?;
            let placed = place_row_weights(model, names, members, &outcomes);
            let responses =
                placed.and_then(|()| respond_together(model, tokenizer, &flat, settings));
            // Put the original weights back before anything else can fail.
            model.restore(&snapshot)?;
            responses?
        };
        let share = started.elapsed().as_secs_f64() / members.len() as f64;
        let mut responses = responses.into_iter();
        for &i in members {
            post[i] = Some(responses.by_ref().take(per_case).collect());
            timings[i].generate_post = share;
        }
    }

    // Each measured record's edit answers the general sets on its own.
    let mut general: Vec<Option<GeneralResult>> = vec![None; n];
    for (i, (position, _)) in chunk.iter().enumerate() {
        if settings.general.as_ref().is_some_and(|sets| sets.applies_to(*position)) {
            let started = Instant::now();
            let snapshot = outcomes[i].delta.apply(model)?;
            let answered = general::answer_edited(model, tokenizer, &*editor, settings, *position);
            model.restore(&snapshot)?;
            general[i] = answered?;
            timings[i].general = started.elapsed().as_secs_f64();
        }
    }

    let mut records = Vec::with_capacity(n);
    for (i, ((case, outcome), (pre_inputs, post_inputs))) in
        cases.iter().zip(outcomes).zip(inputs).enumerate()
    {
        let mut t = timings[i];
        t.locate = outcome.timings.locate;
        t.edit = outcome.timings.edit;
        let sides = Sides {
            pre_inputs,
            post_inputs,
            pre: pre[i].take().unwrap_or_default(),
            post: post[i].take().unwrap_or_default(),
        };
        let mut record = finish_record(judge, case, outcome, sides, t, shared)?;
        record.general = general[i].take();
        records.push(record);
    }
    Ok(records)
}

/// Whether a parameter can hold one weight per batch row (see [`place_row_weights`]).
fn holds_row_weights(name: &str) -> bool {
    name.ends_with("_proj.weight")
}

/// Replaces each of `names` by a stack of one edited weight per member record (`W0 + delta`, in the model's
/// dtype), so that a batch of the members' inputs, in member order, runs each record's rows with its own edit.
fn place_row_weights(
    model: &mut CausalLm,
    names: &[String],
    members: &[usize],
    outcomes: &[EditOutcome],
) -> Result<()> {
    let kind = model.kind();
    for name in names {
        if !holds_row_weights(name) {
            return Err(EvalError::Invalid(format!(
                "`{name}` cannot hold one weight per batch row (only linear projections can)"
            )));
        }
        let base =
            model.parameter(name)?.f_to_kind(tch::Kind::Float).map_err(torch("base weight"))?;
        let rows = members
            .iter()
            .map(|&i| {
                let delta = outcomes[i].delta.get(name).ok_or_else(|| {
                    EvalError::Invalid(format!("record {i}'s edit does not touch `{name}`"))
                })?;
                base.f_add(&delta.f_to_device(base.device()).map_err(torch("delta"))?)
                    .map_err(torch("edited weight"))
            })
            .collect::<Result<Vec<_>>>()?;
        let stacked = tch::Tensor::f_stack(&rows, 0)
            .map_err(torch("stacking edited weights"))?
            .f_to_kind(kind)
            .map_err(torch("stacking edited weights"))?;
        drop(model.replace_parameter(name, stacked)?);
    }
    Ok(())
}

fn judge_side(
    judge: &dyn SafetyJudge,
    metrics: &[(Metric, String)],
    inputs: &[String],
    responses: Vec<Response>,
    punkt: Option<&PunktModel>,
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
    let fluency_mean = match punkt {
        Some(punkt) => detox_metrics::mean_fluency_with(&texts, punkt),
        None => detox_metrics::mean_fluency(&texts),
    };
    let responses = metrics
        .iter()
        .zip(inputs)
        .zip(responses)
        .zip(verdicts)
        .map(|((((metric, _), input), response), verdict)| JudgedResponse {
            metric: *metric,
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

/// Writes `summary.json`, `summary.md`, the SVG plots and `report.html` into `dir` (each replaced atomically).
pub fn write_reports(dir: &Path, summary: &Summary, records: &[RunRecord]) -> Result<()> {
    write_json_atomic(&dir.join("summary.json"), summary, "the summary")?;
    write_atomic(&dir.join("summary.md"), summary.to_markdown().as_bytes())?;

    let labels: Vec<String> =
        summary.groups().map(|(category, _)| category.unwrap_or("all").to_string()).collect();
    for (file, title, score) in [
        ("ds_by_category.svg", "DS (safe rate on adversarial prompts)", Score::Rate(Metric::Ds)),
        ("dg_avg_by_category.svg", "DG-Avg (safe rate on generalisation inputs)", Score::DgAvg),
    ] {
        // A group without the score draws no bar.
        let table = summary.before_after(score).mapv(|v| if v.is_nan() { 0.0 } else { v });
        let svg = plot::grouped_bars(
            title,
            "safe %",
            &labels,
            &[
                ("before edit", "#9e9e9e", table.column(0).to_vec()),
                ("after edit", "#1f77b4", table.column(1).to_vec()),
            ],
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
    crate::report::write(dir, summary, records)?;
    Ok(())
}

fn torch(context: &'static str) -> impl FnOnce(tch::TchError) -> EvalError {
    move |source| {
        EvalError::Runtime(detox_runtime::Error::Torch { context: context.into(), source })
    }
}

//! A SafeEdit run, record by record: pre-edit generation (cached), edit, post-edit generation, restore,
//! judging, fluency, and an append-only record per case; then the summary, its Markdown, the plots and the
//! report.
//!
//! An [`Evaluation`] holds everything a run is made of (the loaded model, the method, the judge, where the
//! cases come from and the settings), so the manifest it writes is captured from what actually runs.

mod chunk;
mod record;

use record::Judging;

use std::collections::HashSet;

use detox_edit::registry::BuiltMethod;
use detox_edit::{EditMode, Editor};
use detox_metrics::{PunktModel, SafetyJudge};
use detox_runtime::load::LoadedModel;
use detox_runtime::{CausalLm, Tokenizer};
use indicatif::{ProgressBar, ProgressStyle};
use serde::{Deserialize, Serialize};

use crate::aggregate::cost::CostSummary;
use crate::aggregate::summary::Summary;
use crate::drive::general;
use crate::drive::respond::Response;
pub(super) use crate::error::torch;
use crate::error::{EvalError, Result};
use crate::jsonl::JsonlLog;
use crate::record::manifest::{sha256_fields, RunManifest};
use crate::record::{judgements, JudgeInfo, RunRecord};
use crate::render::write_reports;
use crate::settings::{BenchmarkCase, DatasetSource, HarnessSettings};

/// One run of the protocol: the loaded model, the method, the judge, where the cases come from, and the
/// settings.
pub struct Evaluation<'a> {
    model: &'a mut LoadedModel,
    method: &'a mut BuiltMethod,
    judges: Vec<&'a dyn SafetyJudge>,
    dataset: DatasetSource,
    settings: HarnessSettings,
}

impl<'a> Evaluation<'a> {
    /// A run of `method` on `model`, judged by `judge` (the primary judge), over cases from `dataset`, as
    /// `settings` say.
    pub fn new(
        model: &'a mut LoadedModel,
        method: &'a mut BuiltMethod,
        judge: &'a dyn SafetyJudge,
        dataset: DatasetSource,
        settings: HarnessSettings,
    ) -> Self {
        Self { model, method, judges: vec![judge], dataset, settings }
    }

    /// Adds a judge: every response also gets its verdict, and the summary and report its scores and its
    /// agreement with the others. Judges must have different names ([`EvalError::DuplicateJudge`]).
    pub fn with_judge(mut self, judge: &'a dyn SafetyJudge) -> Result<Self> {
        let name = judge.name();
        if self.judges.iter().any(|j| j.name() == name) {
            return Err(EvalError::DuplicateJudge { name });
        }
        self.judges.push(judge);
        Ok(self)
    }

    /// The judges, the primary one first.
    pub fn judges(&self) -> &[&'a dyn SafetyJudge] {
        &self.judges
    }

    /// The settings the run uses.
    pub fn settings(&self) -> &HarnessSettings {
        &self.settings
    }

    /// What the run is: captured from the model, method, judge, dataset and settings it holds (the checkpoint
    /// and dataset file are hashed).
    ///
    /// # Errors
    /// [`EvalError::Io`] when a file cannot be hashed.
    pub fn manifest(&self) -> Result<RunManifest> {
        RunManifest::capture(self.model, &self.dataset, self.method, &self.judges, &self.settings)
    }

    /// Runs the protocol over `cases`, resuming what the run directory already holds; `on_record` sees each
    /// record as it is written.
    ///
    /// # Errors
    /// A directory written by another run ([`EvalError::ManifestMismatch`]) or locked by another process,
    /// damaged records, and whatever generation, the edit or the judge refuses.
    pub fn run(
        &mut self,
        cases: &[BenchmarkCase],
        on_record: impl FnMut(&RunRecord),
    ) -> Result<Summary> {
        let manifest = self.manifest()?;
        let LoadedModel { model, tokenizer, .. } = &mut *self.model;
        let parts = RunParts {
            tokenizer,
            judges: &self.judges,
            manifest: &manifest,
            settings: &self.settings,
        };
        run(model, self.method.editor.as_mut(), parts, cases, on_record)
    }
}

impl std::fmt::Debug for Evaluation<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Evaluation")
            .field("model", &self.model.path)
            .field("method", &self.method)
            .field("judges", &self.judges.iter().map(|j| j.name()).collect::<Vec<_>>())
            .field("dataset", &self.dataset)
            .field("settings", &self.settings)
            .finish()
    }
}

/// What a run reads besides the model and the editor.
#[derive(Clone, Copy)]
struct RunParts<'r> {
    tokenizer: &'r Tokenizer,
    judges: &'r [&'r dyn SafetyJudge],
    manifest: &'r RunManifest,
    settings: &'r HarnessSettings,
}

/// What every record of a run shares while it generates and edits: its parts and the cache of pre-edit
/// responses.
struct RunShared<'r> {
    parts: RunParts<'r>,
    cache: JsonlLog<CachedResponses>,
}

/// A cached pre-edit generation.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct CachedResponses {
    key: String,
    responses: Vec<Response>,
}

fn run(
    model: &mut CausalLm,
    editor: &mut dyn Editor,
    parts: RunParts<'_>,
    cases: &[BenchmarkCase],
    mut on_record: impl FnMut(&RunRecord),
) -> Result<Summary> {
    let settings = parts.settings;
    if settings.batch_records > 1 && editor.mode() == EditMode::Sequential {
        return Err(EvalError::SequentialBatch {
            method: editor.method().into(),
            records: settings.batch_records,
        });
    }
    // One writer per run directory, for the whole run: a second run on it would append every record again.
    let _lock = detox_io::DirLock::acquire(&settings.out_dir)?;
    parts.manifest.write_or_check(&settings.out_dir.join("manifest.json"))?;
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
    let cache = JsonlLog::<CachedResponses>::open(&cache_path)?;
    let punkt = settings.punkt_dir.as_ref().map(PunktModel::load).transpose()?;
    let mut shared = RunShared { parts, cache };
    let judging = Judging { judges: parts.judges, punkt: punkt.as_ref(), settings: parts.settings };

    let mut seen = HashSet::new();
    for case in cases {
        if !seen.insert(case.id.as_str()) {
            return Err(EvalError::DuplicateCase { id: case.id.clone() });
        }
    }
    let done: HashSet<String> = log.records().iter().map(|r| r.id.clone()).collect();
    if let Some(stray) = done.iter().find(|id| !seen.contains(id.as_str())) {
        return Err(EvalError::StrayRecord { path: log.path().to_path_buf(), id: stray.clone() });
    }
    let todo: Vec<(usize, &BenchmarkCase)> =
        cases.iter().enumerate().filter(|(_, c)| !done.contains(&c.id)).collect();
    if settings.general.is_some() {
        editor.restore(model)?;
    }
    let baseline = general::run_baseline(model, parts.tokenizer, settings, parts.judges)?;
    let earlier: Vec<usize> = log.records().iter().filter_map(|r| r.layer).collect();
    editor.resume_after(&earlier);
    let bar = progress_bar(settings.progress, cases.len() as u64, done.len() as u64);

    // Each chunk is judged while the next one generates when the settings ask for it (a judge on another
    // thread); its records are written, in order, before that next chunk's.
    std::thread::scope(|scope| -> Result<()> {
        let mut pending: Option<std::thread::ScopedJoinHandle<'_, Result<Vec<RunRecord>>>> = None;
        let mut write = |records: Vec<RunRecord>| -> Result<()> {
            for record in records {
                log.append(record.clone())?;
                on_record(&record);
                bar.inc(1);
            }
            Ok(())
        };
        for chunk in todo.chunks(settings.batch_records.max(1)) {
            let unjudged = match chunk {
                [(position, case)] => {
                    bar.set_message(format!("record {}", case.id));
                    vec![record::run_case(model, editor, &mut shared, case, *position)?]
                }
                _ => {
                    bar.set_message(format!(
                        "records {} to {}",
                        chunk[0].1.id,
                        chunk[chunk.len() - 1].1.id
                    ));
                    chunk::run_chunk(model, editor, &mut shared, chunk)?
                }
            };
            if let Some(judged) = pending.take() {
                write(join(judged)?)?;
            }
            let judge_all = move || -> Result<Vec<RunRecord>> {
                unjudged.into_iter().map(|u| record::finish_record(u, &judging)).collect()
            };
            if settings.judge_in_background {
                pending = Some(scope.spawn(judge_all));
            } else {
                write(judge_all()?)?;
            }
        }
        if let Some(judged) = pending.take() {
            write(join(judged)?)?;
        }
        Ok(())
    })?;
    bar.finish_and_clear();

    let mut records = order_like(log.records(), cases);
    let mut judges: Vec<JudgeInfo> = parts.judges.iter().map(|j| JudgeInfo::of(*j)).collect();
    judges.extend(judgements::attach(&settings.out_dir, &mut records)?);
    let mut summary = Summary::from_records(editor.method(), &judges, &records)
        .with_fluency_splitter(settings.fluency_splitter())
        .with_protocol(&settings.protocol.name, settings.decoding.max_input_tokens);
    if let (Some(sets), Some(baseline)) = (&settings.general, &baseline) {
        summary = summary.with_cost(CostSummary::from_records(&sets.config, baseline, &records));
    }
    write_reports(&settings.out_dir, &summary, &records)?;
    Ok(summary)
}

/// The records a judging thread returns; a panic there is carried on here.
fn join(
    handle: std::thread::ScopedJoinHandle<'_, Result<Vec<RunRecord>>>,
) -> Result<Vec<RunRecord>> {
    handle.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic))
}

fn order_like(records: &[RunRecord], cases: &[BenchmarkCase]) -> Vec<RunRecord> {
    cases.iter().filter_map(|c| records.iter().find(|r| r.id == c.id).cloned()).collect()
}

/// A bar over `total` records with `done` of them already written (hidden unless `enabled`).
pub(crate) fn progress_bar(enabled: bool, total: u64, done: u64) -> ProgressBar {
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

fn cache_key(manifest: &RunManifest, inputs: &[String]) -> String {
    let decoding = manifest.decoding.to_string();
    let settings = [&manifest.model_sha256, &manifest.dtype, &decoding, &manifest.prompt_layout]
        .map(String::as_str);
    sha256_fields(settings.into_iter().chain(inputs.iter().map(String::as_str)))
}

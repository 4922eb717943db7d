//! One case of a run: pre-edit responses, edit, post-edit responses, restore, judging.

use std::time::Instant;

use detox_edit::dinm::StepLoss;
use detox_edit::{EditOutcome, Editor};
use detox_metrics::{EchoSources, Exchange, PunktModel, SafetyJudge, Verdict};
use detox_runtime::CausalLm;
use safeedit::Metric;

use super::{cache_key, CachedResponses, RunParts, RunShared};
use crate::aggregate::degeneration::measure_sides;
use crate::drive::general;
use crate::drive::respond::{respond, Response};
use crate::error::{EvalError, Result};
use crate::record::general::GeneralResult;
use crate::record::{JudgeVerdict, JudgedResponse, RecordTimings, RunRecord, SideResult};
use crate::settings::{BenchmarkCase, HarnessSettings, SuffixPolicy};

/// Runs one case up to its judging: pre-edit responses (cached), the edit, post-edit responses and the general
/// sets on the edited model, restore.
pub(super) fn run_case<'c>(
    model: &mut CausalLm,
    editor: &mut dyn Editor,
    shared: &mut RunShared<'_>,
    case: &'c BenchmarkCase,
    position: usize,
) -> Result<Unjudged<'c>> {
    let RunParts { tokenizer, settings, manifest, judges } = shared.parts;
    let cache = &mut shared.cache;
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
                respond(model, tokenizer, &pre_inputs, settings.prompt_layout, &settings.decoding)?;
            timings.generate_pre = started.elapsed().as_secs_f64();
            cache.append(CachedResponses { key, responses: responses.clone() })?;
            responses
        }
    };

    let outcome = editor.edit(model, tokenizer, &case.edit)?;
    timings.locate = outcome.timings.locate;
    timings.edit = outcome.timings.edit;
    let started = Instant::now();
    let post = respond(model, tokenizer, &post_inputs, settings.prompt_layout, &settings.decoding);
    timings.generate_post = started.elapsed().as_secs_f64();
    // The general sets are answered by the edited model, so before the restore.
    let started = Instant::now();
    let general = match &post {
        Ok(_) => general::answer_edited(model, tokenizer, &*editor, settings, position, judges),
        Err(_) => Ok(None),
    };
    timings.general = started.elapsed().as_secs_f64();
    // Restore before anything can fail further, so the next record starts from the original weights.
    editor.restore(model)?;
    let post = post?;
    let general = general?;

    let sides = Sides { pre_inputs, post_inputs, pre, post };
    Ok(Unjudged::new(case, outcome, sides, timings, general))
}

/// A case as generation and the edit left it, before judging: plain data, so that it can be judged on another
/// thread while the next case generates.
pub(super) struct Unjudged<'c> {
    case: &'c BenchmarkCase,
    method: String,
    layer: Option<usize>,
    layer_distances: Option<Vec<f64>>,
    steps: Vec<StepLoss>,
    notes: Vec<String>,
    sides: Sides,
    timings: RecordTimings,
    general: Option<GeneralResult>,
}

impl<'c> Unjudged<'c> {
    /// The case, what its edit did (the weights' change itself is no longer needed) and its responses.
    pub(super) fn new(
        case: &'c BenchmarkCase,
        mut outcome: EditOutcome,
        sides: Sides,
        mut timings: RecordTimings,
        general: Option<GeneralResult>,
    ) -> Self {
        timings.locate = outcome.timings.locate;
        timings.edit = outcome.timings.edit;
        Self {
            case,
            method: outcome.method.to_string(),
            layer: outcome.layer,
            layer_distances: outcome.details.take_located().map(|l| l.distances),
            steps: outcome.details.steps().to_vec(),
            notes: outcome.notes.iter().map(ToString::to_string).collect(),
            sides,
            timings,
            general,
        }
    }
}

/// What judging a case reads.
#[derive(Clone, Copy)]
pub(super) struct Judging<'r> {
    pub(super) judges: &'r [&'r dyn SafetyJudge],
    pub(super) punkt: Option<&'r PunktModel>,
    pub(super) settings: &'r HarnessSettings,
}

/// A case's evaluation inputs and responses on both sides of the edit.
pub(super) struct Sides {
    pub(super) pre_inputs: Vec<String>,
    pub(super) post_inputs: Vec<String>,
    pub(super) pre: Vec<Response>,
    pub(super) post: Vec<Response>,
}

/// Judges both sides and assembles the case's record.
pub(super) fn finish_record(unjudged: Unjudged<'_>, judging: &Judging<'_>) -> Result<RunRecord> {
    let Unjudged { case, sides, mut timings, .. } = unjudged;
    let started = Instant::now();
    let judges = judging.judges;
    let punkt = judging.punkt;
    let failed = |side: &str| {
        let what = format!("record {} ({side} the edit)", case.id);
        move |source| EvalError::Judging { what, source: Box::new(source) }
    };
    let pre_side = judge_side(judges, &case.eval_inputs, &sides.pre_inputs, sides.pre, punkt)
        .map_err(failed("before"))?;
    let post_side = judge_side(judges, &case.eval_inputs, &sides.post_inputs, sides.post, punkt)
        .map_err(failed("after"))?;
    timings.judge = started.elapsed().as_secs_f64();
    if judges.len() > 1 {
        for (name, seconds) in pre_side.1.into_iter().chain(post_side.1) {
            *timings.judges.entry(name).or_default() += seconds;
        }
    }
    let (pre_side, post_side) = (pre_side.0, post_side.0);
    let settings = judging.settings;
    let suffix =
        if settings.suffix_policy == SuffixPolicy::Neither { "" } else { settings.suffix() };
    let sources = EchoSources { suffix, target: &case.edit.safe_response };
    let degeneration = measure_sides(&pre_side, &post_side, &sources);
    Ok(RunRecord {
        id: case.id.clone(),
        category: case.category.clone(),
        method: unjudged.method,
        layer: unjudged.layer,
        layer_distances: unjudged.layer_distances,
        steps: unjudged.steps,
        timings,
        pre: pre_side,
        post: post_side,
        degeneration: Some(degeneration),
        general: unjudged.general,
        notes: unjudged.notes,
    })
}

/// The evaluation inputs of `case` before and after the edit.
pub(super) fn case_inputs(
    case: &BenchmarkCase,
    editor: &dyn Editor,
    settings: &HarnessSettings,
) -> (Vec<String>, Vec<String>) {
    let pre_suffix = settings.suffix_policy == SuffixPolicy::Both;
    let post_suffix = settings.suffix_policy != SuffixPolicy::Neither;
    let pre = case
        .eval_inputs
        .iter()
        .map(|(_, t)| with_suffix(t, settings.suffix(), pre_suffix))
        .collect();
    let post = case
        .eval_inputs
        .iter()
        .map(|(_, t)| editor.wrap_input(&with_suffix(t, settings.suffix(), post_suffix)))
        .collect();
    (pre, post)
}

fn with_suffix(text: &str, suffix: &str, add: bool) -> String {
    if add {
        format!("{text} {suffix}")
    } else {
        text.to_string()
    }
}

/// Judges one side's responses with every judge (the first is primary) and measures their fluency; also
/// returns each judge's time.
fn judge_side(
    judges: &[&dyn SafetyJudge],
    metrics: &[(Metric, String)],
    inputs: &[String],
    responses: Vec<Response>,
    punkt: Option<&PunktModel>,
) -> Result<(SideResult, Vec<(String, f64)>)> {
    let texts: Vec<&str> = responses.iter().map(|r| r.text.as_str()).collect();
    let exchanges: Vec<Exchange<'_>> =
        inputs.iter().zip(&texts).map(|(input, text)| Exchange::new(input, text)).collect();
    let mut verdicts = Vec::with_capacity(judges.len());
    let mut seconds = Vec::with_capacity(judges.len());
    for judge in judges {
        let started = Instant::now();
        let judged = crate::drive::judges::verdicts(*judge, &exchanges, "responses")?;
        seconds.push((judge.name(), started.elapsed().as_secs_f64()));
        verdicts.push(judged);
    }
    let fluency_mean = match punkt {
        Some(punkt) => detox_metrics::mean_fluency_with(&texts, punkt),
        None => detox_metrics::mean_fluency(&texts),
    };
    let names: Vec<String> = judges.iter().map(|j| j.name()).collect();
    let responses = metrics
        .iter()
        .zip(inputs)
        .zip(responses)
        .enumerate()
        .map(|(i, (((metric, _), input), response))| {
            let primary = verdicts.first().map(|v| v[i]).unwrap_or(Verdict::EMPTY);
            JudgedResponse {
                metric: *metric,
                input: input.clone(),
                response: response.text,
                tokens: response.tokens,
                finish: response.finish,
                cut_tokens: response.cut_tokens,
                label: primary.label,
                unsafe_score: primary.unsafe_score,
                refusal: primary.refusal,
                other_verdicts: names
                    .iter()
                    .zip(&verdicts)
                    .skip(1)
                    .map(|(judge, v)| JudgeVerdict { judge: judge.clone(), verdict: v[i] })
                    .collect(),
            }
        })
        .collect();
    Ok((SideResult { responses, fluency: fluency_mean }, seconds))
}

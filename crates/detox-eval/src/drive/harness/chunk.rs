//! Cases run together: one generation batch for their pre-edit inputs, one batched edit, and one batch of
//! post-edit inputs per group of records edited at the same tensors, each record's rows with its own weights.

use std::time::Instant;

use detox_edit::{EditInput, EditOutcome, Editor};
use detox_runtime::{CausalLm, Tokenizer};

use super::record::{case_inputs, Sides, Unjudged};
use super::{cache_key, torch, CachedResponses, RunParts, RunShared};
use crate::drive::general;
use crate::drive::respond::{respond, Response};
use crate::error::{EvalError, Result};
use crate::record::general::GeneralResult;
use crate::record::RecordTimings;
use crate::settings::{BenchmarkCase, Decoding, HarnessSettings};

/// `inputs` answered in one generation batch.
pub(super) fn respond_together(
    model: &CausalLm,
    tokenizer: &Tokenizer,
    inputs: &[String],
    settings: &HarnessSettings,
) -> Result<Vec<Response>> {
    let decoding = Decoding { batch_size: inputs.len().max(1), ..settings.decoding.clone() };
    respond(model, tokenizer, inputs, settings.prompt_layout, &decoding)
}

/// Runs a chunk of cases together (see [`crate::settings::HarnessSettings::batch_records`]).
pub(super) fn run_chunk<'c>(
    model: &mut CausalLm,
    editor: &mut dyn Editor,
    shared: &mut RunShared<'_>,
    chunk: &[(usize, &'c BenchmarkCase)],
) -> Result<Vec<Unjudged<'c>>> {
    let RunParts { tokenizer, settings, manifest, judges } = shared.parts;
    let cases: Vec<&'c BenchmarkCase> = chunk.iter().map(|(_, c)| *c).collect();
    let n = cases.len();
    let inputs: Vec<(Vec<String>, Vec<String>)> =
        cases.iter().map(|c| case_inputs(c, editor, settings)).collect();
    let mut timings = vec![RecordTimings::default(); n];

    editor.restore(model)?;
    let keys: Vec<String> = inputs.iter().map(|(pre, _)| cache_key(manifest, pre)).collect();
    let cache = &mut shared.cache;
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
        return Err(EvalError::CountMismatch {
            component: "editor",
            what: "outcomes",
            got: outcomes.len(),
            expected: n,
            given: "records",
        });
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
            return Err(EvalError::Batching {
                reason: "batched records need the same number of evaluation inputs each".into(),
            });
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
            let answered =
                general::answer_edited(model, tokenizer, &*editor, settings, *position, judges);
            model.restore(&snapshot)?;
            general[i] = answered?;
            timings[i].general = started.elapsed().as_secs_f64();
        }
    }

    let mut records = Vec::with_capacity(n);
    for (i, ((case, outcome), (pre_inputs, post_inputs))) in
        cases.iter().zip(outcomes).zip(inputs).enumerate()
    {
        let sides = Sides {
            pre_inputs,
            post_inputs,
            pre: pre[i].take().unwrap_or_default(),
            post: post[i].take().unwrap_or_default(),
        };
        let timings = std::mem::take(&mut timings[i]);
        records.push(Unjudged::new(case, outcome, sides, timings, general[i].take()));
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
            return Err(EvalError::Batching {
                reason: format!(
                    "`{name}` cannot hold one weight per batch row (only linear projections can)"
                ),
            });
        }
        let base =
            model.parameter(name)?.f_to_kind(tch::Kind::Float).map_err(torch("base weight"))?;
        let rows = members
            .iter()
            .map(|&i| {
                let delta = outcomes[i].delta.get(name).ok_or_else(|| EvalError::Batching {
                    reason: format!("record {i}'s edit does not touch `{name}`"),
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

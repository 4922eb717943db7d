//! Judging a finished run again: another judge's verdicts on the responses a run already holds, with no
//! generation, then the summary and report rewritten with every judge.
//!
//! The verdicts are appended to the run's `judgements/` folder ([`crate::record::judgements`]), a line per
//! record, so a re-judge that is stopped resumes where it stopped; the run directory is locked as a run locks
//! it. Merged shard runs are runs like any other and are re-judged the same way.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::time::Instant;

use detox_metrics::{Exchange, SafetyJudge};

use crate::aggregate::summary::Summary;
use crate::drive::harness::progress_bar;
use crate::drive::judges::verdicts;
use crate::drive::merge::summarize_run;
use crate::error::{EvalError, Result};
use crate::jsonl::JsonlLog;
use crate::record::judgements::{self, responses_digest, Judgement};
use crate::record::manifest::RunManifest;
use crate::record::{JudgeInfo, RunRecord};
use crate::render::write_reports;

/// How many records go to the judge in one call (it batches their responses by length).
const RECORDS_PER_CALL: usize = 8;

/// Adds `judge`'s verdicts to the run in `dir` and rewrites its summary and report; `on_record` sees each
/// record's id as its verdicts are written.
///
/// # Errors
/// A directory that is not a run or is locked by another process, a judge already among the run's judges,
/// verdicts on responses that changed since they were given ([`EvalError::StaleJudgement`]), damaged files,
/// and whatever the judge refuses.
pub fn rejudge(
    dir: &Path,
    judge: &dyn SafetyJudge,
    progress: bool,
    mut on_record: impl FnMut(&str),
) -> Result<Summary> {
    let _lock = detox_io::DirLock::acquire(dir)?;
    let manifest = RunManifest::read(&dir.join("manifest.json"))?;
    let info = JudgeInfo::of(judge);
    if manifest.judges().iter().any(|j| j.name == info.name) {
        return Err(EvalError::DuplicateJudge { name: info.name });
    }
    let records_path = dir.join("records.jsonl");
    if !records_path.exists() {
        return Err(EvalError::Io {
            path: records_path,
            source: std::io::Error::new(std::io::ErrorKind::NotFound, "the run has no records"),
        });
    }
    let log = JsonlLog::<RunRecord>::open_unique(&records_path, |r| &r.id)?;
    let mut records = log.records().to_vec();
    drop(log);
    let mut written = judgements::open_for(dir, &info)?;
    if let Some(note) = written.repaired() {
        eprintln!("{}: {note}", written.path().display());
    }
    // Verdicts already written must be on the responses the run holds now.
    let by_id: HashMap<&str, &RunRecord> = records.iter().map(|r| (r.id.as_str(), r)).collect();
    for judgement in written.records() {
        if !by_id
            .get(judgement.id.as_str())
            .is_some_and(|r| judgements::matches_record(r, judgement))
        {
            return Err(EvalError::StaleJudgement {
                path: written.path().to_path_buf(),
                id: judgement.id.clone(),
            });
        }
    }
    let done: HashSet<&str> = written.records().iter().map(|j| j.id.as_str()).collect();
    let todo: Vec<&RunRecord> = records.iter().filter(|r| !done.contains(r.id.as_str())).collect();
    let bar = progress_bar(progress, records.len() as u64, (records.len() - todo.len()) as u64);
    bar.set_message(format!("judging with {}", info.name));
    for chunk in todo.chunks(RECORDS_PER_CALL) {
        let exchanges: Vec<Exchange<'_>> = chunk
            .iter()
            .flat_map(|r| r.responses())
            .map(|r| Exchange::new(&r.input, &r.response))
            .collect();
        let started = Instant::now();
        let judged = verdicts(judge, &exchanges, "responses").map_err(|source| {
            let ids: Vec<&str> = chunk.iter().map(|r| r.id.as_str()).collect();
            let what = format!(
                "records {} (responses before, then after the edit, in order)",
                ids.join(", ")
            );
            EvalError::Judging { what, source: Box::new(source) }
        })?;
        let share = started.elapsed().as_secs_f64() / chunk.len() as f64;
        let mut judged = judged.into_iter();
        for record in chunk {
            let pre = judged.by_ref().take(record.pre.responses.len()).collect();
            let post = judged.by_ref().take(record.post.responses.len()).collect();
            written.append(Judgement {
                id: record.id.clone(),
                responses_sha256: responses_digest(record),
                pre,
                post,
                seconds: share,
            })?;
            on_record(&record.id);
            bar.inc(1);
        }
    }
    bar.finish_and_clear();
    drop(written);
    let summary = summarize_run(dir, &manifest, &mut records)?;
    write_reports(dir, &summary, &records)?;
    Ok(summary)
}

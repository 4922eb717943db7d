//! Verdicts added to a finished run by a re-judge, kept beside its records: `judgements/judges.json` lists the
//! judges added, in order, and `judgements/<n>.jsonl` holds one line per record for the `n`-th of them.
//!
//! `records.jsonl` is never rewritten: a re-judge appends here, and whoever reads the run ([`attach`]) joins
//! the verdicts to the records. Each line carries a digest of the responses it judged, so verdicts on
//! responses that have since changed are refused rather than joined to the wrong text.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use detox_metrics::Verdict;
use serde::{Deserialize, Serialize};

use crate::error::{EvalError, Result};
use crate::jsonl::{write_json_atomic, JsonlLog};
use crate::record::manifest::sha256_fields;
use crate::record::{JudgeInfo, JudgeVerdict, RunRecord};

/// The folder, inside a run directory.
pub const JUDGEMENTS_DIR: &str = "judgements";

/// One judge's verdicts on one record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Judgement {
    /// The record's id.
    pub id: String,
    /// [`responses_digest`] of the record when it was judged.
    pub responses_sha256: String,
    /// One verdict per pre-edit response.
    pub pre: Vec<Verdict>,
    /// One verdict per post-edit response.
    pub post: Vec<Verdict>,
    /// Seconds spent judging the record.
    pub seconds: f64,
}

/// SHA-256 over a record's inputs and responses (with their metrics), both sides in order, each side closed by
/// an empty field.
pub fn responses_digest(record: &RunRecord) -> String {
    let mut fields = Vec::new();
    for side in [&record.pre, &record.post] {
        for r in &side.responses {
            fields.extend([r.metric.name(), &r.input, &r.response]);
        }
        fields.push("");
    }
    sha256_fields(fields)
}

/// The judges added to the run in `dir` by re-judges, in order (empty when none was).
pub fn added_judges(dir: &Path) -> Result<Vec<JudgeInfo>> {
    let path = dir.join(JUDGEMENTS_DIR).join("judges.json");
    match std::fs::read_to_string(&path) {
        Ok(text) => serde_json::from_str(&text).map_err(|e| EvalError::CorruptRecord {
            path,
            line: 0,
            reason: e.to_string(),
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(source) => Err(EvalError::Io { path, source }),
    }
}

/// Whether `judgement` was given to `record`'s responses as they are now.
pub fn matches_record(record: &RunRecord, judgement: &Judgement) -> bool {
    record.pre.responses.len() == judgement.pre.len()
        && record.post.responses.len() == judgement.post.len()
        && responses_digest(record) == judgement.responses_sha256
}

/// The verdict file of the `index`-th added judge.
fn judgement_file(dir: &Path, index: usize) -> PathBuf {
    dir.join(JUDGEMENTS_DIR).join(format!("{index}.jsonl"))
}

/// Opens the verdict file of `judge` in the run in `dir`, adding the judge to the run's list if it is new.
pub fn open_for(dir: &Path, judge: &JudgeInfo) -> Result<JsonlLog<Judgement>> {
    let mut judges = added_judges(dir)?;
    let index = match judges.iter().position(|j| j.name == judge.name) {
        Some(index) => index,
        None => {
            let folder = dir.join(JUDGEMENTS_DIR);
            std::fs::create_dir_all(&folder)
                .map_err(|source| EvalError::Io { path: folder.clone(), source })?;
            judges.push(judge.clone());
            write_json_atomic(&folder.join("judges.json"), &judges, "the added judges")?;
            judges.len() - 1
        }
    };
    JsonlLog::open_unique(judgement_file(dir, index), |j: &Judgement| &j.id)
}

/// Joins the verdicts of the judges added to the run in `dir` to its `records` (as other verdicts, with their
/// time) and returns those judges; verdicts of responses that changed since they were judged, or of a record
/// the run no longer holds, are refused, naming the record and the file.
pub fn attach(dir: &Path, records: &mut [RunRecord]) -> Result<Vec<JudgeInfo>> {
    let judges = added_judges(dir)?;
    let position: HashMap<String, usize> =
        records.iter().enumerate().map(|(i, r)| (r.id.clone(), i)).collect();
    for (index, judge) in judges.iter().enumerate() {
        let log = JsonlLog::open_unique(judgement_file(dir, index), |j: &Judgement| &j.id)?;
        for judgement in log.records() {
            let record = position.get(&judgement.id).map(|&i| &mut records[i]);
            let Some(record) = record.filter(|r| matches_record(r, judgement)) else {
                return Err(EvalError::StaleJudgement {
                    path: log.path().to_path_buf(),
                    id: judgement.id.clone(),
                });
            };
            let sides = [
                (&mut record.pre.responses, &judgement.pre),
                (&mut record.post.responses, &judgement.post),
            ];
            for (responses, verdicts) in sides {
                for (response, verdict) in responses.iter_mut().zip(verdicts) {
                    response.other_verdicts.retain(|v| v.judge != judge.name);
                    response
                        .other_verdicts
                        .push(JudgeVerdict { judge: judge.name.clone(), verdict: *verdict });
                }
            }
            record.timings.judges.insert(judge.name.clone(), judgement.seconds);
        }
    }
    Ok(judges)
}

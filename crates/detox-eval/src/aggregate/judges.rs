//! The scores of every judge of a run, and how far each pair of judges agrees.
//!
//! Each judge's DS and DG are computed exactly as the primary judge's are, over the records it judged (a judge
//! added by a re-judge of a run still being written may not have judged the newest records yet). Agreement is
//! over the responses both judges judged, before and after the edit together ([`PairAgreement`]).

use detox_metrics::{pair_agreement, Label, PairAgreement};
use serde::{Deserialize, Serialize};

use crate::aggregate::summary::{compare, Comparison};
use crate::record::{JudgeInfo, RunRecord};

/// One judge's scores.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JudgeScores {
    /// The judge.
    #[serde(flatten)]
    pub judge: JudgeInfo,
    /// Whether it is the run's primary judge (the one the headline table uses).
    pub primary: bool,
    /// Its scores over the records it judged (`records` says how many).
    pub overall: Comparison,
    /// Seconds it spent judging.
    pub seconds: f64,
}

/// How far two judges agree.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JudgePair {
    /// The first judge's name.
    pub a: String,
    /// The second judge's name.
    pub b: String,
    /// Their agreement.
    pub agreement: PairAgreement,
}

/// The records as `judge` labelled them: each response's label and score replaced by that judge's, keeping
/// only the records it judged in full.
pub fn relabel(records: &[RunRecord], judge: &str, primary: &str) -> Vec<RunRecord> {
    records
        .iter()
        .filter_map(|record| {
            let mut record = record.clone();
            for response in record.pre.responses.iter_mut().chain(record.post.responses.iter_mut())
            {
                let verdict = response.verdict_of(judge, primary)?;
                response.label = verdict.label;
                response.unsafe_score = verdict.unsafe_score;
                response.refusal = verdict.refusal;
            }
            Some(record)
        })
        .collect()
}

/// Every judge's scores, in the order of `judges` (the primary one first).
pub fn judge_scores(judges: &[JudgeInfo], records: &[RunRecord]) -> Vec<JudgeScores> {
    let Some(primary) = judges.first() else { return Vec::new() };
    judges
        .iter()
        .enumerate()
        .map(|(i, judge)| {
            // The records carry the primary judge's labels already.
            let (overall, _) = if i == 0 {
                compare(records)
            } else {
                compare(&relabel(records, &judge.name, &primary.name))
            };
            let seconds = records
                .iter()
                .map(|r| match r.timings.judges.get(&judge.name) {
                    Some(seconds) => *seconds,
                    // A one-judge record keeps its judging time in `judge` alone.
                    None if i == 0 && r.timings.judges.is_empty() => r.timings.judge,
                    None => 0.0,
                })
                .sum();
            JudgeScores { judge: judge.clone(), primary: i == 0, overall, seconds }
        })
        .collect()
}

/// The labels two judges gave the responses of `records` (both sides, in record order); a response one of
/// them did not judge is left out.
pub fn paired_labels(
    records: &[RunRecord],
    a: &str,
    b: &str,
    primary: &str,
) -> (Vec<Label>, Vec<Label>) {
    records
        .iter()
        .flat_map(RunRecord::responses)
        .filter_map(|r| Some((r.verdict_of(a, primary)?.label, r.verdict_of(b, primary)?.label)))
        .unzip()
}

/// The agreement of every pair of judges.
pub fn judge_pairs(judges: &[JudgeInfo], records: &[RunRecord]) -> Vec<JudgePair> {
    let Some(primary) = judges.first() else { return Vec::new() };
    let mut pairs = Vec::new();
    for (i, a) in judges.iter().enumerate() {
        for b in &judges[i + 1..] {
            let (la, lb) = paired_labels(records, &a.name, &b.name, &primary.name);
            // Paired labels have one length, the only thing `pair_agreement` refuses.
            if let Ok(agreement) = pair_agreement(&la, &lb) {
                pairs.push(JudgePair { a: a.name.clone(), b: b.name.clone(), agreement });
            }
        }
    }
    pairs
}

//! What the edits cost over a run: the general scores before and after, overall and per unsafety category.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::record::general::GeneralResult;
use crate::record::RunRecord;
use crate::settings::general::{GeneralConfig, KQA_STAND_IN, REFUSAL_DETECTOR};

/// One general score before (the unedited model, once per run) and after (the edited models, pooled over the
/// group's measured records).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct CostScore {
    /// Before the edit, in percent (`None` when the set is empty).
    pub before: Option<f64>,
    /// After the edit, in percent (`None` when no record of the group answered the set).
    pub after: Option<f64>,
    /// Items the before score rests on.
    pub before_items: usize,
    /// Items the after score rests on (records × set size).
    pub after_items: usize,
}

/// KQA, CSum and over-refusal of a group of records.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CostComparison {
    /// Records of the group whose edited model answered the sets.
    pub records: usize,
    /// Closed-book QA accuracy.
    pub kqa: CostScore,
    /// Mean ROUGE-1 F of summaries.
    pub csum: CostScore,
    /// Over-refusal rate on safe XSTest prompts, by the refusal detector.
    pub over_refusal: CostScore,
    /// Over-refusal rate by each of the run's judges that reads refusals (WildGuard, Qwen3Guard), by name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub over_refusal_by_judge: BTreeMap<String, CostScore>,
}

impl CostComparison {
    /// Pools the edited models' answers of `after` against the baseline.
    pub fn from_results<'a>(
        baseline: &GeneralResult,
        after: impl IntoIterator<Item = &'a GeneralResult>,
    ) -> Self {
        let pooled =
            after.into_iter().fold((0usize, GeneralResult::default()), |(n, mut acc), r| {
                acc.qa.extend(r.qa.iter().cloned());
                acc.sum.extend(r.sum.iter().cloned());
                acc.over_refusal.extend(r.over_refusal.iter().cloned());
                (n + 1, acc)
            });
        let (records, pooled) = pooled;
        let score =
            |f: fn(&GeneralResult) -> Option<f64>, items: fn(&GeneralResult) -> usize| CostScore {
                before: f(baseline),
                after: f(&pooled),
                before_items: items(baseline),
                after_items: items(&pooled),
            };
        let over_refusal_by_judge = baseline
            .refusal_judges()
            .into_iter()
            .chain(pooled.refusal_judges())
            .collect::<std::collections::BTreeSet<String>>()
            .into_iter()
            .map(|judge| {
                let score = CostScore {
                    before: baseline.over_refusal_by(&judge),
                    after: pooled.over_refusal_by(&judge),
                    before_items: baseline.over_refusal_read_by(&judge),
                    after_items: pooled.over_refusal_read_by(&judge),
                };
                (judge, score)
            })
            .collect();
        Self {
            records,
            kqa: score(GeneralResult::kqa, |r| r.qa.len()),
            csum: score(GeneralResult::csum, |r| r.sum.len()),
            over_refusal: score(GeneralResult::over_refusal, |r| r.over_refusal.len()),
            over_refusal_by_judge,
        }
    }
}

/// The cost of the edits over a run: overall and per unsafety category.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CostSummary {
    /// How the sets were drawn and answered.
    pub config: GeneralConfig,
    /// [`KQA_STAND_IN`].
    pub kqa_note: String,
    /// [`REFUSAL_DETECTOR`].
    pub refusal_detector: String,
    /// All measured records.
    pub overall: CostComparison,
    /// Per unsafety category (as spelled in the data).
    pub per_category: BTreeMap<String, CostComparison>,
}

impl CostSummary {
    /// Aggregates the records' general results against the baseline.
    pub fn from_records(
        config: &GeneralConfig,
        baseline: &GeneralResult,
        records: &[RunRecord],
    ) -> Self {
        let mut by_category: BTreeMap<String, Vec<&GeneralResult>> = BTreeMap::new();
        for r in records {
            if let Some(g) = &r.general {
                by_category.entry(r.category.clone()).or_default().push(g);
            }
        }
        Self {
            config: config.clone(),
            kqa_note: KQA_STAND_IN.into(),
            refusal_detector: REFUSAL_DETECTOR.into(),
            overall: CostComparison::from_results(
                baseline,
                records.iter().filter_map(|r| r.general.as_ref()),
            ),
            per_category: by_category
                .into_iter()
                .map(|(k, v)| (k, CostComparison::from_results(baseline, v)))
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::general::answers;

    #[test]
    fn scores_pool_items_by_hand() {
        let base = answers(&[true, true, false, true], &[40.0, 20.0], &[false, false]);
        assert_eq!(
            (base.kqa(), base.csum(), base.over_refusal()),
            (Some(75.0), Some(30.0), Some(0.0))
        );
        let a = answers(&[true, false, false, false], &[10.0, 0.0], &[true, false]);
        let b = answers(&[false, false, false, false], &[20.0, 10.0], &[true, true]);
        let c = CostComparison::from_results(&base, [&a, &b]);
        assert_eq!(c.records, 2);
        assert_eq!(
            c.kqa,
            CostScore { before: Some(75.0), after: Some(12.5), before_items: 4, after_items: 8 }
        );
        assert_eq!(c.csum.after, Some(10.0));
        assert_eq!(c.over_refusal.after, Some(75.0));
        let none = CostComparison::from_results(&base, []);
        assert_eq!((none.records, none.kqa.after, none.kqa.before), (0, None, Some(75.0)));
        assert_eq!(GeneralResult::default().kqa(), None);
    }
}

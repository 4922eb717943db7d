//! What the edited and unedited models answered on the general sets, item by item.

use serde::{Deserialize, Serialize};

/// One answered question.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QaAnswer {
    /// The question.
    pub question: String,
    /// The model's response.
    pub response: String,
    /// Whether it matched an accepted answer.
    pub correct: bool,
}

/// One summary.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SumAnswer {
    /// The article id.
    pub id: String,
    /// The model's summary.
    pub response: String,
    /// ROUGE-1 F against the reference summary, in percent.
    pub rouge1_f: f64,
}

/// One response to a safe XSTest prompt.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RefusalAnswer {
    /// The XSTest prompt id.
    pub id: String,
    /// The model's response.
    pub response: String,
    /// Whether the refusal detector read it as a refusal.
    pub refused: bool,
    /// Whether each of the run's refusal-reading judges (WildGuard, Qwen3Guard) read it as a refusal, by judge
    /// name (a judge that could not say is left out).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub judged: std::collections::BTreeMap<String, bool>,
}

/// A model state's answers to the general sets.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct GeneralResult {
    /// Closed-book answers.
    pub qa: Vec<QaAnswer>,
    /// Summaries.
    pub sum: Vec<SumAnswer>,
    /// Responses to safe XSTest prompts.
    pub over_refusal: Vec<RefusalAnswer>,
}

fn percent(hits: usize, total: usize) -> Option<f64> {
    (total > 0).then(|| 100.0 * hits as f64 / total as f64)
}

impl GeneralResult {
    /// KQA accuracy in percent (`None` without questions).
    pub fn kqa(&self) -> Option<f64> {
        percent(self.qa.iter().filter(|a| a.correct).count(), self.qa.len())
    }

    /// CSum, mean ROUGE-1 F in percent (`None` without articles).
    pub fn csum(&self) -> Option<f64> {
        (!self.sum.is_empty())
            .then(|| self.sum.iter().map(|a| a.rouge1_f).sum::<f64>() / self.sum.len() as f64)
    }

    /// Over-refusal rate in percent (`None` without prompts).
    pub fn over_refusal(&self) -> Option<f64> {
        percent(self.over_refusal.iter().filter(|a| a.refused).count(), self.over_refusal.len())
    }

    /// Over-refusal rate in percent by the judge named `judge`, over the answers it read (`None` when it read
    /// none).
    pub fn over_refusal_by(&self, judge: &str) -> Option<f64> {
        let read: Vec<bool> =
            self.over_refusal.iter().filter_map(|a| a.judged.get(judge).copied()).collect();
        percent(read.iter().filter(|r| **r).count(), read.len())
    }

    /// Answers the judge named `judge` read.
    pub fn over_refusal_read_by(&self, judge: &str) -> usize {
        self.over_refusal.iter().filter(|a| a.judged.contains_key(judge)).count()
    }

    /// The judges that read the over-refusal answers, by name.
    pub fn refusal_judges(&self) -> std::collections::BTreeSet<String> {
        self.over_refusal.iter().flat_map(|a| a.judged.keys().cloned()).collect()
    }
}

/// Answers with the given outcomes and placeholder texts, for the tests of the layers that read them.
#[cfg(test)]
pub(crate) fn answers(correct: &[bool], rouge: &[f64], refused: &[bool]) -> GeneralResult {
    GeneralResult {
        qa: correct
            .iter()
            .map(|&c| QaAnswer { question: "q".into(), response: "r".into(), correct: c })
            .collect(),
        sum: rouge
            .iter()
            .map(|&f| SumAnswer { id: "1".into(), response: "s".into(), rouge1_f: f })
            .collect(),
        over_refusal: refused
            .iter()
            .map(|&r| RefusalAnswer {
                id: "1".into(),
                response: "x".into(),
                refused: r,
                judged: Default::default(),
            })
            .collect(),
    }
}

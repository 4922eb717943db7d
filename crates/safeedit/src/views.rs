//! What other crates consume: edit requests and evaluation inputs.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::record::SafeEditRecord;

/// The edit a record asks for, with the reference implementation's field names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EditRequest {
    /// The adversarial prompt.
    pub prompt: String,
    /// The safe generation (the new target).
    pub target_new: String,
    /// The unsafe generation.
    pub ground_truth: String,
    /// The knowledge-constraint question.
    pub locality_prompt: String,
    /// Its answer.
    pub locality_answer: String,
}

/// The five SafeEdit safety metrics, in report order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Metric {
    /// Defence success on the adversarial prompt.
    #[serde(rename = "DS")]
    Ds,
    /// Generalisation to the bare question.
    #[serde(rename = "DG_onlyQ")]
    DgOnlyQ,
    /// Generalisation to another attack prompt.
    #[serde(rename = "DG_otherA")]
    DgOtherA,
    /// Generalisation to another question.
    #[serde(rename = "DG_otherQ")]
    DgOtherQ,
    /// Generalisation to another question and attack prompt.
    #[serde(rename = "DG_otherAQ")]
    DgOtherAQ,
}

impl Metric {
    /// All five, in report order.
    pub const ALL: [Metric; 5] =
        [Metric::Ds, Metric::DgOnlyQ, Metric::DgOtherA, Metric::DgOtherQ, Metric::DgOtherAQ];

    /// The name reports use (`DS`, `DG_onlyQ`, ...).
    pub fn name(self) -> &'static str {
        match self {
            Metric::Ds => "DS",
            Metric::DgOnlyQ => "DG_onlyQ",
            Metric::DgOtherA => "DG_otherA",
            Metric::DgOtherQ => "DG_otherQ",
            Metric::DgOtherAQ => "DG_otherAQ",
        }
    }
}

impl std::str::FromStr for Metric {
    type Err = UnknownMetric;

    /// Parses a report name (`DS`, `DG_onlyQ`, ...), exactly as [`Metric::name`] spells it.
    fn from_str(name: &str) -> Result<Self, Self::Err> {
        Metric::ALL
            .into_iter()
            .find(|m| m.name() == name)
            .ok_or_else(|| UnknownMetric(name.to_string()))
    }
}

/// A metric name that is none of the five.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown metric {0:?} (expected one of DS, DG_onlyQ, DG_otherA, DG_otherQ, DG_otherAQ)")]
pub struct UnknownMetric(pub String);

impl fmt::Display for Metric {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One evaluation input of a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EvalInput<'a> {
    /// The metric it feeds.
    pub metric: Metric,
    /// The text given to the model.
    pub text: &'a str,
}

impl SafeEditRecord {
    /// The edit request (the reference's mapping).
    pub fn edit_request(&self) -> EditRequest {
        EditRequest {
            prompt: self.adversarial_prompt.clone(),
            target_new: self.safe_generation.clone(),
            ground_truth: self.unsafe_generation.clone(),
            locality_prompt: self.knowledge_constrain.prompt.clone(),
            locality_answer: self.knowledge_constrain.answer.clone(),
        }
    }

    /// The five evaluation inputs in metric order, or `None` for a record without a generalisation test (train
    /// and validation records).
    pub fn eval_inputs(&self) -> Option<[EvalInput<'_>; 5]> {
        let g = self.generalization_test.as_ref()?;
        Some([
            EvalInput { metric: Metric::Ds, text: &self.adversarial_prompt },
            EvalInput { metric: Metric::DgOnlyQ, text: &g.only_harmful_question },
            EvalInput { metric: Metric::DgOtherA, text: &g.other_attack_prompt },
            EvalInput { metric: Metric::DgOtherQ, text: &g.other_question },
            EvalInput { metric: Metric::DgOtherAQ, text: &g.other_question_and_attack },
        ])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metric_names_parse_back_and_serialise_as_reported() {
        for m in Metric::ALL {
            assert_eq!(m.name().parse::<Metric>(), Ok(m));
            assert_eq!(serde_json::to_string(&m).unwrap(), format!("\"{}\"", m.name()));
        }
        assert_eq!("ds".parse::<Metric>(), Err(UnknownMetric("ds".into())));
    }
}

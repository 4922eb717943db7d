//! SafeEdit records exactly as the published JSON spells them.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::category::UnsafetyCategory;

/// The four generalisation inputs of a test record (keys as in the data).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GeneralizationTest {
    /// Attack category of the other attack prompt.
    pub attack_category: String,
    /// Attack name of the other attack prompt.
    pub attack_name: String,
    /// The bare harmful question (DG_onlyQ).
    #[serde(rename = "test input of only harmful question")]
    pub only_harmful_question: String,
    /// The same question inside another attack prompt (DG_otherA).
    #[serde(rename = "test input of other attack prompt input")]
    pub other_attack_prompt: String,
    /// Another question inside the same attack prompt (DG_otherQ).
    #[serde(rename = "test input of other question input")]
    pub other_question: String,
    /// Another question inside another attack prompt (DG_otherAQ).
    #[serde(rename = "test input of other questions and attack prompts")]
    pub other_question_and_attack: String,
    /// Keys this crate does not know, kept so that files round-trip unchanged.
    #[serde(flatten)]
    pub extra: BTreeMap<String, serde_json::Value>,
}

/// The knowledge-constraint pair: a benign question whose answer an edit must not change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KnowledgeConstraint {
    /// The benign question.
    pub prompt: String,
    /// Its answer.
    pub answer: String,
    /// Keys this crate does not know.
    #[serde(flatten)]
    pub extra: BTreeMap<String, serde_json::Value>,
}

/// A record of the train, validation or test split.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SafeEditRecord {
    /// Record id (unique within a file).
    pub id: u64,
    /// Unsafety category, spelling preserved.
    #[serde(rename = "unsafety category")]
    pub category: UnsafetyCategory,
    /// The attack template wrapped around the question.
    #[serde(rename = "adversarial prompt")]
    pub adversarial_prompt: String,
    /// The bare harmful question.
    pub question: String,
    /// Attack category.
    #[serde(rename = "attack category")]
    pub attack_category: String,
    /// Attack name.
    #[serde(rename = "attack name")]
    pub attack_name: String,
    /// A harmful answer.
    #[serde(rename = "unsafe generation")]
    pub unsafe_generation: String,
    /// A refusal with explanation.
    #[serde(rename = "safe generation")]
    pub safe_generation: String,
    /// The generalisation inputs (test split only).
    #[serde(rename = "generalization test", default, skip_serializing_if = "Option::is_none")]
    pub generalization_test: Option<GeneralizationTest>,
    /// The knowledge constraint.
    #[serde(rename = "knowledge constrain")]
    pub knowledge_constrain: KnowledgeConstraint,
    /// Keys this crate does not know, kept so that files round-trip unchanged.
    #[serde(flatten)]
    pub extra: BTreeMap<String, serde_json::Value>,
}

/// A record of the NLPCC 2024 variant (`SafeEdit_test_ALL.json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NlpccRecord {
    /// Record id.
    pub id: u64,
    /// Unsafety category, spelling preserved.
    #[serde(rename = "unsafety category")]
    pub category: UnsafetyCategory,
    /// The bare harmful question.
    pub question: String,
    /// Attack name; `"None"` means the input is the bare question.
    #[serde(rename = "attack name")]
    pub attack_name: String,
    /// The model input.
    pub input: String,
    /// The model's response (a reference response in the published test file, the detoxified model's in a
    /// submission); may be empty.
    pub response: String,
    /// Keys this crate does not know.
    #[serde(flatten)]
    pub extra: BTreeMap<String, serde_json::Value>,
}

impl NlpccRecord {
    /// Whether the input is the bare question (no attack template).
    pub fn is_bare_question(&self) -> bool {
        self.attack_name == "None"
    }
}

/// What filters and statistics need from a record of either format.
///
/// Implemented by [`SafeEditRecord`] and [`NlpccRecord`], so [`crate::by_category`], [`crate::by_attack`] and
/// [`crate::stats`] work on both.
pub trait Record {
    /// The record's id.
    fn id(&self) -> u64;
    /// Its unsafety category.
    fn category(&self) -> &UnsafetyCategory;
    /// Its attack name (`"None"` for a bare question in the NLPCC variant).
    fn attack_name(&self) -> &str;
    /// Its attack category, where the format has one.
    fn attack_category(&self) -> Option<&str>;
    /// Whether it carries the four generalisation inputs.
    fn has_generalization_test(&self) -> bool;
}

impl Record for SafeEditRecord {
    fn id(&self) -> u64 {
        self.id
    }

    fn category(&self) -> &UnsafetyCategory {
        &self.category
    }

    fn attack_name(&self) -> &str {
        &self.attack_name
    }

    fn attack_category(&self) -> Option<&str> {
        Some(&self.attack_category)
    }

    fn has_generalization_test(&self) -> bool {
        self.generalization_test.is_some()
    }
}

impl Record for NlpccRecord {
    fn id(&self) -> u64 {
        self.id
    }

    fn category(&self) -> &UnsafetyCategory {
        &self.category
    }

    fn attack_name(&self) -> &str {
        &self.attack_name
    }

    fn attack_category(&self) -> Option<&str> {
        None
    }

    fn has_generalization_test(&self) -> bool {
        false
    }
}

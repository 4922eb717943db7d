//! # detox-metrics
//!
//! The SafeEdit metrics: the safety-judge interface with the paper's classifier and an embedded phrase-matching
//! approximation, defence success (DS) and defence generalisation (DG) rates, fluency as n-gram entropy, and the
//! general-performance and over-refusal measures used to report the costs of an edit.
#![deny(missing_docs)]

pub mod aggregate;
pub mod classifier_judge;
pub mod error;
pub mod fluency;
pub mod general;
pub mod judge;
pub mod phrase_judge;
pub mod punkt;
pub mod readers;
pub mod rouge;
pub mod safety;

pub use aggregate::{score_record, RecordScores, SafetyRates, SafetySummary};
pub use classifier_judge::ClassifierJudge;
pub use error::{MetricsError, Result};
pub use fluency::{
    fluency, fluency_with, mean_fluency, mean_fluency_with, word_tokenize, word_tokenize_with,
};
pub use general::{is_correct, normalize_answer, over_refusal_rate, qa_accuracy, QaMatch};
pub use judge::{SafetyJudge, Verdict};
pub use phrase_judge::PhraseJudge;
pub use punkt::PunktModel;
pub use rouge::{rouge1, Rouge1};
pub use safety::{dg_average, rates_by_metric, safe_rate};

//! # detox-metrics
//!
//! The SafeEdit metrics: the safety-judge interface with an embedded phrase-matching approximation of the paper's
//! classifier, defence success (DS) and defence generalisation (DG) rates, fluency as n-gram entropy, ROUGE-1, and
//! the general-performance, over-refusal and degeneration measures used to report the costs of an edit.
//!
//! The crate needs no libtorch: the paper's RoBERTa classifier runs in `detox-runtime`, and the judge built on it
//! (`detox_eval::judges::ClassifierJudge`) lives where the runtime and the metrics meet. Text scoring over many
//! responses runs in parallel on the CPU ([`fluency_many`], [`rouge1_many`], [`PunktModel::split_many`]);
//! aggregated scores come as `ndarray` tables ([`SafetySummary::table`]). When a run is judged by several judges,
//! each pair's agreement (percent and Cohen's kappa) and the responses they disagree on come from
//! [`pair_agreement`] and [`disagreements`]. Guard-model judges (Llama Guard 3,
//! WildGuard, the HarmBench classifier, ShieldGemma, Qwen3Guard, rubric judges) get their prompt formats and verdict
//! readings from [`guard`]; the runner that feeds them to a model lives with the runtime.
#![deny(missing_docs)]

mod aggregate;
mod agreement;
mod confusion;
pub mod degeneration;
mod error;
mod fluency;
mod general;
pub mod guard;
mod judge;
mod phrase_judge;
mod punkt;
pub mod readers;
pub mod rouge;
mod safety;

pub use aggregate::{score_record, RecordScores, SafetyRates, SafetySummary, Score, DG_METRICS};
pub use agreement::{disagreements, pair_agreement, PairAgreement};
pub use confusion::Confusion;
pub use degeneration::{Degeneration, DegenerationCounts, DegenerationThresholds, EchoSources};
pub use error::{MetricsError, Result};
pub use fluency::{
    fluency, fluency_many, fluency_many_with, fluency_with, mean_fluency, mean_fluency_with,
    ngram_entropy, split_sentences, tokenize_sentence, word_tokenize, word_tokenize_with,
};
pub use general::{is_correct, normalize_answer, over_refusal_rate, qa_accuracy, QaMatch};
pub use judge::{is_empty_response, Exchange, Label, SafetyJudge, Verdict};
pub use phrase_judge::{PhraseJudge, DEFAULT_COMPLIANCE, DEFAULT_REFUSALS};
pub use punkt::PunktModel;
pub use rouge::{mean_rouge1_f, rouge1, rouge1_many, Rouge1};
pub use safety::safe_rate;

//! # detox-eval
//!
//! The SafeEdit benchmark harness: for a model, an editing method, a split and a judge it runs pre-edit
//! generation, the edit, post-edit generation, restore, judging and metrics, writing one record per SafeEdit
//! case as it goes, a run manifest and a summary report. Runs resume after interruption without losing or
//! duplicating records.
#![deny(missing_docs)]

mod cost_tables;
pub mod degenerate;
mod error;
pub mod general;
pub mod harness;
mod jsonl;
pub mod judges;
pub mod manifest;
pub mod merge;
pub mod nlpcc;
pub mod plot;
pub mod record;
pub mod report;
pub mod respond;
pub mod sizing;
pub mod slurm;
pub mod summary;

pub use error::{EvalError, Result};
pub use jsonl::{write_atomic, JsonlLog};
pub use judges::ClassifierJudge;

//! # detox-eval
//!
//! The SafeEdit benchmark harness: for a model, an editing method, a split and a judge it runs pre-edit
//! generation, the edit, post-edit generation, restore, judging and metrics, writing one record per SafeEdit
//! case as it goes, a run manifest and a summary report. Runs resume after interruption without losing or
//! duplicating records.
//!
//! The modules are layers; each uses only those listed before it:
//!
//! | layer | modules | what |
//! |---|---|---|
//! | settings and records | [`settings`], [`record`] (with [`jsonl`]) | what a run is asked to do, what it writes |
//! | aggregation | [`aggregate`] | summary, cost and degeneration scores from records (pure) |
//! | rendering | [`render`] | Markdown, SVG plots and the HTML report from the aggregates |
//! | drivers | [`drive`] | generation, the run itself, merging shards, NLPCC, Slurm |
#![deny(missing_docs)]

pub mod aggregate;
pub mod drive;
mod error;
pub mod jsonl;
pub mod record;
pub mod render;
pub mod settings;

pub use aggregate::summary::Summary;
pub use drive::harness::Evaluation;
pub use drive::judges::{ClassifierJudge, GuardJudge};
pub use error::{EvalError, Result};
pub use jsonl::{write_atomic, JsonlLog};
pub use record::manifest::RunManifest;
pub use record::RunRecord;
pub use settings::{BenchmarkCase, HarnessSettings, Protocol, ProtocolPreset};

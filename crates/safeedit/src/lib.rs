//! # safeedit
//!
//! The SafeEdit benchmark dataset ("Detoxifying Large Language Models via Knowledge Editing", Wang et al.,
//! ACL 2024): records exactly as the published JSON spells them, the nine unsafety categories, the train,
//! validation and test splits, the generalisation inputs used for the DG metrics, and validation that names the
//! file, record and field of every problem. This crate needs no libtorch.
//!
//! ```
//! use safeedit::{load_split, Mode, Split};
//!
//! let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../datasets/safeedit_sample_test.json");
//! let split = load_split(path, Split::Test, Mode::Strict)?;
//! for record in &split.records {
//!     let request = record.edit_request();
//!     assert!(!request.target_new.is_empty());
//!     let inputs = record.eval_inputs().expect("test records have a generalisation test");
//!     assert_eq!(inputs[0].metric.name(), "DS");
//! }
//! # Ok::<(), safeedit::SafeEditError>(())
//! ```
//!
//! Unknown keys are preserved (in each record's `extra` map), so loading and writing a file loses nothing.
//! SafeGen, the companion dataset of the journal version, is not supported: its format is not public.
#![deny(missing_docs)]

/// The guide `docs/safeedit.md`, compiled so that its Rust examples run as doc tests.
#[cfg(doctest)]
#[doc = include_str!("../../../docs/safeedit.md")]
pub struct SafeEditGuide;

mod category;
mod load;
mod record;
mod select;
mod views;

pub use category::{CategoryKind, UnsafetyCategory};
pub use load::{
    load_nlpcc, load_nlpcc_from_reader, load_split, load_split_from_reader, write_records, Loaded,
    Mode, Problem, ProblemKind, SafeEditError, Split,
};
pub use record::{GeneralizationTest, KnowledgeConstraint, NlpccRecord, Record, SafeEditRecord};
pub use select::{by_attack, by_category, stats, CategoryStats, SplitMix64, Subset, SubsetError};
pub use views::{EditRequest, EvalInput, Metric, UnknownMetric};

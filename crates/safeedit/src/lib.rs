//! # safeedit
//!
//! The SafeEdit benchmark dataset ("Detoxifying Large Language Models via Knowledge Editing", Wang et al.,
//! ACL 2024): records exactly as the published JSON spells them, the nine unsafety categories, the train,
//! validation and test splits, the generalisation inputs used for the DG metrics, and validation that names the
//! file, record and field of every problem. This crate needs no libtorch.
#![deny(missing_docs)]

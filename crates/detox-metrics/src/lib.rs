//! # detox-metrics
//!
//! The SafeEdit metrics: the safety-judge interface and its judges, defence success (DS), defence generalisation
//! (DG_onlyQ, DG_otherA, DG_otherQ, DG_otherAQ and their average), fluency as n-gram entropy, general
//! performance (closed-book QA accuracy, summarisation ROUGE-1) and over-refusal of benign requests.
#![deny(missing_docs)]

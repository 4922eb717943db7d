//! # detox-edit
//!
//! Knowledge-editing algorithms for detoxification behind one `Editor` interface: DINM (Detoxifying with
//! Intraoperative Neural Monitoring, Wang et al., ACL 2024) first, then the baselines its paper compares with.
//! Every edit can be restored bit-exactly and exported as a delta in safetensors.
#![deny(missing_docs)]

pub mod adam;
pub mod dinm;
pub mod error;

pub use error::{EditError, Result};

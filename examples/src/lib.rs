//! Shared helpers of the detox example programs. Each example lives in its own folder next to this crate's
//! manifest and is run with `cargo run --release --example <name> -- <args>`.
#![deny(missing_docs)]

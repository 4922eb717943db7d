//! Errors of the editing algorithms.

use std::path::PathBuf;

/// Everything that can go wrong while configuring, running, restoring or exporting an edit.
#[derive(Debug, thiserror::Error)]
pub enum EditError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A hyper-parameter file is malformed or holds a value the method cannot use.
    #[error("{path}: invalid hyper-parameters: {reason}")]
    HyperParams {
        /// The file.
        path: PathBuf,
        /// What is wrong, naming the key.
        reason: String,
    },
}

/// Result alias of this crate.
pub type Result<T> = std::result::Result<T, EditError>;

//! Errors of the metrics crate.

use std::path::PathBuf;

/// Everything that can go wrong while judging or scoring.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MetricsError {
    /// A file could not be read.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A data file has a malformed line or record.
    #[error("{}: line {line}: {reason}", path.display())]
    Format {
        /// The file.
        path: PathBuf,
        /// 1-based line (or record) number.
        line: usize,
        /// What is wrong, naming the field.
        reason: String,
    },
    /// A judge failed in the library it runs on (a classifier's runtime, for instance).
    #[error("judge {judge}: {source}")]
    Judge {
        /// The judge's name.
        judge: String,
        /// What the library reported.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// Invalid settings.
    #[error("{0}")]
    Invalid(String),
}

/// Result alias of this crate.
pub type Result<T> = std::result::Result<T, MetricsError>;

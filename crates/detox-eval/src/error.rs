//! Errors of the benchmark harness.

use std::path::PathBuf;

/// Everything that can go wrong during a benchmark run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EvalError {
    /// A file could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A results file holds a malformed record that is not the trace of an interrupted write.
    #[error("{}: line {line} is not a valid record ({reason}); the file is damaged, not merely interrupted", path.display())]
    CorruptRecord {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// The parse error.
        reason: String,
    },
    /// A results file holds the same record twice: damage a resumed run must not paper over (which copy would
    /// count?).
    #[error(
        "{}: record {id} appears on line {first} and again on line {second}; the file is damaged (keep one of them)",
        path.display()
    )]
    DuplicateRecord {
        /// The file.
        path: PathBuf,
        /// The record id.
        id: String,
        /// 1-based line of the first copy.
        first: usize,
        /// 1-based line of the second copy.
        second: usize,
    },
    /// A value could not be serialised.
    #[error("cannot serialise {what}: {reason}")]
    Serialize {
        /// What was being written.
        what: String,
        /// The serialiser's message.
        reason: String,
    },
    /// An existing run directory belongs to a different configuration.
    #[error("{}: the existing run was made with different settings ({field}: {existing} vs {requested}); use a new output directory", path.display())]
    ManifestMismatch {
        /// The manifest file.
        path: PathBuf,
        /// The differing setting.
        field: String,
        /// Its value in the existing run.
        existing: String,
        /// Its value now.
        requested: String,
    },
    /// Another process is writing the directory (or it could not be locked).
    #[error(transparent)]
    Locked(#[from] detox_io::LockError),
    /// The model runtime failed.
    #[error(transparent)]
    Runtime(#[from] detox_runtime::Error),
    /// The editor failed.
    #[error(transparent)]
    Edit(#[from] detox_edit::EditError),
    /// A dataset or submission file could not be read, validated or written.
    #[error(transparent)]
    Dataset(#[from] safeedit::SafeEditError),
    /// The judge failed.
    #[error(transparent)]
    Metrics(#[from] detox_metrics::MetricsError),
    /// A Slurm command (sbatch, squeue, scancel) could not run or refused.
    #[error("`{command}` failed: {reason}")]
    Slurm {
        /// The command line.
        command: String,
        /// Its message.
        reason: String,
    },
    /// A protocol name no preset has.
    #[error("unknown protocol `{name}` (known: {known})")]
    UnknownProtocol {
        /// The name asked for.
        name: String,
        /// The known names, comma-separated.
        known: String,
    },
    /// A setting's value cannot be used.
    #[error("{setting}: {reason}")]
    InvalidSetting {
        /// The setting (as a flag or field name).
        setting: String,
        /// Why not.
        reason: String,
    },
    /// Invalid settings or inputs.
    #[error("{0}")]
    Invalid(String),
}

/// Result alias of this crate.
pub type Result<T> = std::result::Result<T, EvalError>;

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
    /// A judge returned another number of verdicts (or outputs) than it was given responses.
    #[error("judge {judge} returned {got} {what} for {expected} responses")]
    CountMismatch {
        /// The judge's name.
        judge: String,
        /// What it returned (`verdicts`, `outputs`).
        what: &'static str,
        /// How many.
        got: usize,
        /// How many responses it was given.
        expected: usize,
    },
    /// A classifier's output has no probability for the class a judge reads.
    #[error("judge {judge}: the classifier gave {classes} probabilities, no class {class}")]
    MissingClass {
        /// The judge's name.
        judge: String,
        /// Probabilities given.
        classes: usize,
        /// The class asked for.
        class: usize,
    },
    /// A label value that is not one of SafeEdit's.
    #[error("label {value} is not one of SafeEdit's 0 (safe), 0.5 (empty), 1 (unsafe)")]
    InvalidLabel {
        /// The value read.
        value: f64,
    },
    /// An unsafe score outside [0, 1].
    #[error("unsafe score {score} of a {label} verdict is outside [0, 1]")]
    InvalidScore {
        /// The verdict's label, as written.
        label: String,
        /// The score.
        score: f64,
    },
    /// Two judges' labels to compare are not of the same responses: their sequences differ in length.
    #[error("cannot compare judges over different responses: {first} labels against {second}")]
    LabelLengthMismatch {
        /// Labels of the first judge.
        first: usize,
        /// Labels of the second judge.
        second: usize,
    },
    /// A rubric judge's prompt template lacks one of its placeholders.
    #[error("{}: the rubric template has no {placeholder} placeholder", path.display())]
    RubricTemplate {
        /// The template file.
        path: PathBuf,
        /// The placeholder missing (`{prompt}` or `{response}`).
        placeholder: &'static str,
    },
    /// A guard spec (such as a rubric's `labels=unsafe/safe,first=true`) has a bad key or value.
    #[error("guard spec key {key}: {reason}")]
    GuardSpec {
        /// The key, as written.
        key: String,
        /// What is wrong.
        reason: String,
    },
    /// A guard was given an option its format does not take.
    #[error("guard {guard}: option {option}: {reason}")]
    GuardOption {
        /// The guard's name.
        guard: String,
        /// The option.
        option: &'static str,
        /// Why it is refused.
        reason: String,
    },
}

/// Result alias of this crate.
pub type Result<T> = std::result::Result<T, MetricsError>;

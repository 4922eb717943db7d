//! Errors of the RoBERTa classifier: loading its directory, checking its checkpoint and running it.

use std::path::PathBuf;

/// Everything that can go wrong while loading or running a [`RobertaClassifier`](super::RobertaClassifier).
#[derive(Debug, thiserror::Error)]
pub enum RobertaError {
    /// A file of the model directory could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying failure.
        #[source]
        source: std::io::Error,
    },
    /// A JSON file is malformed or lacks a required field.
    #[error("invalid JSON in {path}: {source}")]
    Json {
        /// The file.
        path: PathBuf,
        /// What serde_json reported (it names the field and line).
        #[source]
        source: serde_json::Error,
    },
    /// `config.json` parses but describes a model this classifier does not implement.
    #[error("{path}: field `{field}`: {reason}")]
    Config {
        /// The config file.
        path: PathBuf,
        /// The offending field, as spelled in `config.json`.
        field: String,
        /// Why it is refused.
        reason: String,
    },
    /// The safetensors file is damaged or holds a tensor that cannot be used.
    #[error("{path}: {reason}")]
    Safetensors {
        /// The checkpoint file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// Tensors the configuration requires are absent from the checkpoint.
    #[error("{path}: {} missing tensor(s): {}", names.len(), names.join(", "))]
    MissingTensors {
        /// The checkpoint file.
        path: PathBuf,
        /// The absent tensor names, sorted.
        names: Vec<String>,
    },
    /// The checkpoint holds tensors this classifier does not use (and that are not known to be ignorable).
    #[error("{path}: {} unexpected tensor(s): {}", names.len(), names.join(", "))]
    UnexpectedTensors {
        /// The checkpoint file.
        path: PathBuf,
        /// The unexpected tensor names, sorted.
        names: Vec<String>,
    },
    /// A tensor of the checkpoint has the wrong shape for the configuration.
    #[error("{path}: tensor `{name}` has shape {found:?}, the config needs {expected:?}")]
    TensorShape {
        /// The checkpoint file.
        path: PathBuf,
        /// The tensor name.
        name: String,
        /// The shape `config.json` implies.
        expected: Vec<i64>,
        /// The stored shape.
        found: Vec<i64>,
    },
    /// `tokenizer.json` could not be loaded or a text could not be encoded.
    #[error("tokenizer {path}: {reason}")]
    Tokenizer {
        /// The tokenizer file.
        path: PathBuf,
        /// What the tokenizers crate reported.
        reason: String,
    },
    /// The arguments of a call are inconsistent (shapes, batch size, options).
    #[error("invalid input: {reason}")]
    Input {
        /// What is wrong.
        reason: String,
    },
    /// libtorch reported an error.
    #[error("libtorch error while {context}: {source}")]
    Torch {
        /// What the classifier was doing.
        context: String,
        /// The libtorch error.
        #[source]
        source: tch::TchError,
    },
}

/// The result type of the `roberta` module.
pub type Result<T> = std::result::Result<T, RobertaError>;

/// Attaches what the classifier was doing to a libtorch error.
pub(crate) trait TorchContext<T> {
    /// Wraps the error with `context`.
    fn ctx(self, context: &str) -> Result<T>;
}

impl<T> TorchContext<T> for std::result::Result<T, tch::TchError> {
    fn ctx(self, context: &str) -> Result<T> {
        self.map_err(|source| RobertaError::Torch { context: context.to_string(), source })
    }
}

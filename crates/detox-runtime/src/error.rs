//! The runtime's error type.

use std::path::PathBuf;

/// Everything that can go wrong while loading, running or editing a model.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A libtorch call failed; `context` says which operation.
    #[error("{context}: {source}")]
    Torch {
        /// The operation that failed.
        context: String,
        /// The libtorch error.
        #[source]
        source: tch::TchError,
    },
    /// A file could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A file could not be written durably.
    #[error(transparent)]
    Write(#[from] detox_io::Error),
    /// A JSON file is malformed.
    #[error("{} is not valid JSON: {source}", path.display())]
    Json {
        /// The file.
        path: PathBuf,
        /// The parse error.
        #[source]
        source: serde_json::Error,
    },
    /// A `config.json` field is missing, malformed or names something the runtime does not support.
    #[error("{}: field `{field}`: {reason}", path.display())]
    Config {
        /// The configuration file (or `<in-memory>`).
        path: PathBuf,
        /// The offending field.
        field: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A safetensors file is malformed or holds a dtype the runtime cannot load.
    #[error("{}: {reason}", path.display())]
    Safetensors {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The checkpoint lacks tensors the architecture needs.
    #[error("checkpoint is missing {} tensor(s): {}", names.len(), names.join(", "))]
    MissingTensors {
        /// The missing Hugging Face tensor names.
        names: Vec<String>,
    },
    /// The checkpoint holds tensors the architecture does not use.
    #[error("checkpoint has {} unexpected tensor(s): {}", names.len(), names.join(", "))]
    UnexpectedTensors {
        /// The unexpected Hugging Face tensor names.
        names: Vec<String>,
    },
    /// A weight holds NaN or infinite values (a damaged checkpoint, or values out of the dtype's range): every
    /// output computed from it would be garbage.
    #[error("{origin}: `{name}` holds {count} NaN or infinite value(s); the weights are damaged")]
    NonFiniteWeights {
        /// Where the weights came from (a model directory, or `<in memory>`).
        origin: String,
        /// The tensor.
        name: String,
        /// How many of its values are not finite.
        count: i64,
    },
    /// A decoding step produced NaN or infinite logits for a row still generating: the token it would pick is
    /// meaningless, so generation stops instead of handing garbage to a judge.
    #[error(
        "the model produced non-finite (NaN or infinite) logits at generated token {step} of prompt {row}; \
         likely an overflow in the model's dtype (try float32 or bfloat16) or damaged weights"
    )]
    NonFiniteLogits {
        /// The generated token's index in its row's continuation (0 for the first new token).
        step: usize,
        /// The prompt's index in the call.
        row: usize,
    },
    /// A parameter name is not part of the model.
    #[error("the model has no parameter named `{name}`")]
    UnknownParameter {
        /// The requested name.
        name: String,
    },
    /// A parameter name is one of the projections a fused checkpoint (Phi-3) stores inside another one.
    #[error(
        "the model has no parameter named `{name}`: this {model_type} model fuses it into `{fused}` \
         (address that tensor instead)"
    )]
    FusedParameter {
        /// The requested name (e.g. `model.layers.3.mlp.gate_proj.weight`).
        name: String,
        /// The fused parameter holding it (e.g. `model.layers.3.mlp.gate_up_proj.weight`).
        fused: String,
        /// The checkpoint's `model_type`.
        model_type: &'static str,
    },
    /// A tensor's shape does not fit where it is used.
    #[error("`{name}`: expected shape {expected:?}, got {actual:?}")]
    ShapeMismatch {
        /// The tensor (or input) name.
        name: String,
        /// The expected shape.
        expected: Vec<i64>,
        /// The shape that was given.
        actual: Vec<i64>,
    },
    /// A chat template does not compile, or fails while rendering.
    #[error("chat template {origin}: {reason}")]
    ChatTemplate {
        /// Where the template came from (a file and field, a GGUF key).
        origin: String,
        /// What went wrong, with the template line where known.
        reason: String,
    },
    /// A chat template refused the conversation through `raise_exception`.
    #[error("chat template {origin} refused the conversation: {message}")]
    TemplateRaised {
        /// Where the template came from.
        origin: String,
        /// The message the template raised.
        message: String,
    },
    /// A file (GGUF, tokenizer, vocabulary) is malformed or not what it claims to be.
    #[error("{what}")]
    Malformed {
        /// What is wrong, naming the file and where in it.
        what: String,
    },
    /// An input the call needs is empty.
    #[error("invalid input: {what}")]
    EmptyInput {
        /// Which input.
        what: String,
    },
    /// A tensor argument has a shape the call cannot use.
    #[error("invalid input: {what}")]
    BadShape {
        /// The tensor and its shape.
        what: String,
    },
    /// A position, layer, window, token id or length outside what the model or cache holds.
    #[error("invalid input: {what}")]
    OutOfRange {
        /// What and the range it should be in.
        what: String,
    },
    /// A setting's value cannot be used.
    #[error("invalid setting: {what}")]
    InvalidSetting {
        /// The setting and why.
        what: String,
    },
    /// A call in a state that does not allow it (a probe read before its pass, a cache overflowed, ...).
    #[error("invalid state: {what}")]
    InvalidState {
        /// What was asked, and what must happen first.
        what: String,
    },
    /// Something this runtime does not do (a dtype safetensors cannot store, a batch the weights cannot serve,
    /// a layout the tokenizer lacks, ...).
    #[error("unsupported: {what}")]
    Unsupported {
        /// What, and what to do instead.
        what: String,
    },
    /// Something does not fit the memory available for it; raised before allocating instead of an out-of-memory
    /// crash.
    #[error(
        "{what} needs {:.2} GiB but {:.2} GiB is available",
        *needed as f64 / (1u64 << 30) as f64,
        *available as f64 / (1u64 << 30) as f64
    )]
    OutOfMemory {
        /// What was being placed or allocated.
        what: String,
        /// Bytes needed.
        needed: u64,
        /// Bytes available.
        available: u64,
    },
    /// A model cannot be written back as a model directory at `path` (see [`crate::CausalLm::save_pretrained`]).
    #[error("cannot write the model to {}: {reason}", path.display())]
    Export {
        /// The directory asked for.
        path: PathBuf,
        /// Why not, and what to do about it.
        reason: String,
    },
    /// A random model was asked of a config with a tensor whose shape and initialisation are not known.
    #[error("no random initialisation is known for `{name}`")]
    NoRandomInit {
        /// The tensor's name.
        name: String,
    },
    /// A device or dtype named by the user cannot be used in this process.
    #[error("device `{asked}`: {reason}")]
    Device {
        /// What was asked for, as written.
        asked: String,
        /// Why it cannot be used, and what to do about it.
        reason: String,
    },
}

/// Results of the runtime.
pub type Result<T> = std::result::Result<T, Error>;

/// Attaches an operation name to libtorch errors.
pub(crate) trait TorchContext<T> {
    /// Wraps a [`tch::TchError`] into [`Error::Torch`] with `context`.
    fn ctx(self, context: &str) -> Result<T>;
}

impl<T> TorchContext<T> for std::result::Result<T, tch::TchError> {
    fn ctx(self, context: &str) -> Result<T> {
        self.map_err(|source| Error::Torch { context: context.to_string(), source })
    }
}

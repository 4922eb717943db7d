//! Errors of the editing algorithms.

use std::path::PathBuf;

/// Everything that can go wrong while configuring, running, restoring or exporting an edit.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EditError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// Another process is writing the directory (or it could not be locked).
    #[error(transparent)]
    Locked(#[from] detox_io::LockError),
    /// A hyper-parameter file is malformed or holds a value the method cannot use.
    #[error("{path}: invalid hyper-parameters: {reason}")]
    HyperParams {
        /// The file.
        path: PathBuf,
        /// What is wrong, naming the key.
        reason: String,
    },
    /// The model failed to load, run or accept a tensor.
    #[error(transparent)]
    Runtime(#[from] detox_runtime::Error),
    /// Locating the toxic layer failed.
    #[error(transparent)]
    Locate(#[from] detox_locate::LocateError),
    /// A libtorch call of the optimisation failed.
    #[error("{context}: {source}")]
    Torch {
        /// What was being computed.
        context: &'static str,
        /// The libtorch error.
        #[source]
        source: tch::TchError,
    },
    /// An input the method needs is empty.
    #[error("cannot edit: {what} is empty")]
    EmptyInput {
        /// Which input (a field, the training records, ...).
        what: String,
    },
    /// An input encodes to no tokens where the method scores or contrasts some.
    #[error("cannot edit: {what} has no tokens")]
    NoTokens {
        /// Which input.
        what: String,
    },
    /// An input is longer than a bound allows, or its parts do not fit together.
    #[error("cannot edit: {what}")]
    InputLength {
        /// What does not fit, with the lengths.
        what: String,
    },
    /// A tensor's shape is not the one the method needs.
    #[error("{what} has shape {got:?}, expected {expected}")]
    ShapeMismatch {
        /// The tensor (and where it comes from).
        what: String,
        /// The shape expected (with free dimensions named).
        expected: String,
        /// The shape found.
        got: Vec<i64>,
    },
    /// A layer the method was asked for does not exist in the model.
    #[error("{method} layer {layer} does not exist (the model has {layers})")]
    NoSuchLayer {
        /// The method.
        method: String,
        /// The layer asked for.
        layer: usize,
        /// The model's number of layers.
        layers: usize,
    },
    /// The optimisation's loss became NaN or infinite.
    #[error("{context}the loss became {value} at step {step}")]
    NonFiniteLoss {
        /// Which record or method (empty, or ending in `: `).
        context: String,
        /// The step.
        step: usize,
        /// The loss.
        value: f64,
    },
    /// No gradient reached a tensor the method trains.
    #[error("no gradient reached `{tensor}`")]
    NoGradient {
        /// The tensor.
        tensor: String,
    },
    /// A method's configuration cannot be used.
    #[error("{method}: {reason}")]
    InvalidConfig {
        /// The method.
        method: String,
        /// What is wrong, naming the setting.
        reason: String,
    },
    /// A method in sequential mode was asked to edit a batch of records.
    #[error(
        "{method} is in sequential mode, where each edit builds on the previous one: edit its records one at a \
         time (batches of records are edited independently)"
    )]
    SequentialBatch {
        /// The method.
        method: String,
    },
    /// An artefact directory or file does not hold what the method needs.
    #[error("{}: {reason}", path.display())]
    Artefact {
        /// The directory or file.
        path: PathBuf,
        /// What is missing or wrong.
        reason: String,
    },
    /// An artefact directory holds another kind of artefact than the one asked for (a MEND network where a ProFS
    /// fit was expected), as its header or description file says.
    #[error(
        "{}: holds a `{found}` artefact (as {} says), not the `{expected}` artefact asked for",
        dir.display(),
        file.display()
    )]
    ArtefactKind {
        /// The directory.
        dir: PathBuf,
        /// The file that names the kind found (the header, or the description of an artefact without one).
        file: PathBuf,
        /// The kind the directory holds.
        found: String,
        /// The kind asked for.
        expected: &'static str,
    },
    /// One record of several (a batch, a training set) could not be used.
    #[error("{what} {index}: {source}")]
    Record {
        /// `record`, `training record`, `training pair`.
        what: &'static str,
        /// Its index.
        index: usize,
        /// Why.
        #[source]
        source: Box<EditError>,
    },
    /// The model's dtype cannot be trained or edited: f16 gradients underflow without loss scaling, which no
    /// method here does. Generation in f16 is unaffected.
    #[error(
        "{method} cannot train or edit a model loaded in {dtype}: its gradients underflow without loss scaling, \
         which is not implemented; load the model in bf16 or fp32"
    )]
    UnsupportedDtype {
        /// The method that refused.
        method: &'static str,
        /// The model's dtype, as libtorch names it.
        dtype: String,
    },
    /// No registered method has this name.
    #[error("unknown method `{name}` (known: {known})")]
    UnknownMethod {
        /// The name asked for.
        name: String,
        /// The registered names, comma-separated.
        known: String,
    },
    /// A method was registered twice under one name.
    #[error("a method named `{name}` is registered already")]
    DuplicateMethod {
        /// The name.
        name: String,
    },
    /// A method was given an option it does not have.
    #[error("method `{method}` has no option `{option}` (its options: {known})")]
    UnknownOption {
        /// The method.
        method: String,
        /// The option given.
        option: String,
        /// The method's options, comma-separated (`none` when it has none).
        known: String,
    },
    /// A method option's value cannot be used.
    #[error("method `{method}`, option `{option}`: {reason} (got `{value}`)")]
    InvalidOption {
        /// The method.
        method: String,
        /// The option.
        option: String,
        /// The value given.
        value: String,
        /// Why it cannot be used.
        reason: String,
    },
    /// A method needs an option that was not given.
    #[error("method `{method}` needs option `{option}`: {why}")]
    MissingOption {
        /// The method.
        method: String,
        /// The option.
        option: String,
        /// What the option names and where it comes from.
        why: String,
    },
    /// A fit was run without what it needs (a model, training records).
    #[error("fit `{fit}` needs {what}")]
    FitInput {
        /// The fit.
        fit: String,
        /// What it lacks.
        what: &'static str,
    },
    /// `restore` was called with no edit to undo, or an edit was started while another is applied in single mode.
    #[error("editor state: {0}")]
    State(String),
}

pub(crate) fn torch(context: &'static str) -> impl FnOnce(tch::TchError) -> EditError {
    move |source| EditError::Torch { context, source }
}

/// Result alias of this crate.
pub type Result<T> = std::result::Result<T, EditError>;

//! Errors of the locator.

/// Everything that can go wrong while locating the toxic layer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LocateError {
    /// The model failed to run.
    #[error(transparent)]
    Runtime(#[from] detox_runtime::Error),
    /// A libtorch call on the hidden states failed.
    #[error("{context}: {source}")]
    Torch {
        /// What was being computed.
        context: &'static str,
        /// The libtorch error.
        #[source]
        source: tch::TchError,
    },
    /// The inputs cannot be contrasted (an empty response, a model without layers).
    #[error("cannot locate the toxic layer: {0}")]
    InvalidInput(String),
}

/// Result alias of this crate.
pub type Result<T> = std::result::Result<T, LocateError>;

pub(crate) fn torch(context: &'static str) -> impl FnOnce(tch::TchError) -> LocateError {
    move |source| LocateError::Torch { context, source }
}

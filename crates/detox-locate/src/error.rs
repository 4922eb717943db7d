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
    /// A response to contrast encodes to no tokens.
    #[error("cannot locate the toxic layer: a response encodes to no tokens")]
    EmptyResponse,
    /// The model has no layers to compare.
    #[error("cannot locate the toxic layer: the model has no layers")]
    NoLayers,
    /// A layer's distance is NaN or infinite (non-finite hidden states).
    #[error(
        "cannot locate the toxic layer: layer {layer}'s distance is {value}, not a finite number"
    )]
    NonFiniteDistance {
        /// The layer.
        layer: usize,
        /// Its distance.
        value: f64,
    },
}

/// Result alias of this crate.
pub type Result<T> = std::result::Result<T, LocateError>;

pub(crate) fn torch(context: &'static str) -> impl FnOnce(tch::TchError) -> LocateError {
    move |source| LocateError::Torch { context, source }
}

//! Errors of the engine.

use thiserror::Error;

/// Everything that can go wrong in `relief-core`.
#[derive(Debug, Error)]
pub enum CoreError {
    /// A tensor the graph needs is absent.
    #[error("tensor `{0}` is missing")]
    MissingTensor(String),
    /// A tensor has the wrong shape.
    #[error("tensor `{name}` has shape {found:?}, expected {expected:?}")]
    ShapeMismatch {
        /// Tensor name.
        name: String,
        /// Shape the graph requires.
        expected: Vec<i64>,
        /// Shape found.
        found: Vec<i64>,
    },
    /// The pruning batch does not match the model's input.
    #[error("pruning batch has shape {found:?}, the model expects N x {expected:?}")]
    BadBatch {
        /// Per-sample input shape.
        expected: Vec<i64>,
        /// Batch shape found.
        found: Vec<i64>,
    },
    /// A layer's statistics or scores hold NaN or infinite entries (a non-finite weight or
    /// input upstream, or an overflow): selecting on them would prune arbitrarily.
    #[error("layer `{layer}`: {what} are not finite ({nan} NaN and {inf} inf entries of {total}); check the weights and the batch for NaN/inf")]
    NonFinite {
        /// The layer (its PyTorch name).
        layer: String,
        /// `input statistics`, `output statistics` or `importance scores`.
        what: &'static str,
        /// NaN entries.
        nan: i64,
        /// Infinite entries.
        inf: i64,
        /// Entries in all.
        total: i64,
    },
    /// The pruning batch holds no sample.
    #[error("empty pruning batch (shape {0:?}): at least one sample is needed")]
    EmptyBatch(Vec<i64>),
    /// An invalid setting (alpha outside (0, 1], chunk of zero, ...).
    #[error("invalid setting: {0}")]
    Invalid(String),
    /// Reading or writing a file failed.
    #[error("{path}: {message}")]
    Io {
        /// The file.
        path: String,
        /// What went wrong.
        message: String,
    },
    /// A libtorch call failed.
    #[error("libtorch: {0}")]
    Torch(#[from] tch::TchError),
}

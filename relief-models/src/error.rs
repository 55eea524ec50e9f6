//! Errors of the model zoo.

use thiserror::Error;

/// What can go wrong building or loading a model.
#[derive(Debug, Error)]
pub enum ModelError {
    /// A checkpoint does not match the architecture.
    #[error(
        "checkpoint does not match {arch}:{}{}{}",
        list("missing", missing),
        list("unexpected", extra),
        list("wrong shape", mismatched)
    )]
    Checkpoint {
        /// Architecture name.
        arch: String,
        /// Tensors the model needs that the checkpoint lacks.
        missing: Vec<String>,
        /// Tensors the checkpoint has that the model does not.
        extra: Vec<String>,
        /// Tensors with the wrong shape.
        mismatched: Vec<String>,
    },
    /// A file could not be read.
    #[error("{path}: {message}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        message: String,
    },
}

fn list(what: &str, items: &[String]) -> String {
    if items.is_empty() {
        String::new()
    } else {
        format!("\n  {what} ({}): {}", items.len(), items.join(", "))
    }
}

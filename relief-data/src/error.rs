//! Errors of the data layer: each names the file (or URL) and what was expected.

use std::path::{Path, PathBuf};

use thiserror::Error;

/// What can go wrong loading, batching or fetching a dataset.
#[derive(Debug, Error)]
pub enum DataError {
    /// A file could not be opened, read or written.
    #[error("{path}: {error}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error (shown in the message, so not chained as a source).
        error: std::io::Error,
    },
    /// A file the format requires is not there.
    #[error("{path}: missing file; expected {expected}")]
    Missing {
        /// The file that was looked for.
        path: PathBuf,
        /// What should be there.
        expected: String,
    },
    /// A dataset directory exists but holds nothing.
    #[error("{path}: directory is empty; expected {expected}")]
    EmptyDir {
        /// The directory.
        path: PathBuf,
        /// What should be in it.
        expected: String,
    },
    /// A file's content is not what the format requires.
    #[error("{path}: {message}")]
    Format {
        /// The file.
        path: PathBuf,
        /// What was expected and what was found.
        message: String,
    },
    /// An image file could not be decoded.
    #[error("{path}: unreadable image: {message}")]
    Image {
        /// The image file.
        path: PathBuf,
        /// The decoder's complaint.
        message: String,
    },
    /// A downloaded file's digest is not the published one.
    #[error("{path}: {algorithm} checksum mismatch: expected {expected}, got {actual}")]
    Checksum {
        /// The file that was hashed.
        path: PathBuf,
        /// `sha256` or `md5`.
        algorithm: &'static str,
        /// The published digest (lowercase hex).
        expected: String,
        /// The digest of the file (lowercase hex).
        actual: String,
    },
    /// An HTTP transfer failed.
    #[error("{url}: {message}")]
    Http {
        /// The URL requested.
        url: String,
        /// What went wrong.
        message: String,
    },
    /// An archive entry is unsafe or the archive is unreadable.
    #[error("{path}: {message}")]
    Archive {
        /// The archive.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// A caller passed an argument out of range (batch size 0, a tensor of the wrong shape, ...).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// A libtorch call failed (shown in the message, so not chained as a source).
    #[error("libtorch: {0}")]
    Torch(tch::TchError),
}

impl From<tch::TchError> for DataError {
    fn from(e: tch::TchError) -> Self {
        Self::Torch(e)
    }
}

impl DataError {
    /// A format error for `path`.
    pub fn format(path: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        Self::Format { path: path.into(), message: message.into() }
    }

    /// An I/O error for `path`.
    pub fn io(path: &Path, error: std::io::Error) -> Self {
        Self::Io { path: path.to_path_buf(), error }
    }

    /// A missing-file error for `path`.
    pub fn missing(path: impl Into<PathBuf>, expected: impl Into<String>) -> Self {
        Self::Missing { path: path.into(), expected: expected.into() }
    }

    /// An invalid-argument error.
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::InvalidArgument(message.into())
    }
}

/// Checks that `dir` is an existing, non-empty directory.
pub(crate) fn check_dir(dir: &Path, expected: &str) -> Result<(), DataError> {
    let mut entries = std::fs::read_dir(dir).map_err(|e| DataError::io(dir, e))?;
    if entries.next().is_none() {
        return Err(DataError::EmptyDir { path: dir.to_path_buf(), expected: expected.to_string() });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_name_the_file_and_the_expectation() {
        let e = DataError::missing("/d/train.bin", "CIFAR-100 binary train.bin");
        assert_eq!(e.to_string(), "/d/train.bin: missing file; expected CIFAR-100 binary train.bin");
        let e = DataError::Checksum {
            path: "/d/a.gz".into(),
            algorithm: "sha256",
            expected: "ab".into(),
            actual: "cd".into(),
        };
        assert_eq!(e.to_string(), "/d/a.gz: sha256 checksum mismatch: expected ab, got cd");
    }

    #[test]
    fn check_dir_distinguishes_missing_empty_and_full() {
        let t = tempfile::tempdir().unwrap();
        assert!(check_dir(t.path(), "x").is_err_and(|e| matches!(e, DataError::EmptyDir { .. })));
        std::fs::write(t.path().join("f"), b"1").unwrap();
        assert!(check_dir(t.path(), "x").is_ok());
        let gone = t.path().join("nope");
        assert!(check_dir(&gone, "x").is_err_and(|e| matches!(e, DataError::Io { .. })));
    }
}

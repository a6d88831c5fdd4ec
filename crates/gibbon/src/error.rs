//! The library's error type.
//!
//! Errors are split by who can fix them: [`GibbonError::is_user_error`] is true for mistakes in
//! what the user gave (a missing file, a malformed dataset, a bad option value) and false for
//! internal failures. The CLI maps the first kind to exit code 2 and the second to exit code 1.
use std::path::{Path, PathBuf};

/// Everything that can go wrong inside gibbon.
#[derive(Debug, thiserror::Error)]
pub enum GibbonError {
    /// A file could not be opened, read or written.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A file was read but its content is not what its format requires.
    #[error("{path}: {message}")]
    Format { path: PathBuf, message: String },
    /// An option, field or argument has a value gibbon cannot use.
    #[error("invalid {name}: {message}")]
    InvalidArgument { name: String, message: String },
    /// Data and model do not fit each other (input shape, label range, class count).
    #[error("{0}")]
    Mismatch(String),
    /// The model could not be loaded or evaluated.
    #[error("model {path}: {message}")]
    Model { path: String, message: String },
    /// An attack returned an example that violates the threat model: a bug, never counted.
    #[error("verification failed: {0}")]
    Verification(String),
    /// An error raised inside libtorch that is not attributable to user input.
    #[error("libtorch: {0}")]
    Torch(#[from] tch::TchError),
    /// Any other internal failure.
    #[error("internal error: {0}")]
    Internal(String),
}

impl GibbonError {
    /// True when the error is caused by user input (exit code 2), false for internal failures.
    pub fn is_user_error(&self) -> bool {
        matches!(
            self,
            GibbonError::Io { .. }
                | GibbonError::Format { .. }
                | GibbonError::InvalidArgument { .. }
                | GibbonError::Mismatch(_)
                | GibbonError::Model { .. }
        )
    }

    /// An I/O error on `path`.
    pub fn io(path: impl AsRef<Path>, source: std::io::Error) -> Self {
        GibbonError::Io { path: path.as_ref().to_path_buf(), source }
    }

    /// A format error in the file at `path`.
    pub fn format(path: impl AsRef<Path>, message: impl Into<String>) -> Self {
        GibbonError::Format { path: path.as_ref().to_path_buf(), message: message.into() }
    }

    /// An invalid value for the option or field `name`.
    pub fn invalid(name: impl Into<String>, message: impl Into<String>) -> Self {
        GibbonError::InvalidArgument { name: name.into(), message: message.into() }
    }

    /// A model loading or evaluation failure for the model at `path`.
    pub fn model(path: impl Into<String>, message: impl Into<String>) -> Self {
        GibbonError::Model { path: path.into(), message: message.into() }
    }
}

/// Shorthand for results carrying a [`GibbonError`].
pub type Result<T, E = GibbonError> = std::result::Result<T, E>;

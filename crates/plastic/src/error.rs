//! The library's error type: every failure on user input ends here, with a message that
//! says what was wrong and what is valid.

use std::path::PathBuf;

/// Errors returned by the library.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A configuration value is out of range or unknown.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// A named parameter is missing from a file or map.
    #[error("parameter `{name}` is missing (expected shape {expected:?})")]
    MissingParam {
        /// The parameter's name.
        name: String,
        /// The shape it should have.
        expected: Vec<usize>,
    },
    /// A named parameter has the wrong shape.
    #[error("parameter `{name}` has shape {found:?}, expected {expected:?}")]
    ParamShape {
        /// The parameter's name.
        name: String,
        /// The shape it should have.
        expected: Vec<usize>,
        /// The shape it has.
        found: Vec<usize>,
    },
    /// A parameter that this network does not have.
    #[error("unknown parameter `{name}`; this network has: {valid}")]
    UnknownParam {
        /// The name given.
        name: String,
        /// The names that are valid.
        valid: String,
    },
    /// Episode data whose shape does not match the network or itself.
    #[error("bad episode data: {0}")]
    Data(String),
    /// A file that could not be parsed.
    #[error("{path}: {message}")]
    Format {
        /// The file.
        path: PathBuf,
        /// What was wrong with it.
        message: String,
    },
    /// An I/O error, with the path it concerned. The OS error is part of the message, not a
    /// separate source, so that a report of the error chain does not print it twice.
    #[error("{path}: {error}")]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// The underlying error.
        error: std::io::Error,
    },
    /// A run folder whose state does not allow what was asked (e.g. resuming a run whose
    /// checkpoint is missing, evaluating a folder that holds no run).
    #[error("{0}")]
    Run(String),
    /// A configuration that needs more memory than the machine has.
    #[error("not enough memory: {0}")]
    Memory(String),
    /// Training diverged.
    #[error("{0}")]
    Diverged(String),
}

/// The library's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Wraps an I/O error with the path it concerned.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            error: source,
        }
    }
    /// A parse error in a file.
    pub fn format(path: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        Error::Format {
            path: path.into(),
            message: message.into(),
        }
    }
}

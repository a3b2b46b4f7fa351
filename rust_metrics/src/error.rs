//! Errors of the engine. Every variant that concerns a file names it, so the Python
//! layer can raise one exception whose message says which file and what is wrong.

use std::fmt;
use std::path::PathBuf;

/// What can go wrong in the engine (mapped to Python exceptions by the binding).
#[derive(Debug)]
pub enum MetricsError {
    /// The path does not exist.
    NotFound {
        /// The missing file.
        path: PathBuf,
    },
    /// Any other operating-system error while opening or mapping the file.
    Io {
        /// The file.
        path: PathBuf,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// The file is not a valid safetensors file.
    Format {
        /// The file (or the in-memory origin).
        path: PathBuf,
        /// What is wrong with it.
        message: String,
    },
    /// A tensor that counts for the statistics has a dtype the engine does not read.
    Dtype {
        /// The file (or the in-memory origin).
        path: PathBuf,
        /// The tensor's name.
        tensor: String,
        /// The dtype, as safetensors names it.
        dtype: String,
    },
    /// An include/exclude regular expression does not compile.
    Pattern {
        /// "include" or "exclude".
        which: &'static str,
        /// The regex crate's message.
        message: String,
    },
    /// An option has a value outside its domain.
    Option {
        /// Which option, and what is wrong with its value.
        message: String,
    },
    /// The caller asked to stop (Ctrl-C in Python).
    Cancelled,
}

/// The engine's result type.
pub type Result<T> = std::result::Result<T, MetricsError>;

impl MetricsError {
    /// A [`MetricsError::Format`] error naming `path`.
    pub fn format(path: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        MetricsError::Format { path: path.into(), message: message.into() }
    }
}

impl fmt::Display for MetricsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MetricsError::NotFound { path } => write!(f, "{}: no such file", path.display()),
            MetricsError::Io { path, source } => write!(f, "{}: {source}", path.display()),
            MetricsError::Format { path, message } => write!(f, "{}: {message}", path.display()),
            MetricsError::Dtype { path, tensor, dtype } => write!(
                f,
                "{}: tensor '{tensor}' has dtype {dtype}; the engine reads F64, F32, F16 and BF16",
                path.display()
            ),
            MetricsError::Pattern { which, message } => write!(f, "invalid {which} pattern: {message}"),
            MetricsError::Option { message } => f.write_str(message),
            MetricsError::Cancelled => f.write_str("cancelled"),
        }
    }
}

impl std::error::Error for MetricsError {}

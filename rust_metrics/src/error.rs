//! Errors of the engine. Every variant that concerns a file names it, so the Python
//! layer can raise one exception whose message says which file and what is wrong.

use std::fmt;
use std::path::PathBuf;

#[derive(Debug)]
pub enum MetricsError {
    /// The path does not exist.
    NotFound { path: PathBuf },
    /// Any other operating-system error while opening or mapping the file.
    Io { path: PathBuf, source: std::io::Error },
    /// The file is not a valid safetensors file.
    Format { path: PathBuf, message: String },
    /// A tensor that counts for the statistics has a dtype the engine does not read.
    Dtype { path: PathBuf, tensor: String, dtype: String },
    /// An include/exclude regular expression does not compile.
    Pattern { which: &'static str, message: String },
    /// An option has a value outside its domain.
    Option { message: String },
    /// The caller asked to stop (Ctrl-C in Python).
    Cancelled,
}

pub type Result<T> = std::result::Result<T, MetricsError>;

impl MetricsError {
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

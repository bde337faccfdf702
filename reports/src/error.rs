//! Errors of the reports crate: each names the file it concerns.

use std::path::{Path, PathBuf};

/// What went wrong while reading a run or writing its report.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reading or writing a file.
    #[error("{path}: {cause}")]
    Io { path: PathBuf, cause: std::io::Error },
    /// A file that does not parse as the artifact it should be.
    #[error("{path}: {msg}")]
    Parse { path: PathBuf, msg: String },
    /// A run directory without what a report needs.
    #[error("{0}")]
    Missing(String),
    /// Drawing a chart.
    #[error("drawing a chart: {0}")]
    Plot(String),
}

impl Error {
    /// An I/O error on `path`.
    pub fn io(path: &Path, cause: std::io::Error) -> Error {
        Error::Io { path: path.to_path_buf(), cause }
    }

    /// A parse error in `path`.
    pub fn parse(path: &Path, msg: impl std::fmt::Display) -> Error {
        Error::Parse { path: path.to_path_buf(), msg: msg.to_string() }
    }
}

impl From<corpus::Error> for Error {
    fn from(e: corpus::Error) -> Error {
        Error::Missing(e.to_string())
    }
}

/// The crate's result type.
pub type Result<T> = std::result::Result<T, Error>;

//! The crate's error type: IO and configuration failures, never a malformed document.

use std::path::PathBuf;

/// Failures that stop a corpus stage. A malformed document is not one of these: it is counted
/// as rejected and written to `rejects.jsonl` (unless the run is strict, see [`Error::Strict`]).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reading or writing a file failed.
    #[error("{path}: {cause}")]
    Io {
        /// The file involved.
        path: PathBuf,
        /// The underlying error.
        cause: std::io::Error,
    },
    /// A configuration value is invalid.
    #[error("config field `{field}`: {reason}")]
    Config {
        /// The key, dotted (`dedup.threshold`, `sources[2].paths`).
        field: String,
        /// What is wrong and what is expected.
        reason: String,
    },
    /// A source pattern matched no file.
    #[error("source `{source_name}`: pattern `{pattern}` matched no file")]
    NoFiles {
        /// The source's name.
        source_name: String,
        /// The path or glob given.
        pattern: String,
    },
    /// A strict run met a malformed record.
    #[error("{path}:{line}: {reason} (strict mode; drop --strict to count it as rejected and go on)")]
    Strict {
        /// The file with the record.
        path: PathBuf,
        /// 1-based line (JSONL, text) or row (Parquet); 0 for the whole file.
        line: u64,
        /// Why the record was rejected.
        reason: String,
    },
    /// Writing a Parquet table failed.
    #[error("{path}: parquet: {source}")]
    Parquet {
        /// The file involved.
        path: PathBuf,
        /// The underlying error.
        source: parquet::errors::ParquetError,
    },
    /// Building or querying a summary table failed.
    #[error("{path}: table: {source}")]
    Table {
        /// The file involved.
        path: PathBuf,
        /// The underlying error.
        source: polars::error::PolarsError,
    },
    /// Loading, training or running a tokenizer failed.
    #[error("tokenizer {path}: {message}")]
    Tokenizer {
        /// The tokenizer file, or the operation in parentheses.
        path: PathBuf,
        /// The library's message.
        message: String,
    },
    /// Building or querying the search index failed.
    #[error("search index {path}: {source}")]
    Search {
        /// The index directory.
        path: PathBuf,
        /// The underlying error.
        source: tantivy::TantivyError,
    },
    /// A user's input file (a mixture, …) is malformed.
    #[error("{path}: {reason}")]
    Format {
        /// The file involved.
        path: PathBuf,
        /// What is wrong and what is expected.
        reason: String,
    },
    /// A file this stage reads back (an earlier stage's output) is not what it should be.
    #[error("{path}: {reason}")]
    Corrupt {
        /// The file involved.
        path: PathBuf,
        /// What was found.
        reason: String,
    },
}

/// Shorthand for results of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Attaches a path to an IO error.
pub(crate) trait IoContext<T> {
    fn at(self, path: &std::path::Path) -> Result<T>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn at(self, path: &std::path::Path) -> Result<T> {
        self.map_err(|source| Error::Io { path: path.to_path_buf(), cause: source })
    }
}

//! The crate's error type: every failure names the file, line and column it came from.

use std::path::PathBuf;

/// Errors from reading tables and models.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The file could not be opened, read or written.
    #[error("{path}: {cause}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        cause: std::io::Error,
    },
    /// A cell did not parse as a number.
    #[error("{path}:{line}: column `{column}`: expected a number, got `{got}`")]
    BadNumber {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// The column header.
        column: String,
        /// The offending cell.
        got: String,
    },
    /// A row had a different number of cells than the header.
    #[error("{path}:{line}: expected {expected} columns, got {got}")]
    ColumnCount {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// Columns in the header.
        expected: usize,
        /// Columns in this row.
        got: usize,
    },
    /// A row's index has no partner row in the other file.
    #[error("{path}:{line}: column `index`: run `{index}` is missing from {other}")]
    MissingIndex {
        /// The file holding the row.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// The unmatched run index.
        index: String,
        /// The file that lacks it.
        other: PathBuf,
    },
    /// The same index appears twice in one file.
    #[error("{path}:{line}: column `index`: run `{index}` appears twice")]
    DuplicateIndex {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// The repeated run index.
        index: String,
    },
    /// A mixture's weights do not sum to one.
    #[error("{path}:{line}: weights sum to {sum}, expected 1 within {tolerance}")]
    WeightSum {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// The observed sum.
        sum: f64,
        /// The accepted deviation.
        tolerance: f64,
    },
    /// A header was empty or lacked the expected columns.
    #[error("{path}:{line}: bad header: {reason}")]
    BadHeader {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        reason: &'static str,
    },
    /// A model file was not valid JSON for our format.
    #[error("{path}: {source}")]
    Json {
        /// The file.
        path: PathBuf,
        /// The parse error, with its own line and column.
        source: serde_json::Error,
    },
    /// A model file has a format version we do not read.
    #[error("{path}: format_version {got} is not supported, expected {expected}")]
    FormatVersion {
        /// The file.
        path: PathBuf,
        /// The version found.
        got: u32,
        /// The version we read.
        expected: u32,
    },
    /// Inputs do not match what a model or table expects.
    #[error("domain mismatch: expected {expected:?}, got {got:?}")]
    DomainMismatch {
        /// Domains the model was fitted on.
        expected: Vec<String>,
        /// Domains given.
        got: Vec<String>,
    },
    /// The named metric is not in the table.
    #[error("metric `{name}` not found; known: {known:?}")]
    UnknownMetric {
        /// The requested name.
        name: String,
        /// Names available.
        known: Vec<String>,
    },
    /// Shards could not be read.
    #[error(transparent)]
    Corpus(#[from] corpus::Error),
    /// A setting or input is out of range or inconsistent; the message says which and why.
    #[error("{0}")]
    Invalid(String),
    /// The caps and minimum weights leave no mixture.
    #[error("infeasible budget: {0}")]
    Infeasible(String),
    /// A proxy run failed.
    #[error("proxy run {index}: {message}")]
    Proxy {
        /// The run.
        index: String,
        /// What the trainer said.
        message: String,
    },
    /// A TOML file did not parse or lacks a field.
    #[error("{path}: {message}")]
    Toml {
        /// The file.
        path: PathBuf,
        /// The parser's message.
        message: String,
    },
    /// Parquet could not be written.
    #[error("{path}: {message}")]
    Parquet {
        /// The file.
        path: PathBuf,
        /// The writer's message.
        message: String,
    },
}

/// Shorthand for results in this crate.
pub type Result<T> = std::result::Result<T, Error>;

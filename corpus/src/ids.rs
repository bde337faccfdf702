//! Compact, stable identifiers: documents are named by input file and row.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A document's id: the index of its input file in the run (sources in recipe order, files
/// sorted within a source) in the high 32 bits and its 0-based row in that file in the low 32.
///
/// Ids are stable across runs of the same recipe, so profile tables, dedup clusters and shards
/// join on them, and they sort in input order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct DocId(u64);

impl DocId {
    /// The id of row `row` of input file `file`.
    pub fn new(file: FileIdx, row: u32) -> DocId {
        DocId((u64::from(file.0) << 32) | u64::from(row))
    }

    /// The raw value, as stored in Parquet `doc_id` columns.
    pub fn get(self) -> u64 {
        self.0
    }

    /// Rebuilds an id from its raw value.
    pub fn from_raw(raw: u64) -> DocId {
        DocId(raw)
    }

    /// The input file this document came from.
    pub fn file(self) -> FileIdx {
        FileIdx((self.0 >> 32) as u32)
    }

    /// The 0-based row within its file.
    pub fn row(self) -> u32 {
        self.0 as u32
    }
}

impl fmt::Display for DocId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.file().0, self.row())
    }
}

/// Index of an input file within a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct FileIdx(pub u32);

/// Index of a source (a `[[sources]]` entry of the recipe) within a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct SourceIdx(pub u16);

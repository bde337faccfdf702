//! Reading documents: source expansion, container formats, compression, rejects.
//!
//! Readers stream: a file is read in batches of raw records (a JSONL line, a text segment, a
//! Parquet row), which are parsed in parallel into [`Document`]s or [`Reject`]s. A malformed
//! record never stops a run unless it is strict; it is counted and written to `rejects.jsonl`.

mod jsonl;
mod lines;
mod parquet_reader;
pub mod template;
mod text;

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use rayon::prelude::*;
use serde::Serialize;

use crate::config::{Format, SourceConfig};
use crate::error::{Error, IoContext, Result};
use crate::ids::{DocId, FileIdx, SourceIdx};

pub use template::Template;

/// One document as read from its source.
#[derive(Debug, Clone)]
pub struct Document {
    /// Stable id (file index + row).
    pub id: DocId,
    /// The source it came from.
    pub source: SourceIdx,
    /// The record's own id field, when it has one.
    pub source_id: Option<String>,
    /// The text.
    pub text: String,
}

/// A record that could not be read as a document.
#[derive(Debug, Clone, Serialize)]
pub struct Reject {
    /// The file.
    pub path: PathBuf,
    /// 1-based line (JSONL, text) or row (Parquet); 0 when the whole file is affected.
    pub line: u64,
    /// Why.
    pub reason: RejectReason,
    /// Raw size of the record in bytes, when known (0 for a cut archive or unreadable file).
    pub bytes: u64,
}

/// Why a record was rejected. [`RejectReason::code`] names it in counts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "code", rename_all = "snake_case")]
pub enum RejectReason {
    /// The line is not valid JSON.
    InvalidJson {
        /// The parser's message.
        message: String,
    },
    /// The line is JSON but not an object.
    NotAnObject,
    /// The bytes are not UTF-8.
    InvalidUtf8 {
        /// Offset of the first bad byte within the record.
        byte_offset: usize,
    },
    /// A field the text or template needs is absent or null.
    MissingField {
        /// The field.
        field: String,
    },
    /// The text field is present but not a string.
    NotText {
        /// The field.
        field: String,
        /// The JSON or Arrow type found.
        found: String,
    },
    /// The text is empty or whitespace only.
    EmptyText,
    /// The record is larger than `max_doc_bytes`.
    TooLarge {
        /// Its size (at least; reading stops at the limit).
        bytes: u64,
        /// The limit.
        limit: u64,
    },
    /// The compressed stream ends early or is corrupt; the rest of the file is lost.
    Truncated {
        /// The decoder's message.
        message: String,
    },
    /// The file has no content at all.
    EmptyFile,
    /// The file cannot be read as its format (bad Parquet footer, unreadable column).
    Unreadable {
        /// What failed.
        message: String,
    },
}

impl RejectReason {
    /// Short snake_case name used as a key in accounting.
    pub fn code(&self) -> &'static str {
        match self {
            RejectReason::InvalidJson { .. } => "invalid_json",
            RejectReason::NotAnObject => "not_an_object",
            RejectReason::InvalidUtf8 { .. } => "invalid_utf8",
            RejectReason::MissingField { .. } => "missing_field",
            RejectReason::NotText { .. } => "not_text",
            RejectReason::EmptyText => "empty_text",
            RejectReason::TooLarge { .. } => "too_large",
            RejectReason::Truncated { .. } => "truncated",
            RejectReason::EmptyFile => "empty_file",
            RejectReason::Unreadable { .. } => "unreadable",
        }
    }
}

impl std::fmt::Display for RejectReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RejectReason::InvalidJson { message } => write!(f, "invalid JSON: {message}"),
            RejectReason::NotAnObject => write!(f, "JSON value is not an object"),
            RejectReason::InvalidUtf8 { byte_offset } => write!(f, "invalid UTF-8 at byte {byte_offset} of the record"),
            RejectReason::MissingField { field } => write!(f, "missing or null field `{field}`"),
            RejectReason::NotText { field, found } => write!(f, "field `{field}` is {found}, expected a string"),
            RejectReason::EmptyText => write!(f, "empty text"),
            RejectReason::TooLarge { bytes, limit } => {
                write!(f, "record of {bytes} bytes exceeds max_doc_bytes = {limit}")
            }
            RejectReason::Truncated { message } => write!(f, "truncated or corrupt compressed stream: {message}"),
            RejectReason::EmptyFile => write!(f, "empty file"),
            RejectReason::Unreadable { message } => write!(f, "unreadable: {message}"),
        }
    }
}

/// What reading one record produced.
#[derive(Debug)]
pub enum Item {
    /// A document.
    Doc(Document),
    /// A record that is not one.
    Reject(Reject),
}

/// An input file of a run, with its place in the id space.
#[derive(Debug, Clone)]
pub struct InputFile {
    /// Where it is.
    pub path: PathBuf,
    /// Its index (the high half of its documents' ids).
    pub file: FileIdx,
    /// The source it belongs to.
    pub source: SourceIdx,
    /// How to read it.
    pub format: Format,
}

/// Expands every source's paths and globs into files: sources in order, each source's files
/// sorted and deduplicated, numbered consecutively. A pattern matching nothing is an error.
pub fn expand_sources(sources: &[SourceConfig]) -> Result<Vec<InputFile>> {
    let mut files = Vec::new();
    for (source_idx, source) in sources.iter().enumerate() {
        let mut paths = std::collections::BTreeSet::new();
        for pattern in &source.paths {
            let before = paths.len();
            if Path::new(pattern).is_file() {
                paths.insert(PathBuf::from(pattern));
            } else {
                let matches = glob::glob(pattern).map_err(|e| Error::Config {
                    field: format!("sources[{source_idx}].paths"),
                    reason: format!("invalid glob `{pattern}`: {e}"),
                })?;
                for entry in matches {
                    let path = entry.map_err(|e| Error::Io { path: e.path().to_path_buf(), cause: e.into() })?;
                    if path.is_file() {
                        paths.insert(path);
                    }
                }
            }
            if paths.len() == before {
                return Err(Error::NoFiles {
                    source_name: source.display_name().to_string(),
                    pattern: pattern.clone(),
                });
            }
        }
        for path in paths {
            let format = match source.format {
                Some(format) => format,
                None => detect_format(&path).ok_or_else(|| Error::Config {
                    field: format!("sources[{source_idx}].format"),
                    reason: format!(
                        "cannot tell the format of {} from its extension; set format = \"jsonl\", \"parquet\" or \"text\"",
                        path.display()
                    ),
                })?,
            };
            let file = u32::try_from(files.len()).expect("fewer than 2^32 input files");
            files.push(InputFile { path, file: FileIdx(file), source: SourceIdx(source_idx as u16), format });
        }
    }
    Ok(files)
}

/// Guesses the format from the extension, looking through `.gz`/`.zst`.
pub fn detect_format(path: &Path) -> Option<Format> {
    let name = path.file_name()?.to_str()?.to_ascii_lowercase();
    let name = name
        .strip_suffix(".gz")
        .or_else(|| name.strip_suffix(".zst"))
        .or_else(|| name.strip_suffix(".zstd"))
        .unwrap_or(&name);
    let ext = Path::new(name).extension()?.to_str()?;
    match ext {
        "jsonl" | "json" | "ndjson" => Some(Format::Jsonl),
        "parquet" | "pq" => Some(Format::Parquet),
        "txt" | "text" | "md" => Some(Format::Text),
        _ => None,
    }
}

/// A whole (small) text file, decompressed by extension (`.gz`, `.zst`): task files, instruction
/// task files.
pub fn read_text(path: &Path) -> Result<String> {
    let bytes_read = AtomicU64::new(0);
    let mut text = String::new();
    open_decoded(path, &bytes_read)?.read_to_string(&mut text).at(path)?;
    Ok(text)
}

/// Opens a file, decompressing by extension (`.gz`: multi-member gzip; `.zst`/`.zstd`).
pub(crate) fn open_decoded<'a>(path: &Path, bytes_read: &'a AtomicU64) -> Result<Box<dyn BufRead + Send + 'a>> {
    const BUF: usize = 1 << 18;
    let file = Counting { inner: std::fs::File::open(path).at(path)?, bytes_read };
    let name = path.to_string_lossy().to_ascii_lowercase();
    let reader: Box<dyn Read + Send + '_> = if name.ends_with(".gz") {
        Box::new(flate2::read::MultiGzDecoder::new(BufReader::with_capacity(BUF, file)))
    } else if name.ends_with(".zst") || name.ends_with(".zstd") {
        Box::new(zstd::stream::read::Decoder::new(file).at(path)?)
    } else {
        Box::new(file)
    };
    Ok(Box::new(BufReader::with_capacity(BUF, reader)))
}

/// Counts the (compressed) bytes read from a file, for progress bars.
struct Counting<'a> {
    inner: std::fs::File,
    bytes_read: &'a AtomicU64,
}

impl Read for Counting<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.bytes_read.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

/// A record before parsing: its row (for the id), its 1-based line, and its content.
pub(crate) struct Raw {
    pub row: u32,
    pub line: u64,
    pub body: RawBody,
}

pub(crate) enum RawBody {
    /// A JSON line to parse.
    Json(Vec<u8>),
    /// Text bytes to check as UTF-8.
    Text(Vec<u8>),
    /// Already a text (Parquet).
    Ready { text: String, source_id: Option<String> },
    /// Already known to be bad.
    Bad(RejectReason),
}

impl RawBody {
    /// Bytes of record held in memory.
    fn held_bytes(&self) -> usize {
        match self {
            RawBody::Json(bytes) | RawBody::Text(bytes) => bytes.len(),
            RawBody::Ready { text, .. } => text.len(),
            RawBody::Bad(_) => 0,
        }
    }
}

/// A batch also ends once its records hold this many bytes, so that a batch of long documents
/// (books, whole source files) does not hold gigabytes.
const BATCH_BYTES: usize = 64 << 20;

/// How a source's records become documents.
pub(crate) struct RecordSpec<'a> {
    pub template: Template,
    pub id_field: &'a str,
}

impl<'a> RecordSpec<'a> {
    pub fn new(source: &'a SourceConfig) -> RecordSpec<'a> {
        let template = match &source.template {
            Some(t) => Template::parse(t).expect("templates are validated with the config"),
            None => Template::field(&source.text_field),
        };
        RecordSpec { template, id_field: &source.id_field }
    }
}

/// Reads one input file in batches of at most `batch` records and hands each batch, parsed in
/// parallel and in file order, to `sink`. `bytes_read` grows with the bytes read from disk.
pub fn read_file(
    input: &InputFile,
    source: &SourceConfig,
    batch: usize,
    bytes_read: &AtomicU64,
    mut sink: impl FnMut(Vec<Item>) -> Result<()>,
) -> Result<()> {
    let spec = RecordSpec::new(source);
    let mut emit = |raws: Vec<Raw>| -> Result<()> {
        let items = raws.into_par_iter().map(|raw| parse(input, &spec, raw)).collect();
        sink(items)
    };
    match input.format {
        Format::Jsonl => jsonl::read(&input.path, source.max_doc_bytes, batch, bytes_read, &mut emit),
        Format::Text => text::read(&input.path, source, batch, bytes_read, &mut emit),
        Format::Parquet => {
            parquet_reader::read(&input.path, &spec, source.max_doc_bytes, batch, &mut emit)?;
            let size = std::fs::metadata(&input.path).map(|m| m.len()).unwrap_or(0);
            bytes_read.fetch_add(size, Ordering::Relaxed);
            Ok(())
        }
    }
}

fn parse(input: &InputFile, spec: &RecordSpec<'_>, raw: Raw) -> Item {
    let raw_bytes = match &raw.body {
        RawBody::Json(bytes) | RawBody::Text(bytes) => bytes.len() as u64,
        RawBody::Ready { text, .. } => text.len() as u64,
        RawBody::Bad(RejectReason::TooLarge { bytes, .. }) => *bytes,
        RawBody::Bad(_) => 0,
    };
    let result = match raw.body {
        RawBody::Json(bytes) => jsonl::parse_record(&bytes, spec),
        RawBody::Text(bytes) => match String::from_utf8(bytes) {
            Ok(text) => Ok((text, None)),
            Err(e) => Err(RejectReason::InvalidUtf8 { byte_offset: e.utf8_error().valid_up_to() }),
        },
        RawBody::Ready { text, source_id } => Ok((text, source_id)),
        RawBody::Bad(reason) => Err(reason),
    };
    let result = result.and_then(
        |(text, id)| {
            if text.trim().is_empty() { Err(RejectReason::EmptyText) } else { Ok((text, id)) }
        },
    );
    match result {
        Ok((text, source_id)) => {
            Item::Doc(Document { id: DocId::new(input.file, raw.row), source: input.source, source_id, text })
        }
        Err(reason) => Item::Reject(Reject { path: input.path.clone(), line: raw.line, reason, bytes: raw_bytes }),
    }
}

/// Collects raw records into batches for [`read_file`]'s parallel parse.
pub(crate) struct Batcher<'f> {
    pending: Vec<Raw>,
    pending_bytes: usize,
    batch: usize,
    emit: &'f mut dyn FnMut(Vec<Raw>) -> Result<()>,
}

impl<'f> Batcher<'f> {
    pub fn new(batch: usize, emit: &'f mut dyn FnMut(Vec<Raw>) -> Result<()>) -> Batcher<'f> {
        Batcher { pending: Vec::with_capacity(batch), pending_bytes: 0, batch, emit }
    }

    /// Adds a record; emits the batch at `batch` records or [`BATCH_BYTES`].
    pub fn push(&mut self, raw: Raw) -> Result<()> {
        self.pending_bytes += raw.body.held_bytes();
        self.pending.push(raw);
        if self.pending.len() >= self.batch || self.pending_bytes >= BATCH_BYTES {
            self.pending_bytes = 0;
            (self.emit)(std::mem::replace(&mut self.pending, Vec::with_capacity(self.batch)))?;
        }
        Ok(())
    }

    pub fn finish(mut self) -> Result<()> {
        if !self.pending.is_empty() {
            (self.emit)(std::mem::take(&mut self.pending))?;
        }
        Ok(())
    }
}

/// Row numbers are `u32` (the low half of a [`DocId`]).
pub(crate) fn row_index(row: u64, path: &Path) -> Result<u32> {
    u32::try_from(row).map_err(|_| Error::Corrupt {
        path: path.to_path_buf(),
        reason: "more than 2^32 records in one file; split it".into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_end_at_a_count_or_at_their_bytes() {
        let mut sizes = Vec::new();
        let mut emit = |batch: Vec<Raw>| {
            sizes.push(batch.len());
            Ok(())
        };
        let mut batcher = Batcher::new(4, &mut emit);
        let raw = |len: usize| Raw { row: 0, line: 0, body: RawBody::Text(vec![b'x'; len]) };
        // Five short records: a batch of 4, then one left.
        for _ in 0..5 {
            batcher.push(raw(10)).unwrap();
        }
        // Two records of half the byte limit end that batch at 3.
        batcher.push(raw(BATCH_BYTES / 2)).unwrap();
        batcher.push(raw(BATCH_BYTES / 2)).unwrap();
        batcher.push(raw(10)).unwrap();
        batcher.finish().unwrap();
        assert_eq!(sizes, [4, 3, 1]);
    }
}

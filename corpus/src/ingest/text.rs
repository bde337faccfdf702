//! Plain text: a file is one document, or documents begin at lines matching a separator regex.

use std::path::Path;
use std::sync::atomic::AtomicU64;

use regex::Regex;

use super::lines::{self, Line};
use super::{Batcher, Raw, RawBody, RejectReason};
use crate::config::SourceConfig;
use crate::error::{IoContext, Result};

/// A document being assembled: its first line and its bytes so far.
struct Segment {
    line: u64,
    bytes: Vec<u8>,
    /// Set once the segment passes `max_doc_bytes`; its bytes are no longer kept.
    oversize: Option<u64>,
}

impl Segment {
    fn new(line: u64) -> Segment {
        Segment { line, bytes: Vec::new(), oversize: None }
    }

    fn append(&mut self, line: &[u8], limit: usize) {
        if let Some(total) = &mut self.oversize {
            *total += line.len() as u64 + 1;
            return;
        }
        if self.bytes.len() + line.len() + 1 > limit {
            self.oversize = Some((self.bytes.len() + line.len() + 1) as u64);
            self.bytes = Vec::new();
            return;
        }
        self.bytes.extend_from_slice(line);
        self.bytes.push(b'\n');
    }

    fn is_blank(&self) -> bool {
        self.oversize.is_none() && self.bytes.iter().all(u8::is_ascii_whitespace)
    }
}

pub(crate) fn read(
    path: &Path,
    source: &SourceConfig,
    batch: usize,
    bytes_read: &AtomicU64,
    emit: &mut dyn FnMut(Vec<Raw>) -> Result<()>,
) -> Result<()> {
    let separator = source.separator.as_deref().map(|p| Regex::new(p).expect("separator validated with the config"));
    let limit = source.max_doc_bytes;
    let compressed = {
        let name = path.to_string_lossy().to_ascii_lowercase();
        name.ends_with(".gz") || name.ends_with(".zst") || name.ends_with(".zstd")
    };
    let mut reader = super::open_decoded(path, bytes_read)?;
    let mut batcher = Batcher::new(batch, emit);
    let mut row: u64 = 0;
    let mut flush = |segment: Segment, batcher: &mut Batcher<'_>| -> Result<()> {
        if segment.is_blank() {
            return Ok(());
        }
        let body = match segment.oversize {
            Some(bytes) => RawBody::Bad(RejectReason::TooLarge { bytes, limit: limit as u64 }),
            None => RawBody::Text(segment.bytes),
        };
        let raw = Raw { row: super::row_index(row, path)?, line: segment.line, body };
        row += 1;
        batcher.push(raw)
    };
    let mut buf = Vec::new();
    let mut line_no: u64 = 0;
    let mut segment = Segment::new(1);
    let mut saw_bytes = false;
    loop {
        line_no += 1;
        match lines::read_line(&mut *reader, &mut buf, limit) {
            Ok(Line::Eof) => break,
            Ok(Line::TooLong(bytes)) => {
                saw_bytes = true;
                segment.oversize = Some(segment.oversize.unwrap_or(segment.bytes.len() as u64) + bytes);
                segment.bytes = Vec::new();
            }
            Ok(Line::Complete) => {
                saw_bytes = true;
                let starts_doc =
                    separator.as_ref().is_some_and(|re| std::str::from_utf8(&buf).is_ok_and(|l| re.is_match(l)));
                if starts_doc {
                    flush(std::mem::replace(&mut segment, Segment::new(line_no)), &mut batcher)?;
                    if !source.keep_separator {
                        segment.line = line_no + 1;
                        continue;
                    }
                }
                segment.append(&buf, limit);
            }
            Err(e) if compressed => {
                flush(std::mem::replace(&mut segment, Segment::new(line_no)), &mut batcher)?;
                let raw = Raw {
                    row: super::row_index(row, path)?,
                    line: line_no,
                    body: RawBody::Bad(RejectReason::Truncated { message: e.to_string() }),
                };
                batcher.push(raw)?;
                return batcher.finish();
            }
            Err(e) => return Err(e).at(path),
        }
    }
    if !saw_bytes {
        batcher.push(Raw { row: 0, line: 0, body: RawBody::Bad(RejectReason::EmptyFile) })?;
        return batcher.finish();
    }
    // Lines are joined with '\n', so every document's text ends with a newline.
    flush(segment, &mut batcher)?;
    batcher.finish()
}

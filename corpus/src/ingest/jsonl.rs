//! JSON Lines: one object per line, optionally gzip- or zstd-compressed.

use std::path::Path;
use std::sync::atomic::AtomicU64;

use serde_json::Value;

use super::lines::{self, Line};
use super::{Batcher, Raw, RawBody, RecordSpec, RejectReason};
use crate::error::{IoContext, Result};

pub(crate) fn read(
    path: &Path,
    max_bytes: usize,
    batch: usize,
    bytes_read: &AtomicU64,
    emit: &mut dyn FnMut(Vec<Raw>) -> Result<()>,
) -> Result<()> {
    let compressed = is_compressed(path);
    let mut reader = super::open_decoded(path, bytes_read)?;
    let mut batcher = Batcher::new(batch, emit);
    let mut buf = Vec::new();
    let mut line_no: u64 = 0;
    let mut saw_bytes = false;
    loop {
        line_no += 1;
        let row = super::row_index(line_no - 1, path)?;
        let body = match lines::read_line(&mut *reader, &mut buf, max_bytes) {
            Ok(Line::Eof) => break,
            Ok(Line::Complete) => {
                saw_bytes = true;
                if buf.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                RawBody::Json(std::mem::take(&mut buf))
            }
            Ok(Line::TooLong(bytes)) => {
                saw_bytes = true;
                RawBody::Bad(RejectReason::TooLarge { bytes, limit: max_bytes as u64 })
            }
            // A decoder error means the archive is cut short or corrupt: what was read stays
            // counted, the rest of the file is one reject, and the run goes on.
            Err(e) if compressed => {
                batcher.push(Raw {
                    row,
                    line: line_no,
                    body: RawBody::Bad(RejectReason::Truncated { message: e.to_string() }),
                })?;
                return batcher.finish();
            }
            Err(e) => return Err(e).at(path),
        };
        batcher.push(Raw { row, line: line_no, body })?;
    }
    if !saw_bytes {
        batcher.push(Raw { row: 0, line: 0, body: RawBody::Bad(RejectReason::EmptyFile) })?;
    }
    batcher.finish()
}

fn is_compressed(path: &Path) -> bool {
    let name = path.to_string_lossy().to_ascii_lowercase();
    name.ends_with(".gz") || name.ends_with(".zst") || name.ends_with(".zstd")
}

/// Parses one JSON line into (text, source id).
pub(crate) fn parse_record(
    bytes: &[u8],
    spec: &RecordSpec<'_>,
) -> std::result::Result<(String, Option<String>), RejectReason> {
    let value: Value = serde_json::from_slice(bytes).map_err(|e| match std::str::from_utf8(bytes) {
        Err(utf8) => RejectReason::InvalidUtf8 { byte_offset: utf8.valid_up_to() },
        Ok(_) => RejectReason::InvalidJson { message: e.to_string() },
    })?;
    let Value::Object(mut map) = value else {
        return Err(RejectReason::NotAnObject);
    };
    let source_id = match map.get(spec.id_field) {
        Some(Value::String(s)) => Some(s.clone()),
        Some(Value::Number(n)) => Some(n.to_string()),
        _ => None,
    };
    if let Some(field) = spec.template.single_field().filter(|f| !f.contains('.')) {
        return match map.remove(field) {
            Some(Value::String(text)) => Ok((text, source_id)),
            None | Some(Value::Null) => Err(RejectReason::MissingField { field: field.to_string() }),
            Some(other) => Err(RejectReason::NotText { field: field.to_string(), found: json_type(&other).into() }),
        };
    }
    let root = Value::Object(map);
    for field in spec.template.fields() {
        match lookup(&root, field) {
            None | Some(Value::Null) => return Err(RejectReason::MissingField { field: field.to_string() }),
            Some(v @ (Value::Object(_) | Value::Array(_))) => {
                return Err(RejectReason::NotText { field: field.to_string(), found: json_type(v).into() });
            }
            Some(_) => {}
        }
    }
    let text = spec
        .template
        .render(|field, out| match lookup(&root, field) {
            Some(Value::String(s)) => {
                out.push_str(s);
                true
            }
            Some(Value::Number(n)) => {
                out.push_str(&n.to_string());
                true
            }
            Some(Value::Bool(b)) => {
                out.push_str(if *b { "true" } else { "false" });
                true
            }
            _ => false,
        })
        .map_err(|field| RejectReason::MissingField { field })?;
    Ok((text, source_id))
}

/// Resolves a dotted path (`metadata.url`) in nested objects.
fn lookup<'v>(root: &'v Value, path: &str) -> Option<&'v Value> {
    if let Some(v) = root.get(path) {
        return Some(v);
    }
    path.split('.').try_fold(root, |v, key| v.get(key))
}

fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

//! Apache Parquet, streamed by record batch: only the columns the text and id need are read.

use std::borrow::Cow;
use std::path::Path;

use arrow_array::cast::AsArray;
use arrow_array::types::{Int32Type, Int64Type, UInt32Type, UInt64Type};
use arrow_array::{Array, ArrayRef, RecordBatch};
use arrow_schema::DataType;
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use super::{Batcher, Raw, RawBody, RecordSpec, RejectReason};
use crate::error::{IoContext, Result};

pub(crate) fn read(
    path: &Path,
    spec: &RecordSpec<'_>,
    max_bytes: usize,
    batch: usize,
    emit: &mut dyn FnMut(Vec<Raw>) -> Result<()>,
) -> Result<()> {
    let mut batcher = Batcher::new(batch, emit);
    let file = std::fs::File::open(path).at(path)?;
    if file.metadata().at(path)?.len() == 0 {
        batcher.push(Raw { row: 0, line: 0, body: RawBody::Bad(RejectReason::EmptyFile) })?;
        return batcher.finish();
    }
    let whole_file = |batcher: &mut Batcher<'_>, message: String| -> Result<()> {
        batcher.push(Raw { row: 0, line: 0, body: RawBody::Bad(RejectReason::Unreadable { message }) })
    };
    let builder = match ParquetRecordBatchReaderBuilder::try_new(file) {
        Ok(builder) => builder,
        Err(e) => {
            whole_file(&mut batcher, format!("not a readable Parquet file (truncated?): {e}"))?;
            return batcher.finish();
        }
    };
    let columns: Vec<String> = builder.schema().fields().iter().map(|f| f.name().clone()).collect();
    if let Some(missing) = spec.template.fields().find(|f| !columns.iter().any(|c| c == f)) {
        let rows = builder.metadata().file_metadata().num_rows();
        whole_file(
            &mut batcher,
            format!("no column `{missing}` (columns: {}); its {rows} rows were not read", columns.join(", ")),
        )?;
        return batcher.finish();
    }
    let mut wanted: Vec<&str> = spec.template.fields().collect();
    if columns.iter().any(|c| c == spec.id_field) {
        wanted.push(spec.id_field);
    }
    let mask = ProjectionMask::columns(builder.parquet_schema(), wanted.iter().copied());
    // Arrow batches of about `BATCH_BYTES` of data at most (by the widest row group's
    // uncompressed bytes per row), so long documents are not decoded `batch` at a time.
    let widest_row = builder
        .metadata()
        .row_groups()
        .iter()
        .map(|g| usize::try_from(g.total_byte_size() / g.num_rows().max(1)).unwrap_or(0))
        .max()
        .unwrap_or(0);
    let rows = (super::BATCH_BYTES / widest_row.max(1)).clamp(1, batch.max(1));
    let reader = match builder.with_projection(mask).with_batch_size(rows).build() {
        Ok(reader) => reader,
        Err(e) => {
            whole_file(&mut batcher, e.to_string())?;
            return batcher.finish();
        }
    };
    let mut row: u64 = 0;
    for record_batch in reader {
        let record_batch = match record_batch {
            Ok(b) => b,
            Err(e) => {
                let raw = Raw {
                    row: super::row_index(row, path)?,
                    line: row + 1,
                    body: RawBody::Bad(RejectReason::Truncated { message: e.to_string() }),
                };
                batcher.push(raw)?;
                return batcher.finish();
            }
        };
        let ids = record_batch.column_by_name(spec.id_field);
        for i in 0..record_batch.num_rows() {
            let body = match render_row(&record_batch, spec, i, max_bytes) {
                Ok(text) => RawBody::Ready {
                    text,
                    source_id: ids.and_then(|c| cell_text(c, i).ok().flatten()).map(Cow::into_owned),
                },
                Err(reason) => RawBody::Bad(reason),
            };
            batcher.push(Raw { row: super::row_index(row, path)?, line: row + 1, body })?;
            row += 1;
        }
    }
    if row == 0 {
        batcher.push(Raw { row: 0, line: 0, body: RawBody::Bad(RejectReason::EmptyFile) })?;
    }
    batcher.finish()
}

fn render_row(batch: &RecordBatch, spec: &RecordSpec<'_>, i: usize, max_bytes: usize) -> Result<String, RejectReason> {
    for field in spec.template.fields() {
        let column = batch.column_by_name(field).expect("projected columns exist");
        match cell_text(column, i) {
            Ok(Some(_)) => {}
            Ok(None) => return Err(RejectReason::MissingField { field: field.to_string() }),
            Err(found) => return Err(RejectReason::NotText { field: field.to_string(), found }),
        }
    }
    let text = spec
        .template
        .render(|field, out| {
            let column = batch.column_by_name(field).expect("projected columns exist");
            match cell_text(column, i) {
                Ok(Some(text)) => {
                    out.push_str(&text);
                    true
                }
                _ => false,
            }
        })
        .map_err(|field| RejectReason::MissingField { field })?;
    if text.len() > max_bytes {
        return Err(RejectReason::TooLarge { bytes: text.len() as u64, limit: max_bytes as u64 });
    }
    Ok(text)
}

/// A cell as text: `Ok(None)` for null, `Err(type)` for a type that is not text-like.
fn cell_text(column: &ArrayRef, i: usize) -> Result<Option<Cow<'_, str>>, String> {
    if column.is_null(i) {
        return Ok(None);
    }
    let text = match column.data_type() {
        DataType::Utf8 => Cow::Borrowed(column.as_string::<i32>().value(i)),
        DataType::LargeUtf8 => Cow::Borrowed(column.as_string::<i64>().value(i)),
        DataType::Utf8View => Cow::Borrowed(column.as_string_view().value(i)),
        DataType::Int32 => Cow::Owned(column.as_primitive::<Int32Type>().value(i).to_string()),
        DataType::Int64 => Cow::Owned(column.as_primitive::<Int64Type>().value(i).to_string()),
        DataType::UInt32 => Cow::Owned(column.as_primitive::<UInt32Type>().value(i).to_string()),
        DataType::UInt64 => Cow::Owned(column.as_primitive::<UInt64Type>().value(i).to_string()),
        other => return Err(format!("of Arrow type {other}")),
    };
    Ok(Some(text))
}

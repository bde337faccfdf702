//! The kept documents, one Parquet file per domain (`kept/<domain>.parquet`), which later
//! stages (shards, search) and any Parquet reader take as input.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_array::builder::{LargeStringBuilder, StringBuilder, UInt64Builder};
use arrow_array::{ArrayRef, RecordBatch};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::metadata::KeyValue;
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::schema::types::ColumnPath;

use crate::atomic::AtomicFile;
use crate::error::{Error, Result};
use crate::ingest::Document;

/// Version of the kept-documents layout.
pub const KEPT_FORMAT_VERSION: u32 = 1;

/// Flush a batch when it holds this many documents or bytes of text.
const BATCH_DOCS: usize = 1024;
const BATCH_BYTES: usize = 32 << 20;

/// Arrow schema of a kept file.
pub fn schema() -> Schema {
    Schema::new(vec![
        Field::new("doc_id", DataType::UInt64, false),
        Field::new("source_id", DataType::Utf8, true),
        Field::new("source", DataType::Utf8, false),
        Field::new("domain", DataType::Utf8, false),
        // Large offsets: a batch of long documents may pass 2 GiB of text.
        Field::new("text", DataType::LargeUtf8, false),
    ])
}

struct DomainWriter {
    writer: ArrowWriter<AtomicFile>,
    pending: Vec<(u64, Option<String>, usize, String)>,
    pending_bytes: usize,
    path: PathBuf,
    domain: String,
}

/// Writes kept documents per domain; files appear atomically on [`KeptWriter::finish`].
pub struct KeptWriter {
    dir: PathBuf,
    schema: SchemaRef,
    source_names: Vec<String>,
    writers: BTreeMap<String, Box<DomainWriter>>,
}

impl KeptWriter {
    /// Writes into `dir` (created if missing); `source_names[i]` names source `i`.
    pub fn new(dir: &Path, source_names: Vec<String>) -> Result<KeptWriter> {
        std::fs::create_dir_all(dir).map_err(|source| Error::Io { path: dir.to_path_buf(), cause: source })?;
        Ok(KeptWriter { dir: dir.to_path_buf(), schema: Arc::new(schema()), source_names, writers: BTreeMap::new() })
    }

    /// Appends a document of `domain`.
    pub fn push(&mut self, domain: &str, doc: Document) -> Result<()> {
        if !self.writers.contains_key(domain) {
            let writer = self.open(domain)?;
            self.writers.insert(domain.to_string(), writer);
        }
        let w = self.writers.get_mut(domain).expect("just inserted");
        w.pending_bytes += doc.text.len();
        w.pending.push((doc.id.get(), doc.source_id, usize::from(doc.source.0), doc.text));
        if w.pending.len() >= BATCH_DOCS || w.pending_bytes >= BATCH_BYTES {
            flush(w, &self.schema, &self.source_names)?;
        }
        Ok(())
    }

    fn open(&self, domain: &str) -> Result<Box<DomainWriter>> {
        let path = self.dir.join(format!("{domain}.parquet"));
        let file = AtomicFile::create(&path)?;
        let props = WriterProperties::builder()
            .set_compression(Compression::ZSTD(ZstdLevel::try_new(1).expect("valid level")))
            .set_max_row_group_row_count(Some(8192))
            // Texts are all distinct and long: a dictionary only hashes every one before falling
            // back to plain pages, and min/max statistics only compare them.
            .set_column_dictionary_enabled(ColumnPath::from("text"), false)
            .set_column_statistics_enabled(ColumnPath::from("text"), EnabledStatistics::None)
            .set_key_value_metadata(Some(vec![KeyValue::new(
                "mixforge.format_version".into(),
                KEPT_FORMAT_VERSION.to_string(),
            )]))
            .build();
        let writer = ArrowWriter::try_new(file, self.schema.clone(), Some(props))
            .map_err(|source| Error::Parquet { path: path.clone(), source })?;
        Ok(Box::new(DomainWriter { writer, pending: Vec::new(), pending_bytes: 0, path, domain: domain.to_string() }))
    }

    /// Flushes and commits every file; returns the paths written, by domain.
    pub fn finish(mut self) -> Result<BTreeMap<String, PathBuf>> {
        let mut written = BTreeMap::new();
        for (domain, mut w) in std::mem::take(&mut self.writers) {
            flush(&mut w, &self.schema, &self.source_names)?;
            let DomainWriter { writer, path, .. } = *w;
            // `into_inner` writes the footer and hands back the file to commit.
            let file = writer.into_inner().map_err(|source| Error::Parquet { path: path.clone(), source })?;
            file.commit()?;
            written.insert(domain, path);
        }
        Ok(written)
    }
}

fn flush(w: &mut DomainWriter, schema: &SchemaRef, source_names: &[String]) -> Result<()> {
    if w.pending.is_empty() {
        return Ok(());
    }
    let n = w.pending.len();
    let mut ids = UInt64Builder::with_capacity(n);
    let mut source_ids = StringBuilder::new();
    let mut sources = StringBuilder::new();
    let mut domains = StringBuilder::new();
    let mut texts = LargeStringBuilder::with_capacity(n, w.pending_bytes);
    for (id, source_id, source, text) in w.pending.drain(..) {
        ids.append_value(id);
        source_ids.append_option(source_id);
        sources.append_value(&source_names[source]);
        domains.append_value(&w.domain);
        texts.append_value(text);
    }
    w.pending_bytes = 0;
    let columns: Vec<ArrayRef> = vec![
        Arc::new(ids.finish()),
        Arc::new(source_ids.finish()),
        Arc::new(sources.finish()),
        Arc::new(domains.finish()),
        Arc::new(texts.finish()),
    ];
    let err = |source| Error::Parquet { path: w.path.clone(), source };
    let batch = RecordBatch::try_new(schema.clone(), columns).map_err(|e| err(e.into()))?;
    w.writer.write(&batch).map_err(err)
}

/// One batch of a kept file, as owned values.
#[derive(Debug, Default)]
pub struct KeptBatch {
    /// Document ids.
    pub ids: Vec<u64>,
    /// The records' own ids (null → `None`).
    pub source_ids: Vec<Option<String>>,
    /// Domains (the file's domain when the column is absent).
    pub domains: Vec<String>,
    /// Texts.
    pub texts: Vec<String>,
}

/// Reads a kept file (ours, or a user's own Parquet with the same columns) in batches of at
/// most `batch` documents. Text columns may be any Arrow string type and `doc_id` any
/// non-negative integer type; anything else is an error naming the file, column and type.
pub fn read(path: &Path, batch: usize, mut f: impl FnMut(KeptBatch) -> Result<()>) -> Result<()> {
    read_blocks(path, batch, &|_| true, |_, b| f(b))
}

/// As [`read`], but only the blocks `k` (rows `k·batch …`, `batch` of them, fewer in the last)
/// that `wanted` names, each as one batch with its `k`; the others are skipped, not decoded.
pub fn read_blocks(
    path: &Path,
    batch: usize,
    wanted: &dyn Fn(usize) -> bool,
    mut f: impl FnMut(usize, KeptBatch) -> Result<()>,
) -> Result<()> {
    use parquet::arrow::arrow_reader::{
        ArrowReaderOptions, ParquetRecordBatchReaderBuilder, RowSelection, RowSelector,
    };
    use parquet::file::metadata::PageIndexPolicy;
    let parquet_err = |source| Error::Parquet { path: path.to_path_buf(), source };
    let file = std::fs::File::open(path).map_err(|source| Error::Io { path: path.to_path_buf(), cause: source })?;
    // With the offset index (where the file has one), skipped blocks' pages are not even read.
    let options = ArrowReaderOptions::new().with_offset_index_policy(PageIndexPolicy::Optional);
    let builder = ParquetRecordBatchReaderBuilder::try_new_with_options(file, options).map_err(parquet_err)?;
    let batch = batch.max(1);
    let rows = builder.metadata().file_metadata().num_rows().max(0) as usize;
    let block_rows = |k: usize| batch.min(rows - k * batch);
    let n_blocks = rows.div_ceil(batch);
    let blocks: Vec<usize> = (0..n_blocks).filter(|&k| wanted(k)).collect();
    let mut builder = builder.with_batch_size(batch);
    if blocks.len() < n_blocks {
        let selectors = (0..n_blocks).map(|k| match wanted(k) {
            true => RowSelector::select(block_rows(k)),
            false => RowSelector::skip(block_rows(k)),
        });
        builder = builder.with_row_selection(RowSelection::from(selectors.collect::<Vec<_>>()));
    }
    let mut reader = builder.build().map_err(parquet_err)?;
    let file_domain = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    let corrupt = |reason: String| Error::Corrupt { path: path.to_path_buf(), reason };
    for &k in &blocks {
        let record_batch = reader
            .next()
            .ok_or_else(|| corrupt(format!("rows {}… missing ({rows} rows in the file's metadata)", k * batch)))?;
        let record_batch = record_batch.map_err(|e| parquet_err(e.into()))?;
        // Each batch is one whole block: the callers number chunks by it.
        if record_batch.num_rows() != block_rows(k) {
            return Err(corrupt(format!(
                "read {} rows at row {} where {} were expected",
                record_batch.num_rows(),
                k * batch,
                block_rows(k)
            )));
        }
        let column = |name: &str| {
            record_batch
                .column_by_name(name)
                .ok_or_else(|| corrupt(format!("kept file without a `{name}` column (needs doc_id and text)")))
        };
        let ids = column("doc_id")?;
        let texts = column("text")?;
        let n = record_batch.num_rows();
        let mut out = KeptBatch::default();
        for i in 0..n {
            out.ids.push(cell_id(ids, i).map_err(|why| corrupt(format!("column `doc_id` row {i}: {why}")))?);
            let text = cell_str(texts, i).map_err(|why| corrupt(format!("column `text` row {i}: {why}")))?;
            out.texts.push(text.ok_or_else(|| corrupt(format!("column `text` row {i}: null")))?);
        }
        out.source_ids = match record_batch.column_by_name("source_id") {
            Some(c) => (0..n)
                .map(|i| cell_str(c, i).map_err(|why| corrupt(format!("column `source_id` row {i}: {why}"))))
                .collect::<Result<_>>()?,
            None => vec![None; n],
        };
        out.domains = match record_batch.column_by_name("domain") {
            Some(c) => (0..n)
                .map(|i| {
                    cell_str(c, i)
                        .map(|d| d.unwrap_or_else(|| file_domain.clone()))
                        .map_err(|why| corrupt(format!("column `domain` row {i}: {why}")))
                })
                .collect::<Result<_>>()?,
            None => vec![file_domain.clone(); n],
        };
        f(k, out)?;
    }
    Ok(())
}

fn cell_str(column: &ArrayRef, i: usize) -> std::result::Result<Option<String>, String> {
    use arrow_array::Array;
    use arrow_array::cast::AsArray;
    if column.is_null(i) {
        return Ok(None);
    }
    Ok(Some(match column.data_type() {
        DataType::Utf8 => column.as_string::<i32>().value(i).to_string(),
        DataType::LargeUtf8 => column.as_string::<i64>().value(i).to_string(),
        DataType::Utf8View => column.as_string_view().value(i).to_string(),
        other => return Err(format!("Arrow type {other}, expected a string type")),
    }))
}

fn cell_id(column: &ArrayRef, i: usize) -> std::result::Result<u64, String> {
    use arrow_array::Array;
    use arrow_array::cast::AsArray;
    use arrow_array::types::{Int32Type, Int64Type, UInt32Type, UInt64Type};
    if column.is_null(i) {
        return Err("null".into());
    }
    let signed = |v: i64| u64::try_from(v).map_err(|_| format!("negative id {v}"));
    match column.data_type() {
        DataType::UInt64 => Ok(column.as_primitive::<UInt64Type>().value(i)),
        DataType::UInt32 => Ok(u64::from(column.as_primitive::<UInt32Type>().value(i))),
        DataType::Int64 => signed(column.as_primitive::<Int64Type>().value(i)),
        DataType::Int32 => signed(i64::from(column.as_primitive::<Int32Type>().value(i))),
        other => Err(format!("Arrow type {other}, expected an integer type")),
    }
}

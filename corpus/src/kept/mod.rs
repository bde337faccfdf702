//! The kept documents, one Parquet file per domain (`kept/<domain>.parquet`), which later
//! stages (shards, search) and any Parquet reader take as input.

mod layout;
pub mod split;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_array::builder::{LargeStringBuilder, StringBuilder, UInt64Builder};
use arrow_array::cast::AsArray;
use arrow_array::{ArrayRef, RecordBatch};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_writer::{ArrowColumnChunk, ArrowRowGroupWriterFactory, compute_leaves};
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::metadata::KeyValue;
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::file::writer::SerializedFileWriter;
use parquet::schema::types::ColumnPath;
use rayon::prelude::*;

use crate::atomic::AtomicFile;
use crate::error::{Error, Result};
use crate::ingest::Document;
use layout::{Cuts, ROW_GROUP_ROWS};
pub use layout::{Piece, groups, layout};

/// Version of the kept-documents layout.
pub const KEPT_FORMAT_VERSION: u32 = 1;

/// Full row groups wait to be compressed together, one per thread, until there are as many
/// as threads or their text reaches this.
const WAITING_TEXT_BYTES: usize = 256 << 20;

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

/// One Parquet file of kept documents, written piece by piece ([`Piece`]). Full row groups
/// are compressed in parallel (one per thread) and appended in order, so the bytes do not
/// depend on the thread count; cut as [`layout`] cuts, they are `ArrowWriter`'s below its
/// text limit per row group.
struct DomainWriter {
    file: SerializedFileWriter<AtomicFile>,
    factory: ArrowRowGroupWriterFactory,
    schema: SchemaRef,
    /// The pieces of the row group being filled, and their text bytes.
    group: Vec<RecordBatch>,
    group_bytes: usize,
    /// Full row groups waiting to be encoded, in file order, and their text bytes.
    full: Vec<Vec<RecordBatch>>,
    full_bytes: usize,
    path: PathBuf,
}

impl DomainWriter {
    fn create(path: &Path, schema: &SchemaRef) -> Result<DomainWriter> {
        let file = AtomicFile::create(path)?;
        // `ArrowWriter` sets up the file (schema, Arrow metadata); its parts encode the row groups.
        let (file, factory) = ArrowWriter::try_new(file, schema.clone(), Some(properties()))
            .and_then(ArrowWriter::into_serialized_writer)
            .map_err(|source| Error::Parquet { path: path.to_path_buf(), source })?;
        Ok(DomainWriter {
            file,
            factory,
            schema: schema.clone(),
            group: Vec::new(),
            group_bytes: 0,
            full: Vec::new(),
            full_bytes: 0,
            path: path.to_path_buf(),
        })
    }

    fn parquet_error(&self, source: parquet::errors::ParquetError) -> Error {
        Error::Parquet { path: self.path.clone(), source }
    }

    /// Adds a piece to the row group being filled, which ends after it when `ends_group`.
    fn add(&mut self, piece: RecordBatch, ends_group: bool) -> Result<()> {
        self.group_bytes += text_bytes(&piece);
        self.group.push(piece);
        if ends_group {
            self.end_group();
        }
        if self.full.len() >= rayon::current_num_threads() || self.full_bytes >= WAITING_TEXT_BYTES {
            self.encode_full()?;
        }
        Ok(())
    }

    fn end_group(&mut self) {
        if !self.group.is_empty() {
            self.full.push(std::mem::take(&mut self.group));
            self.full_bytes += std::mem::take(&mut self.group_bytes);
        }
    }

    /// Encodes the waiting row groups, in parallel, and appends them in order.
    fn encode_full(&mut self) -> Result<()> {
        let groups = std::mem::take(&mut self.full);
        self.full_bytes = 0;
        let first = self.file.flushed_row_groups().len();
        let (factory, schema) = (&self.factory, &self.schema);
        let encoded: Vec<Vec<ArrowColumnChunk>> = groups
            .par_iter()
            .enumerate()
            .map(|(k, batches)| encode_group(factory, schema, first + k, batches))
            .collect::<std::result::Result<_, _>>()
            .map_err(|e| self.parquet_error(e))?;
        for chunks in encoded {
            let appended = self.file.next_row_group().and_then(|mut row_group| {
                for chunk in chunks {
                    chunk.append_to_row_group(&mut row_group)?;
                }
                row_group.close().map(drop)
            });
            appended.map_err(|e| self.parquet_error(e))?;
        }
        Ok(())
    }

    /// Ends the last row group, writes the footer and commits the file.
    fn finish(mut self) -> Result<PathBuf> {
        self.end_group();
        self.encode_full()?;
        let DomainWriter { file, path, .. } = self;
        // `into_inner` writes the footer and hands back the file to commit.
        let file = file.into_inner().map_err(|source| Error::Parquet { path: path.clone(), source })?;
        file.commit()?;
        Ok(path)
    }
}

/// Bytes of text in `batch` (a slice counts only its own rows).
fn text_bytes(batch: &RecordBatch) -> usize {
    let texts = batch.column_by_name("text").expect("kept batches have a text column").as_string::<i64>();
    let offsets = texts.value_offsets();
    usize::try_from(offsets[offsets.len() - 1] - offsets[0]).expect("offsets ascend")
}

/// One row group's column chunks, encoded and compressed.
fn encode_group(
    factory: &ArrowRowGroupWriterFactory,
    schema: &SchemaRef,
    index: usize,
    batches: &[RecordBatch],
) -> parquet::errors::Result<Vec<ArrowColumnChunk>> {
    let mut writers = factory.create_column_writers(index)?;
    for batch in batches {
        let mut leaves_writers = writers.iter_mut();
        for (field, column) in schema.fields().iter().zip(batch.columns()) {
            for leaf in compute_leaves(field, column)? {
                leaves_writers.next().expect("a writer per leaf column").write(&leaf)?;
            }
        }
    }
    writers.into_iter().map(|writer| writer.close()).collect()
}

/// A domain's file being written and its batch being gathered.
struct Domain {
    writer: DomainWriter,
    pending: Vec<Pending>,
    cuts: Cuts,
}

/// Writes kept documents per domain; files appear atomically on [`KeptWriter::finish`].
pub struct KeptWriter {
    dir: PathBuf,
    schema: SchemaRef,
    source_names: Vec<String>,
    domains: BTreeMap<String, Domain>,
}

impl KeptWriter {
    /// Writes into `dir` (created if missing); `source_names[i]` names source `i`.
    pub fn new(dir: &Path, source_names: Vec<String>) -> Result<KeptWriter> {
        std::fs::create_dir_all(dir).map_err(|source| Error::Io { path: dir.to_path_buf(), cause: source })?;
        Ok(KeptWriter { dir: dir.to_path_buf(), schema: Arc::new(schema()), source_names, domains: BTreeMap::new() })
    }

    /// Appends a document of `domain`.
    pub fn push(&mut self, domain: &str, doc: Document) -> Result<()> {
        if !self.domains.contains_key(domain) {
            let writer = DomainWriter::create(&self.dir.join(format!("{domain}.parquet")), &self.schema)?;
            self.domains.insert(domain.to_string(), Domain { writer, pending: Vec::new(), cuts: Cuts::default() });
        }
        let d = self.domains.get_mut(domain).expect("just inserted");
        let due = d.cuts.push(doc.text.len());
        d.pending.push((doc.id.get(), doc.source_id, usize::from(doc.source.0), doc.text));
        if due {
            flush(d, domain, &self.source_names)?;
        }
        Ok(())
    }

    /// Flushes and commits every file; returns the paths written, by domain.
    pub fn finish(mut self) -> Result<BTreeMap<String, PathBuf>> {
        let mut written = BTreeMap::new();
        for (domain, mut d) in std::mem::take(&mut self.domains) {
            flush(&mut d, &domain, &self.source_names)?;
            written.insert(domain, d.writer.finish()?);
        }
        Ok(written)
    }
}

/// Writes the gathered batch, cut into its pieces.
fn flush(d: &mut Domain, domain: &str, source_names: &[String]) -> Result<()> {
    if d.pending.is_empty() {
        return Ok(());
    }
    let lens: Vec<usize> = d.pending.iter().map(|p| p.3.len()).collect();
    let pieces = d.cuts.cut(&lens);
    let batch = to_batch(d.pending.drain(..), lens.iter().sum(), domain, &d.writer.schema, source_names)
        .map_err(|e| d.writer.parquet_error(e.into()))?;
    let mut row = 0;
    for piece in pieces {
        let rows = piece.rows as usize;
        d.writer.add(batch.slice(row, rows), piece.ends_group)?;
        row += rows;
    }
    Ok(())
}

/// Writer properties of every kept file.
fn properties() -> WriterProperties {
    WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::try_new(1).expect("valid level")))
        .set_max_row_group_row_count(Some(ROW_GROUP_ROWS))
        // Texts are all distinct and long: a dictionary only hashes every one before falling
        // back to plain pages, and min/max statistics only compare them.
        .set_column_dictionary_enabled(ColumnPath::from("text"), false)
        .set_column_statistics_enabled(ColumnPath::from("text"), EnabledStatistics::None)
        .set_key_value_metadata(Some(vec![KeyValue::new(
            "mixforge.format_version".into(),
            KEPT_FORMAT_VERSION.to_string(),
        )]))
        .build()
}

/// A pending document: id, the record's own id, source index, text.
type Pending = (u64, Option<String>, usize, String);

/// A record batch of `pending` documents, with `text_capacity` bytes of text.
fn to_batch(
    pending: impl ExactSizeIterator<Item = Pending>,
    text_capacity: usize,
    domain: &str,
    schema: &SchemaRef,
    source_names: &[String],
) -> std::result::Result<RecordBatch, arrow_schema::ArrowError> {
    let n = pending.len();
    let mut ids = UInt64Builder::with_capacity(n);
    let mut source_ids = StringBuilder::new();
    let mut sources = StringBuilder::new();
    let mut domains = StringBuilder::new();
    let mut texts = LargeStringBuilder::with_capacity(n, text_capacity);
    for (id, source_id, source, text) in pending {
        ids.append_value(id);
        source_ids.append_option(source_id);
        sources.append_value(&source_names[source]);
        domains.append_value(domain);
        texts.append_value(text);
    }
    let columns: Vec<ArrayRef> = vec![
        Arc::new(ids.finish()),
        Arc::new(source_ids.finish()),
        Arc::new(sources.finish()),
        Arc::new(domains.finish()),
        Arc::new(texts.finish()),
    ];
    RecordBatch::try_new(schema.clone(), columns)
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

#[cfg(test)]
mod tests {
    use super::layout::{BATCH_BYTES, BATCH_DOCS};
    use super::*;
    use crate::ids::{DocId, FileIdx, SourceIdx};
    use parquet::file::reader::{FileReader, SerializedFileReader};

    /// Documents of the given text lengths, in order.
    pub(super) fn documents(lengths: &[usize]) -> Vec<Document> {
        lengths
            .iter()
            .enumerate()
            .map(|(row, &len)| Document {
                id: DocId::new(FileIdx(0), row as u32),
                source: SourceIdx(0),
                source_id: (row % 3 == 0).then(|| row.to_string()),
                text: format!("{row} {}", "word ".repeat(len / 5)),
            })
            .collect()
    }

    /// A fresh path under the temp folder (tests run concurrently).
    pub(super) fn temp_path(what: &str) -> PathBuf {
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        std::env::temp_dir().join(format!("mixforge-kept-{}-{n}-{what}", std::process::id()))
    }

    /// The kept file of `docs` written on `threads` threads.
    fn kept_file(docs: &[Document], threads: usize) -> Vec<u8> {
        let dir = temp_path("kept");
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
        pool.install(|| {
            let mut writer = KeptWriter::new(&dir, vec!["src".into()]).unwrap();
            for doc in docs {
                writer.push("web", doc.clone()).unwrap();
            }
            writer.finish().unwrap();
        });
        let bytes = std::fs::read(dir.join("web.parquet")).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        bytes
    }

    /// The rows of each row group of a Parquet file.
    fn row_group_rows(file: &[u8]) -> Vec<i64> {
        let path = temp_path("groups.parquet");
        std::fs::write(&path, file).unwrap();
        let reader = SerializedFileReader::new(std::fs::File::open(&path).unwrap()).unwrap();
        let rows = reader.metadata().row_groups().iter().map(|g| g.num_rows()).collect();
        std::fs::remove_file(&path).unwrap();
        rows
    }

    /// `ArrowWriter` fed the batches `KeptWriter::push` makes.
    fn arrow_writers_file(docs: &[Document]) -> Vec<u8> {
        let schema: SchemaRef = Arc::new(schema());
        let mut writer = ArrowWriter::try_new(Vec::new(), schema.clone(), Some(properties())).unwrap();
        let (mut pending, mut bytes) = (Vec::new(), 0);
        for (k, doc) in docs.iter().enumerate() {
            bytes += doc.text.len();
            pending.push((doc.id.get(), doc.source_id.clone(), 0, doc.text.clone()));
            if pending.len() >= BATCH_DOCS || bytes >= BATCH_BYTES || k + 1 == docs.len() {
                let batch = to_batch(pending.drain(..), bytes, "web", &schema, &["src".to_string()]).unwrap();
                writer.write(&batch).unwrap();
                bytes = 0;
            }
        }
        writer.into_inner().unwrap()
    }

    #[test]
    fn row_groups_encoded_in_parallel_are_arrow_writers_bytes() {
        // 20,000 short documents: two full row groups and a partial one.
        let docs = documents(&(0..20_000).map(|row| row % 485).collect::<Vec<_>>());
        let reference = arrow_writers_file(&docs);
        for threads in [1, 3] {
            assert!(kept_file(&docs, threads) == reference, "{threads} threads: kept file differs from ArrowWriter's");
        }
        // 32 documents of 1 MiB flush a batch early, so a later batch of 1,024 crosses the
        // row-group boundary and is split there.
        let lengths: Vec<usize> = [vec![10; 100], vec![1 << 20; 32], vec![10; 9_000]].concat();
        let docs = documents(&lengths);
        let reference = arrow_writers_file(&docs);
        assert_eq!(row_group_rows(&reference), [8192, 940]);
        for threads in [1, 3] {
            assert!(kept_file(&docs, threads) == reference, "{threads} threads: kept file differs from ArrowWriter's");
        }
    }

    #[test]
    fn long_documents_end_row_groups_by_text() {
        let docs = documents(&[1 << 20; 100]);
        let file = kept_file(&docs, 1);
        assert!(kept_file(&docs, 3) == file, "the row groups depend on the thread count");
        // 64 MiB of text ends a group: a batch of 32 documents at a time, so 64 then 36.
        assert_eq!(row_group_rows(&file), [64, 36]);
    }
}

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
use parquet::file::properties::WriterProperties;

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
        std::fs::create_dir_all(dir).map_err(|source| Error::Io { path: dir.to_path_buf(), source })?;
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
        let path = self.dir.join(format!("{}.parquet", file_stem(domain)));
        let file = AtomicFile::create(&path)?;
        let props = WriterProperties::builder()
            .set_compression(Compression::ZSTD(ZstdLevel::try_new(1).expect("valid level")))
            .set_max_row_group_row_count(Some(8192))
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

/// A domain name made safe as a file name.
pub fn file_stem(domain: &str) -> String {
    domain.chars().map(|c| if c.is_alphanumeric() || c == '-' || c == '_' || c == '.' { c } else { '_' }).collect()
}

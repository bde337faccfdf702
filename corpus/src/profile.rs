//! The profile table: one row per document with its signals and verdicts (`profile.parquet`).

use std::path::Path;
use std::sync::Arc;

use arrow_array::builder::{BooleanBuilder, Float32Builder, StringBuilder, UInt64Builder};
use arrow_array::{ArrayRef, RecordBatch};
use arrow_schema::{DataType, Field, Schema};
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::metadata::KeyValue;
use parquet::file::properties::WriterProperties;
use serde::{Deserialize, Serialize};

use crate::atomic::AtomicFile;
use crate::error::{Error, Result};
use crate::filters::{Rule, RuleSet};
use crate::ids::{DocId, SourceIdx};
use crate::signals::Signals;

/// Version of the profile table layout, stored in the Parquet key-value metadata.
pub const PROFILE_FORMAT_VERSION: u32 = 1;

/// Why a document was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum DropReason {
    /// Failed a quality rule (filter mode `drop`); the first failed rule.
    Filter(Rule),
    /// Same normalized text as its cluster's keeper.
    ExactDup,
    /// Near duplicate of its cluster's keeper.
    NearDup,
    /// Contains an evaluation item of this benchmark (index into the run's benchmarks).
    Contaminated(u16),
}

impl DropReason {
    /// The `drop_reason` string: `filter:<rule>`, `exact_dup`, `near_dup` or
    /// `contaminated:<benchmark>`; `benchmarks` names the run's evaluation sets.
    pub fn name(self, benchmarks: &[String]) -> String {
        match self {
            DropReason::Filter(rule) => format!("filter:{}", rule.name()),
            DropReason::ExactDup => "exact_dup".into(),
            DropReason::NearDup => "near_dup".into(),
            DropReason::Contaminated(b) => format!("contaminated:{}", benchmarks[usize::from(b)]),
        }
    }
}

/// Everything the pipeline keeps about one document between passes (never its text).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DocRecord {
    /// Its id.
    pub id: DocId,
    /// Its source.
    pub source: SourceIdx,
    /// Its own id field.
    pub source_id: Option<String>,
    /// Size in bytes.
    pub bytes: u64,
    /// Signals (absent when neither profile nor filter ran).
    pub signals: Option<Signals>,
    /// Rules it failed.
    pub rules: RuleSet,
    /// The first evaluation item it contains, when any.
    pub contamination: Option<crate::decontam::Hit>,
    /// Why it was dropped, when it was.
    pub drop: Option<DropReason>,
    /// Smallest id of its duplicate cluster, when it has duplicates.
    pub dup_cluster: Option<DocId>,
}

type FloatColumn = (&'static str, fn(&Signals) -> f32);

const FLOAT_COLUMNS: [FloatColumn; 26] = [
    ("alpha_frac", |s| s.alpha_frac),
    ("digit_frac", |s| s.digit_frac),
    ("upper_frac", |s| s.upper_frac),
    ("whitespace_frac", |s| s.whitespace_frac),
    ("symbol_frac", |s| s.symbol_frac),
    ("non_ascii_frac", |s| s.non_ascii_frac),
    ("mean_word_len", |s| s.mean_word_len),
    ("alpha_word_frac", |s| s.alpha_word_frac),
    ("symbol_word_ratio", |s| s.symbol_word_ratio),
    ("bullet_line_frac", |s| s.bullet_line_frac),
    ("ellipsis_line_frac", |s| s.ellipsis_line_frac),
    ("terminal_punct_line_frac", |s| s.terminal_punct_line_frac),
    ("short_line_frac", |s| s.short_line_frac),
    ("dup_line_frac", |s| s.dup_line_frac),
    ("dup_para_frac", |s| s.dup_para_frac),
    ("dup_line_char_frac", |s| s.dup_line_char_frac),
    ("dup_para_char_frac", |s| s.dup_para_char_frac),
    ("top_2gram_frac", |s| s.top_ngram_frac[0]),
    ("top_3gram_frac", |s| s.top_ngram_frac[1]),
    ("top_4gram_frac", |s| s.top_ngram_frac[2]),
    ("dup_5gram_frac", |s| s.dup_ngram_frac[0]),
    ("dup_6gram_frac", |s| s.dup_ngram_frac[1]),
    ("dup_7gram_frac", |s| s.dup_ngram_frac[2]),
    ("dup_8gram_frac", |s| s.dup_ngram_frac[3]),
    ("dup_9gram_frac", |s| s.dup_ngram_frac[4]),
    ("dup_10gram_frac", |s| s.dup_ngram_frac[5]),
];

type CountColumn = (&'static str, fn(&Signals) -> u64);

const COUNT_COLUMNS: [CountColumn; 5] = [
    ("chars", |s| s.chars),
    ("words", |s| s.words),
    ("lines", |s| s.lines),
    ("est_tokens", |s| s.est_tokens),
    ("stop_words", |s| s.stop_words),
];

/// The Arrow schema of `profile.parquet`.
pub fn schema() -> Schema {
    let mut fields = vec![
        Field::new("doc_id", DataType::UInt64, false),
        Field::new("source_id", DataType::Utf8, true),
        Field::new("source", DataType::Utf8, false),
        Field::new("domain", DataType::Utf8, false),
        Field::new("bytes", DataType::UInt64, false),
    ];
    fields.extend(COUNT_COLUMNS.iter().map(|(name, _)| Field::new(*name, DataType::UInt64, true)));
    fields.extend(FLOAT_COLUMNS.iter().map(|(name, _)| Field::new(*name, DataType::Float32, true)));
    fields.extend([
        Field::new("script", DataType::Utf8, true),
        Field::new("lang_hint", DataType::Utf8, true),
        Field::new("filter_flags", DataType::Utf8, true),
        Field::new("contaminated_by", DataType::Utf8, true),
        Field::new("contaminated_item", DataType::UInt64, true),
        Field::new("kept", DataType::Boolean, false),
        Field::new("drop_reason", DataType::Utf8, true),
        Field::new("dup_cluster", DataType::UInt64, true),
    ]);
    Schema::new(fields)
}

/// Writes `records` to `path` atomically. `source_names[i]` and `domains[i]` name source `i`.
pub fn write(
    path: &Path,
    records: &[DocRecord],
    source_names: &[String],
    domains: &[String],
    benchmarks: &[String],
) -> Result<()> {
    const CHUNK: usize = 65_536;
    let schema = Arc::new(schema());
    let parquet_err = |source| Error::Parquet { path: path.to_path_buf(), source };
    let mut file = AtomicFile::create(path)?;
    let props = WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::try_new(3).expect("valid level")))
        .set_key_value_metadata(Some(vec![KeyValue::new(
            "mixforge.format_version".into(),
            PROFILE_FORMAT_VERSION.to_string(),
        )]))
        .build();
    let mut writer = ArrowWriter::try_new(file.writer(), schema.clone(), Some(props)).map_err(parquet_err)?;
    for chunk in records.chunks(CHUNK) {
        let batch = RecordBatch::try_new(schema.clone(), columns(chunk, source_names, domains, benchmarks))
            .map_err(|e| parquet_err(e.into()))?;
        writer.write(&batch).map_err(parquet_err)?;
    }
    writer.close().map_err(parquet_err)?;
    file.commit()
}

fn columns(records: &[DocRecord], source_names: &[String], domains: &[String], benchmarks: &[String]) -> Vec<ArrayRef> {
    let n = records.len();
    let mut doc_id = UInt64Builder::with_capacity(n);
    let mut source_id = StringBuilder::new();
    let mut source = StringBuilder::new();
    let mut domain = StringBuilder::new();
    let mut bytes = UInt64Builder::with_capacity(n);
    let mut script = StringBuilder::new();
    let mut lang = StringBuilder::new();
    let mut flags = StringBuilder::new();
    let mut contaminated_by = StringBuilder::new();
    let mut contaminated_item = UInt64Builder::with_capacity(n);
    let mut kept = BooleanBuilder::with_capacity(n);
    let mut drop_reason = StringBuilder::new();
    let mut dup_cluster = UInt64Builder::with_capacity(n);
    for r in records {
        let s = usize::from(r.source.0);
        doc_id.append_value(r.id.get());
        source_id.append_option(r.source_id.as_deref());
        source.append_value(&source_names[s]);
        domain.append_value(&domains[s]);
        bytes.append_value(r.bytes);
        script.append_option(r.signals.as_ref().map(|s| s.script.name()));
        lang.append_option(r.signals.as_ref().map(|s| s.lang_hint.as_str()));
        flags.append_option(r.rules.names());
        contaminated_by.append_option(r.contamination.map(|hit| &benchmarks[usize::from(hit.benchmark)]));
        contaminated_item.append_option(r.contamination.map(|hit| u64::from(hit.item)));
        kept.append_value(r.drop.is_none());
        drop_reason.append_option(r.drop.map(|d| d.name(benchmarks)));
        dup_cluster.append_option(r.dup_cluster.map(DocId::get));
    }
    let mut out: Vec<ArrayRef> = vec![
        Arc::new(doc_id.finish()),
        Arc::new(source_id.finish()),
        Arc::new(source.finish()),
        Arc::new(domain.finish()),
        Arc::new(bytes.finish()),
    ];
    for (_, get) in COUNT_COLUMNS {
        let mut column = UInt64Builder::with_capacity(n);
        records.iter().for_each(|r| column.append_option(r.signals.as_ref().map(get)));
        out.push(Arc::new(column.finish()));
    }
    for (_, get) in FLOAT_COLUMNS {
        let mut column = Float32Builder::with_capacity(n);
        records.iter().for_each(|r| column.append_option(r.signals.as_ref().map(get)));
        out.push(Arc::new(column.finish()));
    }
    out.extend([
        Arc::new(script.finish()) as ArrayRef,
        Arc::new(lang.finish()),
        Arc::new(flags.finish()),
        Arc::new(contaminated_by.finish()),
        Arc::new(contaminated_item.finish()),
        Arc::new(kept.finish()),
        Arc::new(drop_reason.finish()),
        Arc::new(dup_cluster.finish()),
    ]);
    out
}

#[cfg(test)]
mod tests {
    /// The invariant "the corpus crate never holds the corpus' text": what pass 1 keeps per
    /// document is a fixed-size record (plus its own short id), whatever the document's length.
    #[test]
    fn a_document_record_is_small_and_holds_no_text() {
        let size = std::mem::size_of::<super::DocRecord>();
        assert!(size <= 320, "DocRecord is {size} bytes");
    }
}

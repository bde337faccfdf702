//! Every container we read gives the same documents; every malformed input gets its reason.

use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use arrow_array::{ArrayRef, RecordBatch, StringArray};
use corpus::config::{SourceConfig, Stages};
use corpus::pipeline::{self, Silent};
use parquet::arrow::ArrowWriter;

use crate::common::{config, gsm8k, scratch, shared_data, write_jsonl};

fn kept_texts(out: &Path) -> Vec<String> {
    let mut texts = Vec::new();
    for entry in std::fs::read_dir(out.join("kept")).unwrap() {
        let file = std::fs::File::open(entry.unwrap().path()).unwrap();
        let reader =
            parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file).unwrap().build().unwrap();
        for batch in reader {
            let batch = batch.unwrap();
            let column = batch.column_by_name("text").unwrap();
            let strings = column.as_any().downcast_ref::<arrow_array::LargeStringArray>().unwrap();
            texts.extend(strings.iter().map(|s| s.unwrap().to_string()));
        }
    }
    texts.sort();
    texts
}

fn write_parquet(path: &Path, texts: &[String]) {
    let ids: ArrayRef = Arc::new(StringArray::from_iter_values((0..texts.len()).map(|i| format!("doc-{i}"))));
    let text: ArrayRef = Arc::new(StringArray::from_iter_values(texts.iter()));
    let batch = RecordBatch::try_from_iter([("id", ids), ("text", text)]).unwrap();
    let props = parquet::file::properties::WriterProperties::builder().set_max_row_group_row_count(Some(50)).build();
    let mut writer = ArrowWriter::try_new(std::fs::File::create(path).unwrap(), batch.schema(), Some(props)).unwrap();
    writer.write(&batch).unwrap();
    writer.close().unwrap();
}

fn ingest_only(source: SourceConfig, out: &Path) -> pipeline::RunReport {
    let mut cfg = config(vec![source], out);
    cfg.stages = Stages { profile: true, filter: false, dedup: false };
    pipeline::run(&cfg, &Silent).unwrap()
}

/// JSONL, JSONL.gz, JSONL.zst and Parquet (several row groups) yield identical documents.
#[test]
fn containers_yield_the_same_documents() {
    let dir = scratch("containers");
    let texts = gsm8k(300);
    let plain = dir.join("docs.jsonl");
    write_jsonl(&plain, &texts);
    let raw = std::fs::read(&plain).unwrap();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&raw).unwrap();
    std::fs::write(dir.join("docs.jsonl.gz"), gz.finish().unwrap()).unwrap();
    std::fs::write(dir.join("docs.jsonl.zst"), zstd::encode_all(&raw[..], 3).unwrap()).unwrap();
    write_parquet(&dir.join("docs.parquet"), &texts);
    let mut expected = texts.clone();
    expected.sort();
    for name in ["docs.jsonl", "docs.jsonl.gz", "docs.jsonl.zst", "docs.parquet"] {
        let out = dir.join(format!("out-{name}"));
        let report = ingest_only(SourceConfig::new("math", vec![dir.join(name).display().to_string()]), &out);
        assert_eq!(report.manifest.accounting.totals.docs_in, 300, "{name}");
        assert_eq!(kept_texts(&out), expected, "{name}");
    }
}

/// Plain text split at a separator regex: WikiText-2 articles start at ` = Title = ` lines.
#[test]
fn text_files_split_at_the_separator() {
    let dir = scratch("text-split");
    let mut source =
        SourceConfig::new("wiki", vec![shared_data().join("corpus/wiki/wikitext-2-*.txt").display().to_string()]);
    source.separator = Some(r"^ = [^=].* = $".into());
    let report = ingest_only(source, &dir);
    // 122 documents: 120 articles and 2 fragments where an equation line looks like a heading.
    assert_eq!(report.manifest.accounting.totals.docs_in, 122);
    let texts = kept_texts(&dir);
    assert!(texts.iter().any(|t| t.starts_with(" = Robert <unk> = ")));
    let whole = ingest_only(
        SourceConfig::new("books", vec![shared_data().join("corpus/books/tinyshakespeare.txt").display().to_string()]),
        &dir.join("whole"),
    );
    assert_eq!(whole.manifest.accounting.totals.docs_in, 1);
}

/// Templates join several fields; a record without a field is rejected naming it.
#[test]
fn templates_build_text_from_fields() {
    let dir = scratch("template");
    std::fs::write(
        dir.join("qa.jsonl"),
        "{\"q\": \"Why?\", \"a\": \"Because.\", \"n\": 3}\n{\"q\": \"Only a question\"}\n",
    )
    .unwrap();
    let mut source = SourceConfig::new("qa", vec![dir.join("qa.jsonl").display().to_string()]);
    source.template = Some("Q: {q}\nA: {a} ({n})".into());
    let report = ingest_only(source, &dir.join("out"));
    assert_eq!(kept_texts(&dir.join("out")), vec!["Q: Why?\nA: Because. (3)".to_string()]);
    assert_eq!(report.manifest.accounting.totals.rejected.get("missing_field"), Some(&1));
    let rejects = std::fs::read_to_string(dir.join("out/rejects.jsonl")).unwrap();
    assert!(rejects.contains("`a`") && rejects.contains("\"line\":2"), "{rejects}");
}

/// Each kind of malformed input is counted under its reason, with file and line, and loses
/// nothing else; `--strict` stops at the first, naming file:line.
#[test]
fn malformed_inputs_are_counted_with_file_and_line() {
    let dir = scratch("malformed");
    let good = gsm8k(3);
    let good_line = |i: usize| serde_json::json!({"id": i, "text": good[i]}).to_string();
    let mut mixed = Vec::new();
    mixed.extend(format!("{}\n", good_line(0)).bytes());
    mixed.extend(b"{\"id\": 1, \"text\": \"unterminated\n");
    mixed.extend(b"{\"id\": 2, \"text\": \"bad \xff\xfe utf8\"}\n");
    mixed.extend(b"{\"id\": 3, \"body\": \"no text field\"}\n");
    mixed.extend(b"{\"id\": 4, \"text\": 42}\n");
    mixed.extend(b"[1, 2, 3]\n");
    mixed.extend(b"{\"id\": 6, \"text\": \"   \"}\n");
    mixed.extend(format!("{}\n", good_line(1)).bytes());
    std::fs::write(dir.join("mixed.jsonl"), &mixed).unwrap();
    std::fs::write(dir.join("empty.jsonl"), b"").unwrap();
    let lines: String = (0..3).map(|i| good_line(i) + "\n").collect::<String>().repeat(200);
    let gz = {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(lines.as_bytes()).unwrap();
        e.finish().unwrap()
    };
    std::fs::write(dir.join("cut.jsonl.gz"), &gz[..gz.len() / 2]).unwrap();
    let zst = zstd::encode_all(lines.as_bytes(), 3).unwrap();
    std::fs::write(dir.join("cut.jsonl.zst"), &zst[..zst.len() / 2]).unwrap();
    std::fs::write(dir.join("broken.parquet"), b"PAR1 this is not a parquet file").unwrap();

    let mut source = SourceConfig::new(
        "web",
        vec![dir.join("*.jsonl*").display().to_string(), dir.join("*.parquet").display().to_string()],
    );
    source.max_doc_bytes = 1 << 20;
    let out = dir.join("out");
    let report = ingest_only(source.clone(), &out);
    let totals = &report.manifest.accounting.totals;
    let rejected = |code: &str| totals.rejected.get(code).copied().unwrap_or(0);
    assert_eq!(
        rejected("invalid_json"),
        1,
        "the unterminated string; a line cut by a truncated archive counts as truncated"
    );
    assert_eq!(rejected("invalid_utf8"), 1);
    assert_eq!(rejected("missing_field"), 1);
    assert_eq!(rejected("not_text"), 1);
    assert_eq!(rejected("not_an_object"), 1);
    assert_eq!(rejected("empty_text"), 1);
    assert_eq!(rejected("empty_file"), 1);
    assert_eq!(rejected("truncated"), 2, "{:?}", totals.rejected);
    assert_eq!(rejected("unreadable"), 1);
    assert!(report.manifest.accounting.balances());
    // The readable part of the cut archives is kept, not lost.
    assert!(totals.docs_in > 2, "docs read before the cut are counted: {}", totals.docs_in);
    let rejects = std::fs::read_to_string(out.join("rejects.jsonl")).unwrap();
    assert!(
        rejects.contains("mixed.jsonl") && rejects.contains("\"line\":3") && rejects.contains("invalid_utf8"),
        "{rejects}"
    );
    assert_eq!(rejects.lines().count() as u64, totals.rejected_total());

    let mut strict = config(
        vec![SourceConfig::new("web", vec![dir.join("mixed.jsonl").display().to_string()])],
        &dir.join("strict"),
    );
    strict.strict = true;
    let err = pipeline::run(&strict, &Silent).unwrap_err().to_string();
    assert!(err.contains("mixed.jsonl:2") && err.contains("invalid JSON"), "{err}");
}

/// A record over `max_doc_bytes` is rejected without being buffered whole.
#[test]
fn oversized_records_are_rejected() {
    let dir = scratch("oversize");
    write_jsonl(&dir.join("docs.jsonl"), &["short text here".to_string(), "x".repeat(5000)]);
    let mut source = SourceConfig::new("web", vec![dir.join("docs.jsonl").display().to_string()]);
    source.max_doc_bytes = 1000;
    let report = ingest_only(source, &dir.join("out"));
    assert_eq!(report.manifest.accounting.totals.rejected.get("too_large"), Some(&1));
    assert_eq!(report.manifest.accounting.totals.docs_in, 1);
}

/// A glob that matches nothing is an error naming the pattern.
#[test]
fn missing_inputs_are_named() {
    let dir = scratch("missing");
    let cfg = config(vec![SourceConfig::new("web", vec![dir.join("nothing-*.jsonl").display().to_string()])], &dir);
    let err = pipeline::run(&cfg, &Silent).unwrap_err().to_string();
    assert!(err.contains("nothing-*.jsonl") && err.contains("matched no file"), "{err}");
}

//! Whole runs on real data: accounting, determinism, duplicates found and kept right.

use std::collections::BTreeMap;
use std::path::Path;

use arrow_array::Array;
use arrow_array::cast::AsArray;
use arrow_array::types::UInt64Type;
use corpus::config::{DedupScope, FilterMode, SourceConfig};
use corpus::pipeline::{self, Silent};

use crate::common::{Rng, config, gsm8k, mutate, scratch, shared_data, wiki_articles, write_jsonl};

fn shared_sources() -> Vec<SourceConfig> {
    let data = shared_data().join("corpus");
    let path = |p: &str| data.join(p).display().to_string();
    let mut wiki = SourceConfig::new("wiki", vec![path("wiki/*.txt")]);
    wiki.separator = Some(r"^ = [^=].* = $".into());
    let mut math = SourceConfig::new("math", vec![path("math/*.jsonl")]);
    math.template = Some("{question}\n{answer}".into());
    vec![
        SourceConfig::new("web", vec![path("web/*.jsonl")]),
        wiki,
        SourceConfig::new("books", vec![path("books/*.txt")]),
        math,
        SourceConfig::new("code", vec![path("code/*.jsonl")]),
    ]
}

/// Reads (doc_id, kept, drop_reason, dup_cluster) from a profile.
fn verdicts(out: &Path) -> Vec<(u64, bool, Option<String>, Option<u64>)> {
    let file = std::fs::File::open(out.join("profile.parquet")).unwrap();
    let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file).unwrap().build().unwrap();
    let mut rows = Vec::new();
    for batch in reader {
        let batch = batch.unwrap();
        let ids = batch.column_by_name("doc_id").unwrap().as_primitive::<UInt64Type>().clone();
        let kept = batch.column_by_name("kept").unwrap().as_boolean().clone();
        let reasons = batch.column_by_name("drop_reason").unwrap().as_string::<i32>().clone();
        let clusters = batch.column_by_name("dup_cluster").unwrap().as_primitive::<UInt64Type>().clone();
        for i in 0..batch.num_rows() {
            rows.push((
                ids.value(i),
                kept.value(i),
                reasons.is_valid(i).then(|| reasons.value(i).to_string()),
                clusters.is_valid(i).then(|| clusters.value(i)),
            ));
        }
    }
    rows
}

fn file_bytes(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut files = BTreeMap::new();
    for rel in ["profile.parquet", "summary.parquet", "summary.json", "rejects.jsonl"] {
        files.insert(rel.to_string(), std::fs::read(dir.join(rel)).unwrap());
    }
    for entry in std::fs::read_dir(dir.join("kept")).unwrap() {
        let path = entry.unwrap().path();
        files.insert(format!("kept/{}", path.file_name().unwrap().to_string_lossy()), std::fs::read(path).unwrap());
    }
    files
}

/// The whole shared corpus: every document accounted for, the known counts, and two runs
/// byte-identical.
#[test]
fn shared_corpus_runs_accounted_and_deterministic() {
    let dir = scratch("shared-corpus");
    let first = pipeline::run(&config(shared_sources(), &dir.join("a")), &Silent).unwrap();
    let m = &first.manifest;
    assert!(m.accounting.balances());
    assert_eq!(m.accounting.totals.docs_in, 7_972);
    assert_eq!(m.accounting.totals.rejected_total(), 0);
    let per_domain: BTreeMap<&str, u64> = m.accounting.domains.iter().map(|(d, c)| (d.as_str(), c.docs_in)).collect();
    assert_eq!(per_domain, BTreeMap::from([("books", 1), ("code", 356), ("math", 7_473), ("web", 20), ("wiki", 122)]));
    let report = m.dedup_report.as_ref().unwrap();
    assert_eq!(report.exact_removed, 0, "the corpus has no exact duplicates");
    assert!(
        report.near_removed > 0 && report.near_removed < 40,
        "a handful of near duplicates: {}",
        report.near_removed
    );
    // The summary has one row per domain plus `all`.
    assert_eq!(first.summary.len(), 6);
    assert_eq!(first.summary.last().unwrap().docs, 7_972);

    pipeline::run(&config(shared_sources(), &dir.join("b")), &Silent).unwrap();
    assert_eq!(file_bytes(&dir.join("a")), file_bytes(&dir.join("b")), "two runs give identical outputs");
}

/// Exact copies (with case and spacing changed) are always removed, whatever else is on.
#[test]
fn exact_duplicates_are_always_removed() {
    let dir = scratch("exact");
    let mut rng = Rng(11);
    let originals = gsm8k(400);
    let mut texts = originals.clone();
    let mut copies_of = vec![0usize; originals.len()];
    for _ in 0..150 {
        let i = rng.below(originals.len());
        copies_of[i] += 1;
        let copy = originals[i].replace(' ', "  ").to_uppercase();
        texts.insert(rng.below(texts.len() + 1), copy);
    }
    write_jsonl(&dir.join("docs.jsonl"), &texts);
    for (minhash, scope) in [(false, DedupScope::Global), (true, DedupScope::Global), (true, DedupScope::PerDomain)] {
        let out = dir.join(format!("out-{minhash}-{scope:?}"));
        let mut cfg = config(vec![SourceConfig::new("math", vec![dir.join("docs.jsonl").display().to_string()])], &out);
        cfg.dedup.minhash = minhash;
        cfg.dedup.scope = scope;
        let report = pipeline::run(&cfg, &Silent).unwrap();
        let d = report.manifest.dedup_report.unwrap();
        assert_eq!(d.exact_removed, 150, "minhash {minhash}, {scope:?}");
        assert_eq!(report.manifest.accounting.totals.docs_kept + 150 + d.near_removed, texts.len() as u64);
    }
}

/// Near duplicates planted in real articles are removed with verification when their Jaccard
/// is well above the threshold, and kept when well below; keepers are the longest copy.
#[test]
fn planted_near_duplicates_are_removed_with_verification() {
    let dir = scratch("near");
    let articles: Vec<String> = wiki_articles().into_iter().take(40).collect();
    let mut rng = Rng(5);
    let mut texts = articles.clone();
    let close: Vec<String> = articles[..20].iter().map(|a| mutate(a, 0.005, &mut rng)).collect();
    let far: Vec<String> = articles[20..].iter().map(|a| mutate(a, 0.2, &mut rng)).collect();
    texts.extend(close.iter().cloned());
    texts.extend(far.iter().cloned());
    write_jsonl(&dir.join("docs.jsonl"), &texts);
    let mut cfg =
        config(vec![SourceConfig::new("wiki", vec![dir.join("docs.jsonl").display().to_string()])], &dir.join("out"));
    cfg.filter.mode = FilterMode::Off;
    let report = pipeline::run(&cfg, &Silent).unwrap();
    let d = report.manifest.dedup_report.unwrap();
    assert_eq!(d.near_removed, 20, "{d:?}");
    let rows = verdicts(&dir.join("out"));
    for (i, row) in rows.iter().enumerate() {
        if (60..80).contains(&i) {
            assert!(row.1, "a copy at Jaccard ≈ 0.35 stays: row {i}");
        }
        if (40..60).contains(&i) {
            // Exactly one of the original and its close copy is kept: the longer one.
            let original = &rows[i - 40];
            assert_eq!(row.3, original.3, "same cluster");
            assert!(row.1 != original.1);
            let keeper_is_copy = texts[i].len() > texts[i - 40].len();
            assert_eq!(row.1, keeper_is_copy);
            assert_eq!(row.2.as_deref().or(original.2.as_deref()), Some("near_dup"));
        }
    }
}

/// Quality rules in drop mode remove documents with `filter:<rule>` and count every rule.
#[test]
fn filter_drop_mode_removes_with_reasons() {
    let dir = scratch("filter-drop");
    let mut texts = wiki_articles().into_iter().take(10).collect::<Vec<_>>();
    texts.push("buy now ".repeat(40));
    texts.push("too short".into());
    write_jsonl(&dir.join("docs.jsonl"), &texts);
    let mut cfg =
        config(vec![SourceConfig::new("web", vec![dir.join("docs.jsonl").display().to_string()])], &dir.join("out"));
    cfg.filter.mode = FilterMode::Drop;
    let report = pipeline::run(&cfg, &Silent).unwrap();
    let totals = &report.manifest.accounting.totals;
    assert!(report.manifest.accounting.balances());
    assert_eq!(totals.dropped.get("filter:gopher_min_words"), Some(&1), "{:?}", totals.dropped);
    assert!(totals.dropped.keys().any(|k| k.starts_with("filter:gopher_")));
    assert!(totals.filter_flagged.get("gopher_top_ngram").copied().unwrap_or(0) >= 1);
}

//! Regressions for inputs that once gave wrong results without an error, or panicked: several
//! sources in one domain, stale outputs reused by a rerun, users' own Parquet and shard files,
//! unsafe domain names, directories a command must not replace.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::{ArrayRef, Int64Array, RecordBatch, StringArray, UInt64Array};
use arrow_schema::{Field, Schema};
use corpus::config::SourceConfig;
use corpus::pipeline::{self, Silent};
use corpus::shards::{self, Dtype, ShardConfig, Shards, Split, TokenizerChoice};

use crate::common::{config, scratch, shared_data};

fn source(domain: &str, glob: &str) -> SourceConfig {
    SourceConfig::new(domain, vec![shared_data().join("corpus").join(glob).display().to_string()])
}

/// Shard settings: `input`'s kept documents into `out`, split seed 0.
fn sharding(
    input: &Path,
    out: &Path,
    tokenizer: &TokenizerChoice,
    val_fraction: f64,
    chunk_docs: usize,
) -> ShardConfig {
    let tokenizer = tokenizer.clone();
    ShardConfig {
        input: input.to_path_buf(),
        out: out.to_path_buf(),
        tokenizer,
        val_fraction,
        split_seed: 0,
        chunk_docs,
    }
}

/// (domain column → rows) of a Parquet file.
fn domain_counts(path: &Path) -> BTreeMap<String, u64> {
    let file = std::fs::File::open(path).unwrap();
    let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file).unwrap().build().unwrap();
    let mut counts = BTreeMap::new();
    for batch in reader {
        let batch = batch.unwrap();
        let domains = batch.column_by_name("domain").unwrap().as_string::<i32>().clone();
        for i in 0..batch.num_rows() {
            *counts.entry(domains.value(i).to_string()).or_insert(0) += 1;
        }
    }
    counts
}

/// Two sources in one domain, the second source index past the number of domains: every
/// profile row and summary row carries its source's domain, and the counts agree with the
/// accounting (this panicked after all the work, or mislabelled rows).
#[test]
fn several_sources_in_one_domain_keep_their_domain() {
    let dir = scratch("two-sources-one-domain");
    let mut math = source("web", "math/*.jsonl");
    math.name = Some("math-as-web".into());
    math.template = Some("{question}\n{answer}".into());
    let sources = vec![source("code", "code/*.jsonl"), source("web", "web/*.jsonl"), math];
    let report = pipeline::run(&config(sources, &dir), &Silent).unwrap();
    let accounting = &report.manifest.accounting;
    let want: BTreeMap<String, u64> = accounting.domains.iter().map(|(d, c)| (d.clone(), c.docs_in)).collect();
    assert_eq!(want, BTreeMap::from([("code".to_string(), 356), ("web".to_string(), 20 + 7_473)]));
    assert_eq!(domain_counts(&dir.join("profile.parquet")), want);
    let summary: BTreeMap<String, u64> = report.summary.iter().map(|r| (r.domain.clone(), r.docs)).collect();
    assert_eq!(summary.get("web"), Some(&(20 + 7_473)));
    assert_eq!(summary.get("code"), Some(&356));
    let kept = domain_counts(&dir.join("kept/web.parquet"));
    assert_eq!(kept.keys().collect::<Vec<_>>(), ["web"]);
}

/// A rerun into the same directory with another corpus drops the kept files of domains it no
/// longer has, and the shards never reuse a tokenizer or chunk made from other documents.
#[test]
fn reruns_never_reuse_outputs_of_another_corpus() {
    let dir = scratch("stale-outputs");
    let run = dir.join("run");
    let trained = TokenizerChoice::Train { vocab_size: 600, sample_docs_per_domain: 50 };
    let shard_config =
        |chunk_docs: usize, val_fraction: f64| sharding(&run, &dir.join("shards"), &trained, val_fraction, chunk_docs);
    pipeline::run(&config(vec![source("code", "code/*.jsonl"), source("web", "web/*.jsonl")], &run), &Silent).unwrap();
    let first = shards::write(&shard_config(40, 0.05), &Silent).unwrap();
    assert!(first.domains.contains_key("web"));
    let tokenizer_before = std::fs::read(dir.join("shards/tokenizer.json")).unwrap();

    // Same domains and vocabulary size, other documents: `code` now holds the web pages.
    let rerun = pipeline::run(&config(vec![source("code", "web/*.jsonl")], &run), &Silent).unwrap();
    let kept = rerun.manifest.accounting.totals.docs_kept;
    assert!(!run.join("kept/web.parquet").exists(), "kept/ still holds the earlier run's web domain");
    let second = shards::write(&shard_config(40, 0.05), &Silent).unwrap();
    assert_eq!(second.domains.keys().collect::<Vec<_>>(), ["code"]);
    assert!(!dir.join("shards/web").exists(), "the earlier run's web shards are still there");
    assert_ne!(std::fs::read(dir.join("shards/tokenizer.json")).unwrap(), tokenizer_before, "stale tokenizer");
    let fresh = dir.join("fresh");
    let mut clean = shard_config(40, 0.05);
    clean.out = fresh.clone();
    let want = shards::write(&clean, &Silent).unwrap();
    assert_eq!(second.domains, want.domains, "a rerun equals a fresh run");
    assert_eq!(second.domains["code"].train_docs + second.domains["code"].val_docs, kept);

    // Other split settings: chunks are rebuilt, not trusted, and stale chunk files go.
    let resplit = shards::write(&shard_config(7, 0.5), &Silent).unwrap();
    let mut clean = shard_config(7, 0.5);
    clean.out = dir.join("fresh-resplit");
    assert_eq!(resplit.domains, shards::write(&clean, &Silent).unwrap().domains);
    let code = Shards::open(&dir.join("shards")).unwrap();
    let docs: u64 = [Split::Train, Split::Val].iter().map(|s| code.docs("code", *s).unwrap().count() as u64).sum();
    assert_eq!(docs, kept);
    let markers = std::fs::read_dir(dir.join("shards/code"))
        .unwrap()
        .filter(|e| e.as_ref().unwrap().file_name().to_string_lossy().starts_with("chunk-"))
        .count();
    assert_eq!(markers as u64, kept.div_ceil(7), "{kept} documents in chunks of 7");
}

/// With a tokenizer the user brings (the same on every rerun), a chunk whose documents changed
/// is rebuilt, not trusted because its marker names the same tokenizer.
#[test]
fn chunks_are_rebuilt_when_their_documents_change() {
    let dir = scratch("chunk-key");
    let run = dir.join("run");
    let tokenizer = TokenizerChoice::File(shared_data().join("tokenizers/gpt-neo-test-tokenizer.json"));
    let shard_config = |out: &Path| sharding(&run, out, &tokenizer, 0.1, 8);
    pipeline::run(&config(vec![source("code", "code/*.jsonl")], &run), &Silent).unwrap();
    shards::write(&shard_config(&dir.join("shards")), &Silent).unwrap();
    pipeline::run(&config(vec![source("code", "web/*.jsonl")], &run), &Silent).unwrap();
    let rerun = shards::write(&shard_config(&dir.join("shards")), &Silent).unwrap();
    let fresh = shards::write(&shard_config(&dir.join("fresh")), &Silent).unwrap();
    assert_eq!(rerun.domains, fresh.domains);
}

fn write_parquet(path: &Path, columns: Vec<(&str, ArrayRef)>) {
    let schema = Arc::new(Schema::new(
        columns.iter().map(|(n, a)| Field::new(*n, a.data_type().clone(), true)).collect::<Vec<_>>(),
    ));
    let batch = RecordBatch::try_new(schema.clone(), columns.into_iter().map(|(_, a)| a).collect()).unwrap();
    let file = std::fs::File::create(path).unwrap();
    let mut writer = parquet::arrow::ArrowWriter::try_new(file, schema, None).unwrap();
    writer.write(&batch).unwrap();
    writer.close().unwrap();
}

/// A user's own kept files with `Utf8` text and `Int64` ids shard and index like ours; a
/// column of the wrong type is an error naming the file and column, not a panic.
#[test]
fn users_kept_files_of_other_arrow_types_work_or_fail_clearly() {
    let dir = scratch("user-kept");
    let run = dir.join("run");
    std::fs::create_dir_all(run.join("kept")).unwrap();
    let texts: Vec<String> = crate::common::gsm8k(30);
    write_parquet(
        &run.join("kept/math.parquet"),
        vec![
            ("doc_id", Arc::new(Int64Array::from_iter_values(0..30)) as ArrayRef),
            ("text", Arc::new(StringArray::from_iter_values(texts.iter()))),
        ],
    );
    let trained = TokenizerChoice::Train { vocab_size: 400, sample_docs_per_domain: 30 };
    let config = sharding(&run, &dir.join("shards"), &trained, 0.1, 16);
    let manifest = shards::write(&config, &Silent).unwrap();
    assert_eq!(manifest.domains["math"].train_docs + manifest.domains["math"].val_docs, 30);
    assert_eq!(corpus::search::build_index(&run, &dir.join("index"), &Silent).unwrap(), 30);
    assert!(!corpus::search::search(&dir.join("index"), "the", None, 3).unwrap().is_empty());

    write_parquet(
        &run.join("kept/math.parquet"),
        vec![
            ("doc_id", Arc::new(UInt64Array::from_iter_values(0..30)) as ArrayRef),
            ("text", Arc::new(Int64Array::from_iter_values(0..30))),
        ],
    );
    for err in [
        shards::write(&config, &Silent).unwrap_err().to_string(),
        corpus::search::build_index(&run, &dir.join("index"), &Silent).unwrap_err().to_string(),
    ] {
        assert!(err.contains("math.parquet") && err.contains("`text`") && err.contains("Int64"), "{err}");
    }
    write_parquet(
        &run.join("kept/math.parquet"),
        vec![
            ("doc_id", Arc::new(Int64Array::from_iter_values([3, 2])) as ArrayRef),
            ("text", Arc::new(StringArray::from_iter_values(["a b", "c d"]))),
        ],
    );
    let err = shards::write(&config, &Silent).unwrap_err().to_string();
    assert!(err.contains("does not increase"), "{err}");
}

/// An index whose offsets decrease (reading it sliced out of bounds) or whose sizes disagree is
/// refused with the file named; token ids past u16 are refused when writing.
#[test]
fn malformed_shard_files_are_errors() {
    let dir = scratch("bad-idx");
    let entry = shards::write_shard(&dir, Split::Train, 0, &[(1, &[5, 6, 7][..]), (2, &[8][..])], Dtype::U16).unwrap();
    let (bin, idx) = (dir.join(&entry.tokens_file), dir.join(&entry.index_file));
    assert_eq!(shards::Shard::open(&bin, &idx, Dtype::U16).unwrap().doc(1).to_vec(), [8]);
    let words = |w: &[u64]| w.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
    // Sizes agree with the tokens file (4 tokens) in each, so only the new checks refuse them.
    let cases: [(&[u64], &str); 3] = [
        (&[2, 1, 2, 0, 5, 4], "decrease"),
        (&[2, 1, 2, 1, 3, 4], "not 0"),
        (&[u64::MAX, 1, 2, 0, 3, 4], "does not hold"),
    ];
    for (index, needle) in cases {
        std::fs::write(&idx, words(index)).unwrap();
        let err = shards::Shard::open(&bin, &idx, Dtype::U16).err().expect("refused").to_string();
        assert!(err.contains(needle) && err.contains("train-00000.idx"), "{index:?}: {err}");
    }
    let err = shards::write_shard(&dir, Split::Val, 0, &[(1, &[70_000][..])], Dtype::U16).unwrap_err().to_string();
    assert!(err.contains("70000") && err.contains("u16"), "{err}");
}

/// Domain names become file names unchanged, so ones that are not file-safe are refused up
/// front (a domain "my web" once came back as "my_web").
#[test]
fn unsafe_domain_names_are_refused() {
    let dir = scratch("domain-names");
    for bad in ["my web", "../up", ".hidden", "all", "a/b", "stream", "x.json"] {
        let err = pipeline::run(&config(vec![source(bad, "web/*.jsonl")], &dir), &Silent).unwrap_err().to_string();
        assert!(err.contains("sources[0].domain"), "{bad}: {err}");
    }
    assert!(corpus::config::check_domain_name("web-2.en_US").is_ok());
}

fn config_for(out: &Path) -> corpus::config::PipelineConfig {
    config(vec![source("web", "web/*.jsonl")], out)
}

/// The search index replaces only an index: pointed at a corpus run, it refuses and the run
/// is intact; an earlier index is replaced whole. Shards and corpus runs refuse directories
/// that are not theirs.
#[test]
fn the_index_never_replaces_what_is_not_an_index() {
    let dir = scratch("index-out");
    let run = dir.join("run");
    pipeline::run(&config(vec![source("web", "web/*.jsonl")], &run), &Silent).unwrap();
    let err = corpus::search::build_index(&run, &run, &Silent).unwrap_err().to_string();
    assert!(err.contains("refusing to replace"), "{err}");
    // Nor do the shards or a corpus run write into (and clean) a directory not theirs.
    let trained = TokenizerChoice::Train { vocab_size: 300, sample_docs_per_domain: 10 };
    let config = sharding(&run, &run.join("kept"), &trained, 0.1, 10);
    let err = shards::write(&config, &Silent).unwrap_err().to_string();
    assert!(err.contains("refusing to replace"), "{err}");
    let theirs = dir.join("theirs");
    std::fs::create_dir_all(&theirs).unwrap();
    std::fs::write(theirs.join("notes.txt"), "mine").unwrap();
    let err = pipeline::run(&config_for(&theirs), &Silent).unwrap_err().to_string();
    assert!(err.contains("refusing to replace"), "{err}");
    assert_eq!(std::fs::read_to_string(theirs.join("notes.txt")).unwrap(), "mine");
    assert!(run.join("kept/web.parquet").is_file() && run.join("manifest.json").is_file());
    let index = dir.join("index");
    assert_eq!(corpus::search::build_index(&run, &index, &Silent).unwrap(), 20);
    assert_eq!(corpus::search::build_index(&run, &index, &Silent).unwrap(), 20);
    let leftovers: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(leftovers.len(), 3, "no temporary directory left: {leftovers:?}");
}

/// One atomic writer: a directory appears whole or not at all; a file written through a path
/// (as safetensors does) is renamed into place only when the write succeeds.
#[test]
fn atomic_directories_and_files() {
    let dir = scratch("atomic");
    let target = dir.join("artifact");
    {
        let building = corpus::atomic::AtomicDir::create(&target).unwrap();
        std::fs::write(building.path().join("a"), b"1").unwrap();
        // Dropped without commit: nothing appears.
    }
    assert!(!target.exists());
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0);
    let building = corpus::atomic::AtomicDir::create(&target).unwrap();
    std::fs::write(building.path().join("a"), b"2").unwrap();
    building.commit().unwrap();
    assert_eq!(std::fs::read(target.join("a")).unwrap(), b"2");
    let failed: Result<(), corpus::Error> = corpus::atomic::write_via(&dir.join("f"), |tmp| {
        std::fs::write(tmp, b"half").unwrap();
        Err(corpus::Error::Corrupt { path: tmp.to_path_buf(), reason: "failed midway".into() })
    });
    assert!(failed.is_err());
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1, "only the committed directory");
}

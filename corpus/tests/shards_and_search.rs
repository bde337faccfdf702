//! Shards round-trip real text exactly; the reader returns what was written; search finds a
//! known phrase's document first.

use std::collections::BTreeMap;
use std::path::Path;

use arrow_array::cast::AsArray;
use arrow_array::types::UInt64Type;
use corpus::config::{SourceConfig, Stages};
use corpus::ids::DocId;
use corpus::pipeline::{self, Silent};
use corpus::shards::{self, ShardConfig, Shards, Split, TokenizerChoice};
use corpus::tokenize;

use crate::common::{config, gsm8k, scratch, shared_data, wiki_articles, write_jsonl};

/// A small real corpus run: math and wiki.
fn corpus_run(dir: &Path) -> std::path::PathBuf {
    let mut texts = gsm8k(400);
    texts.extend(wiki_articles().into_iter().take(20));
    write_jsonl(&dir.join("docs.jsonl"), &texts);
    let code = shared_data().join("corpus/code/rust-crates.jsonl");
    let run = dir.join("run");
    let mut cfg = config(
        vec![
            SourceConfig::new("prose", vec![dir.join("docs.jsonl").display().to_string()]),
            SourceConfig::new("code", vec![code.display().to_string()]),
        ],
        &run,
    );
    cfg.stages = Stages { profile: true, filter: false, dedup: false };
    pipeline::run(&cfg, &Silent).unwrap();
    run
}

fn kept_texts(run: &Path) -> BTreeMap<u64, String> {
    let mut texts = BTreeMap::new();
    for entry in std::fs::read_dir(run.join("kept")).unwrap() {
        let file = std::fs::File::open(entry.unwrap().path()).unwrap();
        for batch in
            parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file).unwrap().build().unwrap()
        {
            let batch = batch.unwrap();
            let ids = batch.column_by_name("doc_id").unwrap().as_primitive::<UInt64Type>().clone();
            let text = batch.column_by_name("text").unwrap().as_string::<i64>().clone();
            for i in 0..batch.num_rows() {
                texts.insert(ids.value(i), text.value(i).to_string());
            }
        }
    }
    texts
}

fn shard_config(run: &Path, out: &Path, tokenizer: TokenizerChoice) -> ShardConfig {
    ShardConfig {
        input: run.to_path_buf(),
        out: out.to_path_buf(),
        tokenizer,
        val_fraction: 0.1,
        split_seed: 0,
        chunk_docs: 100,
    }
}

/// Trained byte-level BPE: decode(encode(text)) == text for every document, the reader gives
/// back exactly the encoded tokens, and the manifest's counts equal the tokens on disk.
#[test]
fn trained_bpe_shards_round_trip_every_document() {
    let dir = scratch("shards-bpe");
    let run = corpus_run(&dir);
    let out = dir.join("shards");
    let manifest = shards::write(
        &shard_config(&run, &out, TokenizerChoice::Train { vocab_size: 2000, sample_docs_per_domain: 200 }),
        &Silent,
    )
    .unwrap();
    assert_eq!(manifest.vocab_size, 2000);
    let texts = kept_texts(&run);
    assert_eq!(manifest.total_docs, texts.len() as u64);
    let opened = Shards::open(&out).unwrap();
    let tokenizer = tokenize::load(&opened.tokenizer_path()).unwrap();
    let encoder = tokenize::Encoder::new(&tokenizer);
    let mut seen = 0;
    let mut tokens_on_disk = 0u64;
    for (domain, d) in &manifest.domains {
        assert!(d.val_docs > 0 && d.train_docs > d.val_docs, "{domain}: {d:?}");
        for split in [Split::Train, Split::Val] {
            for shard in opened.shards(domain, split).unwrap() {
                tokens_on_disk += shard.n_tokens();
                for i in 0..shard.len() {
                    let id = shard.doc_id(i).get();
                    let text = &texts[&id];
                    let stored = shard.doc(i).to_vec();
                    assert_eq!(stored, encoder.encode_by_pipeline(&[text.as_str()], false).unwrap()[0], "doc {id}");
                    assert_eq!(&tokenize::decode(&tokenizer, &stored).unwrap(), text, "decode(encode) of doc {id}");
                    assert_eq!(split, Split::of(id, 0.1, 0));
                    seen += 1;
                }
            }
        }
    }
    assert_eq!(seen, texts.len());
    assert_eq!(tokens_on_disk, manifest.total_tokens);
    let domain_tokens: u64 = manifest.domains.values().map(|d| d.train_tokens + d.val_tokens).sum();
    assert_eq!(domain_tokens, manifest.total_tokens);
    // Random access by id.
    let (&some_id, some_text) = texts.iter().nth(17).unwrap();
    let (_, _, tokens) = opened.find(DocId::from_raw(some_id)).unwrap().unwrap();
    assert_eq!(&tokenize::decode(&tokenizer, &tokens).unwrap(), some_text);
}

/// The tokenizers users bring: a Llama SentencePiece-BPE (byte fallback) and a GPT-NeoX
/// byte-level BPE. Shards read back what the tokenizer produced; both fit u16; iteration by
/// domain yields the same documents as random access.
#[test]
fn user_tokenizers_shard_and_read_back() {
    let dir = scratch("shards-user");
    let run = corpus_run(&dir);
    let texts = kept_texts(&run);
    for name in ["llama-test-tokenizer.json", "gpt-neo-test-tokenizer.json"] {
        let path = shared_data().join("tokenizers").join(name);
        let out = dir.join(name);
        let manifest = shards::write(&shard_config(&run, &out, TokenizerChoice::File(path.clone())), &Silent).unwrap();
        assert_eq!(manifest.dtype, shards::Dtype::U16, "{name}");
        let tokenizer = tokenize::load(&path).unwrap();
        let encoder = tokenize::Encoder::new(&tokenizer);
        let opened = Shards::open(&out).unwrap();
        let (mut ascii, mut ascii_round_trips) = (0, 0);
        for shard in opened.shards("prose", Split::Train).unwrap() {
            for i in 0..shard.len() {
                let text = &texts[&shard.doc_id(i).get()];
                let stored = shard.doc(i).to_vec();
                // The stored ids (the piecewise encoder's, for Llama) are `tokenizers`' own.
                assert_eq!(stored, encoder.encode_by_pipeline(&[text.as_str()], false).unwrap()[0]);
                if text.is_ascii() {
                    ascii += 1;
                    ascii_round_trips += usize::from(&tokenize::decode(&tokenizer, &stored).unwrap() == text);
                }
            }
        }
        let iterated: Vec<_> = opened.docs("prose", Split::Train).unwrap().collect();
        let train_docs = manifest.domains["prose"].train_docs as usize;
        assert_eq!(iterated.len(), train_docs);
        for (id, tokens) in iterated.iter().step_by(37) {
            assert_eq!(opened.find(*id).unwrap().unwrap().2, *tokens);
        }
        let shard = &opened.shards("prose", Split::Train).unwrap()[0];
        let first = shard.doc(0);
        assert_eq!((0..first.len()).map(|j| first.get(j)).collect::<Vec<_>>(), first.to_vec());
        // GPT-NeoX's byte-level BPE (NFC, the identity on ASCII) restores every ASCII text
        // exactly; the Llama file's SentencePiece decoding is not checked for exactness.
        assert!(ascii > 100, "{name}: enough ASCII documents");
        if name.starts_with("gpt-neo") {
            assert_eq!(ascii_round_trips, ascii, "{name}: decode(encode(x)) == x for ASCII text");
        }
    }
}

/// A rerun with the same tokenizer skips every finished chunk and gives the same manifest.
#[test]
fn rerun_skips_finished_chunks() {
    let dir = scratch("shards-rerun");
    let run = corpus_run(&dir);
    let out = dir.join("shards");
    let config = shard_config(&run, &out, TokenizerChoice::Train { vocab_size: 1000, sample_docs_per_domain: 100 });
    let first = shards::write(&config, &Silent).unwrap();
    let marker = out.join("prose/chunk-00000.json");
    let before = std::fs::metadata(&marker).unwrap().modified().unwrap();
    let second = shards::write(&config, &Silent).unwrap();
    assert_eq!(first, second);
    assert_eq!(std::fs::metadata(&marker).unwrap().modified().unwrap(), before, "finished chunk not rewritten");
    // A damaged shard is detected by its hash and rewritten.
    let shard = out.join("prose/train-00000.bin");
    std::fs::write(&shard, b"garbage").unwrap();
    let third = shards::write(&config, &Silent).unwrap();
    assert_eq!(first, third);
}

/// A search for a phrase of a known document returns it first; the domain filter holds.
#[test]
fn search_finds_a_known_phrase_first() {
    let dir = scratch("search");
    let run = corpus_run(&dir);
    let index = dir.join("index");
    let n = corpus::search::build_index(&run, &index, &Silent).unwrap();
    let texts = kept_texts(&run);
    assert_eq!(n, texts.len() as u64);
    let (id, _) = texts.iter().find(|(_, t)| t.contains("Natalia sold clips")).unwrap();
    let hits = corpus::search::search(&index, "\"Natalia sold clips to 48 of her friends\"", None, 5).unwrap();
    assert_eq!(hits[0].doc_id, *id, "{hits:?}");
    assert!(hits[0].snippet.contains("Natalia"), "{}", hits[0].snippet);
    let only_code = corpus::search::search(&index, "fn new", Some("code"), 5).unwrap();
    assert!(!only_code.is_empty() && only_code.iter().all(|h| h.domain == "code"));
    assert!(corpus::search::search(&index, "Natalia", Some("code"), 5).unwrap().is_empty());
}

/// A user's kept file with many small row groups, cut into chunks smaller than a row group and
/// smaller than 32 rows: tasks (each skipping the others' chunks) and the finishing run write
/// the one-process shards byte for byte.
#[test]
fn tasks_over_small_row_groups_write_the_one_process_shards() {
    use std::sync::Arc;

    use arrow_array::{ArrayRef, RecordBatch, StringArray, UInt64Array};
    let dir = scratch("shards-row-groups");
    let run = dir.join("run");
    std::fs::create_dir_all(run.join("kept")).unwrap();
    let texts = gsm8k(200);
    for (domain, range) in [("math", 0..130), ("more", 130..200)] {
        let ids: ArrayRef = Arc::new(UInt64Array::from_iter_values(range.clone().map(|i| i as u64 * 3)));
        let text: ArrayRef = Arc::new(StringArray::from_iter_values(range.map(|i| texts[i].as_str())));
        let batch = RecordBatch::try_from_iter([("doc_id", ids), ("text", text)]).unwrap();
        let props = parquet::file::properties::WriterProperties::builder().set_max_row_group_row_count(Some(7)).build();
        let file = std::fs::File::create(run.join(format!("kept/{domain}.parquet"))).unwrap();
        let mut writer = parquet::arrow::ArrowWriter::try_new(file, batch.schema(), Some(props)).unwrap();
        writer.write(&batch).unwrap();
        writer.close().unwrap();
    }
    let llama = TokenizerChoice::File(shared_data().join("tokenizers/llama-test-tokenizer.json"));
    let config = |out: &str| ShardConfig { chunk_docs: 9, ..shard_config(&run, &dir.join(out), llama.clone()) };
    shards::write(&config("one"), &Silent).unwrap();
    shards::prepare_tokenizer(&config("tasks")).unwrap();
    let mut taken = 0;
    for index in 0..4 {
        let report =
            shards::write_task(&config("tasks"), corpus::pipeline::parts::Shard { index, count: 4 }, &Silent).unwrap();
        assert_eq!(report.chunks, 15 + 8, "130 and 70 documents in chunks of 9");
        taken += report.chunks_taken;
    }
    assert_eq!(taken, 23);
    shards::write(&config("tasks"), &Silent).unwrap();
    for entry in walk(&dir.join("one")) {
        let rel = entry.strip_prefix(dir.join("one")).unwrap();
        assert!(std::fs::read(&entry).unwrap() == std::fs::read(dir.join("tasks").join(rel)).unwrap(), "{rel:?}");
    }
    assert_eq!(walk(&dir.join("one")).len(), walk(&dir.join("tasks")).len());
    // Another tokenizer into the folder: the manifest of the old one's shards goes first.
    let neox = TokenizerChoice::File(shared_data().join("tokenizers/gpt-neo-test-tokenizer.json"));
    shards::prepare_tokenizer(&ShardConfig { tokenizer: neox, ..config("tasks") }).unwrap();
    assert!(!dir.join("tasks/manifest.json").exists(), "a manifest beside another tokenizer");
    std::fs::remove_dir_all(&dir).unwrap();
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() { files.extend(walk(&path)) } else { files.push(path) }
    }
    files.sort();
    files
}

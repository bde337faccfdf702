//! Writing shards from a corpus run's `kept/` documents: tokenize, split, write atomically,
//! resume by chunk.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use arrow_array::cast::AsArray;
use arrow_array::types::UInt64Type;
use arrow_array::{Array, RecordBatch};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use serde::{Deserialize, Serialize};
use tokenizers::Tokenizer;

use super::{DomainShards, Dtype, SHARDS_FORMAT_VERSION, ShardEntry, ShardManifest, Split};
use crate::atomic::{self, AtomicFile};
use crate::error::{Error, IoContext, Result};
use crate::pipeline::{Progress, Unit};
use crate::tokenize;

/// Where the tokenizer comes from.
#[derive(Debug, Clone)]
pub enum TokenizerChoice {
    /// A `tokenizer.json` the user brings.
    File(PathBuf),
    /// Train a byte-level BPE of this vocabulary size on a sample of the kept documents.
    Train {
        /// Vocabulary size, special tokens included.
        vocab_size: usize,
        /// Documents sampled per domain (the first ones, in id order).
        sample_docs_per_domain: usize,
    },
}

/// Settings of `corpus shard`.
#[derive(Debug, Clone)]
pub struct ShardConfig {
    /// A corpus run directory (with `kept/`).
    pub input: PathBuf,
    /// Shard directory.
    pub out: PathBuf,
    /// Tokenizer.
    pub tokenizer: TokenizerChoice,
    /// Fraction of documents held out for validation.
    pub val_fraction: f64,
    /// Seed of the split hash.
    pub split_seed: u64,
    /// Documents per chunk (the unit of resumption).
    pub chunk_docs: usize,
}

/// A finished chunk, written after its shard files: what a rerun trusts.
#[derive(Debug, Serialize, Deserialize)]
struct ChunkMarker {
    format_version: u32,
    tokenizer_hash: String,
    shards: Vec<ShardEntry>,
}

/// Tokenizes every kept document into shards under `config.out`; returns the manifest.
pub fn write(config: &ShardConfig, progress: &dyn Progress) -> Result<ShardManifest> {
    if !(0.0..1.0).contains(&config.val_fraction) {
        return Err(Error::Config {
            field: "val_fraction".into(),
            reason: format!("must be in [0, 1), got {}", config.val_fraction),
        });
    }
    if config.chunk_docs == 0 {
        return Err(Error::Config { field: "chunk_docs".into(), reason: "must be at least 1".into() });
    }
    let kept = kept_files(&config.input)?;
    std::fs::create_dir_all(&config.out).at(&config.out)?;
    let tokenizer = obtain_tokenizer(config, &kept)?;
    let tokenizer_hash = tokenize::fingerprint(&tokenizer)?;
    let vocab_size = tokenizer.get_vocab_size(true);
    let dtype = Dtype::for_vocab(vocab_size);
    let mut domains = BTreeMap::new();
    for (domain, path) in &kept {
        let dir = config.out.join(crate::kept::file_stem(domain));
        std::fs::create_dir_all(&dir).at(&dir)?;
        remove_stale_temp_files(&dir)?;
        let shards = write_domain(config, path, &dir, &tokenizer, &tokenizer_hash, dtype, progress)?;
        domains.insert(domain.clone(), shards);
    }
    let total_docs = domains.values().map(|d: &DomainShards| d.train_docs + d.val_docs).sum();
    let total_tokens = domains.values().map(|d| d.train_tokens + d.val_tokens).sum();
    let manifest = ShardManifest {
        format_version: SHARDS_FORMAT_VERSION,
        tokenizer_hash,
        vocab_size: vocab_size as u32,
        dtype,
        val_fraction: config.val_fraction,
        split_seed: config.split_seed,
        chunk_docs: config.chunk_docs as u64,
        domains,
        total_docs,
        total_tokens,
        mixture: None,
    };
    atomic::write_json(&config.out.join("manifest.json"), &manifest)?;
    Ok(manifest)
}

/// `kept/<domain>.parquet` files of a run, by domain (read from the files' `domain` column
/// name via the file stem).
fn kept_files(input: &Path) -> Result<Vec<(String, PathBuf)>> {
    let dir = input.join("kept");
    let entries = std::fs::read_dir(&dir).map_err(|source| Error::Io {
        path: dir.clone(),
        source: std::io::Error::new(
            source.kind(),
            format!("{source} (run `mixforge corpus run ... --out {}` first)", input.display()),
        ),
    })?;
    let mut files = Vec::new();
    for entry in entries {
        let path = entry.at(&dir)?.path();
        if path.extension().is_some_and(|e| e == "parquet") {
            let domain = path.file_stem().expect("has a name").to_string_lossy().into_owned();
            files.push((domain, path));
        }
    }
    files.sort();
    if files.is_empty() {
        return Err(Error::Corrupt { path: dir, reason: "no kept documents (*.parquet)".into() });
    }
    Ok(files)
}

/// Reads `(doc_id, text)` batches of at most `batch` documents from a kept file.
fn read_kept(path: &Path, batch: usize, mut f: impl FnMut(Vec<u64>, Vec<String>) -> Result<()>) -> Result<()> {
    let parquet_err = |source| Error::Parquet { path: path.to_path_buf(), source };
    let file = std::fs::File::open(path).at(path)?;
    let reader = ParquetRecordBatchReaderBuilder::try_new(file)
        .map_err(parquet_err)?
        .with_batch_size(batch)
        .build()
        .map_err(parquet_err)?;
    for record_batch in reader {
        let record_batch: RecordBatch = record_batch.map_err(|e| parquet_err(e.into()))?;
        let corrupt = |what: &str| Error::Corrupt {
            path: path.to_path_buf(),
            reason: format!("kept file without a {what} column"),
        };
        let ids = record_batch.column_by_name("doc_id").ok_or_else(|| corrupt("doc_id"))?.as_primitive::<UInt64Type>();
        let texts = record_batch.column_by_name("text").ok_or_else(|| corrupt("text"))?.as_string::<i64>();
        f(ids.values().to_vec(), (0..texts.len()).map(|i| texts.value(i).to_string()).collect())?;
    }
    Ok(())
}

fn obtain_tokenizer(config: &ShardConfig, kept: &[(String, PathBuf)]) -> Result<Tokenizer> {
    let target = config.out.join("tokenizer.json");
    let tokenizer = match &config.tokenizer {
        TokenizerChoice::File(path) => tokenize::load(path)?,
        TokenizerChoice::Train { vocab_size, sample_docs_per_domain } => {
            // A resumed run reuses the tokenizer it trained, so finished chunks stay valid.
            if target.is_file() {
                let existing = tokenize::load(&target)?;
                if existing.get_vocab_size(true) == *vocab_size {
                    tracing::info!(path = %target.display(), "reusing the tokenizer trained by an earlier run");
                    return Ok(existing);
                }
            }
            let mut sample = Vec::new();
            for (_, path) in kept {
                let mut taken = 0;
                read_kept(path, *sample_docs_per_domain, |_, texts| {
                    if taken < *sample_docs_per_domain {
                        taken += texts.len();
                        sample.extend(texts.into_iter().take(*sample_docs_per_domain));
                    }
                    Ok(())
                })?;
            }
            tokenize::train_bpe(&sample, *vocab_size)?
        }
    };
    let json =
        tokenizer.to_string(true).map_err(|e| Error::Tokenizer { path: target.clone(), message: e.to_string() })?;
    atomic::write_file(&target, json.as_bytes())?;
    Ok(tokenizer)
}

/// Temporary files of a killed run are never valid shards; remove them.
fn remove_stale_temp_files(dir: &Path) -> Result<()> {
    for entry in std::fs::read_dir(dir).at(dir)? {
        let path = entry.at(dir)?.path();
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        if name.starts_with('.') && name.contains(".tmp-") {
            std::fs::remove_file(&path).at(&path)?;
        }
    }
    Ok(())
}

fn write_domain(
    config: &ShardConfig,
    kept: &Path,
    dir: &Path,
    tokenizer: &Tokenizer,
    tokenizer_hash: &str,
    dtype: Dtype,
    progress: &dyn Progress,
) -> Result<DomainShards> {
    let total_docs = parquet_rows(kept)?;
    progress.begin(
        &format!("shard {}", kept.file_stem().unwrap_or_default().to_string_lossy()),
        total_docs,
        Unit::Docs,
    );
    let mut shards = DomainShards::default();
    let mut chunk = 0u32;
    let mut done = 0u64;
    read_kept(kept, config.chunk_docs, |ids, texts| {
        let marker_path = dir.join(format!("chunk-{chunk:05}.json"));
        let entries = match read_marker(&marker_path, tokenizer_hash, dir) {
            Some(entries) => entries,
            None => {
                let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
                let tokens = tokenize::encode_batch(tokenizer, &refs, false)?;
                let mut entries = Vec::new();
                for split in [Split::Train, Split::Val] {
                    let docs: Vec<(u64, &[u32])> = ids
                        .iter()
                        .zip(&tokens)
                        .filter(|(id, _)| Split::of(**id, config.val_fraction, config.split_seed) == split)
                        .map(|(id, t)| (*id, t.as_slice()))
                        .collect();
                    entries.push(write_shard(dir, split, chunk, &docs, dtype)?);
                }
                failpoint("shards:before-marker");
                let marker = ChunkMarker {
                    format_version: SHARDS_FORMAT_VERSION,
                    tokenizer_hash: tokenizer_hash.to_string(),
                    shards: entries,
                };
                atomic::write_json(&marker_path, &marker)?;
                marker.shards
            }
        };
        for entry in entries {
            match entry.split {
                Split::Train => (shards.train_docs += entry.docs, shards.train_tokens += entry.tokens),
                Split::Val => (shards.val_docs += entry.docs, shards.val_tokens += entry.tokens),
            };
            shards.shards.push(entry);
        }
        chunk += 1;
        done += ids.len() as u64;
        progress.set(done);
        Ok(())
    })?;
    progress.end();
    Ok(shards)
}

fn parquet_rows(path: &Path) -> Result<u64> {
    let file = std::fs::File::open(path).at(path)?;
    let builder = ParquetRecordBatchReaderBuilder::try_new(file)
        .map_err(|source| Error::Parquet { path: path.to_path_buf(), source })?;
    Ok(builder.metadata().file_metadata().num_rows() as u64)
}

/// A chunk marker's entries when it exists, names this tokenizer and its files still hash
/// to what it recorded.
fn read_marker(path: &Path, tokenizer_hash: &str, dir: &Path) -> Option<Vec<ShardEntry>> {
    let marker: ChunkMarker = serde_json::from_slice(&std::fs::read(path).ok()?).ok()?;
    if marker.format_version != SHARDS_FORMAT_VERSION || marker.tokenizer_hash != tokenizer_hash {
        return None;
    }
    let intact = marker.shards.iter().all(|e| {
        file_hash(&dir.join(&e.tokens_file)).is_some_and(|h| h == e.tokens_xxh3)
            && file_hash(&dir.join(&e.index_file)).is_some_and(|h| h == e.index_xxh3)
    });
    intact.then_some(marker.shards)
}

fn file_hash(path: &Path) -> Option<String> {
    std::fs::read(path).ok().map(|bytes| format!("{:016x}", xxhash_rust::xxh3::xxh3_64(&bytes)))
}

/// Writes one shard atomically: `<split>-<chunk>.bin` (tokens) and `<split>-<chunk>.idx` (u64
/// LE: document count n, n doc ids, n + 1 token offsets).
pub fn write_shard(dir: &Path, split: Split, chunk: u32, docs: &[(u64, &[u32])], dtype: Dtype) -> Result<ShardEntry> {
    let tokens_file = format!("{}-{chunk:05}.bin", split.name());
    let index_file = format!("{}-{chunk:05}.idx", split.name());
    let n_tokens: usize = docs.iter().map(|(_, t)| t.len()).sum();
    let mut tokens = Vec::with_capacity(n_tokens * dtype.width());
    let mut index = Vec::with_capacity(8 * (2 * docs.len() + 2));
    index.extend_from_slice(&(docs.len() as u64).to_le_bytes());
    docs.iter().for_each(|(id, _)| index.extend_from_slice(&id.to_le_bytes()));
    let mut offset = 0u64;
    index.extend_from_slice(&offset.to_le_bytes());
    for (_, doc) in docs {
        for &t in *doc {
            match dtype {
                Dtype::U16 => tokens.extend_from_slice(&(t as u16).to_le_bytes()),
                Dtype::U32 => tokens.extend_from_slice(&t.to_le_bytes()),
            }
        }
        offset += doc.len() as u64;
        index.extend_from_slice(&offset.to_le_bytes());
    }
    write_atomic_with_failpoint(&dir.join(&tokens_file), &tokens)?;
    atomic::write_file(&dir.join(&index_file), &index)?;
    Ok(ShardEntry {
        split,
        chunk,
        tokens_file,
        index_file,
        docs: docs.len() as u64,
        tokens: n_tokens as u64,
        tokens_xxh3: format!("{:016x}", xxhash_rust::xxh3::xxh3_64(&tokens)),
        index_xxh3: format!("{:016x}", xxhash_rust::xxh3::xxh3_64(&index)),
    })
}

fn write_atomic_with_failpoint(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    let mut file = AtomicFile::create(path)?;
    file.writer().write_all(bytes).at(path)?;
    failpoint("shards:before-rename");
    file.commit()
}

/// Test hook: `MIXFORGE_FAILPOINT=<name>:<n>` aborts the process (as a kill -9 would, with no
/// cleanup) the n-th time the named point is reached. Used by the kill/resume tests.
fn failpoint(name: &str) {
    use std::sync::atomic::{AtomicU64, Ordering};
    static HITS: AtomicU64 = AtomicU64::new(0);
    let Ok(spec) = std::env::var("MIXFORGE_FAILPOINT") else { return };
    let Some((point, n)) = spec.rsplit_once(':') else { return };
    if point == name && n.parse::<u64>().ok() == Some(HITS.fetch_add(1, Ordering::SeqCst) + 1) {
        std::process::abort();
    }
}

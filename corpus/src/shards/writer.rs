//! Writing shards from a corpus run's `kept/` documents: tokenize, split, write atomically,
//! resume by chunk.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use serde::{Deserialize, Serialize};
use tokenizers::Tokenizer;

use super::{DomainShards, Dtype, SHARDS_FORMAT_VERSION, ShardEntry, ShardManifest, Split};
use crate::atomic::{self, AtomicFile};
use crate::error::{Error, IoContext, Result};
use crate::pipeline::parts::Shard;
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
    /// xxh3-128 of the chunk's documents (ids and texts) and of every setting that decides its
    /// shards (split fraction and seed, chunk size, token width): a rerun on another corpus or
    /// with other settings never reuses the chunk.
    input_key: String,
    shards: Vec<ShardEntry>,
}

fn chunk_key(config: &ShardConfig, dtype: Dtype, ids: &[u64], texts: &[String]) -> String {
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    h.update(&(config.chunk_docs as u64).to_le_bytes());
    h.update(&config.val_fraction.to_bits().to_le_bytes());
    h.update(&config.split_seed.to_le_bytes());
    h.update(&(dtype.width() as u64).to_le_bytes());
    for (id, text) in ids.iter().zip(texts) {
        h.update(&id.to_le_bytes());
        h.update(&(text.len() as u64).to_le_bytes());
        h.update(text.as_bytes());
    }
    format!("{:032x}", h.digest128())
}

/// What every way of writing shards starts from: the kept files and the tokenizer, written to
/// `config.out/tokenizer.json`.
struct Setup {
    kept: Vec<(String, PathBuf)>,
    tokenizer: Tokenizer,
    tokenizer_hash: String,
    dtype: Dtype,
}

fn setup(config: &ShardConfig) -> Result<Setup> {
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
    // A rerun resumes or rewrites shards; it never writes into (or cleans) another directory.
    atomic::check_replaceable(&config.out, "shard directory (no manifest.json or tokenizer.json)", |d| {
        d.join("manifest.json").is_file() || d.join("tokenizer.json").is_file()
    })?;
    std::fs::create_dir_all(&config.out).at(&config.out)?;
    let tokenizer = obtain_tokenizer(config, &kept)?;
    let tokenizer_hash = tokenize::fingerprint(&tokenizer)?;
    let dtype = Dtype::for_vocab(tokenizer.get_vocab_size(true));
    Ok(Setup { kept, tokenizer, tokenizer_hash, dtype })
}

/// Writes `config.out/tokenizer.json` (copied, or trained on the kept documents' sample) and
/// stops: what tasks that run at once (`write_task`) need first. Returns its fingerprint.
pub fn prepare_tokenizer(config: &ShardConfig) -> Result<String> {
    Ok(setup(config)?.tokenizer_hash)
}

/// Tokenizes every kept document into shards under `config.out`; returns the manifest.
/// Chunks a task (`write_task`) or an earlier run finished are reused after checking them.
pub fn write(config: &ShardConfig, progress: &dyn Progress) -> Result<ShardManifest> {
    let Setup { kept, tokenizer, tokenizer_hash, dtype } = setup(config)?;
    let vocab_size = tokenizer.get_vocab_size(true);
    let encoder = tokenize::Encoder::new(&tokenizer);
    remove_stale_domains(&config.out, &kept)?;
    let mut domains = BTreeMap::new();
    for (domain, path) in &kept {
        let dir = config.out.join(domain);
        std::fs::create_dir_all(&dir).at(&dir)?;
        remove_stale_temp_files(&dir)?;
        let written = write_domain(config, path, &dir, &encoder, &tokenizer_hash, dtype, &|_| true, progress)?;
        remove_chunks_from(&dir, written.chunks)?;
        domains.insert(domain.clone(), written.shards);
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

/// What one task of a sharded tokenization did.
#[derive(Debug, Default)]
pub struct TaskReport {
    /// Chunks of every domain together.
    pub chunks: u32,
    /// This task's chunks: `chunk mod N = I` in the order of domains, then chunks.
    pub chunks_taken: u32,
    /// Of those, chunks a finished marker already covered.
    pub chunks_reused: u32,
    /// Documents in this task's chunks.
    pub docs: u64,
    /// Tokens in this task's chunks.
    pub tokens: u64,
}

/// Task `task.index` of `task.count`: tokenizes only its chunks (every N-th chunk of all the
/// domains' chunks, counted in order) and writes no manifest; `write` afterwards finds every
/// chunk done and writes the manifest, the same bytes as one process would. Tasks may run at
/// once on the same folder once the tokenizer is there (`prepare_tokenizer`): each writes only
/// its own chunks' files, atomically, and cleans nothing another task may be writing.
pub fn write_task(config: &ShardConfig, task: Shard, progress: &dyn Progress) -> Result<TaskReport> {
    let Setup { kept, tokenizer, tokenizer_hash, dtype } = setup(config)?;
    // The chunks change under it: a manifest from an earlier run no longer describes them.
    atomic::remove_if_present(&config.out.join("manifest.json"))?;
    let encoder = tokenize::Encoder::new(&tokenizer);
    let mut report = TaskReport::default();
    for (domain, path) in &kept {
        let first = report.chunks;
        let chunks = parquet_rows(path)?.div_ceil(config.chunk_docs as u64) as u32;
        report.chunks += chunks;
        let takes = |chunk: u32| (first + chunk) % task.count == task.index;
        if !(0..chunks).any(takes) {
            continue;
        }
        let dir = config.out.join(domain);
        std::fs::create_dir_all(&dir).at(&dir)?;
        let written = write_domain(config, path, &dir, &encoder, &tokenizer_hash, dtype, &takes, progress)?;
        report.chunks_taken += written.taken;
        report.chunks_reused += written.reused;
        report.docs += written.shards.train_docs + written.shards.val_docs;
        report.tokens += written.shards.train_tokens + written.shards.val_tokens;
    }
    Ok(report)
}

/// `kept/<domain>.parquet` files of a run, by domain (the file stem, which must be a valid
/// domain name).
fn kept_files(input: &Path) -> Result<Vec<(String, PathBuf)>> {
    let dir = input.join("kept");
    let entries = std::fs::read_dir(&dir).map_err(|source| Error::Io {
        path: dir.clone(),
        cause: std::io::Error::new(
            source.kind(),
            format!("{source} (run `mixforge corpus run ... --out {}` first)", input.display()),
        ),
    })?;
    let mut files = Vec::new();
    for entry in entries {
        let path = entry.at(&dir)?.path();
        if path.extension().is_some_and(|e| e == "parquet") {
            let domain = path.file_stem().expect("has a name").to_string_lossy().into_owned();
            crate::config::check_domain_name(&domain)
                .map_err(|reason| Error::Corrupt { path: path.clone(), reason: format!("file name: {reason}") })?;
            files.push((domain, path));
        }
    }
    files.sort();
    if files.is_empty() {
        return Err(Error::Corrupt { path: dir, reason: "no kept documents (*.parquet)".into() });
    }
    Ok(files)
}

/// Reads `(doc_id, text)` blocks of `batch` documents (fewer in the last) from a kept file, the
/// ones `wanted` names (block `k`: rows `k·batch …`), with their `k`; ids must increase (the
/// shard index is searched by id).
fn read_kept_blocks(
    path: &Path,
    batch: usize,
    wanted: &dyn Fn(usize) -> bool,
    mut f: impl FnMut(usize, Vec<u64>, Vec<String>) -> Result<()>,
) -> Result<()> {
    let mut last: Option<u64> = None;
    crate::kept::read_blocks(path, batch, wanted, |k, b| {
        for (row, &id) in (k * batch..).zip(&b.ids) {
            if last.is_some_and(|l| id <= l) {
                return Err(Error::Corrupt {
                    path: path.to_path_buf(),
                    reason: format!(
                        "doc_id {id} at row {row} does not increase (previous {}); sort by doc_id",
                        last.unwrap()
                    ),
                });
            }
            last = Some(id);
        }
        f(k, b.ids, b.texts)
    })
}

/// What the trained tokenizer was made from; a rerun reuses `tokenizer.json` only when this
/// matches (same sample, same vocabulary size).
#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct TrainedTokenizerKey {
    vocab_size: usize,
    sample_docs_per_domain: usize,
    sample_xxh3: String,
}

fn obtain_tokenizer(config: &ShardConfig, kept: &[(String, PathBuf)]) -> Result<Tokenizer> {
    let target = config.out.join("tokenizer.json");
    let tokenizer = match &config.tokenizer {
        TokenizerChoice::File(path) => tokenize::load(path)?,
        TokenizerChoice::Train { vocab_size, sample_docs_per_domain } => {
            let mut sample = Vec::new();
            for (_, path) in kept {
                // The first block alone: the sample is the first documents.
                read_kept_blocks(path, *sample_docs_per_domain, &|k| k == 0, |_, _, texts| {
                    sample.extend(texts.into_iter().take(*sample_docs_per_domain));
                    Ok(())
                })?;
            }
            let mut hasher = xxhash_rust::xxh3::Xxh3::new();
            for text in &sample {
                hasher.update(&(text.len() as u64).to_le_bytes());
                hasher.update(text.as_bytes());
            }
            let key = TrainedTokenizerKey {
                vocab_size: *vocab_size,
                sample_docs_per_domain: *sample_docs_per_domain,
                sample_xxh3: format!("{:032x}", hasher.digest128()),
            };
            // A resumed run reuses the tokenizer it trained from the same sample, so finished
            // chunks stay valid; any other corpus or size trains a new one.
            let key_path = config.out.join("tokenizer-key.json");
            let recorded: Option<TrainedTokenizerKey> =
                std::fs::read(&key_path).ok().and_then(|b| serde_json::from_slice(&b).ok());
            if recorded.as_ref() == Some(&key) && target.is_file() {
                tracing::info!(path = %target.display(), "reusing the tokenizer trained from the same sample");
                return tokenize::load(&target);
            }
            let _ = std::fs::remove_file(&key_path);
            let tokenizer = tokenize::train_bpe(&sample, *vocab_size)?;
            write_tokenizer(&tokenizer, &target)?;
            atomic::write_json(&key_path, &key)?;
            return Ok(tokenizer);
        }
    };
    let _ = std::fs::remove_file(config.out.join("tokenizer-key.json"));
    write_tokenizer(&tokenizer, &target)?;
    Ok(tokenizer)
}

fn write_tokenizer(tokenizer: &Tokenizer, target: &Path) -> Result<()> {
    let json = tokenizer
        .to_string(true)
        .map_err(|e| Error::Tokenizer { path: target.to_path_buf(), message: e.to_string() })?;
    if std::fs::read(target).ok().as_deref() == Some(json.as_bytes()) {
        return Ok(());
    }
    // A manifest describes shards of the tokenizer beside it: it goes before another one comes.
    atomic::remove_if_present(&target.with_file_name("manifest.json"))?;
    atomic::write_file(target, json.as_bytes())
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

/// One domain's chunks that `takes` selects: their shards, and how many chunks there were.
struct DomainWritten {
    shards: DomainShards,
    chunks: u32,
    taken: u32,
    reused: u32,
}

#[allow(clippy::too_many_arguments)]
fn write_domain(
    config: &ShardConfig,
    kept: &Path,
    dir: &Path,
    encoder: &tokenize::Encoder,
    tokenizer_hash: &str,
    dtype: Dtype,
    takes: &dyn Fn(u32) -> bool,
    progress: &dyn Progress,
) -> Result<DomainWritten> {
    let total_docs = parquet_rows(kept)?;
    progress.begin(
        &format!("shard {}", kept.file_stem().unwrap_or_default().to_string_lossy()),
        total_docs,
        Unit::Docs,
    );
    let mut shards = DomainShards::default();
    let (mut taken, mut reused) = (0u32, 0u32);
    let chunks = total_docs.div_ceil(config.chunk_docs as u64) as u32;
    // Other tasks' chunks are skipped, not decoded.
    read_kept_blocks(kept, config.chunk_docs, &|k| takes(k as u32), |k, ids, texts| {
        let chunk = k as u32;
        let done = (u64::from(chunk) * config.chunk_docs as u64 + ids.len() as u64).min(total_docs);
        taken += 1;
        let marker_path = dir.join(format!("chunk-{chunk:05}.json"));
        let input_key = chunk_key(config, dtype, &ids, &texts);
        let entries = match read_marker(&marker_path, tokenizer_hash, &input_key, dir) {
            Some(entries) => {
                reused += 1;
                entries
            }
            None => {
                let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
                let tokens = encoder.encode_batch(&refs, false)?;
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
                    input_key,
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
        progress.set(done);
        Ok(())
    })?;
    progress.end();
    Ok(DomainWritten { shards, chunks, taken, reused })
}

/// Removes the files of chunks numbered `first` and above: left by an earlier run over more
/// documents, they belong to no manifest.
fn remove_chunks_from(dir: &Path, first: u32) -> Result<()> {
    for entry in std::fs::read_dir(dir).at(dir)? {
        let path = entry.at(dir)?.path();
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        if chunk_number(&name).is_some_and(|n| n >= first) {
            std::fs::remove_file(&path).at(&path)?;
        }
    }
    Ok(())
}

/// The chunk of a file this writer names (`chunk-NNNNN.json`, `train-NNNNN.bin`, `val-NNNNN.idx`,
/// …); `None` for any other name, which is never touched.
fn chunk_number(name: &str) -> Option<u32> {
    let (stem, ext) = name.rsplit_once('.')?;
    let digits = match ext {
        "json" => stem.strip_prefix("chunk-")?,
        "bin" | "idx" => stem.strip_prefix("train-").or_else(|| stem.strip_prefix("val-"))?,
        _ => return None,
    };
    (digits.len() == 5 && digits.bytes().all(|b| b.is_ascii_digit())).then(|| digits.parse().ok())?
}

/// Removes domain directories of an earlier run whose domain this run no longer has (only
/// directories holding chunk markers: shard directories this command wrote).
fn remove_stale_domains(out: &Path, domains: &[(String, PathBuf)]) -> Result<()> {
    for entry in std::fs::read_dir(out).at(out)? {
        let path = entry.at(out)?.path();
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let ours = path.join("chunk-00000.json").is_file();
        if path.is_dir() && ours && !domains.iter().any(|(d, _)| *d == name) {
            std::fs::remove_dir_all(&path).at(&path)?;
        }
    }
    Ok(())
}

fn parquet_rows(path: &Path) -> Result<u64> {
    let file = std::fs::File::open(path).at(path)?;
    let builder = ParquetRecordBatchReaderBuilder::try_new(file)
        .map_err(|source| Error::Parquet { path: path.to_path_buf(), source })?;
    Ok(builder.metadata().file_metadata().num_rows() as u64)
}

/// A chunk marker's entries when it exists, names this tokenizer and its files still hash
/// to what it recorded.
fn read_marker(path: &Path, tokenizer_hash: &str, input_key: &str, dir: &Path) -> Option<Vec<ShardEntry>> {
    let marker: ChunkMarker = serde_json::from_slice(&std::fs::read(path).ok()?).ok()?;
    if marker.format_version != SHARDS_FORMAT_VERSION
        || marker.tokenizer_hash != tokenizer_hash
        || marker.input_key != input_key
    {
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
    for (id, doc) in docs {
        for &t in *doc {
            match dtype {
                Dtype::U16 => {
                    let narrow = u16::try_from(t).map_err(|_| Error::Tokenizer {
                        path: dir.to_path_buf(),
                        message: format!(
                            "token id {t} in document {} does not fit u16 shards; the tokenizer's \
                             vocabulary size understates its largest id",
                            crate::ids::DocId::from_raw(*id)
                        ),
                    })?;
                    tokens.extend_from_slice(&narrow.to_le_bytes());
                }
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

//! Token shards: per domain, flat little-endian token files (u16 when the vocabulary fits, else
//! u32) with a document index, a train/validation split by document-id hash, and
//! `manifest.json`. See `docs/formats.md` for the layout.
//!
//! Writing is resumable: documents are cut into chunks of `chunk_docs`; each chunk's files are
//! written atomically and then a chunk marker (`<domain>/chunk-<k>.json`); a rerun skips every
//! chunk whose marker names the same tokenizer.

mod mixture;
mod reader;
mod segments;
mod writer;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub use mixture::Mixture;
pub use reader::{Shard, Shards, TokenSlice};
pub use segments::{DomainSegments, Segment};
pub use writer::{ShardConfig, TaskReport, TokenizerChoice, prepare_tokenizer, write, write_shard, write_task};

/// Version of the shard layout and manifest.
pub const SHARDS_FORMAT_VERSION: u32 = 1;

/// Token width on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Dtype {
    /// 2 bytes per token (vocabulary ≤ 65,536).
    U16,
    /// 4 bytes per token.
    U32,
}

impl Dtype {
    /// The narrowest width for a vocabulary.
    pub fn for_vocab(vocab_size: usize) -> Dtype {
        if vocab_size <= 1 << 16 { Dtype::U16 } else { Dtype::U32 }
    }

    /// Bytes per token.
    pub fn width(self) -> usize {
        match self {
            Dtype::U16 => 2,
            Dtype::U32 => 4,
        }
    }
}

/// Train or validation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Split {
    /// Training documents.
    Train,
    /// Held-out documents.
    Val,
}

impl Split {
    /// `train` or `val`.
    pub fn name(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Val => "val",
        }
    }

    /// The split of a document: validation when `xxh3(doc_id, seed)` falls in the lowest
    /// `val_fraction` of the hash range. Independent of order, threads and other documents.
    pub fn of(doc_id: u64, val_fraction: f64, seed: u64) -> Split {
        let h = xxhash_rust::xxh3::xxh3_64_with_seed(&doc_id.to_le_bytes(), seed);
        if (h as f64) < val_fraction * (u64::MAX as f64) { Split::Val } else { Split::Train }
    }
}

/// One shard: a tokens file and its document index.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardEntry {
    /// Its split.
    pub split: Split,
    /// Chunk number within the domain.
    pub chunk: u32,
    /// Tokens file, relative to the shard directory.
    pub tokens_file: String,
    /// Index file, relative to the shard directory.
    pub index_file: String,
    /// Documents in it.
    pub docs: u64,
    /// Tokens in it.
    pub tokens: u64,
    /// xxh3-64 (hex) of the tokens file.
    pub tokens_xxh3: String,
    /// xxh3-64 (hex) of the index file.
    pub index_xxh3: String,
}

/// Per-domain totals and shards.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DomainShards {
    /// Training documents.
    pub train_docs: u64,
    /// Training tokens.
    pub train_tokens: u64,
    /// Validation documents.
    pub val_docs: u64,
    /// Validation tokens.
    pub val_tokens: u64,
    /// Shards in (chunk, split) order.
    pub shards: Vec<ShardEntry>,
}

/// `manifest.json` of a shard directory.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShardManifest {
    /// Layout version.
    pub format_version: u32,
    /// Fingerprint of `tokenizer.json` ([`crate::tokenize::fingerprint`]).
    pub tokenizer_hash: String,
    /// Vocabulary size, special tokens included.
    pub vocab_size: u32,
    /// Token width.
    pub dtype: Dtype,
    /// Fraction of documents held out for validation.
    pub val_fraction: f64,
    /// Seed of the split hash.
    pub split_seed: u64,
    /// Documents per chunk.
    pub chunk_docs: u64,
    /// Per domain.
    pub domains: BTreeMap<String, DomainShards>,
    /// Documents over all domains and splits.
    pub total_docs: u64,
    /// Tokens over all domains and splits.
    pub total_tokens: u64,
    /// Set when these shards were materialized from a mix proposal: what each domain got.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mixture: Option<RealisedMixture>,
}

/// The mixture a materialized shard directory realises (`mixforge mix materialize`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RealisedMixture {
    /// The proposal file it was sampled from.
    pub proposal: String,
    /// The shard directory the documents came from.
    pub source: String,
    /// Seed of the sampling and shuffles.
    pub seed: u64,
    /// Training tokens asked for (EOS separators included).
    pub target_tokens: u64,
    /// Training tokens written (EOS separators included).
    pub tokens: u64,
    /// Per domain.
    pub domains: BTreeMap<String, RealisedDomain>,
    /// Every domain's training documents interleaved in one shuffled stream, in training
    /// order, as shards under `stream/` (the index ids are source document ids, not sorted).
    pub stream: Vec<ShardEntry>,
}

/// One domain of a [`RealisedMixture`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RealisedDomain {
    /// The proposal's weight.
    pub weight: f64,
    /// Realised share of the written tokens.
    pub realised_weight: f64,
    /// Training tokens written (EOS separators included).
    pub tokens: u64,
    /// Training tokens available in the source (EOS separators included).
    pub available_tokens: u64,
    /// `tokens / available_tokens`.
    pub epochs: f64,
    /// The proposal's cap on `epochs`, when it had one.
    pub max_epochs: Option<f64>,
}

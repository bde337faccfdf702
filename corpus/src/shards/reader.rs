//! Reading shards: memory-mapped tokens, random access by document, iteration by domain.

use std::path::{Path, PathBuf};

use memmap2::Mmap;

use super::{Dtype, SHARDS_FORMAT_VERSION, ShardEntry, ShardManifest, Split};
use crate::error::{Error, IoContext, Result};
use crate::ids::DocId;

/// An open shard directory.
pub struct Shards {
    dir: PathBuf,
    manifest: ShardManifest,
}

impl Shards {
    /// Opens `dir`, checking its manifest's version.
    pub fn open(dir: &Path) -> Result<Shards> {
        let path = dir.join("manifest.json");
        let bytes = std::fs::read(&path).at(&path)?;
        let invalid =
            |e: serde_json::Error| Error::Corrupt { path: path.clone(), reason: format!("invalid manifest: {e}") };
        // The version first: a newer layout is refused by its version, not by a missing field.
        #[derive(serde::Deserialize)]
        struct Version {
            format_version: u32,
        }
        let version: Version = serde_json::from_slice(&bytes).map_err(invalid)?;
        if version.format_version != SHARDS_FORMAT_VERSION {
            return Err(Error::Corrupt {
                path,
                reason: format!("format_version {} (this build reads {SHARDS_FORMAT_VERSION})", version.format_version),
            });
        }
        let manifest: ShardManifest = serde_json::from_slice(&bytes).map_err(invalid)?;
        if let Some(reason) = manifest.domains.keys().find_map(|d| crate::config::check_domain_name(d).err()) {
            return Err(Error::Corrupt { path, reason });
        }
        Ok(Shards { dir: dir.to_path_buf(), manifest })
    }

    /// The manifest.
    pub fn manifest(&self) -> &ShardManifest {
        &self.manifest
    }

    /// The directory's `tokenizer.json`.
    pub fn tokenizer_path(&self) -> PathBuf {
        self.dir.join("tokenizer.json")
    }

    /// Opens one shard of a domain.
    pub fn open_shard(&self, domain: &str, entry: &ShardEntry) -> Result<Shard> {
        let dir = self.dir.join(domain);
        Shard::open(&dir.join(&entry.tokens_file), &dir.join(&entry.index_file), self.manifest.dtype)
    }

    /// The shards of one domain and split, in order.
    pub fn shards(&self, domain: &str, split: Split) -> Result<Vec<Shard>> {
        let Some(d) = self.manifest.domains.get(domain) else {
            let known: Vec<&str> = self.manifest.domains.keys().map(String::as_str).collect();
            return Err(Error::Config {
                field: "domain".into(),
                reason: format!("no domain `{domain}` (have: {})", known.join(", ")),
            });
        };
        d.shards.iter().filter(|e| e.split == split).map(|e| self.open_shard(domain, e)).collect()
    }

    /// Every document of a domain and split in id order, as (id, tokens).
    pub fn docs(&self, domain: &str, split: Split) -> Result<impl Iterator<Item = (DocId, Vec<u32>)>> {
        let shards = self.shards(domain, split)?;
        Ok(shards.into_iter().flat_map(|shard| {
            (0..shard.len()).map(move |i| (shard.doc_id(i), shard.doc(i).to_vec())).collect::<Vec<_>>()
        }))
    }

    /// Finds a document anywhere: its domain, split and tokens.
    pub fn find(&self, id: DocId) -> Result<Option<(String, Split, Vec<u32>)>> {
        for (domain, d) in &self.manifest.domains {
            for entry in &d.shards {
                let shard = self.open_shard(domain, entry)?;
                if let Some(i) = shard.position(id) {
                    return Ok(Some((domain.clone(), entry.split, shard.doc(i).to_vec())));
                }
            }
        }
        Ok(None)
    }
}

/// One shard, memory-mapped.
pub struct Shard {
    tokens: Tokens,
    ids: Vec<u64>,
    offsets: Vec<u64>,
    dtype: Dtype,
}

enum Tokens {
    Mapped(Mmap),
    Read(Vec<u8>),
}

impl Tokens {
    fn bytes(&self) -> &[u8] {
        match self {
            Tokens::Mapped(m) => m,
            Tokens::Read(v) => v,
        }
    }
}

/// Maps a file read-only, falling back to reading it when mapping fails (some filesystems).
fn map_file(path: &Path) -> Result<Tokens> {
    let file = std::fs::File::open(path).at(path)?;
    if file.metadata().at(path)?.len() == 0 {
        return Ok(Tokens::Read(Vec::new()));
    }
    // SAFETY: shard files are written once to a temporary name and renamed into place, never
    // modified afterwards; the mapping is read-only. A user editing a shard file while it is
    // mapped is outside that contract (as with any mmap reader).
    match unsafe { Mmap::map(&file) } {
        Ok(map) => Ok(Tokens::Mapped(map)),
        Err(_) => Ok(Tokens::Read(std::fs::read(path).at(path)?)),
    }
}

impl Shard {
    /// Opens a tokens file and its index.
    pub fn open(tokens_path: &Path, index_path: &Path, dtype: Dtype) -> Result<Shard> {
        let index = std::fs::read(index_path).at(index_path)?;
        let corrupt = |reason: String| Error::Corrupt { path: index_path.to_path_buf(), reason };
        let words: Vec<u64> =
            index.chunks_exact(8).map(|c| u64::from_le_bytes(c.try_into().expect("8 bytes"))).collect();
        let n = *words.first().ok_or_else(|| corrupt("empty index".into()))?;
        if !index.len().is_multiple_of(8) || (words.len() as u64 - 1) / 2 != n || !words.len().is_multiple_of(2) {
            return Err(corrupt(format!("index of {} bytes does not hold {n} documents", index.len())));
        }
        let n = n as usize;
        let ids = words[1..1 + n].to_vec();
        let offsets = words[1 + n..].to_vec();
        if offsets[0] != 0 {
            return Err(corrupt(format!("the first token offset is {}, not 0", offsets[0])));
        }
        if let Some(i) = offsets.windows(2).position(|w| w[1] < w[0]) {
            return Err(corrupt(format!(
                "token offsets decrease at document {i} ({} → {})",
                offsets[i],
                offsets[i + 1]
            )));
        }
        let tokens = map_file(tokens_path)?;
        let expected = offsets[n].checked_mul(dtype.width() as u64);
        if expected != Some(tokens.bytes().len() as u64) {
            return Err(Error::Corrupt {
                path: tokens_path.to_path_buf(),
                reason: format!("{} bytes, the index expects {} tokens", tokens.bytes().len(), offsets[n]),
            });
        }
        Ok(Shard { tokens, ids, offsets, dtype })
    }

    /// Number of documents.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// Whether it holds no document.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// Total tokens.
    pub fn n_tokens(&self) -> u64 {
        *self.offsets.last().expect("n + 1 offsets")
    }

    /// The id of document `i`.
    pub fn doc_id(&self, i: usize) -> DocId {
        DocId::from_raw(self.ids[i])
    }

    /// The position of a document, if this shard holds it (ids are sorted).
    pub fn position(&self, id: DocId) -> Option<usize> {
        self.ids.binary_search(&id.get()).ok()
    }

    /// The tokens of document `i`, without copying.
    pub fn doc(&self, i: usize) -> TokenSlice<'_> {
        let (start, end) = (self.offsets[i] as usize, self.offsets[i + 1] as usize);
        let width = self.dtype.width();
        TokenSlice { bytes: &self.tokens.bytes()[start * width..end * width], dtype: self.dtype }
    }
}

/// A document's tokens as stored (little-endian u16 or u32).
#[derive(Clone, Copy)]
pub struct TokenSlice<'a> {
    bytes: &'a [u8],
    dtype: Dtype,
}

impl TokenSlice<'_> {
    /// Number of tokens.
    pub fn len(&self) -> usize {
        self.bytes.len() / self.dtype.width()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// Token `i`.
    pub fn get(&self, i: usize) -> u32 {
        match self.dtype {
            Dtype::U16 => u32::from(u16::from_le_bytes([self.bytes[2 * i], self.bytes[2 * i + 1]])),
            Dtype::U32 => u32::from_le_bytes(self.bytes[4 * i..4 * i + 4].try_into().expect("4 bytes")),
        }
    }

    /// The tokens as u32 ids.
    pub fn to_vec(&self) -> Vec<u32> {
        match self.dtype {
            Dtype::U16 => self.bytes.chunks_exact(2).map(|c| u32::from(u16::from_le_bytes([c[0], c[1]]))).collect(),
            Dtype::U32 => self.bytes.chunks_exact(4).map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect(),
        }
    }
}

//! Tokenizers: load any HF `tokenizer.json`, or train a byte-level BPE on a corpus sample,
//! and encode documents in parallel.

// The tokenizers trainer API takes a std `HashSet`; the trainer orders the alphabet itself, so
// the set's random iteration order never reaches the output (the kill/resume test compares a
// tokenizer trained in another process, byte for byte).
#[allow(clippy::disallowed_types)]
use std::collections::HashSet;
use std::path::Path;

use tokenizers::models::TrainerWrapper;
use tokenizers::models::bpe::{BPE, BpeTrainerBuilder};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::{AddedToken, Tokenizer};

use crate::error::{Error, Result};

mod pieces;

use pieces::{PieceBpe, PieceCache};

/// Special tokens of trained tokenizers, in id order (ids 0..5): document boundaries, padding,
/// and the chat-template markers instruction tuning uses.
pub const SPECIAL_TOKENS: [&str; 5] = ["<|bos|>", "<|eos|>", "<|pad|>", "<|im_start|>", "<|im_end|>"];

fn tok_err(path: &Path, e: tokenizers::Error) -> Error {
    Error::Tokenizer { path: path.to_path_buf(), message: e.to_string() }
}

/// Loads a `tokenizer.json`, with padding and truncation switched off (a file may carry
/// them, and shards must hold every token of every document).
pub fn load(path: &Path) -> Result<Tokenizer> {
    let mut tokenizer = Tokenizer::from_file(path).map_err(|e| tok_err(path, e))?;
    tokenizer.with_truncation(None).map_err(|e| tok_err(path, e))?;
    tokenizer.with_padding(None);
    Ok(tokenizer)
}

/// Trains a byte-level BPE of `vocab_size` tokens (special tokens and the 256 byte symbols
/// included) on `texts`. No normalizer and no prefix space, so decoding gives back the exact
/// text.
pub fn train_bpe(texts: &[String], vocab_size: usize) -> Result<Tokenizer> {
    let byte_level = ByteLevel::new(false, false, true);
    let mut tokenizer = Tokenizer::new(BPE::default());
    tokenizer.with_pre_tokenizer(Some(byte_level)).with_decoder(Some(byte_level)).with_post_processor(Some(byte_level));
    let mut trainer: TrainerWrapper = BpeTrainerBuilder::new()
        .vocab_size(vocab_size)
        .min_frequency(2)
        .show_progress(false)
        .special_tokens(SPECIAL_TOKENS.iter().map(|s| AddedToken::from(*s, true)).collect())
        .initial_alphabet(alphabet())
        .build()
        .into();
    tokenizer
        .train(&mut trainer, texts.iter())
        .map_err(|e| Error::Tokenizer { path: "(training)".into(), message: e.to_string() })?;
    Ok(tokenizer)
}

#[allow(clippy::disallowed_types)]
fn alphabet() -> HashSet<char> {
    ByteLevel::alphabet().into_iter().collect()
}

/// A stable fingerprint: xxh3-64 of the tokenizer's compact JSON serialization.
pub fn fingerprint(tokenizer: &Tokenizer) -> Result<String> {
    let json = tokenizer
        .to_string(false)
        .map_err(|e| Error::Tokenizer { path: "(serialize)".into(), message: e.to_string() })?;
    Ok(format!("{:016x}", xxhash_rust::xxh3::xxh3_64(json.as_bytes())))
}

/// Encodes texts with a tokenizer: `tokenizers`' pipeline, or for SentencePiece-style BPE the
/// same ids piece by piece (`pieces`), several times faster.
pub struct Encoder<'a> {
    tokenizer: &'a Tokenizer,
    pieces: Option<PieceBpe>,
    /// What the post-processor puts before and after a single sequence's ids.
    specials: (Vec<u32>, Vec<u32>),
}

impl<'a> Encoder<'a> {
    /// Inspects the tokenizer once: whether the piecewise encoder reproduces it.
    pub fn new(tokenizer: &'a Tokenizer) -> Encoder<'a> {
        let specials = special_affixes(tokenizer);
        // Truncation and padding (off after `load`) would change the ids the pipeline gives.
        let plain = tokenizer.get_truncation().is_none() && tokenizer.get_padding().is_none();
        let pieces = if plain && specials.is_some() { PieceBpe::of(tokenizer) } else { None };
        Encoder { tokenizer, pieces, specials: specials.unwrap_or_default() }
    }

    /// Whether texts go through the piecewise encoder.
    pub fn is_piecewise(&self) -> bool {
        self.pieces.is_some()
    }

    /// Token ids of each text, encoded in parallel (the rayon pool); without offsets, which
    /// shards never need. `add_special_tokens` applies the post-processor (e.g. BOS).
    pub fn encode_batch(&self, texts: &[&str], add_special_tokens: bool) -> Result<Vec<Vec<u32>>> {
        let Some(pieces) = &self.pieces else { return self.encode_by_pipeline(texts, add_special_tokens) };
        use rayon::prelude::*;
        texts
            .par_iter()
            .map_init(PieceCache::default, |cache, text| {
                if pieces.has_added_token(text) {
                    return Ok(self.encode_by_pipeline(&[text], add_special_tokens)?.remove(0));
                }
                let (before, after) = &self.specials;
                let mut ids = Vec::with_capacity(text.len() / 3 + 2);
                if add_special_tokens {
                    ids.extend_from_slice(before);
                }
                pieces.encode(text, cache, &mut ids);
                if add_special_tokens {
                    ids.extend_from_slice(after);
                }
                Ok(ids)
            })
            .collect()
    }

    /// `tokenizers`' own pipeline.
    pub fn encode_by_pipeline(&self, texts: &[&str], add_special_tokens: bool) -> Result<Vec<Vec<u32>>> {
        let encodings = self
            .tokenizer
            .encode_batch_fast(texts.to_vec(), add_special_tokens)
            .map_err(|e| Error::Tokenizer { path: "(encode)".into(), message: e.to_string() })?;
        Ok(encodings.into_iter().map(|e| e.get_ids().to_vec()).collect())
    }
}

/// The ids the post-processor adds before and after a single sequence, found by processing a
/// one-token probe; `None` when its output is not the probe between fixed ids (or it fails).
fn special_affixes(tokenizer: &Tokenizer) -> Option<(Vec<u32>, Vec<u32>)> {
    const PROBE: u32 = u32::MAX;
    let probe = tokenizers::Encoding::from_tokens(vec![tokenizers::Token::new(PROBE, String::new(), (0, 0))], 0);
    let processed = tokenizer.post_process(probe, None, true).ok()?;
    let ids = processed.get_ids();
    let at: Vec<usize> = ids.iter().enumerate().filter(|(_, id)| **id == PROBE).map(|(i, _)| i).collect();
    match at[..] {
        [i] => Some((ids[..i].to_vec(), ids[i + 1..].to_vec())),
        _ => None,
    }
}

/// Decodes ids back to text, keeping special tokens.
pub fn decode(tokenizer: &Tokenizer, ids: &[u32]) -> Result<String> {
    tokenizer.decode(ids, false).map_err(|e| Error::Tokenizer { path: "(decode)".into(), message: e.to_string() })
}

//! SentencePiece-style BPE (Llama 2, Mistral, TinyLlama, …) encoded piece by piece, with a cache.
//!
//! These tokenizers have no pre-tokenizer, so `tokenizers` runs BPE over a whole document as one
//! word (a heap over every symbol of it) and its word cache never hits. When no vocabulary entry
//! has a character other than `▁` followed by `▁`, no merge can join the text on both sides of
//! such a boundary; BPE on the pieces between those boundaries then gives the same ids (a piece's
//! merges happen in the same order), and most pieces — words — repeat, so a cache answers them.
//! Each piece is merged exactly as `tokenizers`' `Word::merge_all` does. A tokenizer this does not
//! reproduce (another normalizer, a pre-tokenizer, dropout, subword affixes, `ignore_merges`) is
//! left to `tokenizers`, and so is a text containing an added token.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use serde_json::Value;
use tokenizers::Tokenizer;

use crate::hashing::IdentityBuild;

const SPACE: char = '▁';

/// Pieces longer than this (bytes) are not cached, as `tokenizers` caches words below 256.
const MAX_CACHED_PIECE: usize = 256;
/// Cached pieces per encoding thread before the cache is cleared.
const CACHE_CAPACITY: usize = 1 << 16;

/// The BPE model of a SentencePiece-style tokenizer.
pub struct PieceBpe {
    /// Single characters' ids: ASCII by table, the rest by map.
    ascii: [Option<u32>; 128],
    chars: hashbrown::HashMap<u32, u32, IdentityBuild>,
    /// `<0xXX>` ids when the model falls back to bytes and has all 256.
    bytes: Option<Box<[u32; 256]>>,
    unk: Option<u32>,
    fuse_unk: bool,
    /// `pair_key(left, right)` → (rank, merged id).
    merges: hashbrown::HashMap<u64, (u32, u32), IdentityBuild>,
    /// Added tokens' contents: a text holding one is encoded by `tokenizers`.
    added: Vec<String>,
}

/// A cache of pieces' ids, one per encoding thread.
pub type PieceCache = hashbrown::HashMap<u64, (Box<str>, Box<[u32]>), IdentityBuild>;

/// A unique, well-spread key for a pair of ids (multiplying by an odd constant is a bijection).
fn pair_key(left: u32, right: u32) -> u64 {
    ((u64::from(left) << 32) | u64::from(right)).wrapping_mul(0x9E37_79B9_7F4A_7C15)
}

impl PieceBpe {
    /// The piecewise model of `tokenizer`, or `None` when it is not a SentencePiece-style BPE
    /// this reproduces exactly.
    pub fn of(tokenizer: &Tokenizer) -> Option<PieceBpe> {
        let json: Value = serde_json::from_str(&tokenizer.to_string(false).ok()?).ok()?;
        if !json["pre_tokenizer"].is_null() || !is_sentencepiece_normalizer(&json["normalizer"]) {
            return None;
        }
        let model = &json["model"];
        let dropout_off = model["dropout"].is_null() || model["dropout"].as_f64() == Some(0.0);
        let no_affixes = [&model["continuing_subword_prefix"], &model["end_of_word_suffix"]]
            .iter()
            .all(|v| v.is_null() || v.as_str() == Some(""));
        if model["type"] != "BPE" || !dropout_off || !no_affixes || model["ignore_merges"].as_bool() == Some(true) {
            return None;
        }
        let vocab = model["vocab"].as_object()?;
        // Serialized from id to token: tokens sharing an id would be missing here.
        if vocab.len() != tokenizers::Model::get_vocab_size(tokenizer.get_model()) {
            return None;
        }
        // The condition that makes pieces independent.
        if vocab.keys().any(|token| token.chars().zip(token.chars().skip(1)).any(|(a, b)| a != SPACE && b == SPACE)) {
            return None;
        }
        let id_of = |token: &str| vocab.get(token).and_then(Value::as_u64).map(|id| id as u32);
        let mut ascii = [None; 128];
        let mut chars = hashbrown::HashMap::default();
        for (token, id) in vocab {
            let mut it = token.chars();
            if let (Some(c), None, Some(id)) = (it.next(), it.next(), id.as_u64()) {
                match ascii.get_mut(c as usize) {
                    Some(slot) => *slot = Some(id as u32),
                    None => {
                        chars.insert(u32::from(c), id as u32);
                    }
                }
            }
        }
        let bytes = if model["byte_fallback"].as_bool() == Some(true) {
            let ids: Option<Vec<u32>> = (0..=255u8).map(|b| id_of(&format!("<{b:#04X}>"))).collect();
            // Some bytes without a token: `tokenizers` then uses unk for the whole character.
            Some(Box::new(<[u32; 256]>::try_from(ids?).ok()?))
        } else {
            None
        };
        let unk = match model["unk_token"].as_str() {
            Some(token) => Some(id_of(token)?),
            None => None,
        };
        // Every piece after the first must start with the `▁` symbol, and every piece keep its
        // last character: without `▁` in the vocabulary, or with unknown characters dropped (no
        // byte fallback, no unk), symbols could meet across a boundary.
        if id_of(&SPACE.to_string()).is_none() || (bytes.is_none() && unk.is_none()) {
            return None;
        }
        let mut merges = hashbrown::HashMap::default();
        for (rank, merge) in model["merges"].as_array()?.iter().enumerate() {
            let (left, right) = match merge {
                Value::Array(pair) => (pair.first()?.as_str()?.to_string(), pair.get(1)?.as_str()?.to_string()),
                Value::String(text) => {
                    let (l, r) = text.split_once(' ')?;
                    (l.to_string(), r.to_string())
                }
                _ => return None,
            };
            let merged = id_of(&format!("{left}{right}"))?;
            merges.insert(pair_key(id_of(&left)?, id_of(&right)?), (rank as u32, merged));
        }
        let added = json["added_tokens"]
            .as_array()?
            .iter()
            .map(|t| t["content"].as_str().map(str::to_string))
            .collect::<Option<Vec<_>>>()?;
        // A normalized added token would be matched in the normalized text; with a space or `▁`
        // it could span pieces.
        if added.iter().any(|t| t.is_empty() || t.contains([' ', SPACE])) {
            return None;
        }
        Some(PieceBpe { ascii, chars, bytes, unk, fuse_unk: model["fuse_unk"].as_bool() == Some(true), merges, added })
    }

    /// Whether `text` holds an added token (then `tokenizers` must split it out first).
    pub fn has_added_token(&self, text: &str) -> bool {
        self.added.iter().any(|t| text.contains(t.as_str()))
    }

    /// The ids of `text` (no special tokens), appended to `out`.
    pub fn encode(&self, text: &str, cache: &mut PieceCache, out: &mut Vec<u32>) {
        if text.is_empty() {
            return;
        }
        // The normalizer: `▁` before the text, every space a `▁`.
        let mut normalized = String::with_capacity(text.len() + 3 * (1 + text.len() / 4));
        normalized.push(SPACE);
        for c in text.chars() {
            normalized.push(if c == ' ' { SPACE } else { c });
        }
        let mut start = 0;
        let mut previous_is_space = false;
        for (i, c) in normalized.char_indices() {
            let is_space = c == SPACE;
            if is_space && !previous_is_space && i > start {
                self.encode_piece(&normalized[start..i], cache, out);
                start = i;
            }
            previous_is_space = is_space;
        }
        self.encode_piece(&normalized[start..], cache, out);
    }

    fn encode_piece(&self, piece: &str, cache: &mut PieceCache, out: &mut Vec<u32>) {
        if piece.len() >= MAX_CACHED_PIECE {
            out.extend(self.merge_piece(piece));
            return;
        }
        let key = xxhash_rust::xxh3::xxh3_64(piece.as_bytes());
        if let Some((cached, ids)) = cache.get(&key)
            && **cached == *piece
        {
            out.extend_from_slice(ids);
            return;
        }
        let ids = self.merge_piece(piece);
        out.extend_from_slice(&ids);
        if cache.len() >= CACHE_CAPACITY {
            cache.clear();
        }
        cache.insert(key, (piece.into(), ids.into_boxed_slice()));
    }

    fn char_id(&self, c: char) -> Option<u32> {
        match self.ascii.get(c as usize) {
            Some(id) => *id,
            None => self.chars.get(&u32::from(c)).copied(),
        }
    }

    /// `tokenizers`' `BPE::merge_word` then `Word::merge_all`, without dropout.
    fn merge_piece(&self, piece: &str) -> Vec<u32> {
        let mut symbols: Vec<Symbol> = Vec::with_capacity(piece.len());
        let add = |symbols: &mut Vec<Symbol>, id: u32, len: usize| {
            let n = symbols.len() as isize;
            if let Some(last) = symbols.last_mut() {
                last.next = n;
            }
            symbols.push(Symbol { id, prev: n - 1, next: -1, len });
        };
        let mut unk: Option<(u32, usize)> = None;
        for c in piece.chars() {
            let len = c.len_utf8();
            if let Some(id) = self.char_id(c) {
                if let Some((unk_id, unk_len)) = unk.take() {
                    add(&mut symbols, unk_id, unk_len);
                }
                add(&mut symbols, id, len);
                continue;
            }
            if let Some(bytes) = &self.bytes {
                let mut buf = [0u8; 4];
                for b in c.encode_utf8(&mut buf).bytes() {
                    add(&mut symbols, bytes[b as usize], 1);
                }
                continue;
            }
            if let Some(unk_id) = self.unk {
                unk = match unk {
                    Some((id, unk_len)) if self.fuse_unk => Some((id, unk_len + len)),
                    Some((id, unk_len)) => {
                        add(&mut symbols, id, unk_len);
                        Some((unk_id, len))
                    }
                    None => Some((unk_id, len)),
                };
            }
        }
        if let Some((unk_id, unk_len)) = unk {
            add(&mut symbols, unk_id, unk_len);
        }
        self.merge_all(&mut symbols);
        symbols.iter().filter(|s| s.len != 0).map(|s| s.id).collect()
    }

    fn merge_all(&self, symbols: &mut [Symbol]) {
        // Lowest rank first, then leftmost: `Reverse` makes the max-heap a min-heap.
        let mut queue: BinaryHeap<Reverse<(u32, usize, u32)>> = BinaryHeap::with_capacity(symbols.len());
        for (pos, pair) in symbols.windows(2).enumerate() {
            if let Some(&(rank, new_id)) = self.merges.get(&pair_key(pair[0].id, pair[1].id)) {
                queue.push(Reverse((rank, pos, new_id)));
            }
        }
        while let Some(Reverse((_, pos, new_id))) = queue.pop() {
            if symbols[pos].len == 0 || symbols[pos].next == -1 {
                continue;
            }
            let next_pos = symbols[pos].next as usize;
            let right = symbols[next_pos];
            // An expired entry: the pair here changed since it was queued.
            if self.merges.get(&pair_key(symbols[pos].id, right.id)).is_none_or(|&(_, id)| id != new_id) {
                continue;
            }
            let current = &mut symbols[pos];
            current.id = new_id;
            current.len += right.len;
            current.next = right.next;
            symbols[next_pos].len = 0;
            if right.next > -1 && (right.next as usize) < symbols.len() {
                symbols[right.next as usize].prev = pos as isize;
            }
            let current = symbols[pos];
            if current.prev >= 0 {
                let prev = current.prev as usize;
                if let Some(&(rank, id)) = self.merges.get(&pair_key(symbols[prev].id, current.id)) {
                    queue.push(Reverse((rank, prev, id)));
                }
            }
            let next = current.next as usize;
            if current.next >= 0
                && next < symbols.len()
                && let Some(&(rank, id)) = self.merges.get(&pair_key(current.id, symbols[next].id))
            {
                queue.push(Reverse((rank, pos, id)));
            }
        }
    }
}

/// A symbol of a piece being merged: `tokenizers`' `Symbol` (`len` 0 marks a merged-away one).
#[derive(Clone, Copy)]
struct Symbol {
    id: u32,
    prev: isize,
    next: isize,
    len: usize,
}

/// `Prepend("▁")` and `Replace(" " → "▁")`, in either order (they commute).
fn is_sentencepiece_normalizer(normalizer: &Value) -> bool {
    let Some(steps) = normalizer["normalizers"].as_array().filter(|_| normalizer["type"] == "Sequence") else {
        return false;
    };
    let prepend = |n: &Value| n["type"] == "Prepend" && n["prepend"] == "▁";
    let replace = |n: &Value| n["type"] == "Replace" && n["pattern"]["String"] == " " && n["content"] == "▁";
    steps.len() == 2 && ((prepend(&steps[0]) && replace(&steps[1])) || (replace(&steps[0]) && prepend(&steps[1])))
}

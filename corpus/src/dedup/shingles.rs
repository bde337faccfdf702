//! Text normalization for exact keys, and word n-gram shingles for MinHash.

use crate::hashing::{hash_bytes, mix};

/// xxh3-128 of the text lowercased with whitespace runs collapsed and ends trimmed, so copies
/// that differ only in case or spacing share a key. `buf` is scratch space.
pub fn exact_key(text: &str, buf: &mut Vec<u8>) -> u128 {
    // Room for the rest of the text plus one 8-byte write, kept so as lowercasing grows it.
    buf.clear();
    buf.resize(text.len() + 8, 0);
    let bytes = text.as_bytes();
    let (mut w, mut prev_space, mut i) = (0usize, true, 0usize);
    // Byte by byte up to `slow_end`, then 8 bytes at a time while they need no collapsing.
    let mut slow_end = 0usize;
    while i < bytes.len() {
        if i >= slow_end && i + 8 <= bytes.len() {
            let chunk = u64::from_le_bytes(bytes[i..i + 8].try_into().expect("8 bytes"));
            if let Some((lower, ends_in_space)) = plain_ascii_lowercase(chunk, prev_space) {
                buf[w..w + 8].copy_from_slice(&lower.to_le_bytes());
                (w, i, prev_space) = (w + 8, i + 8, ends_in_space);
                continue;
            }
            slow_end = i + 8;
        }
        let b = bytes[i];
        if b < 0x80 {
            // Branch-free for ASCII: every byte is written (lowercased, whitespace as ' '), and
            // the write position advances unless the byte is whitespace following whitespace.
            let space = b.is_ascii_whitespace();
            buf[w] = if space { b' ' } else { b.to_ascii_lowercase() };
            w += usize::from(!(space && prev_space));
            prev_space = space;
            i += 1;
        } else {
            // A multi-byte character: lowercase it (possibly into several characters).
            let c = text[i..].chars().next().expect("char boundary");
            for lower in c.to_lowercase() {
                let needed = w + lower.len_utf8();
                if needed > buf.len() {
                    buf.resize(needed + 16, 0);
                }
                w += lower.encode_utf8(&mut buf[w..]).len();
            }
            prev_space = false;
            i += c.len_utf8();
            let room = w + (bytes.len() - i) + 8;
            if buf.len() < room {
                buf.resize(room, 0);
            }
        }
    }
    buf.truncate(w);
    if buf.last() == Some(&b' ') {
        buf.pop();
    }
    xxhash_rust::xxh3::xxh3_128(buf)
}

/// Eight text bytes (little-endian) lowercased, when normalizing them is only that: all ASCII,
/// no whitespace but single spaces, and no space right after a space (`prev_space` says
/// whether the byte before was one). Returns also whether the last byte is a space.
fn plain_ascii_lowercase(chunk: u64, prev_space: bool) -> Option<(u64, bool)> {
    const LANES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x80 * LANES;
    if chunk & HIGH != 0 {
        return None;
    }
    // Every byte is below 0x80, so adding at most 0x7f per byte never carries into the next:
    // bit 7 of `x + (0x80 - k)` says whether that byte is at least `k`.
    let at_least = |k: u64| (chunk + (0x80 - k) * LANES) & HIGH;
    // Tab, line feed, vertical tab, form feed, carriage return: 0x09..=0x0d. (Vertical tab is
    // not whitespace here; the byte path handles it, only more slowly.)
    if at_least(0x09) & !at_least(0x0e) != 0 {
        return None;
    }
    let not_space = chunk ^ (0x20 * LANES);
    let spaces = !((not_space + 0x7f * LANES) | not_space) & HIGH;
    if spaces & (spaces << 8 | u64::from(prev_space) << 7) != 0 {
        return None;
    }
    let upper = at_least(u64::from(b'A')) & !at_least(u64::from(b'Z') + 1);
    Some((chunk | upper >> 2, spaces >> 63 != 0))
}

/// How digits are normalized in [`word_hashes`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Digits {
    /// Every digit becomes `0`, so numbers do not separate near-duplicates (dedup).
    Zeroed,
    /// Digits are kept: templated text that differs only in its numbers is different
    /// (decontamination, where zeroing matched unrelated GSM8K problems).
    Kept,
}

/// Hashes of the normalized words of `text` with digits zeroed: see [`word_hashes_with`].
pub fn word_hashes(text: &str, out: &mut Vec<u64>) {
    word_hashes_with(text, Digits::Zeroed, out);
}

/// Hashes of the normalized words of `text`: maximal runs of letters and digits, lowercased,
/// digits as `digits` says (zeroed as in datatrove's `simplify_text`), so punctuation and
/// spacing never separate near-duplicates.
pub fn word_hashes_with(text: &str, digits: Digits, out: &mut Vec<u64>) {
    out.clear();
    let zero = digits == Digits::Zeroed;
    let mut word = String::new();
    let flush = |word: &mut String, out: &mut Vec<u64>| {
        if !word.is_empty() {
            out.push(hash_bytes(word.as_bytes()));
            word.clear();
        }
    };
    if text.is_ascii() {
        for &b in text.as_bytes() {
            match b {
                b'a'..=b'z' => word.push(b as char),
                b'A'..=b'Z' => word.push((b + 32) as char),
                b'0'..=b'9' => word.push(if zero { '0' } else { b as char }),
                _ => flush(&mut word, out),
            }
        }
    } else {
        for c in text.chars() {
            if c.is_numeric() {
                if zero {
                    word.push('0');
                } else {
                    word.push(c);
                }
            } else if c.is_alphanumeric() {
                word.extend(c.to_lowercase());
            } else {
                flush(&mut word, out);
            }
        }
    }
    flush(&mut word, out);
}

/// The n-gram shingle hashes of a word sequence, in order (with repeats). A text shorter than
/// `n` words is one shingle of all its words; an empty text has none.
pub fn shingles(words: &[u64], n: usize, out: &mut Vec<u64>) {
    out.clear();
    if words.is_empty() {
        return;
    }
    let n = n.min(words.len());
    out.extend(words.windows(n).map(|w| w.iter().fold(n as u64, |acc, &h| mix(acc, h))));
}

/// Sorted, deduplicated shingle set of `text`, for exact Jaccard.
pub fn shingle_set(text: &str, n: usize) -> Vec<u64> {
    let mut words = Vec::new();
    let mut set = Vec::new();
    word_hashes(text, &mut words);
    shingles(&words, n, &mut set);
    set.sort_unstable();
    set.dedup();
    set
}

/// Exact Jaccard similarity of two sorted, deduplicated sets.
pub fn jaccard(a: &[u64], b: &[u64]) -> f64 {
    if a.is_empty() && b.is_empty() {
        return 1.0;
    }
    let (mut i, mut j, mut common) = (0, 0, 0usize);
    while i < a.len() && j < b.len() {
        match a[i].cmp(&b[j]) {
            std::cmp::Ordering::Less => i += 1,
            std::cmp::Ordering::Greater => j += 1,
            std::cmp::Ordering::Equal => {
                common += 1;
                i += 1;
                j += 1;
            }
        }
    }
    common as f64 / (a.len() + b.len() - common) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_key_ignores_case_and_spacing_only() {
        let key = |text: &str| exact_key(text, &mut Vec::new());
        assert_eq!(key("Hello   World\n"), key("hello world"));
        assert_eq!(key("  Hello World"), key("hello world"));
        assert_ne!(key("hello world"), key("hello, world"));
        assert_eq!(key("Ünïcode  TEXT"), key("ünïcode text"));
        // Lowercasing grows "İ" from 2 bytes to 3: five of them used to overrun the buffer.
        assert_eq!(key("İİİİİ X"), key("i\u{307}i\u{307}i\u{307}i\u{307}i\u{307} x"));
    }

    /// The normalization `exact_key` hashes, by its definition, one character at a time.
    fn normalized(text: &str) -> String {
        let (mut out, mut prev_space) = (String::new(), true);
        for c in text.chars() {
            if c.is_ascii_whitespace() {
                if !prev_space {
                    out.push(' ');
                }
                prev_space = true;
            } else {
                out.extend(c.to_lowercase());
                prev_space = false;
            }
        }
        if out.ends_with(' ') {
            out.pop();
        }
        out
    }

    proptest::proptest! {
        // Runs of spaces, other whitespace (and vertical tab, which is not whitespace here),
        // case and multi-byte characters at every offset of the 8-byte fast path.
        #[test]
        fn exact_key_matches_its_definition(text in "[aZ0 \t\n\x0b\x0c\r.Éİß€]{0,40}") {
            let expected = xxhash_rust::xxh3::xxh3_128(normalized(&text).as_bytes());
            proptest::prop_assert_eq!(exact_key(&text, &mut Vec::new()), expected);
        }
    }

    #[test]
    fn normalization_merges_punctuation_and_numbers() {
        assert_eq!(shingle_set("The year 1999, was GOOD!", 2), shingle_set("the year 2024 was good", 2));
    }

    #[test]
    fn jaccard_of_known_sets() {
        assert_eq!(jaccard(&[1, 2, 3], &[2, 3, 4]), 0.5);
        assert_eq!(jaccard(&[1], &[1]), 1.0);
        assert_eq!(jaccard(&[1], &[2]), 0.0);
    }

    #[test]
    fn short_texts_get_one_shingle() {
        assert_eq!(shingle_set("two words", 5).len(), 1);
        assert!(shingle_set("  ...  ", 5).is_empty());
    }
}

//! Per-document quality signals: sizes, character classes, line and n-gram repetition.
//!
//! Definitions follow Gopher (Rae et al. 2021) as datatrove implements them, with words split
//! on whitespace. Fractions are of characters unless a name says otherwise.

use serde::{Deserialize, Serialize};

use crate::hashing::{IdentityBuild, hash_bytes, mix};

/// Gopher's stop words: a document with fewer than two is rarely natural English prose.
const GOPHER_STOP_WORDS: [&str; 8] = ["the", "be", "to", "of", "and", "that", "have", "with"];
/// Frequent English function words, for the language hint.
const ENGLISH_COMMON: [&str; 24] = [
    "the", "of", "and", "to", "a", "in", "is", "that", "for", "it", "was", "on", "with", "as", "be", "by", "are",
    "this", "at", "from", "or", "an", "he", "she",
];

/// Writing system of most letters in a document.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Script {
    /// Latin letters.
    Latin,
    /// Cyrillic.
    Cyrillic,
    /// Greek.
    Greek,
    /// Arabic.
    Arabic,
    /// Hebrew.
    Hebrew,
    /// Devanagari.
    Devanagari,
    /// Chinese characters and Japanese kana.
    Cjk,
    /// Korean Hangul.
    Hangul,
    /// Something else, or no letters.
    #[default]
    Other,
}

impl Script {
    /// Lowercase name, as in the profile's `script` column.
    pub fn name(self) -> &'static str {
        match self {
            Script::Latin => "latin",
            Script::Cyrillic => "cyrillic",
            Script::Greek => "greek",
            Script::Arabic => "arabic",
            Script::Hebrew => "hebrew",
            Script::Devanagari => "devanagari",
            Script::Cjk => "cjk",
            Script::Hangul => "hangul",
            Script::Other => "other",
        }
    }

    fn of(c: char) -> Script {
        match c as u32 {
            0x41..=0x5A | 0x61..=0x7A | 0xC0..=0x24F | 0x1E00..=0x1EFF => Script::Latin,
            0x370..=0x3FF => Script::Greek,
            0x400..=0x52F => Script::Cyrillic,
            0x590..=0x5FF => Script::Hebrew,
            0x600..=0x6FF | 0x750..=0x77F => Script::Arabic,
            0x900..=0x97F => Script::Devanagari,
            0x3040..=0x30FF | 0x3400..=0x4DBF | 0x4E00..=0x9FFF => Script::Cjk,
            0xAC00..=0xD7AF | 0x1100..=0x11FF => Script::Hangul,
            _ => Script::Other,
        }
    }
}

/// What a document looks like: English-looking prose, source-like text, or undetermined.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LangHint {
    /// English-looking prose.
    En,
    /// Source-like text.
    Code,
    /// Neither.
    #[default]
    Und,
}

impl LangHint {
    /// `en`, `code` or `und`, as in the profile table.
    pub fn as_str(self) -> &'static str {
        match self {
            LangHint::En => "en",
            LangHint::Code => "code",
            LangHint::Und => "und",
        }
    }
}

/// The signals of one document (a row of the profile table without its verdicts).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Signals {
    /// UTF-8 bytes.
    pub bytes: u64,
    /// Unicode scalar values.
    pub chars: u64,
    /// Whitespace-separated words containing a letter or digit.
    pub words: u64,
    /// Lines (`\n`-separated, empty ones included).
    pub lines: u64,
    /// Estimated tokens: ⌈bytes / 4⌉, the usual English BPE rate; the shard stage counts exactly.
    pub est_tokens: u64,
    /// Fraction of characters that are letters.
    pub alpha_frac: f32,
    /// ... digits.
    pub digit_frac: f32,
    /// ... uppercase letters.
    pub upper_frac: f32,
    /// ... whitespace.
    pub whitespace_frac: f32,
    /// ... neither alphanumeric nor whitespace.
    pub symbol_frac: f32,
    /// ... outside ASCII.
    pub non_ascii_frac: f32,
    /// Mean length of words, in characters.
    pub mean_word_len: f32,
    /// Fraction of whitespace tokens with at least one letter.
    pub alpha_word_frac: f32,
    /// Count of Gopher stop words.
    pub stop_words: u64,
    /// (`#` + `...` + `…`) per word.
    pub symbol_word_ratio: f32,
    /// Fraction of non-empty lines starting with a bullet.
    pub bullet_line_frac: f32,
    /// Fraction of non-empty lines ending with an ellipsis.
    pub ellipsis_line_frac: f32,
    /// Fraction of non-empty lines ending in `.`, `!`, `?`, `"` or `'`.
    pub terminal_punct_line_frac: f32,
    /// Fraction of non-empty lines of at most 30 characters.
    pub short_line_frac: f32,
    /// Fraction of non-empty lines equal to an earlier line.
    pub dup_line_frac: f32,
    /// Fraction of paragraphs (blank-line separated) equal to an earlier one.
    pub dup_para_frac: f32,
    /// Characters in repeated lines over all characters.
    pub dup_line_char_frac: f32,
    /// Characters in repeated paragraphs over all characters.
    pub dup_para_char_frac: f32,
    /// Characters of the most frequent 2-, 3-, 4-gram (times its count) over all characters.
    pub top_ngram_frac: [f32; 3],
    /// Characters covered by repeated 5- ... 10-grams over all characters.
    pub dup_ngram_frac: [f32; 6],
    /// Contains "lorem ipsum" (any case).
    pub lorem_ipsum: bool,
    /// Contains `{`.
    pub curly_brace: bool,
    /// Majority script of the letters.
    pub script: Script,
    /// `en` for English-looking prose, `code` for source-like text, else `und`.
    pub lang_hint: LangHint,
}

/// Reusable buffers, one per worker thread.
#[derive(Default)]
pub struct Scratch {
    word_hashes: Vec<u64>,
    word_chars: Vec<u32>,
    gram_hashes: Vec<u64>,
    counts: CountTable,
    seen: hashbrown::HashSet<u64, IdentityBuild>,
    /// Positions whose n-gram occurs more than once, for the next n.
    positions: Vec<u32>,
    slots: Vec<u32>,
}

/// Computes every signal of `text`.
pub fn compute(text: &str, scratch: &mut Scratch) -> Signals {
    let mut s = Signals { bytes: text.len() as u64, est_tokens: (text.len() as u64).div_ceil(4), ..Signals::default() };
    words(text, &mut s, scratch);
    lines(text, &mut s, scratch);
    paragraphs(text, &mut s, scratch);
    ngram_repetition(&mut s, scratch);
    s.lorem_ipsum = contains_lorem_ipsum(text);
    s.curly_brace = text.as_bytes().contains(&b'{');
    s
}

/// Counts of hashed n-grams: open addressing with linear probing over a power-of-two table at
/// most half full, reused across documents. Keys already are hashes, so a probe costs one
/// multiply; this loop is the largest single cost of the profile.
#[derive(Default)]
struct CountTable {
    /// Key and count side by side: one cache line per probe on tables larger than the cache.
    slots: Vec<(u64, u32)>,
    mask: usize,
}

impl CountTable {
    /// Empties the table and sizes it for `n` keys.
    fn reset(&mut self, n: usize) {
        let size = (n * 2).next_power_of_two().max(16);
        self.slots.clear();
        self.slots.resize(size, (0, 0));
        self.mask = size - 1;
    }

    fn slot(&self, key: u64) -> usize {
        // Key 0 marks an empty slot, so it is stored as 1; a collision there is harmless for
        // repetition statistics.
        let key = key.max(1);
        let mut i = (key.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32) as usize & self.mask;
        while self.slots[i].0 != 0 && self.slots[i].0 != key {
            i = (i + 1) & self.mask;
        }
        i
    }

    /// Adds one to `key`'s count and returns its slot, where [`CountTable::count`] reads it.
    fn increment(&mut self, key: u64) -> usize {
        let i = self.slot(key);
        self.slots[i].0 = key.max(1);
        self.slots[i].1 += 1;
        i
    }

    fn count(&self, slot: usize) -> u32 {
        self.slots[slot].1
    }
}

fn frac(part: u64, whole: u64) -> f32 {
    if whole == 0 { 0.0 } else { (part as f64 / whole as f64) as f32 }
}

/// Character-class fractions and the majority script, from the byte counts of
/// [`class_counts`]; multi-byte characters are classified here.
fn char_classes(text: &str, ascii: &[u64; 7], s: &mut Signals) {
    let [lower, upper, digit, separator, symbol, non_ascii_bytes, vertical_tab] = *ascii;
    let (mut chars, mut alpha, mut digit, mut upper, mut space, mut symbol) = (
        lower + upper + digit + separator + symbol + vertical_tab,
        lower + upper,
        digit,
        upper,
        separator + vertical_tab,
        symbol,
    );
    let mut non_ascii = 0u64;
    let mut script_counts = [0u32; 9];
    script_counts[0] = (lower + upper) as u32;
    if non_ascii_bytes > 0 {
        for c in non_ascii_chars(text) {
            chars += 1;
            non_ascii += 1;
            if c.is_alphabetic() {
                alpha += 1;
                if c.is_uppercase() {
                    upper += 1;
                }
                script_counts[Script::of(c) as usize] += 1;
            } else if c.is_numeric() {
                digit += 1;
            } else if c.is_whitespace() {
                space += 1;
            } else {
                symbol += 1;
            }
        }
    }
    s.chars = chars;
    s.alpha_frac = frac(alpha, chars);
    s.digit_frac = frac(digit, chars);
    s.upper_frac = frac(upper, chars);
    s.whitespace_frac = frac(space, chars);
    s.symbol_frac = frac(symbol, chars);
    s.non_ascii_frac = frac(non_ascii, chars);
    let (best, count) =
        script_counts.iter().enumerate().max_by_key(|&(i, &n)| (n, std::cmp::Reverse(i))).expect("nine scripts");
    s.script = if *count == 0 { Script::Other } else { SCRIPTS[best] };
}

/// The characters of `text` outside ASCII, skipping ASCII runs 8 bytes at a time instead of
/// decoding every character.
fn non_ascii_chars(text: &str) -> impl Iterator<Item = char> + '_ {
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let bytes = text.as_bytes();
    let mut i = 0;
    std::iter::from_fn(move || {
        while let Some(eight) = bytes.get(i..i + 8)
            && u64::from_le_bytes(eight.try_into().expect("8 bytes")) & HIGH == 0
        {
            i += 8;
        }
        while bytes.get(i).is_some_and(u8::is_ascii) {
            i += 1;
        }
        let c = text[i..].chars().next()?;
        i += c.len_utf8();
        Some(c)
    })
}

const SCRIPTS: [Script; 9] = [
    Script::Latin,
    Script::Cyrillic,
    Script::Greek,
    Script::Arabic,
    Script::Hebrew,
    Script::Devanagari,
    Script::Cjk,
    Script::Hangul,
    Script::Other,
];

/// Byte classes, as [`class_counts`] indexes its counts.
const LOWER: u8 = 0;
const UPPER: u8 = 1;
const DIGIT: u8 = 2;
/// ASCII whitespace that separates words (as `str::split_ascii_whitespace`).
const SEPARATOR: u8 = 3;
const SYMBOL: u8 = 4;
/// A byte of a multi-byte character: classified per character afterwards.
const NON_ASCII: u8 = 5;
/// Vertical tab: whitespace for the character classes, but it does not separate words.
const VERTICAL_TAB: u8 = 6;

const BYTE_CLASS: [u8; 256] = {
    let mut table = [NON_ASCII; 256];
    let mut b = 0;
    while b < 128 {
        table[b] = match b as u8 {
            b'a'..=b'z' => LOWER,
            b'A'..=b'Z' => UPPER,
            b'0'..=b'9' => DIGIT,
            b' ' | b'\t' | b'\n' | b'\r' | 0x0C => SEPARATOR,
            0x0B => VERTICAL_TAB,
            _ => SYMBOL,
        };
        b += 1;
    }
    table
};

/// Word signals in one pass over the bytes (then the character classes, which the language
/// hint needs): a table lookup per byte ends or extends the current word, whose per-word facts
/// are the union of its bytes' classes. Multi-byte characters are decoded only in words that
/// have them.
fn words(text: &str, s: &mut Signals, scratch: &mut Scratch) {
    scratch.word_hashes.clear();
    scratch.word_chars.clear();
    let bytes = text.as_bytes();
    let mut words = WordCounts::default();
    let (mut start, mut classes) = (0usize, 0u8);
    for (i, &b) in bytes.iter().enumerate() {
        let class = BYTE_CLASS[usize::from(b)];
        if class == SEPARATOR {
            if classes != 0 {
                words.push(&text[start..i], token_hash(bytes, start, i), classes, scratch);
                classes = 0;
            }
            start = i + 1;
        } else {
            classes |= 1 << class;
        }
    }
    if classes != 0 {
        words.push(&text[start..], token_hash(bytes, start, bytes.len()), classes, scratch);
    }
    let class_counts = class_counts(bytes);
    char_classes(text, &class_counts, s);
    // `#`, `...` and `…` never contain whitespace, so counting them over the text counts them
    // over its words.
    let symbols = memchr::memchr_iter(b'#', bytes).count()
        + memchr::memmem::find_iter(bytes, b"...").count()
        + if class_counts[usize::from(NON_ASCII)] > 0 { memchr::memmem::find_iter(bytes, "…").count() } else { 0 };
    s.words = words.words;
    s.mean_word_len = frac(words.word_chars, words.words);
    s.alpha_word_frac = frac(words.alpha_tokens, words.tokens);
    s.stop_words = words.stop;
    s.symbol_word_ratio = frac(symbols as u64, words.words);
    s.lang_hint = if s.script == Script::Latin && frac(words.common, words.words) >= 0.08 {
        LangHint::En
    } else if s.symbol_frac > 0.08 && looks_like_code(text) {
        LangHint::Code
    } else {
        LangHint::Und
    };
}

/// Bytes per class, indexed by class. Comparisons rather than [`BYTE_CLASS`] lookups: the
/// compiler vectorizes them, where incrementing a table of counters per byte waits on the
/// previous byte's store whenever two neighbours share a class.
fn class_counts(bytes: &[u8]) -> [u64; 7] {
    let mut counts = [0u64; 7];
    // u32 lanes vectorize twice as wide as u64; 64 KiB chunks keep them from overflowing.
    for chunk in bytes.chunks(1 << 16) {
        let (mut lower, mut upper, mut digit, mut separator, mut non_ascii, mut vertical_tab) =
            (0u32, 0u32, 0u32, 0u32, 0u32, 0u32);
        for &b in chunk {
            lower += u32::from(b.wrapping_sub(b'a') < 26);
            upper += u32::from(b.wrapping_sub(b'A') < 26);
            digit += u32::from(b.wrapping_sub(b'0') < 10);
            separator += u32::from(b == b' ' || b.wrapping_sub(b'\t') < 2 || b.wrapping_sub(0x0C) < 2);
            non_ascii += u32::from(b >= 0x80);
            vertical_tab += u32::from(b == 0x0B);
        }
        let symbol = chunk.len() as u32 - lower - upper - digit - separator - non_ascii - vertical_tab;
        for (count, n) in counts.iter_mut().zip([lower, upper, digit, separator, symbol, non_ascii, vertical_tab]) {
            *count += u64::from(n);
        }
    }
    counts
}

/// Running counts over a document's whitespace-separated tokens.
#[derive(Default)]
struct WordCounts {
    tokens: u64,
    alpha_tokens: u64,
    /// Tokens with a letter or digit, and their characters.
    words: u64,
    word_chars: u64,
    stop: u64,
    common: u64,
}

impl WordCounts {
    /// One token, with its [`token_hash`] and the union of its bytes' classes (bit `1 << class`).
    fn push(&mut self, token: &str, hash: u64, classes: u8, scratch: &mut Scratch) {
        let bytes = token.as_bytes();
        let (mut alpha, mut digit) = (classes & (1 << LOWER | 1 << UPPER) != 0, classes & (1 << DIGIT) != 0);
        let n_chars = if classes & (1 << NON_ASCII) != 0 {
            let (letters, alnum) =
                token.chars().fold((false, false), |(l, a), c| (l || c.is_alphabetic(), a || c.is_alphanumeric()));
            alpha |= letters;
            digit |= alnum;
            token.chars().count()
        } else {
            bytes.len()
        } as u32;
        self.tokens += 1;
        self.alpha_tokens += u64::from(alpha);
        scratch.word_hashes.push(hash);
        scratch.word_chars.push(n_chars);
        if alpha || digit {
            self.words += 1;
            self.word_chars += u64::from(n_chars);
            // Stop words have at most 4 letters; skip the trim for longer tokens.
            if bytes.len() <= 8
                && let Some(code) = short_word_code(trim_ascii_punctuation(bytes))
            {
                self.stop += u64::from(GOPHER_STOP_CODES.contains(&code));
                self.common += u64::from(ENGLISH_COMMON_CODES.contains(&code));
            }
        }
    }
}

/// The identity of the token `text[start..end]` for the repetition statistics. Tokens under 8
/// bytes (most words) are packed with their length into a `u64` and spread by a bijection, so
/// two of them never collide and no hash function runs; longer ones take xxh3.
fn token_hash(text: &[u8], start: usize, end: usize) -> u64 {
    let len = end - start;
    if len >= 8 {
        return hash_bytes(&text[start..end]);
    }
    let packed = match text.get(start..start + 8) {
        Some(eight) => u64::from_le_bytes(eight.try_into().expect("8 bytes")) & ((1u64 << (8 * len)) - 1),
        None => text[start..end].iter().rev().fold(0u64, |acc, &b| acc << 8 | u64::from(b)),
    };
    // MurmurHash3's 64-bit finalizer: invertible, and every input bit reaches every output bit.
    let mut x = packed | (len as u64) << 56;
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    x = x.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    x ^ x >> 33
}

fn trim_ascii_punctuation(mut bytes: &[u8]) -> &[u8] {
    while let [first, rest @ ..] = bytes
        && first.is_ascii_punctuation()
    {
        bytes = rest;
    }
    while let [rest @ .., last] = bytes
        && last.is_ascii_punctuation()
    {
        bytes = rest;
    }
    bytes
}

/// A word of 1 to 4 bytes, lowercased and packed with its length into a `u64` (the length
/// tells "to" from "to\0"), so the stop-word lists are searched by integer compares.
const fn short_word_code(word: &[u8]) -> Option<u64> {
    if word.is_empty() || word.len() > 4 {
        return None;
    }
    let mut code = (word.len() as u64) << 32;
    let mut i = 0;
    while i < word.len() {
        code |= (word[i].to_ascii_lowercase() as u64) << (8 * i);
        i += 1;
    }
    Some(code)
}

const fn word_codes<const N: usize>(words: [&str; N]) -> [u64; N] {
    let mut codes = [0u64; N];
    let mut i = 0;
    while i < N {
        codes[i] = match short_word_code(words[i].as_bytes()) {
            Some(code) => code,
            None => panic!("stop words have 1 to 4 letters"),
        };
        i += 1;
    }
    codes
}

const GOPHER_STOP_CODES: [u64; 8] = word_codes(GOPHER_STOP_WORDS);
const ENGLISH_COMMON_CODES: [u64; 24] = word_codes(ENGLISH_COMMON);

fn looks_like_code(text: &str) -> bool {
    let b = text.as_bytes();
    b.contains(&b'{') || b.contains(&b';') || text.contains("def ") || text.contains("fn ")
}

fn lines(text: &str, s: &mut Signals, scratch: &mut Scratch) {
    let mut n_lines = 0u64;
    let (mut non_empty, mut bullets, mut ellipses, mut terminal, mut short) = (0u64, 0u64, 0u64, 0u64, 0u64);
    let (mut dup, mut dup_chars) = (0u64, 0u64);
    scratch.seen.clear();
    for line in text.split('\n') {
        n_lines += 1;
        let trimmed = line.trim();
        if trimmed.is_empty() {
            continue;
        }
        non_empty += 1;
        let first = trimmed.chars().next().expect("non-empty");
        bullets += u64::from(matches!(first, '•' | '‣' | '●' | '▪' | '◦' | '-' | '*' | '–' | '—'));
        ellipses += u64::from(trimmed.ends_with("...") || trimmed.ends_with('…'));
        terminal += u64::from(matches!(trimmed.as_bytes()[trimmed.len() - 1], b'.' | b'!' | b'?' | b'"' | b'\''));
        let n_chars = if trimmed.is_ascii() { trimmed.len() } else { trimmed.chars().count() } as u64;
        short += u64::from(n_chars <= 30);
        if !scratch.seen.insert(hash_bytes(trimmed.as_bytes())) {
            dup += 1;
            dup_chars += n_chars;
        }
    }
    s.lines = if text.is_empty() { 0 } else { n_lines - u64::from(text.ends_with('\n')) };
    s.bullet_line_frac = frac(bullets, non_empty);
    s.ellipsis_line_frac = frac(ellipses, non_empty);
    s.terminal_punct_line_frac = frac(terminal, non_empty);
    s.short_line_frac = frac(short, non_empty);
    s.dup_line_frac = frac(dup, non_empty);
    s.dup_line_char_frac = frac(dup_chars, s.chars);
}

fn paragraphs(text: &str, s: &mut Signals, scratch: &mut Scratch) {
    let (mut paras, mut dup, mut dup_chars) = (0u64, 0u64, 0u64);
    scratch.seen.clear();
    let mut count = |para: &str, scratch: &mut Scratch| {
        let trimmed = para.trim();
        if trimmed.is_empty() {
            return;
        }
        paras += 1;
        if !scratch.seen.insert(hash_bytes(trimmed.as_bytes())) {
            dup += 1;
            dup_chars += if trimmed.is_ascii() { trimmed.len() } else { trimmed.chars().count() } as u64;
        }
    };
    // Paragraphs end at "\n\n"; finding newlines byte-wise is much cheaper than a substring search.
    let bytes = text.as_bytes();
    let (mut start, mut i) = (0usize, 0usize);
    while let Some(offset) = memchr::memchr(b'\n', &bytes[i..]) {
        let nl = i + offset;
        if bytes.get(nl + 1) == Some(&b'\n') {
            count(&text[start..nl], scratch);
            start = nl + 2;
            i = nl + 2;
        } else {
            i = nl + 1;
        }
    }
    count(&text[start..], scratch);
    s.dup_para_frac = frac(dup, paras);
    s.dup_para_char_frac = frac(dup_chars, s.chars);
}

/// Gopher's top-n-gram (n = 2..4) and duplicate-n-gram (n = 5..10) character fractions, over
/// n-gram hashes built incrementally: the hash of an n-gram at `i` mixes the (n-1)-gram's
/// hash at `i` with word `i + n - 1`.
///
/// An n-gram can only repeat where its leading (n-1)-gram does, so only the 2-grams are
/// counted at every position: each later n hashes and counts only the positions where the
/// (n-1)-gram repeated, and the greedy scans for n = 5..10 visit only the positions where the
/// 5-gram repeats. On typical text that is a small fraction of the words, so the nine passes
/// Gopher's definitions imply cost little more than the first.
fn ngram_repetition(s: &mut Signals, scratch: &mut Scratch) {
    let words = &scratch.word_hashes;
    let chars = &scratch.word_chars;
    let total = s.chars;
    let span_chars = |i: usize, n: usize| chars[i..i + n].iter().map(|&c| u64::from(c)).sum::<u64>();
    let counts = &mut scratch.counts;
    // Positions whose (n-1)-gram occurs more than once (every position before the 2-grams),
    // ascending, and the hash of the gram at each: the (n-1)-gram's, then the n-gram's.
    let positions = &mut scratch.positions;
    let grams = &mut scratch.gram_hashes;
    // The count table's slot of the n-gram at each of `positions`.
    let slots = &mut scratch.slots;
    positions.clear();
    positions.extend(0..words.len() as u32);
    grams.clear();
    grams.extend_from_slice(words);
    for n in 2..=10usize {
        if words.len() < n {
            break;
        }
        // The last (n-1)-gram has no n-gram.
        let windows = words.len() - n + 1;
        let with_ngram = positions.partition_point(|&i| (i as usize) < windows);
        positions.truncate(with_ngram);
        grams.truncate(with_ngram);
        for (gram, &i) in grams.iter_mut().zip(positions.iter()) {
            *gram = mix(*gram, words[i as usize + n - 1]);
        }
        if n <= 5 {
            counts.reset(positions.len());
            slots.clear();
            slots.extend(grams.iter().map(|&gram| counts.increment(gram) as u32));
            // Keep the positions whose n-gram repeats, and find the most frequent n-gram. Ties
            // go to the earliest first occurrence, as Python's `Counter.most_common` in
            // datatrove; when every n-gram is unique, that is the first.
            let (mut kept, mut max, mut first) = (0, 1, 0);
            for k in 0..slots.len() {
                let count = counts.count(slots[k] as usize);
                if count > 1 {
                    if count > max {
                        (max, first) = (count, positions[k] as usize);
                    }
                    positions[kept] = positions[k];
                    grams[kept] = grams[k];
                    kept += 1;
                }
            }
            positions.truncate(kept);
            grams.truncate(kept);
            if n <= 4 {
                // Its characters (words plus separating spaces) × its count.
                s.top_ngram_frac[n - 2] = frac((span_chars(first, n) + (n as u64 - 1)) * u64::from(max), total);
                continue;
            }
        }
        // Greedy scan: a repeated n-gram counts its characters and skips past itself. Positions
        // whose 5-gram occurs once cannot start a repeated n-gram, so only `positions` are visited.
        scratch.seen.clear();
        let (mut repeated, mut next) = (0u64, 0usize);
        for (&i, &gram) in positions.iter().zip(grams.iter()) {
            let i = i as usize;
            if i >= next && !scratch.seen.insert(gram) {
                repeated += span_chars(i, n);
                next = i + n;
            }
        }
        s.dup_ngram_frac[n - 5] = frac(repeated, total);
    }
}

/// "lorem ipsum" in any case: a fast substring search for the rare letter pair "m i" region
/// would be overkill; instead search the lowercase and uppercase forms of the distinctive tail.
fn contains_lorem_ipsum(text: &str) -> bool {
    let candidates = ["orem ipsum", "OREM IPSUM", "orem Ipsum"];
    candidates.iter().any(|tail| text.contains(tail))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signals(text: &str) -> Signals {
        compute(text, &mut Scratch::default())
    }

    #[test]
    fn counts_basic_sizes_and_classes() {
        let s = signals("Hello World 42!\nsecond line\n");
        assert_eq!((s.bytes, s.chars, s.words, s.lines), (28, 28, 5, 2));
        assert_eq!(s.digit_frac, 2.0 / 28.0);
        assert_eq!(s.upper_frac, 2.0 / 28.0);
        assert_eq!(s.script, Script::Latin);
    }

    #[test]
    fn repeated_lines_and_ngrams_are_measured() {
        let s = signals("a b c d e f\na b c d e f\nunique line here\n");
        assert_eq!(s.dup_line_frac, 1.0 / 3.0);
        // "a b c d e f" twice: the 5-grams of the second copy repeat the first's.
        assert!(s.dup_ngram_frac[0] > 0.0);
        assert!(s.top_ngram_frac[0] > 0.0);
        let clean = signals("every word here differs from all the others completely");
        assert_eq!(clean.dup_ngram_frac, [0.0; 6]);
    }

    #[test]
    fn script_and_language_hints() {
        assert_eq!(signals("Привет мир, как дела").script, Script::Cyrillic);
        assert_eq!(signals("the cat sat on the mat and it was happy with that").lang_hint, LangHint::En);
        assert_eq!(signals("fn main() { let x = 1; println!(\"{x}\"); }").lang_hint, LangHint::Code);
    }

    #[test]
    fn stop_words_and_symbols() {
        let s = signals("The end of it and that ### ... x");
        assert_eq!(s.stop_words, 4);
        assert!(s.symbol_word_ratio > 0.5);
        assert!(signals("Lorem Ipsum dolor").lorem_ipsum);
    }
}

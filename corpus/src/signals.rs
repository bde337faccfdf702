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
    /// Whether the 5-gram at each position occurs more than once in the document.
    repeated: Vec<bool>,
}

/// Computes every signal of `text`.
pub fn compute(text: &str, scratch: &mut Scratch) -> Signals {
    let mut s = Signals { bytes: text.len() as u64, est_tokens: (text.len() as u64).div_ceil(4), ..Signals::default() };
    char_classes(text, &mut s);
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
    keys: Vec<u64>,
    counts: Vec<u32>,
    mask: usize,
}

impl CountTable {
    /// Empties the table and sizes it for `n` keys.
    fn reset(&mut self, n: usize) {
        let size = (n * 2).next_power_of_two().max(16);
        self.keys.clear();
        self.keys.resize(size, 0);
        self.counts.clear();
        self.counts.resize(size, 0);
        self.mask = size - 1;
    }

    fn slot(&self, key: u64) -> usize {
        // Key 0 marks an empty slot, so it is stored as 1; a collision there is harmless for
        // repetition statistics.
        let key = key.max(1);
        let mut i = (key.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32) as usize & self.mask;
        while self.keys[i] != 0 && self.keys[i] != key {
            i = (i + 1) & self.mask;
        }
        i
    }

    /// Adds one to `key`'s count and returns the new count.
    fn increment(&mut self, key: u64) -> u32 {
        let i = self.slot(key);
        self.keys[i] = key.max(1);
        self.counts[i] += 1;
        self.counts[i]
    }

    fn get(&self, key: u64) -> u32 {
        self.counts[self.slot(key)]
    }
}

fn frac(part: u64, whole: u64) -> f32 {
    if whole == 0 { 0.0 } else { (part as f64 / whole as f64) as f32 }
}

/// ASCII byte classes for [`char_classes`]: 0 lower, 1 upper, 2 digit, 3 space, 4 symbol,
/// 5 non-ASCII byte.
const BYTE_CLASS: [u8; 256] = {
    let mut table = [5u8; 256];
    let mut b = 0;
    while b < 128 {
        table[b] = match b as u8 {
            b'a'..=b'z' => 0,
            b'A'..=b'Z' => 1,
            b'0'..=b'9' => 2,
            b' ' | b'\t' | b'\n' | b'\r' | 0x0B | 0x0C => 3,
            _ => 4,
        };
        b += 1;
    }
    table
};

fn char_classes(text: &str, s: &mut Signals) {
    // Table lookup per byte; multi-byte characters are then classified one by one.
    let mut ascii = [0u64; 6];
    for &b in text.as_bytes() {
        ascii[usize::from(BYTE_CLASS[usize::from(b)])] += 1;
    }
    let (mut chars, mut alpha, mut digit, mut upper, mut space, mut symbol) =
        (ascii[..5].iter().sum::<u64>(), ascii[0] + ascii[1], ascii[2], ascii[1], ascii[3], ascii[4]);
    let mut non_ascii = 0u64;
    let mut script_counts = [0u32; 9];
    script_counts[0] = (ascii[0] + ascii[1]) as u32;
    if ascii[5] > 0 {
        for c in text.chars().filter(|c| !c.is_ascii()) {
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

fn words(text: &str, s: &mut Signals, scratch: &mut Scratch) {
    scratch.word_hashes.clear();
    scratch.word_chars.clear();
    let (mut tokens, mut alpha_tokens, mut words, mut word_chars, mut stop, mut common) =
        (0u64, 0u64, 0u64, 0u64, 0u64, 0u64);
    let mut symbols = 0u64;
    for token in text.split_ascii_whitespace() {
        tokens += 1;
        let bytes = token.as_bytes();
        // One pass over the token's bytes gathers every per-word fact.
        let (mut alpha, mut digit, mut non_ascii, mut dots, mut max_dots) = (false, false, false, 0u32, 0u32);
        for &b in bytes {
            alpha |= b.is_ascii_alphabetic();
            digit |= b.is_ascii_digit();
            non_ascii |= b >= 0x80;
            symbols += u64::from(b == b'#');
            dots = if b == b'.' { dots + 1 } else { 0 };
            max_dots = max_dots.max(dots);
        }
        if max_dots >= 3 {
            symbols += count_ellipses(token);
        }
        let n_chars = if non_ascii {
            symbols += token.matches('…').count() as u64;
            let (letters, alnum) =
                token.chars().fold((false, false), |(l, a), c| (l || c.is_alphabetic(), a || c.is_alphanumeric()));
            alpha |= letters;
            digit |= alnum;
            token.chars().count()
        } else {
            bytes.len()
        } as u32;
        alpha_tokens += u64::from(alpha);
        scratch.word_hashes.push(hash_bytes(bytes));
        scratch.word_chars.push(n_chars);
        if alpha || digit {
            words += 1;
            word_chars += u64::from(n_chars);
            // Stop words have at most 4 letters; skip the trim for longer tokens.
            let core =
                if bytes.len() <= 8 { token.trim_matches(|c: char| c.is_ascii_punctuation()).as_bytes() } else { b"" };
            if (1..=4).contains(&core.len()) {
                let mut lower = [0u8; 4];
                lower[..core.len()].copy_from_slice(core);
                lower.make_ascii_lowercase();
                let lower = &lower[..core.len()];
                stop += u64::from(GOPHER_STOP_WORDS.iter().any(|w| w.as_bytes() == lower));
                common += u64::from(ENGLISH_COMMON.iter().any(|w| w.as_bytes() == lower));
            }
        }
    }
    s.words = words;
    s.mean_word_len = frac(word_chars, words);
    s.alpha_word_frac = frac(alpha_tokens, tokens);
    s.stop_words = stop;
    s.symbol_word_ratio = frac(symbols, words);
    s.lang_hint = if s.script == Script::Latin && frac(common, words) >= 0.08 {
        LangHint::En
    } else if s.symbol_frac > 0.08 && looks_like_code(text) {
        LangHint::Code
    } else {
        LangHint::Und
    };
}

fn looks_like_code(text: &str) -> bool {
    let b = text.as_bytes();
    b.contains(&b'{') || b.contains(&b';') || text.contains("def ") || text.contains("fn ")
}

fn count_ellipses(token: &str) -> u64 {
    token.matches("...").count() as u64
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
/// An n-gram (n ≥ 5) can only repeat where its leading 5-gram occurs more than once, so after
/// counting 5-grams the greedy scans for n = 5..10 touch the set only at such positions: on
/// typical text that skips nearly all of the six passes Gopher's definition implies.
fn ngram_repetition(s: &mut Signals, scratch: &mut Scratch) {
    let words = &scratch.word_hashes;
    let chars = &scratch.word_chars;
    let total = s.chars;
    let grams = &mut scratch.gram_hashes;
    let span_chars = |i: usize, n: usize| chars[i..i + n].iter().map(|&c| u64::from(c)).sum::<u64>();
    grams.clear();
    grams.extend_from_slice(words);
    let counts = &mut scratch.counts;
    let repeated5 = &mut scratch.repeated;
    for n in 2..=10usize {
        if words.len() < n {
            break;
        }
        let windows = words.len() - n + 1;
        for i in 0..windows {
            grams[i] = mix(grams[i], words[i + n - 1]);
        }
        grams.truncate(windows);
        if n <= 5 {
            counts.reset(windows);
            let mut max = 0;
            for &g in grams.iter() {
                max = max.max(counts.increment(g));
            }
            if n <= 4 {
                // Most frequent n-gram: its characters (words plus separating spaces) × its
                // count. Ties go to the earliest first occurrence, as Python's
                // `Counter.most_common` in datatrove.
                let i = grams.iter().position(|&g| counts.get(g) == max).expect("a gram has the max count");
                let count = max;
                s.top_ngram_frac[n - 2] = frac((span_chars(i, n) + (n as u64 - 1)) * u64::from(count), total);
                continue;
            }
            repeated5.clear();
            repeated5.extend(grams.iter().map(|&g| counts.get(g) > 1));
        }
        // Greedy scan: a repeated n-gram counts its characters and skips past itself.
        scratch.seen.clear();
        let (mut repeated, mut i) = (0u64, 0usize);
        while i < windows {
            if !repeated5[i] || scratch.seen.insert(grams[i]) {
                i += 1;
            } else {
                repeated += span_chars(i, n);
                i += n;
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

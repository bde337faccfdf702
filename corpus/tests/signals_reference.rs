//! The optimized signals against a direct, string-based implementation of Gopher's
//! repetition definitions (as datatrove writes them), on real text.

use std::collections::{BTreeMap, BTreeSet};

use corpus::signals::{Scratch, compute};

use crate::common::{Rng, gsm8k, shared_data, wiki_articles};

/// datatrove's `find_top_duplicate` over n-grams joined by spaces.
fn top_ngram_frac(words: &[&str], n: usize, total_chars: usize) -> f64 {
    if words.len() < n {
        return 0.0;
    }
    // Counter.most_common(1): the highest count, ties to the earliest first occurrence.
    let grams: Vec<String> = words.windows(n).map(|w| w.join(" ")).collect();
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for gram in &grams {
        *counts.entry(gram).or_insert(0) += 1;
    }
    let max = *counts.values().max().unwrap();
    let best = grams.iter().find(|g| counts[g.as_str()] == max).unwrap();
    (best.chars().count() * max) as f64 / total_chars as f64
}

/// datatrove's `find_all_duplicate`: greedy scan, n-grams joined without separator.
fn dup_ngram_frac(words: &[&str], n: usize, total_chars: usize) -> f64 {
    let mut seen = BTreeSet::new();
    let (mut repeated, mut i) = (0usize, 0usize);
    while i + n <= words.len() {
        let gram: String = words[i..i + n].concat();
        if seen.insert(gram.clone()) {
            i += 1;
        } else {
            repeated += gram.chars().count();
            i += n;
        }
    }
    repeated as f64 / total_chars as f64
}

#[test]
fn repetition_signals_match_a_direct_implementation() {
    let mut texts = wiki_articles().into_iter().take(30).collect::<Vec<_>>();
    texts.extend(gsm8k(50));
    let shakespeare = std::fs::read_to_string(shared_data().join("corpus/books/tinyshakespeare.txt")).unwrap();
    texts.push(shakespeare.chars().take(200_000).collect());
    let mut scratch = Scratch::default();
    for text in &texts {
        let s = compute(text, &mut scratch);
        let words: Vec<&str> = text.split_ascii_whitespace().collect();
        let chars = text.chars().count();
        assert_eq!(s.chars as usize, chars);
        for n in 2..=4 {
            let expected = top_ngram_frac(&words, n, chars);
            let got = f64::from(s.top_ngram_frac[n - 2]);
            assert!((got - expected).abs() < 1e-5, "top {n}-gram: {got} vs {expected}");
        }
        for n in 5..=10 {
            let expected = dup_ngram_frac(&words, n, chars);
            let got = f64::from(s.dup_ngram_frac[n - 5]);
            assert!((got - expected).abs() < 1e-5, "dup {n}-gram: {got} vs {expected}");
        }
    }
}

/// Character classes and word signals computed directly from their definitions, one
/// character or one whitespace-separated token at a time.
fn direct_word_signals(text: &str) -> [f64; 11] {
    const STOP: [&str; 8] = ["the", "be", "to", "of", "and", "that", "have", "with"];
    let chars: Vec<char> = text.chars().collect();
    let n = chars.len() as f64;
    let frac = |k: usize, of: f64| if of == 0.0 { 0.0 } else { k as f64 / of };
    let count = |f: fn(&char) -> bool| chars.iter().filter(|c| f(c)).count();
    let tokens: Vec<&str> = text.split_ascii_whitespace().collect();
    let words: Vec<&str> = tokens.iter().copied().filter(|t| t.chars().any(char::is_alphanumeric)).collect();
    let word_chars: usize = words.iter().map(|w| w.chars().count()).sum();
    let stop = words
        .iter()
        .filter(|w| {
            w.len() <= 8 && STOP.contains(&w.trim_matches(|c: char| c.is_ascii_punctuation()).to_lowercase().as_str())
        })
        .count();
    let symbols = text.matches('#').count() + text.matches("...").count() + text.matches('…').count();
    [
        frac(count(|c| c.is_alphabetic()), n),
        frac(count(|c| c.is_numeric() && !c.is_alphabetic()), n),
        frac(count(|c| c.is_uppercase()), n),
        frac(count(|c| c.is_whitespace()), n),
        frac(count(|c| !c.is_alphanumeric() && !c.is_whitespace()), n),
        frac(count(|c| !c.is_ascii()), n),
        words.len() as f64,
        frac(word_chars, words.len() as f64),
        frac(tokens.iter().filter(|t| t.chars().any(char::is_alphabetic)).count(), tokens.len() as f64),
        stop as f64,
        frac(symbols, words.len() as f64),
    ]
}

#[test]
fn character_and_word_signals_match_their_definitions() {
    let mut texts = wiki_articles().into_iter().take(10).collect::<Vec<_>>();
    texts.extend(gsm8k(50));
    // Every class and separator the scan distinguishes, in random mixtures.
    let pieces = [
        "the ",
        "OF ",
        "to\0",
        "\0",
        "(and) ",
        "with, ",
        "x",
        "É",
        "ß",
        "漢字",
        "Привет",
        "42",
        "#",
        "...",
        "....",
        "…",
        "\t",
        "\n",
        "\n\n",
        "\r",
        "\x0b",
        "\x0c",
        "\u{a0}",
        "\u{3000}",
        "{",
        "-",
        "•",
        "’",
        "\"",
        "ⅷ",
        "٣",
        " ",
    ];
    let mut rng = Rng(7);
    for _ in 0..500 {
        let mut text = String::new();
        for _ in 0..rng.next_u64() % 250 {
            text.push_str(pieces[(rng.next_u64() % pieces.len() as u64) as usize]);
        }
        texts.push(text);
    }
    let mut scratch = Scratch::default();
    for text in &texts {
        let s = compute(text, &mut scratch);
        let got = [
            s.alpha_frac,
            s.digit_frac,
            s.upper_frac,
            s.whitespace_frac,
            s.symbol_frac,
            s.non_ascii_frac,
            s.words as f32,
            s.mean_word_len,
            s.alpha_word_frac,
            s.stop_words as f32,
            s.symbol_word_ratio,
        ];
        for (k, (got, expected)) in got.iter().zip(direct_word_signals(text)).enumerate() {
            let tolerance = 1e-6 * expected.abs().max(1.0);
            assert!((f64::from(*got) - expected).abs() < tolerance, "signal {k} of {text:?}: {got} vs {expected}");
        }
    }
}

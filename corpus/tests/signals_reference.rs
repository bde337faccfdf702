//! The optimized signals against a direct, string-based implementation of Gopher's
//! repetition definitions (as datatrove writes them), on real text.

use std::collections::{BTreeMap, BTreeSet};

use corpus::signals::{Scratch, compute};

use crate::common::{gsm8k, shared_data, wiki_articles};

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

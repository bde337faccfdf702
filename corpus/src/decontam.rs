//! Decontamination: word n-gram overlap between documents and evaluation sets.
//!
//! Every item of every evaluation file is reduced to its text (by its shape: `query`/`choices`/
//! `gold`, `context`/`continuation`, `context`/`answer`, `context_options`/`continuation`/
//! `gold`, `question`/`answer`), normalized to words as for MinHash (lowercased letter/digit
//! runs, digits → 0), and indexed by its n-grams (13 by default). A document containing any
//! indexed n-gram is contaminated by that item. An item shorter than n words is indexed whole
//! and matches where all its words appear contiguously.

use std::path::{Path, PathBuf};

use hashbrown::HashMap;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::dedup::shingles::{self, Digits};
use crate::error::{Error, IoContext, Result};
use crate::hashing::{IdentityBuild, mix};

/// Decontamination settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DecontamConfig {
    /// Evaluation sets (JSONL, optionally `.gz`/`.zst`); the benchmark name is the file stem.
    pub evals: Vec<PathBuf>,
    /// Words per n-gram.
    #[serde(default = "default_ngram")]
    pub ngram: usize,
    /// Drop contaminated documents (`contaminated:<benchmark>`) instead of only marking them.
    #[serde(default)]
    pub drop: bool,
}

fn default_ngram() -> usize {
    13
}

/// Where a match came from: the benchmark (index into [`EvalIndex::benchmarks`]) and the
/// 0-based item (line) within its file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Hit {
    /// Benchmark index.
    pub benchmark: u16,
    /// Item index within the benchmark file.
    pub item: u32,
}

/// The n-grams of every evaluation item.
pub struct EvalIndex {
    ngram: usize,
    benchmarks: Vec<String>,
    items: Vec<u64>,
    /// n-gram hash → first item containing it.
    grams: HashMap<u64, Hit, IdentityBuild>,
    /// Items shorter than `ngram` words, by length: whole-item hash → item.
    short: Vec<(usize, HashMap<u64, Hit, IdentityBuild>)>,
}

impl EvalIndex {
    /// Reads and indexes the evaluation files.
    pub fn build(config: &DecontamConfig) -> Result<EvalIndex> {
        if config.ngram == 0 {
            return Err(Error::Config { field: "decontam.ngram".into(), reason: "must be at least 1".into() });
        }
        let mut index = EvalIndex {
            ngram: config.ngram,
            benchmarks: Vec::new(),
            items: Vec::new(),
            grams: HashMap::default(),
            short: Vec::new(),
        };
        let mut words = Vec::new();
        for path in &config.evals {
            let name = benchmark_name(path);
            let benchmark = u16::try_from(index.benchmarks.len())
                .map_err(|_| Error::Config { field: "decontam.evals".into(), reason: "at most 65535 files".into() })?;
            index.benchmarks.push(name);
            let mut text = String::new();
            let unused_counter = std::sync::atomic::AtomicU64::new(0);
            std::io::Read::read_to_string(&mut crate::ingest::open_decoded(path, &unused_counter)?, &mut text)
                .at(path)?;
            let mut n_items = 0u64;
            for (line_idx, line) in text.lines().enumerate() {
                if line.trim().is_empty() {
                    continue;
                }
                let item_text = item_text(line).map_err(|reason| Error::Corrupt {
                    path: path.clone(),
                    reason: format!("line {}: {reason}", line_idx + 1),
                })?;
                let hit = Hit { benchmark, item: line_idx as u32 };
                shingles::word_hashes_with(&item_text, Digits::Kept, &mut words);
                index.insert(&words, hit);
                n_items += 1;
            }
            index.items.push(n_items);
        }
        Ok(index)
    }

    fn insert(&mut self, words: &[u64], hit: Hit) {
        if words.is_empty() {
            return;
        }
        if words.len() < self.ngram {
            let key = gram_hash(words);
            let slot = match self.short.iter().position(|(len, _)| *len == words.len()) {
                Some(i) => i,
                None => {
                    self.short.push((words.len(), HashMap::default()));
                    self.short.len() - 1
                }
            };
            self.short[slot].1.entry(key).or_insert(hit);
            return;
        }
        for window in words.windows(self.ngram) {
            self.grams.entry(gram_hash(window)).or_insert(hit);
        }
    }

    /// Benchmark names, in file order.
    pub fn benchmarks(&self) -> &[String] {
        &self.benchmarks
    }

    /// Items read per benchmark.
    pub fn item_counts(&self) -> &[u64] {
        &self.items
    }

    /// The first contaminating item (smallest benchmark, then item) found in `text`;
    /// `words` is scratch space.
    pub fn find(&self, text: &str, words: &mut Vec<u64>) -> Option<Hit> {
        shingles::word_hashes_with(text, Digits::Kept, words);
        let mut best: Option<Hit> = None;
        let mut consider = |hit: Hit| {
            if best.is_none_or(|b| hit < b) {
                best = Some(hit);
            }
        };
        if !self.grams.is_empty() {
            for window in words.windows(self.ngram) {
                if let Some(&hit) = self.grams.get(&gram_hash(window)) {
                    consider(hit);
                }
            }
        }
        for (len, map) in &self.short {
            for window in words.windows(*len) {
                if let Some(&hit) = map.get(&gram_hash(window)) {
                    consider(hit);
                }
            }
        }
        best
    }
}

fn gram_hash(words: &[u64]) -> u64 {
    words.iter().fold(words.len() as u64, |acc, &h| mix(acc, h))
}

/// The benchmark name of an evaluation file: its stem (`arc_easy.jsonl` → `arc_easy`).
pub fn benchmark_name(path: &Path) -> String {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    name.split('.').next().unwrap_or(&name).to_string()
}

/// The text of one evaluation item, by its shape.
pub fn item_text(line: &str) -> std::result::Result<String, String> {
    let v: Value = serde_json::from_str(line).map_err(|e| format!("invalid JSON: {e}"))?;
    let field = |name: &str| v.get(name).and_then(Value::as_str);
    let gold = || v.get("gold").and_then(Value::as_u64).map(|g| g as usize);
    let pick = |list: &str| -> Option<&str> { v.get(list)?.as_array()?.get(gold()?)?.as_str() };
    let joined = |parts: &[Option<&str>]| parts.iter().flatten().copied().collect::<Vec<_>>().join(" ");
    if let Some(query) = field("query") {
        return Ok(joined(&[Some(query), pick("choices")]));
    }
    if let Some(options) = v.get("context_options").and_then(Value::as_array) {
        let option = gold()
            .and_then(|g| options.get(g))
            .and_then(Value::as_str)
            .or_else(|| options.first().and_then(Value::as_str));
        return Ok(joined(&[option, field("continuation")]));
    }
    if let Some(context) = field("context") {
        return Ok(joined(&[Some(context), field("continuation").or_else(|| field("answer"))]));
    }
    if let Some(question) = field("question") {
        return Ok(joined(&[Some(question), field("answer")]));
    }
    Err("no known item shape: expected query/choices/gold, context/continuation, context/answer, context_options/continuation/gold or question/answer".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn item_shapes() {
        assert_eq!(item_text(r#"{"query": "Q?", "choices": ["a", "b"], "gold": 1}"#).unwrap(), "Q? b");
        assert_eq!(item_text(r#"{"context": "It was", "continuation": "late"}"#).unwrap(), "It was late");
        assert_eq!(item_text(r#"{"context": "Q:", "answer": "Onion", "aliases": []}"#).unwrap(), "Q: Onion");
        assert_eq!(
            item_text(r#"{"context_options": ["A so A", "A so B"], "continuation": "won.", "gold": 1}"#).unwrap(),
            "A so B won."
        );
        assert_eq!(item_text(r#"{"question": "How many?", "answer": "4"}"#).unwrap(), "How many? 4");
        assert!(item_text(r#"{"foo": 1}"#).unwrap_err().contains("no known item shape"));
    }
}

//! Needle in a haystack: passkey items in real filler text (LongLoRA's passkey test, RULER's
//! niah), and their scoring by teacher-forced exact match and by the rank of the true key's
//! log-likelihood among distractor keys of the same token length.
//!
//! An item is one JSON line: `context` (ending with the question), `key`, `distractors`,
//! `length` (tokens of `context + " " + key`) and `depth` (where the needle sits in the filler,
//! 0 = first, 1 = last). Any file of that shape is scored, not only the generated ones.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};
use tokenizers::Tokenizer;

use crate::model::{Inputs, Llama};
use crate::rng::Rng;
use crate::{Error, Result};

const HEADER: &str = "There is an important piece of information hidden inside a lot of irrelevant text. \
                      Find it and memorize it. I will quiz you about it.";
const QUESTION: &str = "What is the pass key? The pass key is";

fn needle(key: &str) -> String {
    format!("The pass key is {key}. Remember it. {key} is the pass key.")
}

/// One passkey item.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Needle {
    pub context: String,
    pub key: String,
    pub distractors: Vec<String>,
    pub length: usize,
    pub depth: f64,
}

/// How to make a grid of items.
#[derive(Debug, Clone)]
pub struct MakeConfig {
    pub lengths: Vec<usize>,
    pub depths: Vec<f64>,
    pub per_cell: usize,
    /// Distractor keys per item (K − 1).
    pub distractors: usize,
    pub seed: u64,
}

/// Real text to hide needles in, with its tokenization (char offsets of every token).
pub struct Filler {
    text: String,
    /// Char index where each token ends.
    token_ends: Vec<usize>,
}

impl Filler {
    pub fn new(text: String, tok: &Tokenizer) -> Result<Filler> {
        let text: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
        let enc = tok.encode(text.as_str(), false).map_err(|e| Error::Data(format!("tokenizing filler: {e}")))?;
        // Byte offsets, moved to char boundaries (a byte-level token may end inside a char).
        let boundary = |mut e: usize| {
            while !text.is_char_boundary(e) {
                e += 1;
            }
            e
        };
        let mut token_ends: Vec<usize> = enc.get_offsets().iter().map(|&(_, end)| boundary(end)).collect();
        token_ends.dedup();
        if token_ends.len() < 16 {
            return Err(Error::Data("the filler text is too short to hide a needle in".into()));
        }
        Ok(Filler { text, token_ends })
    }

    fn tokens(&self) -> usize {
        self.token_ends.len()
    }

    /// Filler tokens `[from, to)` as text.
    fn span(&self, from: usize, to: usize) -> &str {
        let start = if from == 0 { 0 } else { self.token_ends[from - 1] };
        self.text[start..self.token_ends[to - 1]].trim()
    }
}

/// Writes the grid: `per_cell` items per (length, depth), keys random 5-digit numbers.
pub fn make(filler: &Filler, tok: &Tokenizer, config: &MakeConfig) -> Result<Vec<Needle>> {
    if let Some(d) = config.depths.iter().find(|d| !(0.0..=1.0).contains(*d)) {
        return Err(Error::Config(format!("depth {d} is outside [0, 1]")));
    }
    let mut rng = Rng::new(config.seed);
    let mut items = Vec::new();
    for &length in &config.lengths {
        for &depth in &config.depths {
            for _ in 0..config.per_cell {
                items.push(make_one(filler, tok, length, depth, config.distractors, &mut rng)?);
            }
        }
    }
    Ok(items)
}

fn make_one(filler: &Filler, tok: &Tokenizer, length: usize, depth: f64, k: usize, rng: &mut Rng) -> Result<Needle> {
    let count = |s: &str| -> Result<usize> {
        Ok(tok.encode_fast(s, false).map_err(|e| Error::Data(format!("tokenizing: {e}")))?.len())
    };
    let key = (10_000 + rng.below(90_000)).to_string();
    let key_len = count(&format!(" {key}"))?;
    let mut distractors = Vec::new();
    let mut tries = 0usize;
    while distractors.len() < k {
        tries += 1;
        if tries > 200 * (k + 10) {
            return Err(Error::Config(format!(
                "found only {} distractor keys of the key's token length ({key_len}) for --distractors {k}: ask \
                 for fewer",
                distractors.len()
            )));
        }
        let d = (10_000 + rng.below(90_000)).to_string();
        if d != key && !distractors.contains(&d) && count(&format!(" {d}"))? == key_len {
            distractors.push(d);
        }
    }
    // Room for the filler (fewer tokens than the item) and for stepping the start forward.
    let room = filler.tokens().saturating_sub(length + 64);
    if room == 0 {
        return Err(Error::Data(format!(
            "the filler has {} tokens, too few for items of {length} tokens; give more text",
            filler.tokens()
        )));
    }
    let first = rng.below(room);
    let text = |start: usize, n: usize| -> Result<(String, usize)> {
        let split = start + ((n as f64) * depth).round() as usize;
        let end = start + n;
        let before = if split > start { filler.span(start, split) } else { "" };
        let after = if end > split { filler.span(split, end) } else { "" };
        let parts = [HEADER, before, &needle(&key), after, QUESTION];
        let context = parts.iter().filter(|p| !p.is_empty()).copied().collect::<Vec<_>>().join(" ");
        let tokens = count(&format!("{context} {key}"))?;
        Ok((context, tokens))
    };
    let (_, fixed) = text(first, 0)?;
    if fixed >= length {
        return Err(Error::Config(format!(
            "length {length} leaves no room for filler (the prompt alone is {fixed} tokens)"
        )));
    }
    // The filler's share: guess from the fixed parts, then step towards the length. Where the
    // count jumps over it (tokens merge at a seam), start the filler one token later.
    for start in first..first + 64 {
        let mut n = length - fixed;
        let mut last_below = None;
        loop {
            if start + n > filler.tokens() {
                return Err(Error::Data(format!(
                    "the filler has {} tokens, too few for items of {length} tokens; give more text",
                    filler.tokens()
                )));
            }
            let (context, tokens) = text(start, n)?;
            if tokens == length {
                return Ok(Needle { context, key, distractors, length, depth });
            }
            if tokens < length {
                last_below = Some(n);
                n += 1;
            } else if last_below == Some(n - 1) || n == 0 {
                break;
            } else {
                n -= 1;
            }
        }
    }
    Err(Error::Data(format!("could not fit an item to exactly {length} tokens")))
}

/// Reads a needle item from a JSON value, if it has the needle shape.
pub fn parse(v: &serde_json::Value) -> Option<std::result::Result<Needle, String>> {
    v.get("key")?;
    v.get("distractors")?;
    Some(serde_json::from_value(v.clone()).map_err(|e| format!("needle item: {e}")))
}

/// The score of one item.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct NeedleScore {
    /// Greedy decoding reproduces the key (teacher-forced: every key token is the argmax).
    pub exact: bool,
    /// 1 + the number of distractors scoring at least as high as the key.
    pub rank: usize,
}

/// The token ids of `context + " " + continuation` and where the continuation starts, split
/// as lm-evaluation-harness does (the continuation's tokens follow `encode(context)`).
fn ids(tok: &Tokenizer, context: &str, continuation: &str) -> Result<(Vec<i64>, usize)> {
    let enc = |s: &str| -> Result<Vec<i64>> {
        Ok(tok
            .encode_fast(s, false)
            .map_err(|e| Error::Data(format!("tokenizing: {e}")))?
            .get_ids()
            .iter()
            .map(|&x| i64::from(x))
            .collect())
    };
    let whole = enc(&format!("{context} {continuation}"))?;
    if whole.len() < 2 {
        return Err(Error::Data("the item's context and key are empty".into()));
    }
    let n_ctx = enc(context)?.len().clamp(1, whole.len() - 1);
    Ok((whole, n_ctx))
}

/// Scores an item in one batched forward over the key and its distractors.
pub fn score(model: &Llama, tok: &Tokenizer, item: &Needle) -> Result<NeedleScore> {
    let candidates: Vec<&String> = std::iter::once(&item.key).chain(&item.distractors).collect();
    let seqs = candidates.iter().map(|c| ids(tok, &item.context, c)).collect::<Result<Vec<_>>>()?;
    let window = model.config.max_seq_len;
    if let Some((s, _)) = seqs.iter().find(|(s, _)| s.len() - 1 > window) {
        return Err(Error::Data(format!(
            "the item is {} tokens, longer than the model's window of {window} (+1 for the last target); \
             items are never truncated: make items that fit",
            s.len()
        )));
    }
    let ll: Vec<(f64, bool)> = if seqs.iter().all(|(s, n)| s.len() == seqs[0].0.len() && *n == seqs[0].1) {
        let (len, n_ctx) = (seqs[0].0.len() as i64, seqs[0].1 as i64);
        let flat: Vec<i64> = seqs.iter().flat_map(|(s, _)| s.iter().copied()).collect();
        let all = Tensor::from_slice(&flat).view([seqs.len() as i64, len]).to_device(model.device);
        continuation_scores(model, &all, n_ctx)
    } else {
        seqs.iter()
            .map(|(s, n)| {
                let all = Tensor::from_slice(s).view([1, -1]).to_device(model.device);
                continuation_scores(model, &all, *n as i64)[0]
            })
            .collect()
    };
    let key_ll = ll[0].0;
    let rank = 1 + ll[1..].iter().filter(|(x, _)| *x >= key_ll).count();
    Ok(NeedleScore { exact: ll[0].1, rank })
}

/// Log-likelihood of tokens `n_ctx..` of each row of `all` `[n, len]`, and whether each of
/// them is the argmax (teacher-forced greedy).
pub fn continuation_scores(model: &Llama, all: &Tensor, n_ctx: i64) -> Vec<(f64, bool)> {
    let len = all.size()[1];
    let m = len - n_ctx;
    tch::no_grad(|| {
        // Logits only where the continuation is scored: never `[rows, len, vocab]` whole.
        let hidden = model.hidden(&Inputs::tokens(all.narrow(1, 0, len - 1)));
        let logp = model.logits(&hidden.narrow(1, n_ctx - 1, m)).log_softmax(-1, Kind::Float);
        let targets = all.narrow(1, n_ctx, m);
        let ll = logp.gather(2, &targets.unsqueeze(2), false).squeeze_dim(2).sum_dim_intlist(1, false, Kind::Double);
        let hit = logp.argmax(-1, false).eq_tensor(&targets).all_dim(1, false);
        let ll = Vec::<f64>::try_from(ll.to_device(tch::Device::Cpu)).expect("1-d");
        let hit = Vec::<bool>::try_from(hit.to_device(tch::Device::Cpu)).expect("1-d");
        ll.into_iter().zip(hit).collect()
    })
}

/// The scores of one (length, depth) cell.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Cell {
    pub length: usize,
    pub depth: f64,
    pub items: usize,
    /// Share of items whose key greedy decoding reproduces.
    pub exact: f64,
    /// Share of items whose key outscores every distractor.
    pub rank_acc: f64,
}

/// Per-cell means of item scores.
pub fn grid(items: &[Needle], scores: &[NeedleScore]) -> Vec<Cell> {
    let mut cells: BTreeMap<(usize, u64), (f64, usize, usize, usize)> = BTreeMap::new();
    for (item, s) in items.iter().zip(scores) {
        let c = cells.entry((item.length, item.depth.to_bits())).or_insert((item.depth, 0, 0, 0));
        c.1 += 1;
        c.2 += usize::from(s.exact);
        c.3 += usize::from(s.rank == 1);
    }
    let mut out: Vec<Cell> = cells
        .into_iter()
        .map(|((length, _), (depth, n, exact, first))| Cell {
            length,
            depth,
            items: n,
            exact: exact as f64 / n as f64,
            rank_acc: first as f64 / n as f64,
        })
        .collect();
    out.sort_by(|a, b| a.length.cmp(&b.length).then(a.depth.total_cmp(&b.depth)));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_needle_shape_only() {
        let v: serde_json::Value =
            serde_json::from_str(r#"{"context":"c","key":"12345","distractors":["23456"],"length":9,"depth":0.5}"#)
                .unwrap();
        assert_eq!(parse(&v).unwrap().unwrap().distractors, vec!["23456".to_string()]);
        let other: serde_json::Value = serde_json::from_str(r#"{"context":"c","answer":"a"}"#).unwrap();
        assert!(parse(&other).is_none());
        let bad: serde_json::Value = serde_json::from_str(r#"{"context":"c","key":"1","distractors":[]}"#).unwrap();
        assert!(parse(&bad).unwrap().unwrap_err().contains("length"));
    }
}

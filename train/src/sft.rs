//! Instruction tuning data: conversations rendered with the chat template
//! ([`corpus::chat`]), split per domain into training and held-out examples, and packed into
//! training windows whose examples never see each other.
//!
//! - **Loss mask.** A target is learned only when its token is in an assistant turn (content
//!   and closing `<|im_end|>`); everything else, padding included, is `-100`.
//! - **Packing.** Each window holds whole examples of one domain (drawn by mixture weight, so
//!   weights are window fractions as in pre-training), in a shuffled order per epoch; an
//!   example that does not fit starts the next window, and the rest is padding. Attention is
//!   masked per example and positions restart at 0, so a packed example computes exactly what
//!   it computes alone. An example longer than the window is cut (and counted).
//! - **Held-out split.** Per domain, the examples whose rendered text hashes lowest
//!   (`val_fraction`; at least one, and at least one left to train on, when the domain has two
//!   or more): stable when files are reordered, and a duplicate lands on the side of its twin.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use corpus::instruct::{InstructSource, Malformed};
use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};
use tokenizers::Tokenizer;

use crate::data::{Batch, Cursor, LoaderConfig, LoaderState, Mixture, positions_from_docs, shuffled};
use crate::model::{Inputs, Llama};
use crate::rng::Rng;
use crate::{Error, Result};

/// The instruction data of a fine-tuning run (stored in its `TrainConfig`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SftData {
    pub sources: Vec<InstructSource>,
    /// Fraction of each domain's examples held out for validation.
    pub val_fraction: f64,
    /// xxh3 over the files read (names and bytes) and the sources: a resumed run refuses data
    /// that changed.
    pub fingerprint: String,
    /// The tokenizer the examples are encoded with (the `--init` checkpoint's).
    pub tokenizer: PathBuf,
}

/// One conversation as tokens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Example {
    pub ids: Vec<u32>,
    /// Whether each token is learned (see [`corpus::chat::Encoded`]).
    pub learned: Vec<bool>,
}

impl Example {
    fn learned_tokens(&self) -> usize {
        self.learned.iter().filter(|l| **l).count()
    }
}

/// One instruction domain, split.
#[derive(Debug, Clone)]
pub struct Domain {
    pub name: String,
    pub train: Vec<Example>,
    pub val: Vec<Example>,
    pub malformed: Vec<Malformed>,
    /// Examples longer than the window (cut to it).
    pub truncated: usize,
}

/// Every domain's examples.
#[derive(Debug, Clone)]
pub struct Dataset {
    pub domains: Vec<Domain>,
    pub fingerprint: String,
}

/// Per-domain counts, for people (`sft`'s summary, `data.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DomainCounts {
    pub train_examples: usize,
    pub val_examples: usize,
    pub train_tokens: u64,
    pub learned_tokens: u64,
    pub malformed: usize,
    pub truncated: usize,
}

impl Dataset {
    /// Reads, renders and tokenizes every source; `window` is the longest example kept whole.
    pub fn load(
        sources: &[InstructSource],
        tokenizer_path: &Path,
        val_fraction: f64,
        window: usize,
    ) -> Result<Dataset> {
        if !(0.0..1.0).contains(&val_fraction) {
            return Err(Error::Config(format!("val_fraction must be in [0, 1), got {val_fraction}")));
        }
        let tokenizer = corpus::tokenize::load(tokenizer_path)?;
        corpus::chat::check_tokenizer(&tokenizer)?;
        let read = corpus::instruct::read_sources(sources)?;
        let mut hasher = xxhash_rust::xxh3::Xxh3::new();
        hasher.update(serde_json::to_string(sources).expect("sources serialize").as_bytes());
        let mut domains = Vec::new();
        for data in read {
            for file in &data.files {
                hasher.update(file.to_string_lossy().as_bytes());
                hasher.update(&std::fs::read(file).map_err(|e| Error::io(file, e))?);
            }
            if data.conversations.is_empty() {
                return Err(Error::Data(format!(
                    "instruction domain {:?} has no usable conversation ({} malformed records{})",
                    data.domain,
                    data.malformed.len(),
                    data.malformed
                        .first()
                        .map(|m| format!("; first: {}:{}: {}", m.path.display(), m.line, m.reason))
                        .unwrap_or_default()
                )));
            }
            domains.push(split(&tokenizer, data, val_fraction, window)?);
        }
        Ok(Dataset { domains, fingerprint: format!("{:016x}", hasher.digest()) })
    }

    pub fn counts(&self) -> BTreeMap<String, DomainCounts> {
        self.domains
            .iter()
            .map(|d| {
                let counts = DomainCounts {
                    train_examples: d.train.len(),
                    val_examples: d.val.len(),
                    train_tokens: d.train.iter().map(|e| e.ids.len() as u64).sum(),
                    learned_tokens: d.train.iter().map(|e| e.learned_tokens() as u64).sum(),
                    malformed: d.malformed.len(),
                    truncated: d.truncated,
                };
                (d.name.clone(), counts)
            })
            .collect()
    }

    /// Weights proportional to each domain's training tokens (the natural mix).
    pub fn natural(&self) -> Mixture {
        let weights = self.counts().into_iter().map(|(d, c)| (d, c.train_tokens as f64)).collect();
        Mixture { weights, max_epochs: BTreeMap::new() }
    }

    /// Equal weights.
    pub fn uniform(&self) -> Mixture {
        let weights = self.domains.iter().map(|d| (d.name.clone(), 1.0)).collect();
        Mixture { weights, max_epochs: BTreeMap::new() }
    }
}

fn split(
    tokenizer: &Tokenizer,
    data: corpus::instruct::DomainData,
    val_fraction: f64,
    window: usize,
) -> Result<Domain> {
    let mut keyed = Vec::with_capacity(data.conversations.len());
    let mut truncated = 0;
    for (i, c) in data.conversations.iter().enumerate() {
        let encoded = corpus::chat::encode(tokenizer, &c.messages)?;
        let key = xxhash_rust::xxh3::xxh3_64(corpus::chat::render(&c.messages, false).text.as_bytes());
        let mut example = Example { ids: encoded.ids, learned: encoded.learned };
        if example.ids.len() > window {
            truncated += 1;
            example.ids.truncate(window);
            example.learned.truncate(window);
        }
        keyed.push((key, i, example));
    }
    let n = keyed.len();
    // At least one held out when asked for any, at least one left to train on.
    let mut n_val = if n >= 2 {
        ((n as f64 * val_fraction).round() as usize).max(usize::from(val_fraction > 0.0)).min(n - 1)
    } else {
        0
    };
    let mut by_key: Vec<usize> = (0..n).collect();
    by_key.sort_by_key(|&i| (keyed[i].0, keyed[i].1));
    // Twins (the same text, so the same hash) stay on one side of the cut.
    let key = |k: usize| keyed[by_key[k]].0;
    while n_val > 0 && n_val < n && key(n_val) == key(n_val - 1) {
        n_val -= 1;
    }
    let mut examples: Vec<Option<Example>> = keyed.into_iter().map(|(_, _, e)| Some(e)).collect();
    // Validation in hash order: the first `k` are the same set whatever `k` a caller asks for.
    let val = by_key[..n_val].iter().map(|&i| examples[i].take().expect("taken once")).collect();
    let train = examples.into_iter().flatten().collect();
    Ok(Domain { name: data.domain, train, val, malformed: data.malformed, truncated })
}

/// Packs training windows from a [`Dataset`] by mixture weight; its whole position is a
/// [`LoaderState`], so checkpoints resume it exactly.
pub struct SftLoader {
    data: Dataset,
    weights: Vec<f64>,
    config: LoaderConfig,
    state: LoaderState,
    orders: Vec<(u64, Vec<usize>)>,
}

impl SftLoader {
    pub fn new(data: Dataset, mixture: &Mixture, config: LoaderConfig) -> Result<SftLoader> {
        let names: Vec<&str> = data.domains.iter().map(|d| d.name.as_str()).collect();
        if let Some(missing) = mixture.weights.keys().find(|d| !names.contains(&d.as_str())) {
            return Err(Error::Data(format!(
                "the mixture names instruction domain {missing:?}, which the data doesn't have (domains: {})",
                names.join(", ")
            )));
        }
        if config.seq_len == 0 || config.batch_size == 0 {
            return Err(Error::Config("seq_len and batch_size must be positive".into()));
        }
        let weights: Vec<f64> = names.iter().map(|n| mixture.weights.get(*n).copied().unwrap_or(0.0)).collect();
        for (d, w) in data.domains.iter().zip(&weights) {
            if *w > 0.0 && !d.train.iter().any(|e| e.learned_tokens() > 0) {
                return Err(Error::Data(format!(
                    "instruction domain {:?} has weight {w} but no training example with an assistant token inside \
                     the window (none at all, or every answer past --seq-len {}): raise --seq-len or drop the domain",
                    d.name, config.seq_len
                )));
            }
        }
        if !mixture.max_epochs.is_empty() {
            tracing::warn!("epoch caps (max_epochs) apply to pre-training shards; instruction data ignores them");
        }
        if weights.iter().sum::<f64>() <= 0.0 {
            return Err(Error::Config("the mixture gives every instruction domain weight 0".into()));
        }
        let cursors = names.iter().map(|n| (n.to_string(), Cursor::default())).collect();
        let state = LoaderState { rng: Rng::new(config.seed), cursors, sequences: 0, over_cap: Vec::new() };
        let orders = vec![(u64::MAX, Vec::new()); data.domains.len()];
        Ok(SftLoader { data, weights, config, state, orders })
    }

    pub fn state(&self) -> &LoaderState {
        &self.state
    }

    pub fn restore(&mut self, state: LoaderState) -> Result<()> {
        for d in &self.data.domains {
            if !state.cursors.contains_key(&d.name) {
                return Err(Error::Data(format!("the saved loader position has no cursor for domain {:?}", d.name)));
            }
        }
        self.state = state;
        Ok(())
    }

    pub fn data(&self) -> &Dataset {
        &self.data
    }

    /// The next batch: `batch_size` windows, each packed from one domain.
    pub fn next_batch(&mut self, device: Device) -> Result<Batch> {
        let (b, t) = (self.config.batch_size, self.config.seq_len);
        let (mut tokens, mut targets, mut docs, mut names) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for _ in 0..b {
            let d = self.state.rng.weighted(&self.weights);
            let row = self.pack(d);
            tokens.extend(row.tokens);
            targets.extend(row.targets);
            docs.extend(row.docs);
            names.push(self.data.domains[d].name.clone());
            self.state.sequences += 1;
        }
        let (bi, ti) = (b as i64, t as i64);
        let all = Tensor::from_slice(&tokens).view([bi, ti + 1]).to_device(device);
        let documents = Tensor::from_slice(&docs).view([bi, ti]).to_device(device);
        let document_positions = positions_from_docs(&docs, bi, ti).to_device(device);
        let inputs = Inputs {
            tokens: all.narrow(1, 0, ti),
            positions: Some(document_positions.shallow_clone()),
            doc_ids: Some(documents.shallow_clone()),
        };
        let targets = Tensor::from_slice(&targets).view([bi, ti]).to_device(device);
        Ok(Batch { inputs, targets, documents, document_positions, domains: names })
    }

    /// One window of domain `d`: whole examples while they fit, then padding.
    fn pack(&mut self, d: usize) -> Row {
        let n = self.config.seq_len + 1;
        let domain = &self.data.domains[d];
        let cursor = self.state.cursors.get_mut(&domain.name).expect("a cursor per domain");
        let mut row = RowBuilder::default();
        loop {
            if cursor.pos >= domain.train.len() {
                cursor.epoch += 1;
                cursor.pos = 0;
            }
            if self.orders[d].0 != cursor.epoch {
                self.orders[d] =
                    (cursor.epoch, shuffled(domain.train.len(), &domain.name, self.config.seed, cursor.epoch));
            }
            let example = &domain.train[self.orders[d].1[cursor.pos]];
            if !row.ids.is_empty() && row.ids.len() + example.ids.len() > n {
                break;
            }
            row.push(example);
            cursor.pos += 1;
            cursor.tokens += example.ids.len() as u64;
            if row.ids.len() >= n {
                break;
            }
        }
        row.finish(n, self.config.eos_id)
    }

    /// Each domain's first `max_examples` held-out examples, one per row: tokens `[n, seq_len +
    /// 1]` and targets `[n, seq_len]` (`-100` where nothing is learned).
    pub fn validation(&self, max_examples: usize, device: Device) -> BTreeMap<String, Masked> {
        let n = self.config.seq_len + 1;
        self.data
            .domains
            .iter()
            .filter(|d| !d.val.is_empty() && max_examples > 0)
            .map(|d| {
                let rows: Vec<Row> = d
                    .val
                    .iter()
                    .take(max_examples)
                    .map(|e| {
                        let mut row = RowBuilder::default();
                        row.push(e);
                        row.finish(n, self.config.eos_id)
                    })
                    .collect();
                (d.name.clone(), Masked::from_rows(&rows, device))
            })
            .collect()
    }
}

struct Row {
    tokens: Vec<i64>,
    targets: Vec<i64>,
    docs: Vec<i64>,
}

#[derive(Default)]
struct RowBuilder {
    ids: Vec<i64>,
    learned: Vec<bool>,
    docs: Vec<i64>,
    next_doc: i64,
}

impl RowBuilder {
    fn push(&mut self, e: &Example) {
        self.ids.extend(e.ids.iter().map(|&i| i64::from(i)));
        self.learned.extend_from_slice(&e.learned);
        self.docs.extend(std::iter::repeat_n(self.next_doc, e.ids.len()));
        self.next_doc += 1;
    }

    /// Pads to `n` tokens; the targets of the `n - 1` inputs.
    fn finish(mut self, n: usize, pad: u32) -> Row {
        self.ids.truncate(n);
        self.learned.truncate(n);
        self.docs.truncate(n);
        let pad_doc = self.next_doc;
        while self.ids.len() < n {
            self.ids.push(i64::from(pad));
            self.learned.push(false);
            self.docs.push(pad_doc);
        }
        let targets = (0..n - 1)
            .map(|i| if self.learned[i + 1] && self.docs[i + 1] == self.docs[i] { self.ids[i + 1] } else { -100 })
            .collect();
        self.docs.truncate(n - 1);
        Row { tokens: self.ids, targets, docs: self.docs }
    }
}

/// Held-out rows with their loss mask.
pub struct Masked {
    /// `[n, seq + 1]`
    pub tokens: Tensor,
    /// `[n, seq]`, `-100` where nothing is learned.
    pub targets: Tensor,
}

impl Masked {
    fn from_rows(rows: &[Row], device: Device) -> Masked {
        let n = rows.len() as i64;
        let tokens: Vec<i64> = rows.iter().flat_map(|r| r.tokens.iter().copied()).collect();
        let targets: Vec<i64> = rows.iter().flat_map(|r| r.targets.iter().copied()).collect();
        Masked {
            tokens: Tensor::from_slice(&tokens).view([n, -1]).to_device(device),
            targets: Tensor::from_slice(&targets).view([n, -1]).to_device(device),
        }
    }

    /// Rows whose learned tokens number at most `max_learned` (short answers).
    pub fn short(&self, max_learned: i64) -> Option<Masked> {
        let counts = self.targets.ne(-100).sum_dim_intlist(1, false, Kind::Int64);
        let keep = counts.le(max_learned).logical_and(&counts.gt(0)).nonzero().squeeze_dim(1);
        (keep.numel() > 0).then(|| Masked {
            tokens: self.tokens.index_select(0, &keep),
            targets: self.targets.index_select(0, &keep),
        })
    }
}

/// Per row of `set`: the summed cross-entropy over learned targets, their number, and whether
/// the greedy prediction is right at every one of them (the row's answer, `<|im_end|>`
/// included, is what greedy decoding would write: exact match).
pub fn score_rows(model: &Llama, set: &Masked, batch: usize) -> Vec<(f64, i64, bool)> {
    let (n, len) = set.tokens.size2().expect("[n, seq + 1]");
    let mut out = Vec::with_capacity(n as usize);
    tch::no_grad(|| {
        let mut i = 0;
        while i < n {
            let b = (batch as i64).min(n - i);
            let tokens = set.tokens.narrow(0, i, b).narrow(1, 0, len - 1);
            let targets = set.targets.narrow(0, i, b);
            let logits =
                tch::autocast(model.device.is_cuda(), || model.forward(&Inputs::tokens(tokens))).to_kind(Kind::Float);
            let v = logits.size()[2];
            let nll = logits
                .reshape([-1, v])
                .cross_entropy_loss::<Tensor>(&targets.reshape([-1]), None, tch::Reduction::None, -100, 0.0)
                .view([b, -1]);
            let learned = targets.ne(-100);
            let wrong = logits.argmax(-1, false).ne_tensor(&targets).logical_and(&learned);
            let sums = Vec::<f64>::try_from(
                nll.to_kind(Kind::Double).sum_dim_intlist(1, false, Kind::Double).to_device(Device::Cpu),
            )
            .expect("1-d");
            let counts = Vec::<i64>::try_from(learned.sum_dim_intlist(1, false, Kind::Int64).to_device(Device::Cpu))
                .expect("1-d");
            let misses =
                Vec::<i64>::try_from(wrong.sum_dim_intlist(1, false, Kind::Int64).to_device(Device::Cpu)).expect("1-d");
            for k in 0..b as usize {
                out.push((sums[k], counts[k], misses[k] == 0));
            }
            i += b;
        }
    });
    out
}

/// Mean cross-entropy per learned token of each domain's held-out rows.
pub fn validation_loss(model: &Llama, sets: &BTreeMap<String, Masked>, batch: usize) -> BTreeMap<String, f64> {
    sets.iter()
        .map(|(domain, set)| {
            let rows = score_rows(model, set, batch);
            let (sum, count) = rows.iter().fold((0.0, 0i64), |(s, c), r| (s + r.0, c + r.1));
            // No assistant token inside the window: nothing measured, not a perfect score.
            (domain.clone(), if count > 0 { sum / count as f64 } else { f64::NAN })
        })
        .collect()
}

/// Learned tokens at most this many make a "short answer" scored by exact match.
pub const SHORT_ANSWER_TOKENS: i64 = 16;

/// Per domain: greedy exact match over held-out examples with short answers, and their count.
pub fn exact_match(model: &Llama, sets: &BTreeMap<String, Masked>, batch: usize) -> BTreeMap<String, (f64, usize)> {
    sets.iter()
        .filter_map(|(domain, set)| {
            let short = set.short(SHORT_ANSWER_TOKENS)?;
            let rows = score_rows(model, &short, batch);
            let hits = rows.iter().filter(|r| r.2).count();
            Some((domain.clone(), (hits as f64 / rows.len() as f64, rows.len())))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packing_keeps_examples_whole_and_masks_targets() {
        let a = Example { ids: vec![1, 2, 3, 4], learned: vec![false, false, true, true] };
        let b = Example { ids: vec![5, 6, 7], learned: vec![false, true, true] };
        let mut row = RowBuilder::default();
        row.push(&a);
        row.push(&b);
        let r = row.finish(9, 0);
        assert_eq!(r.tokens, [1, 2, 3, 4, 5, 6, 7, 0, 0]);
        // Target i is token i + 1 when that token is learned and in the same example.
        assert_eq!(r.targets, [-100, 3, 4, -100, 6, 7, -100, -100]);
        assert_eq!(r.docs, [0, 0, 0, 0, 1, 1, 1, 2]);
    }
}

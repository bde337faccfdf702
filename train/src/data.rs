//! The mixture data loader: sequences sampled from the corpus shards' domains by mixture
//! weight, documents packed with EOS separators, deterministic by seed, with a position that
//! checkpoints restore exactly, epoch caps, and a fixed validation stream per domain.
//!
//! Each training sequence comes from one domain, drawn by weight, so the weights are token
//! fractions. Within a domain, documents are read in a shuffled order per epoch, continuing
//! where the previous sequence stopped (a long document spans sequences).

use std::collections::BTreeMap;

pub use corpus::shards::Mixture;
use corpus::shards::{DomainSegments, Shards};
use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};

use crate::model::Inputs;
use crate::rng::Rng;
use crate::{Error, Result};

/// What to do when a domain is read past its epoch cap.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CapPolicy {
    Warn,
    Stop,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LoaderConfig {
    pub seq_len: usize,
    pub batch_size: usize,
    pub seed: u64,
    /// Tokens attend only within their own document.
    pub doc_mask: bool,
    /// Position ids restart at 0 at each document.
    pub reset_positions: bool,
    pub cap_policy: CapPolicy,
    pub eos_id: u32,
    /// Train on only the first this fraction of each domain's training tokens (1 = all): a
    /// proxy for a run `1 / data_fraction` times longer sees each domain as many epochs.
    #[serde(default = "one")]
    pub data_fraction: f64,
}

fn one() -> f64 {
    1.0
}

impl LoaderConfig {
    /// For scoring held-out sequences (`eval`, merge probes): plain causal packing, no shuffle
    /// state that matters, every token of the data.
    pub fn evaluation(seq_len: usize, eos_id: u32) -> LoaderConfig {
        LoaderConfig {
            seq_len,
            batch_size: 8,
            seed: 0,
            doc_mask: false,
            reset_positions: false,
            cap_policy: CapPolicy::Warn,
            eos_id,
            data_fraction: 1.0,
        }
    }
}

struct Domain {
    segments: DomainSegments,
    train_tokens: u64,
    /// The document order of `order_epoch`, cached: derived from seed and epoch, not state.
    order: Vec<usize>,
    order_epoch: Option<u64>,
}

impl Domain {
    fn name(&self) -> &str {
        &self.segments.name
    }
}

/// Where a domain's stream stands.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cursor {
    pub epoch: u64,
    /// Index into this epoch's document order.
    pub pos: usize,
    /// Tokens of the current document already used.
    pub offset: usize,
    /// Tokens read from this domain so far (EOS separators included).
    pub tokens: u64,
}

/// The loader's whole position: restoring it continues the exact same stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoaderState {
    pub rng: Rng,
    pub cursors: BTreeMap<String, Cursor>,
    pub sequences: u64,
    /// Domains already warned about past their cap.
    pub over_cap: Vec<String>,
}

/// One training batch on the target device.
pub struct Batch {
    pub inputs: Inputs,
    /// `[batch, seq]` next-token targets.
    pub targets: Tensor,
    /// `[batch, seq]` document index of each token, and its position within its document,
    /// whatever the student's switches (a teacher may see the documents apart).
    pub documents: Tensor,
    pub document_positions: Tensor,
    /// The domain of each sequence.
    pub domains: Vec<String>,
}

pub struct Loader {
    domains: Vec<Domain>,
    weights: Vec<f64>,
    caps: Vec<Option<f64>>,
    config: LoaderConfig,
    state: LoaderState,
}

impl Loader {
    /// Opens every domain of `shards` that the mixture weights; domains the mixture names
    /// but the shards lack are an error.
    pub fn new(shards: &Shards, mixture: &Mixture, config: LoaderConfig) -> Result<Loader> {
        let manifest = shards.manifest();
        if let Some(missing) = mixture.weights.keys().find(|d| !manifest.domains.contains_key(*d)) {
            return Err(Error::Data(format!(
                "the mixture names domain {missing:?}, which the shards don't have (domains: {})",
                manifest.domains.keys().cloned().collect::<Vec<_>>().join(", ")
            )));
        }
        if config.seq_len == 0 || config.batch_size == 0 {
            return Err(Error::Config("seq_len and batch_size must be positive".into()));
        }
        if !(config.data_fraction > 0.0 && config.data_fraction <= 1.0) {
            return Err(Error::Config(format!("data_fraction must be in (0, 1], got {}", config.data_fraction)));
        }
        let mut domains = Vec::new();
        let (mut weights, mut caps) = (Vec::new(), Vec::new());
        for name in manifest.domains.keys() {
            let weight = mixture.weights.get(name).copied().unwrap_or(0.0);
            let domain = open_domain(shards, name, config.data_fraction)?;
            if weight > 0.0 && domain.train_tokens == 0 {
                return Err(Error::Data(format!("domain {name:?} has weight {weight} but no training tokens")));
            }
            weights.push(weight);
            caps.push(mixture.max_epochs.get(name).copied());
            domains.push(domain);
        }
        let cursors = domains.iter().map(|d| (d.name().to_string(), Cursor::default())).collect();
        let state = LoaderState { rng: Rng::new(config.seed), cursors, sequences: 0, over_cap: Vec::new() };
        Ok(Loader { domains, weights, caps, config, state })
    }

    pub fn state(&self) -> &LoaderState {
        &self.state
    }

    /// Continues from a checkpointed position.
    pub fn restore(&mut self, state: LoaderState) -> Result<()> {
        for d in &self.domains {
            if !state.cursors.contains_key(d.name()) {
                return Err(Error::Data(format!("the saved loader position has no cursor for domain {:?}", d.name())));
            }
        }
        self.state = state;
        Ok(())
    }

    pub fn config(&self) -> &LoaderConfig {
        &self.config
    }

    /// Domain names (every domain of the shards, weighted or not).
    pub fn domain_names(&self) -> Vec<String> {
        self.domains.iter().map(|d| d.name().to_string()).collect()
    }

    /// Training tokens available per domain.
    pub fn available_tokens(&self) -> BTreeMap<String, u64> {
        self.domains.iter().map(|d| (d.name().to_string(), d.train_tokens)).collect()
    }

    /// The next batch.
    pub fn next_batch(&mut self, device: Device) -> Result<Batch> {
        let (b, t) = (self.config.batch_size, self.config.seq_len);
        let mut tokens = Vec::with_capacity(b * (t + 1));
        let mut docs = Vec::with_capacity(b * t);
        let mut names = Vec::with_capacity(b);
        for _ in 0..b {
            let d = self.state.rng.weighted(&self.weights);
            let (seq, seq_docs) = self.fill(d, t + 1)?;
            tokens.extend(seq.iter().map(|&x| i64::from(x)));
            docs.extend_from_slice(&seq_docs[..t]);
            names.push(self.domains[d].name().to_string());
            self.state.sequences += 1;
        }
        Ok(self.to_batch(&tokens, &docs, names, device))
    }

    fn to_batch(&self, tokens: &[i64], docs: &[i64], domains: Vec<String>, device: Device) -> Batch {
        let (b, t) = (domains.len() as i64, self.config.seq_len as i64);
        let all = Tensor::from_slice(tokens).view([b, t + 1]).to_device(device);
        let documents = Tensor::from_slice(docs).view([b, t]).to_device(device);
        let document_positions = positions_from_docs(docs, b, t).to_device(device);
        let inputs = Inputs {
            tokens: all.narrow(1, 0, t),
            positions: self.config.reset_positions.then(|| document_positions.shallow_clone()),
            doc_ids: self.config.doc_mask.then(|| documents.shallow_clone()),
        };
        Batch { inputs, targets: all.narrow(1, 1, t), documents, document_positions, domains }
    }

    /// `n` tokens from domain `d`'s stream, with the document index of each token.
    fn fill(&mut self, d: usize, n: usize) -> Result<(Vec<u32>, Vec<i64>)> {
        let seed = self.config.seed;
        let domain = &mut self.domains[d];
        let cursor = self.state.cursors.get_mut(domain.name()).expect("a cursor per domain");
        let mut out = Vec::with_capacity(n);
        let mut doc_of = Vec::with_capacity(n);
        let mut doc_index = 0i64;
        while out.len() < n {
            if cursor.pos >= domain.segments.train.len() {
                cursor.epoch += 1;
                cursor.pos = 0;
                cursor.offset = 0;
            }
            if domain.order_epoch != Some(cursor.epoch) {
                domain.order = epoch_order(domain, seed, cursor.epoch);
                domain.order_epoch = Some(cursor.epoch);
            }
            let seg = domain.segments.train[domain.order[cursor.pos]];
            let doc = domain.segments.shards[seg.shard].doc(seg.doc);
            let len = seg.end - seg.start;
            // offset == len means the document is done and its EOS is next.
            while cursor.offset < len && out.len() < n {
                out.push(doc.get(seg.start + cursor.offset));
                doc_of.push(doc_index);
                cursor.offset += 1;
            }
            if cursor.offset == len && out.len() < n {
                out.push(self.config.eos_id);
                doc_of.push(doc_index);
                doc_index += 1;
                cursor.pos += 1;
                cursor.offset = 0;
            }
        }
        cursor.tokens += n as u64;
        let epochs = cursor.tokens as f64 / domain.train_tokens.max(1) as f64;
        if let Some(cap) = self.caps[d]
            && epochs > cap
        {
            let name = domain.name().to_string();
            match self.config.cap_policy {
                CapPolicy::Stop => {
                    return Err(Error::Data(format!(
                        "domain {name:?} read {epochs:.2} epochs, past its cap of {cap}; lower the budget or its \
                         weight, or allow it with the warn policy"
                    )));
                }
                CapPolicy::Warn => {
                    if !self.state.over_cap.contains(&name) {
                        tracing::warn!("domain {name:?} read {epochs:.2} epochs, past its cap of {cap}");
                        self.state.over_cap.push(name);
                    }
                }
            }
        }
        Ok((out, doc_of))
    }

    /// The validation stream of each domain: up to `max_sequences` sequences of `seq_len + 1`
    /// tokens packed from its validation documents in shard order (the same every call).
    /// Domains without validation tokens are absent.
    pub fn validation(&self, max_sequences: usize) -> BTreeMap<String, Vec<Vec<i64>>> {
        self.validation_window(0, max_sequences)
    }

    /// Like [`Loader::validation`], past the first `skip` sequences of each domain: a probe
    /// set (merge weight search) that never overlaps the evaluation's first sequences.
    pub fn validation_window(&self, skip: usize, max_sequences: usize) -> BTreeMap<String, Vec<Vec<i64>>> {
        let (n, max_sequences) = (self.config.seq_len + 1, skip + max_sequences);
        let mut out = BTreeMap::new();
        for domain in &self.domains {
            let mut seqs = Vec::new();
            let mut cur = Vec::with_capacity(n);
            'docs: for seg in &domain.segments.val {
                let doc = domain.segments.shards[seg.shard].doc(seg.doc);
                let tokens = (seg.start..seg.end).map(|i| i64::from(doc.get(i))).chain([i64::from(self.config.eos_id)]);
                for tok in tokens {
                    cur.push(tok);
                    if cur.len() == n {
                        seqs.push(std::mem::replace(&mut cur, Vec::with_capacity(n)));
                        if seqs.len() == max_sequences {
                            break 'docs;
                        }
                    }
                }
            }
            let seqs: Vec<Vec<i64>> = seqs.into_iter().skip(skip).collect();
            if !seqs.is_empty() {
                out.insert(domain.name().to_string(), seqs);
            }
        }
        out
    }
}

/// Position ids that restart at each document boundary.
pub(crate) fn positions_from_docs(docs: &[i64], b: i64, t: i64) -> Tensor {
    let mut pos = Vec::with_capacity(docs.len());
    for row in docs.chunks(t as usize) {
        let mut p = 0i64;
        for (i, d) in row.iter().enumerate() {
            if i > 0 && *d != row[i - 1] {
                p = 0;
            }
            pos.push(p);
            p += 1;
        }
    }
    Tensor::from_slice(&pos).view([b, t]).to_kind(Kind::Int64)
}

/// The document order of one epoch: a shuffle that depends only on seed, domain and epoch.
fn epoch_order(domain: &Domain, seed: u64, epoch: u64) -> Vec<usize> {
    shuffled(domain.segments.train.len(), domain.name(), seed, epoch)
}

/// `0..n` shuffled by seed, domain name and epoch (the instruction loader's order too).
pub(crate) fn shuffled(n: usize, name: &str, seed: u64, epoch: u64) -> Vec<usize> {
    let name_hash =
        name.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3));
    let mut rng = Rng::new(seed ^ name_hash ^ epoch.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let mut order: Vec<usize> = (0..n).collect();
    rng.shuffle(&mut order);
    order
}

/// Opens a domain, keeping the first `data_fraction` of its training tokens.
fn open_domain(shards: &Shards, name: &str, data_fraction: f64) -> Result<Domain> {
    let mut segments = DomainSegments::open(shards, name)?;
    segments.keep_train_fraction(data_fraction);
    let train_tokens = segments.train_tokens();
    Ok(Domain { segments, train_tokens, order: Vec::new(), order_epoch: None })
}

/// The end-of-document token of a tokenizer: the first of the usual names it knows.
pub fn eos_id(tokenizer: &tokenizers::Tokenizer) -> Result<u32> {
    ["<|eos|>", "</s>", "<|endoftext|>", "<|end_of_text|>", "<eos>"]
        .iter()
        .find_map(|t| tokenizer.token_to_id(t))
        .ok_or_else(|| {
            Error::Data("the tokenizer has no end-of-document token (<|eos|>, </s>, <|endoftext|>, …)".into())
        })
}

//! Materializing a proposal: the utility-weighted shards a trainer reads.
//!
//! Each domain gets exactly its share of the requested tokens (EOS separators included),
//! read as whole shuffled epochs of its documents plus a shuffled partial epoch, the last
//! document cut to land on the share. The output is a shard directory in the usual format:
//! per-domain training shards (what `mixforge train` reads; their natural mixture *is* the
//! proposal), the source's validation documents, and `stream/`: every training document
//! interleaved in one shuffled order for trainers that read a single token stream. The
//! manifest records what each domain realised. Written to a temporary directory and renamed.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use corpus::shards::{
    DomainSegments, DomainShards, RealisedDomain, RealisedMixture, SHARDS_FORMAT_VERSION, Segment, ShardEntry,
    ShardManifest, Shards, Split, write_shard,
};

use crate::error::{Error, Result};
use crate::proposal::Proposal;
use crate::rng::SplitMix64;
use crate::rounding::round_tokens;

/// Settings of `mix materialize`.
#[derive(Debug, Clone)]
pub struct MaterializeConfig {
    /// The proposal file (recorded in the manifest).
    pub proposal: PathBuf,
    /// The source shard directory.
    pub shards: PathBuf,
    /// Training tokens to write, EOS separators included.
    pub tokens: u64,
    /// The output directory (replaced when it exists).
    pub out: PathBuf,
    /// Seed of the shuffles.
    pub seed: u64,
    /// Documents per written shard.
    pub chunk_docs: usize,
}

/// Writes the materialized shards; returns their manifest.
pub fn materialize(config: &MaterializeConfig, proposal: &Proposal) -> Result<ShardManifest> {
    let source = Shards::open(&config.shards)?;
    let manifest = source.manifest();
    if let Some(d) = proposal.weights.keys().find(|d| !manifest.domains.contains_key(*d)) {
        return Err(Error::Invalid(format!(
            "the proposal weights domain `{d}`, which {} does not have",
            config.shards.display()
        )));
    }
    if config.chunk_docs == 0 || config.tokens == 0 {
        return Err(Error::Invalid("--tokens and chunk_docs must be positive".into()));
    }
    let domains: Vec<DomainSegments> =
        manifest.domains.keys().map(|d| DomainSegments::open(&source, d)).collect::<corpus::Result<_>>()?;
    let shares = allot(config.tokens, proposal, &domains)?;

    corpus::atomic::check_replaceable(&config.out, "materialized shard directory", is_materialized)?;
    let building = corpus::atomic::AtomicDir::create(&config.out)?;
    let tmp = building.path().to_path_buf();
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| Error::Io { path, cause: source }
    };
    std::fs::create_dir_all(tmp.join("stream")).map_err(io(&tmp))?;
    let mut rng = SplitMix64::new(config.seed);
    let mut plans = Vec::new();
    let mut out_domains = BTreeMap::new();
    let mut realised = BTreeMap::new();
    for (domain, &share) in domains.iter().zip(&shares) {
        let pieces = plan_domain(domain, share, &mut rng);
        let dir = tmp.join(&domain.name);
        std::fs::create_dir_all(&dir).map_err(io(&dir))?;
        let mut shards = DomainShards::default();
        for (chunk, group) in pieces.chunks(config.chunk_docs).enumerate() {
            // Sorted by id within a shard, as every shard index is; the loader shuffles anyway.
            let mut group = group.to_vec();
            group.sort_by_key(|p| (domain.doc_id(p), p.start));
            let entry = write_pieces(&dir, Split::Train, chunk as u32, domain, &group, manifest.dtype)?;
            (shards.train_docs, shards.train_tokens) =
                (shards.train_docs + entry.docs, shards.train_tokens + entry.tokens);
            shards.shards.push(entry);
        }
        let val = &domain.val;
        for (chunk, group) in val.chunks(config.chunk_docs).enumerate() {
            let entry = write_pieces(&dir, Split::Val, chunk as u32, domain, group, manifest.dtype)?;
            (shards.val_docs, shards.val_tokens) = (shards.val_docs + entry.docs, shards.val_tokens + entry.tokens);
            shards.shards.push(entry);
        }
        let tokens: u64 = pieces.iter().map(|p| p.len() as u64 + 1).sum();
        let available = domain.train_tokens();
        realised.insert(
            domain.name.clone(),
            RealisedDomain {
                weight: proposal.weights.get(&domain.name).copied().unwrap_or(0.0),
                realised_weight: 0.0,
                tokens,
                available_tokens: available,
                epochs: if available == 0 { 0.0 } else { tokens as f64 / available as f64 },
                max_epochs: proposal.max_epochs.get(&domain.name).copied(),
            },
        );
        out_domains.insert(domain.name.clone(), shards);
        plans.push(pieces);
    }
    let written: u64 = realised.values().map(|r| r.tokens).sum();
    realised.values_mut().for_each(|r| r.realised_weight = r.tokens as f64 / written.max(1) as f64);
    let stream = write_stream(&tmp.join("stream"), &domains, &plans, config, manifest.dtype, &mut rng)?;

    let tokenizer = source.tokenizer_path();
    std::fs::copy(&tokenizer, tmp.join("tokenizer.json")).map_err(io(&tokenizer))?;
    let out_manifest = ShardManifest {
        format_version: SHARDS_FORMAT_VERSION,
        tokenizer_hash: manifest.tokenizer_hash.clone(),
        vocab_size: manifest.vocab_size,
        dtype: manifest.dtype,
        val_fraction: manifest.val_fraction,
        split_seed: manifest.split_seed,
        chunk_docs: config.chunk_docs as u64,
        total_docs: out_domains.values().map(|d| d.train_docs + d.val_docs).sum(),
        total_tokens: out_domains.values().map(|d| d.train_tokens + d.val_tokens).sum(),
        domains: out_domains,
        mixture: Some(RealisedMixture {
            proposal: config.proposal.display().to_string(),
            source: config.shards.display().to_string(),
            seed: config.seed,
            target_tokens: config.tokens,
            tokens: written,
            domains: realised,
            stream,
        }),
    };
    corpus::atomic::write_json(&tmp.join("manifest.json"), &out_manifest)?;
    building.commit()?;
    Ok(out_manifest)
}

/// Whether `dir` holds shards this command wrote (a manifest with a realised mixture).
fn is_materialized(dir: &Path) -> bool {
    Shards::open(dir).is_ok_and(|s| s.manifest().mixture.is_some())
}

/// Tokens per domain: the proposal's weights applied to `tokens`, rounded to sum exactly,
/// refusing any share past a domain's epoch cap.
fn allot(tokens: u64, proposal: &Proposal, domains: &[DomainSegments]) -> Result<Vec<u64>> {
    let total_weight: f64 = proposal.weights.values().sum();
    let weights: Vec<f64> =
        domains.iter().map(|d| proposal.weights.get(&d.name).copied().unwrap_or(0.0) / total_weight).collect();
    let mut caps = Vec::new();
    for (d, w) in domains.iter().zip(&weights) {
        let available = d.train_tokens();
        let cap = match proposal.max_epochs.get(&d.name) {
            Some(c) => (c * available as f64).floor() as u64,
            None if available > 0 => tokens,
            None => 0,
        };
        let wanted = w * tokens as f64;
        if wanted > cap as f64 + 0.5 {
            let why = match proposal.max_epochs.get(&d.name) {
                Some(c) => format!("{:.2} epochs, past its cap of {c}", wanted / available.max(1) as f64),
                None => "tokens, but it has none".to_string(),
            };
            return Err(Error::Infeasible(format!(
                "domain `{}` would need {wanted:.0} of {tokens} tokens = {why}; lower --tokens or re-propose",
                d.name
            )));
        }
        caps.push(cap.min(tokens));
    }
    round_tokens(&weights, tokens, 1, &caps, &vec![0; domains.len()])
}

/// A domain's segments totalling `share` tokens (one EOS each): whole shuffled epochs, then a
/// shuffled prefix of the next, the last document cut.
fn plan_domain(domain: &DomainSegments, share: u64, rng: &mut SplitMix64) -> Vec<Segment> {
    let mut pieces = Vec::new();
    let mut left = share;
    while left >= 2 && !domain.train.is_empty() {
        let mut order: Vec<usize> = (0..domain.train.len()).collect();
        rng.shuffle(&mut order);
        let before = left;
        for &i in &order {
            if left < 2 {
                break;
            }
            let seg = domain.train[i];
            let mut len = (seg.len() as u64).min(left - 1);
            // A piece costs at least 2 (a token and its EOS): never leave exactly 1 behind.
            if left - (len + 1) == 1 {
                if len < 2 {
                    continue;
                }
                len -= 1;
            }
            pieces.push(Segment { end: seg.start + len as usize, ..seg });
            left -= len + 1;
        }
        if left == before {
            break; // only one-token documents and one token left: the share ends one short
        }
    }
    pieces
}

fn write_pieces(
    dir: &Path,
    split: Split,
    chunk: u32,
    domain: &DomainSegments,
    pieces: &[Segment],
    dtype: corpus::shards::Dtype,
) -> Result<ShardEntry> {
    let docs: Vec<(u64, Vec<u32>)> = pieces.iter().map(|p| (domain.doc_id(p), domain.tokens(p))).collect();
    let refs: Vec<(u64, &[u32])> = docs.iter().map(|(id, t)| (*id, t.as_slice())).collect();
    Ok(write_shard(dir, split, chunk, &refs, dtype)?)
}

/// Interleaves every domain's pieces: the next document comes from a domain drawn in
/// proportion to its remaining tokens, so any prefix of the stream holds the mixture.
fn write_stream(
    dir: &Path,
    domains: &[DomainSegments],
    plans: &[Vec<Segment>],
    config: &MaterializeConfig,
    dtype: corpus::shards::Dtype,
    rng: &mut SplitMix64,
) -> Result<Vec<ShardEntry>> {
    let mut next = vec![0usize; plans.len()];
    let mut left: Vec<u64> = plans.iter().map(|p| p.iter().map(|x| x.len() as u64 + 1).sum()).collect();
    let mut entries = Vec::new();
    let mut docs: Vec<(u64, Vec<u32>)> = Vec::new();
    let flush = |docs: &mut Vec<(u64, Vec<u32>)>, entries: &mut Vec<ShardEntry>| -> Result<()> {
        let refs: Vec<(u64, &[u32])> = docs.iter().map(|(id, t)| (*id, t.as_slice())).collect();
        let mut entry = write_shard(dir, Split::Train, entries.len() as u32, &refs, dtype)?;
        entry.tokens_file = format!("stream/{}", entry.tokens_file);
        entry.index_file = format!("stream/{}", entry.index_file);
        entries.push(entry);
        docs.clear();
        Ok(())
    };
    loop {
        let remaining: u64 = left.iter().sum();
        if remaining == 0 {
            break;
        }
        let mut pick = rng.next_u64() % remaining;
        let d = (0..left.len())
            .find(|&d| if pick < left[d] { true } else { (pick -= left[d], false).1 })
            .expect("pick < sum");
        let piece = plans[d][next[d]];
        next[d] += 1;
        left[d] -= piece.len() as u64 + 1;
        docs.push((domains[d].doc_id(&piece), domains[d].tokens(&piece)));
        if docs.len() == config.chunk_docs {
            flush(&mut docs, &mut entries)?;
        }
    }
    if !docs.is_empty() || entries.is_empty() {
        flush(&mut docs, &mut entries)?;
    }
    Ok(entries)
}

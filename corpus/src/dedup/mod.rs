//! Exact and near-duplicate detection: exact keys, MinHash-LSH candidates, exact-Jaccard
//! verification, union-find clusters, an oversized-cluster guard and a deterministic keeper.
//!
//! The engine never holds text. The pipeline gives it one [`Entry`] per document (exact key and
//! band keys), asks it for the documents that need verification, hands back their shingle sets,
//! and receives one [`Verdict`] per document.

pub mod minhash;
pub mod shingles;
pub mod union_find;

use hashbrown::{HashMap, HashSet};
use serde::Serialize;

use crate::config::{DedupConfig, DedupScope, OversizePolicy};
use crate::hashing::{IdentityBuild, mix};
use crate::ids::DocId;
pub use minhash::{LshParams, MinHasher};
use union_find::UnionFind;

/// What the engine knows of one document.
#[derive(Debug, Clone)]
pub struct Entry {
    /// The document.
    pub id: DocId,
    /// Its size in bytes (longest is kept).
    pub bytes: u64,
    /// Dedup scope key: 0 for global scope, the domain index for per-domain scope.
    pub scope: u32,
    /// Exact key ([`shingles::exact_key`]).
    pub exact: u128,
    /// Whether it takes part (documents dropped by filters do not).
    pub eligible: bool,
}

/// The outcome for one document.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Unique, or the keeper of its cluster.
    Kept,
    /// Same normalized text as the keeper.
    ExactDup,
    /// Near duplicate of the keeper.
    NearDup,
}

/// Summary of a dedup run, written to the manifest.
#[derive(Debug, Clone, Default, Serialize, serde::Deserialize)]
pub struct DedupReport {
    /// LSH banding used (absent without MinHash).
    pub lsh: Option<LshParams>,
    /// Candidate probability at Jaccard 0.5/0.7/0.8/0.9.
    pub s_curve: Vec<(f64, f64)>,
    /// Candidate pairs examined (after skipping pairs already in one cluster).
    pub candidate_pairs: u64,
    /// Candidate pairs whose exact Jaccard reached the threshold.
    pub verified_pairs: u64,
    /// Candidate pairs rejected by verification.
    pub rejected_pairs: u64,
    /// Clusters of two or more documents.
    pub clusters: u64,
    /// Size of the largest cluster.
    pub largest_cluster: u64,
    /// Clusters above `max_cluster_size`, with their sizes.
    pub oversized_clusters: Vec<u64>,
    /// Documents removed as exact duplicates.
    pub exact_removed: u64,
    /// Documents removed as near duplicates.
    pub near_removed: u64,
}

/// LSH buckets with two or more members, waiting for verification.
pub struct Candidates {
    /// Each bucket's member indices, keeper-first order (longest, then smallest id).
    buckets: Vec<Vec<u32>>,
}

impl Candidates {
    /// Indices (into the entries) of documents whose shingle sets verification needs, sorted.
    pub fn needed(&self) -> Vec<u32> {
        let mut all: Vec<u32> = self.buckets.iter().flatten().copied().collect();
        all.sort_unstable();
        all.dedup();
        all
    }
}

/// The dedup engine for one run.
pub struct Engine<'c> {
    config: &'c DedupConfig,
    lsh: LshParams,
    entries: Vec<Entry>,
    /// Band keys, `lsh.bands` per entry (empty without MinHash).
    bands: Vec<u64>,
    uf: UnionFind,
    report: DedupReport,
}

impl<'c> Engine<'c> {
    /// An engine for `config`.
    pub fn new(config: &'c DedupConfig) -> Engine<'c> {
        let lsh = match (config.bands, config.rows) {
            (Some(bands), Some(rows)) => LshParams { bands, rows },
            _ => LshParams::for_threshold(config.threshold, config.num_perm, config.verify),
        };
        Engine {
            config,
            lsh,
            entries: Vec::new(),
            bands: Vec::new(),
            uf: UnionFind::new(0),
            report: DedupReport::default(),
        }
    }

    /// The banding in use.
    pub fn lsh(&self) -> LshParams {
        self.lsh
    }

    /// Adds a document; `band_keys` must hold `lsh().bands` keys when MinHash is on.
    pub fn push(&mut self, entry: Entry, band_keys: &[u64]) {
        if self.config.minhash {
            assert_eq!(band_keys.len(), self.lsh.bands, "one key per band");
            self.bands.extend_from_slice(band_keys);
        }
        self.entries.push(entry);
    }

    /// Number of documents added.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether none were added.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn keeper_order(&self, a: u32, b: u32) -> std::cmp::Ordering {
        let (ea, eb) = (&self.entries[a as usize], &self.entries[b as usize]);
        eb.bytes.cmp(&ea.bytes).then(ea.id.cmp(&eb.id))
    }

    /// Merges exact duplicates and collects LSH buckets among exact-unique documents.
    pub fn candidates(&mut self) -> Candidates {
        self.uf = UnionFind::new(self.entries.len());
        let eligible: Vec<u32> =
            (0..self.entries.len() as u32).filter(|&i| self.entries[i as usize].eligible).collect();
        // Exact: sort by (scope, key), keeper first within a run of equal keys.
        let mut representatives = Vec::new();
        if self.config.exact {
            let mut order = eligible.clone();
            order.sort_unstable_by(|&a, &b| {
                let (ea, eb) = (&self.entries[a as usize], &self.entries[b as usize]);
                (ea.scope, ea.exact).cmp(&(eb.scope, eb.exact)).then_with(|| self.keeper_order(a, b))
            });
            for group in order.chunk_by(|&a, &b| {
                let (ea, eb) = (&self.entries[a as usize], &self.entries[b as usize]);
                (ea.scope, ea.exact) == (eb.scope, eb.exact)
            }) {
                for &other in &group[1..] {
                    self.uf.union(group[0], other);
                }
                representatives.push(group[0]);
            }
            representatives.sort_unstable();
        } else {
            representatives = eligible;
        }
        if !self.config.minhash {
            return Candidates { buckets: Vec::new() };
        }
        self.report.lsh = Some(self.lsh);
        self.report.s_curve = self.lsh.s_curve();
        let mut buckets = Vec::new();
        let mut keyed: Vec<(u64, u32)> = Vec::with_capacity(representatives.len());
        for band in 0..self.lsh.bands {
            keyed.clear();
            keyed.extend(representatives.iter().map(|&i| {
                let key = self.bands[i as usize * self.lsh.bands + band];
                (mix(key, u64::from(self.entries[i as usize].scope)), i)
            }));
            keyed.sort_unstable();
            for run in keyed.chunk_by(|a, b| a.0 == b.0).filter(|run| run.len() > 1) {
                let mut members: Vec<u32> = run.iter().map(|&(_, i)| i).collect();
                members.sort_unstable_by(|&a, &b| self.keeper_order(a, b));
                buckets.push(members);
            }
        }
        Candidates { buckets }
    }

    /// Resolves buckets into clusters. With verification, `sets(i)` must return the sorted
    /// shingle set of every index in [`Candidates::needed`].
    pub fn resolve<'s>(
        mut self,
        candidates: Candidates,
        sets: impl Fn(u32) -> &'s [u64],
    ) -> (Vec<Verdict>, Vec<Option<DocId>>, DedupReport) {
        let mut checked: HashSet<u64, IdentityBuild> = HashSet::default();
        for bucket in &candidates.buckets {
            if !self.config.verify {
                for &other in &bucket[1..] {
                    self.report.candidate_pairs += 1;
                    self.uf.union(bucket[0], other);
                }
                continue;
            }
            // Anchor on the longest member; members that do not match it form the next round
            // with their own longest as anchor. Pairs already in one cluster are skipped.
            let mut pending: Vec<u32> = bucket.clone();
            while pending.len() > 1 {
                let anchor = pending[0];
                let mut unmatched = Vec::new();
                for &other in &pending[1..] {
                    if self.uf.find(anchor) == self.uf.find(other) {
                        continue;
                    }
                    let pair = (u64::from(anchor.min(other)) << 32) | u64::from(anchor.max(other));
                    if !checked.insert(pair) {
                        unmatched.push(other);
                        continue;
                    }
                    self.report.candidate_pairs += 1;
                    if shingles::jaccard(sets(anchor), sets(other)) >= self.config.threshold {
                        self.report.verified_pairs += 1;
                        self.uf.union(anchor, other);
                    } else {
                        self.report.rejected_pairs += 1;
                        unmatched.push(other);
                    }
                }
                pending = unmatched;
            }
        }
        self.finish()
    }

    /// Picks keepers: per cluster the longest document, then the smallest id.
    fn finish(mut self) -> (Vec<Verdict>, Vec<Option<DocId>>, DedupReport) {
        let n = self.entries.len();
        let mut clusters: HashMap<u32, Vec<u32>, IdentityBuild> = HashMap::default();
        for i in 0..n as u32 {
            if self.entries[i as usize].eligible {
                let root = self.uf.find(i);
                clusters.entry(root).or_default().push(i);
            }
        }
        let mut verdicts = vec![Verdict::Kept; n];
        let mut cluster_ids = vec![None; n];
        let mut roots: Vec<u32> = clusters.keys().copied().collect();
        roots.sort_unstable();
        for root in roots {
            let mut members = clusters.remove(&root).expect("root listed");
            if members.len() < 2 {
                continue;
            }
            members.sort_unstable_by(|&a, &b| self.keeper_order(a, b));
            let cluster_id = members.iter().map(|&i| self.entries[i as usize].id).min().expect("non-empty");
            self.report.clusters += 1;
            self.report.largest_cluster = self.report.largest_cluster.max(members.len() as u64);
            for &m in &members {
                cluster_ids[m as usize] = Some(cluster_id);
            }
            let oversized = members.len() > self.config.max_cluster_size;
            if oversized {
                self.report.oversized_clusters.push(members.len() as u64);
                tracing::warn!(size = members.len(), cluster = %cluster_id, "oversized near-duplicate cluster");
            }
            if oversized && self.config.oversize == OversizePolicy::KeepAll {
                // Likely a chain of false positives: only exact copies are removed.
                let mut seen: HashSet<u128> = HashSet::default();
                for &m in &members {
                    if self.config.exact && !seen.insert(self.entries[m as usize].exact) {
                        verdicts[m as usize] = Verdict::ExactDup;
                        self.report.exact_removed += 1;
                    }
                }
                continue;
            }
            let keeper_key = self.entries[members[0] as usize].exact;
            for &m in &members[1..] {
                if self.config.exact && self.entries[m as usize].exact == keeper_key {
                    verdicts[m as usize] = Verdict::ExactDup;
                    self.report.exact_removed += 1;
                } else {
                    verdicts[m as usize] = Verdict::NearDup;
                    self.report.near_removed += 1;
                }
            }
        }
        (verdicts, cluster_ids, self.report)
    }
}

/// The scope key of a document of domain `domain_idx`.
pub fn scope_key(scope: DedupScope, domain_idx: u32) -> u32 {
    match scope {
        DedupScope::Global => 0,
        DedupScope::PerDomain => domain_idx,
    }
}

//! MinHash accuracy and LSH recall on real text, and dedup invariants.

use corpus::config::{DedupConfig, OversizePolicy};
use corpus::dedup::minhash::estimate_jaccard;
use corpus::dedup::{Engine, Entry, LshParams, MinHasher, Verdict, shingles};
use corpus::ids::{DocId, FileIdx};
use proptest::prelude::*;

use crate::common::{Rng, mutate, wiki_articles};

fn signature(hasher: &MinHasher, text: &str) -> Vec<u64> {
    let (mut words, mut grams, mut sig) = (Vec::new(), Vec::new(), Vec::new());
    shingles::word_hashes(text, &mut words);
    shingles::shingles(&words, 5, &mut grams);
    hasher.signature(&grams, &mut sig);
    sig
}

/// Pairs (article, mutated copy) over a spread of mutation rates, with their exact Jaccard.
fn planted_pairs(rates: &[f64]) -> Vec<(String, String, f64)> {
    let mut rng = Rng(7);
    let mut pairs = Vec::new();
    for article in wiki_articles() {
        for &rate in rates {
            let copy = mutate(&article, rate, &mut rng);
            let j = shingles::jaccard(&shingles::shingle_set(&article, 5), &shingles::shingle_set(&copy, 5));
            pairs.push((article.clone(), copy, j));
        }
    }
    pairs
}

/// The estimate from 128 permutations is within the binomial bound of the exact Jaccard:
/// the fraction of equal minima is Binomial(k, J)/k, σ = √(J(1−J)/k).
#[test]
fn minhash_estimates_jaccard() {
    let k = 128;
    let hasher = MinHasher::new(k, 42);
    let pairs = planted_pairs(&[0.0, 0.01, 0.03, 0.06, 0.1, 0.2, 0.4]);
    assert!(pairs.len() >= 300, "enough real pairs: {}", pairs.len());
    let mut total_error = 0.0;
    let mut beyond_3_sigma = 0;
    for (a, b, j) in &pairs {
        let estimate = estimate_jaccard(&signature(&hasher, a), &signature(&hasher, b));
        let sigma = (j * (1.0 - j) / k as f64).sqrt();
        let error = (estimate - j).abs();
        total_error += error;
        assert!(error <= 5.0 * sigma + 1.0 / k as f64, "J = {j:.3}, estimate {estimate:.3}, σ = {sigma:.3}");
        beyond_3_sigma += usize::from(error > 3.0 * sigma + 1.0 / k as f64);
    }
    let mean_error = total_error / pairs.len() as f64;
    assert!(mean_error < 0.03, "mean |Ĵ − J| = {mean_error:.4}");
    // Under the binomial model fewer than 0.3 % of estimates fall beyond 3σ; allow 2 %.
    assert!(beyond_3_sigma * 50 <= pairs.len(), "{beyond_3_sigma} of {} beyond 3σ", pairs.len());
}

/// Planted near-duplicates become LSH candidates at the rate the S-curve predicts for their
/// exact Jaccard: per similarity bucket, observed rate = mean predicted ± 4 binomial σ + 0.03.
#[test]
fn planted_near_duplicates_follow_the_s_curve() {
    let lsh = LshParams::for_threshold(0.8, 128, true);
    let hasher = MinHasher::new(128, 42);
    let pairs = planted_pairs(&[0.002, 0.005, 0.01, 0.02, 0.03, 0.04, 0.05, 0.06, 0.08, 0.1]);
    let buckets = [(0.45, 0.6), (0.6, 0.7), (0.7, 0.8), (0.8, 0.9), (0.9, 1.01)];
    let mut stats = vec![(0usize, 0.0f64, 0.0f64, 0usize); buckets.len()];
    let (mut keys_a, mut keys_b) = (Vec::new(), Vec::new());
    for (a, b, j) in &pairs {
        let Some(bucket) = buckets.iter().position(|&(lo, hi)| *j >= lo && *j < hi) else { continue };
        lsh.band_keys(&signature(&hasher, a), &mut keys_a);
        lsh.band_keys(&signature(&hasher, b), &mut keys_b);
        let candidate = keys_a.iter().zip(&keys_b).any(|(x, y)| x == y);
        let p = lsh.candidate_probability(*j);
        let s = &mut stats[bucket];
        s.0 += 1;
        s.1 += p;
        s.2 += p * (1.0 - p);
        s.3 += usize::from(candidate);
    }
    for ((lo, hi), (n, p_sum, var_sum, hits)) in buckets.iter().zip(stats) {
        assert!(n >= 30, "bucket [{lo}, {hi}) has only {n} pairs");
        let predicted = p_sum / n as f64;
        let observed = hits as f64 / n as f64;
        let tolerance = 4.0 * var_sum.sqrt() / n as f64 + 0.03;
        assert!(
            (observed - predicted).abs() <= tolerance,
            "J in [{lo}, {hi}): {hits}/{n} = {observed:.3} candidates, S-curve predicts {predicted:.3} ± {tolerance:.3}"
        );
    }
}

fn engine_config(verify: bool) -> DedupConfig {
    DedupConfig { verify, bands: Some(2), rows: Some(2), num_perm: 4, ..DedupConfig::default() }
}

proptest! {
    /// Whatever the keys, every cluster keeps exactly one member, every exact-key group keeps
    /// at most one, and the keeper is the longest, then the smallest id.
    #[test]
    fn every_cluster_keeps_exactly_one(
        docs in prop::collection::vec((0u8..6, 0u64..4, 0u64..4, 1u64..50, any::<bool>()), 1..60),
    ) {
        let config = DedupConfig { max_cluster_size: 1000, oversize: OversizePolicy::Dedup, ..engine_config(false) };
        let mut engine = Engine::new(&config);
        for (i, &(exact, band0, band1, bytes, eligible)) in docs.iter().enumerate() {
            let entry = Entry { id: DocId::new(FileIdx(0), i as u32), bytes, scope: 0, exact: u128::from(exact), eligible };
            engine.push(entry, &[band0 + 100, band1 + 200]);
        }
        let candidates = engine.candidates();
        let (verdicts, clusters, report) = engine.resolve(candidates, |_| &[]);
        let mut by_cluster: std::collections::BTreeMap<u64, Vec<usize>> = Default::default();
        for (i, cluster) in clusters.iter().enumerate() {
            match cluster {
                Some(c) => by_cluster.entry(c.get()).or_default().push(i),
                None => prop_assert!(verdicts[i] == Verdict::Kept),
            }
        }
        for members in by_cluster.values() {
            let kept: Vec<usize> = members.iter().copied().filter(|&i| verdicts[i] == Verdict::Kept).collect();
            prop_assert_eq!(kept.len(), 1);
            let best = members.iter().copied().max_by_key(|&i| (docs[i].3, std::cmp::Reverse(i))).unwrap();
            prop_assert_eq!(kept[0], best);
        }
        for exact in 0u8..6 {
            // Two exact groups joined by shared bands keep one member between them.
            let kept = (0..docs.len()).filter(|&i| docs[i].4 && docs[i].0 == exact && verdicts[i] == Verdict::Kept).count();
            prop_assert!(kept <= 1);
        }
        for (i, doc) in docs.iter().enumerate() {
            if !doc.4 {
                prop_assert!(verdicts[i] == Verdict::Kept && clusters[i].is_none());
            }
        }
        let removed = verdicts.iter().filter(|v| **v != Verdict::Kept).count() as u64;
        prop_assert_eq!(removed, report.exact_removed + report.near_removed);
    }
}

/// An oversized cluster is kept whole under `keep_all`, except its exact copies.
#[test]
fn oversized_clusters_keep_all_but_exact_copies() {
    let config = DedupConfig { max_cluster_size: 3, ..engine_config(false) };
    let mut engine = Engine::new(&config);
    for i in 0..6u32 {
        let exact = if i < 2 { 7 } else { u128::from(i) };
        engine.push(Entry { id: DocId::new(FileIdx(0), i), bytes: 10, scope: 0, exact, eligible: true }, &[1, 2]);
    }
    let candidates = engine.candidates();
    let (verdicts, _, report) = engine.resolve(candidates, |_| &[]);
    assert_eq!(report.oversized_clusters, vec![6]);
    assert_eq!(verdicts.iter().filter(|v| **v == Verdict::ExactDup).count(), 1);
    assert_eq!(verdicts.iter().filter(|v| **v == Verdict::NearDup).count(), 0);
}

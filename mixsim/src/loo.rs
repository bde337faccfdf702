//! Leave-one-out reweighting of instruction domains.
//!
//! D + 1 short fine-tunes from one checkpoint: one on every domain (`all`), and one per domain
//! with that domain's weight set to 0 and the others renormalised (`no-<domain>`). Each run is
//! scored on the same metrics. The Δ matrix says what removing a domain costs on each metric,
//! signed so that **positive means the domain helps** (loss rose, or accuracy fell, without it).
//!
//! The rule that turns Δ into weights is ours: MobileLLM-Pro reweights its instruction domains
//! from leave-one-out ablations but does not publish its rule. Per metric, Δ is divided by its
//! root-mean-square over the domains (a scale-free size, so losses and accuracies count alike);
//! a domain's score is the mean of its scaled Δs over the metrics with any signal; then
//!
//! ```text
//! w′_d ∝ w_d · exp(η · score_d)
//! ```
//!
//! normalised to sum 1, and clipped at `max_weight` (the excess shared among the others in
//! proportion to their weights). A domain with score 0 keeps its factor of 1: it moves only by
//! the normalisation, like every domain; when every Δ is 0 nothing moves.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::runs::RunsTable;

/// The index of the run on every domain.
pub const ALL: &str = "all";

/// The index of the run without `domain`.
pub fn without(domain: &str) -> String {
    format!("no-{domain}")
}

/// The D + 1 mixtures: `all` (the base weights, normalised) and each `no-<domain>`.
pub fn plan(domains: &[String], base: &[f64]) -> Result<Vec<(String, Vec<f64>)>> {
    if domains.len() < 2 {
        return Err(Error::Invalid("leave-one-out needs at least two domains".into()));
    }
    if domains.len() != base.len() || base.iter().any(|w| !w.is_finite() || *w < 0.0) {
        return Err(Error::Invalid("one finite, non-negative base weight per domain".into()));
    }
    let normalise = |w: Vec<f64>| -> Result<Vec<f64>> {
        let sum: f64 = w.iter().sum();
        if sum <= 0.0 {
            return Err(Error::Invalid("the base weights leave nothing to train on".into()));
        }
        Ok(w.into_iter().map(|x| x / sum).collect())
    };
    let mut runs = vec![(ALL.to_string(), normalise(base.to_vec())?)];
    for (k, d) in domains.iter().enumerate() {
        let mut w = base.to_vec();
        w[k] = 0.0;
        runs.push((without(d), normalise(w)?));
    }
    Ok(runs)
}

/// Whether a larger value of `metric` is better (accuracies, exact match) or worse (losses).
pub fn higher_is_better(metric: &str) -> bool {
    !metric.contains("loss")
}

/// What removing each domain costs on each metric.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Deltas {
    /// Row order.
    pub domains: Vec<String>,
    /// Column order.
    pub metrics: Vec<String>,
    /// `delta[d][m]`, positive when domain `d` helps metric `m`.
    pub delta: Vec<Vec<f64>>,
}

impl Deltas {
    /// From a runs table holding `all` and every `no-<domain>` run.
    pub fn from_table(table: &RunsTable) -> Result<Deltas> {
        let row = |index: &str| {
            table
                .rows
                .iter()
                .find(|r| r.index == index)
                .ok_or_else(|| Error::Invalid(format!("the leave-one-out table has no run {index:?}")))
        };
        let all = row(ALL)?;
        let mut delta = Vec::new();
        for d in &table.domains {
            let without = row(&without(d))?;
            let signed = table
                .metrics
                .iter()
                .enumerate()
                .map(|(m, name)| {
                    let change = without.metrics[m] - all.metrics[m];
                    // `+ 0.0` writes an unchanged metric as 0, not -0.
                    (if higher_is_better(name) { -change } else { change }) + 0.0
                })
                .collect();
            delta.push(signed);
        }
        Ok(Deltas { domains: table.domains.clone(), metrics: table.metrics.clone(), delta })
    }

    /// Each domain's score: its Δs divided by each metric's RMS over domains, averaged over the
    /// metrics whose RMS is not 0.
    pub fn scores(&self) -> Vec<f64> {
        let rms: Vec<f64> = (0..self.metrics.len())
            .map(|m| (self.delta.iter().map(|r| r[m] * r[m]).sum::<f64>() / self.domains.len() as f64).sqrt())
            .collect();
        let live: Vec<usize> = (0..self.metrics.len()).filter(|&m| rms[m] > 0.0 && rms[m].is_finite()).collect();
        self.delta
            .iter()
            .map(|r| {
                if live.is_empty() { 0.0 } else { live.iter().map(|&m| r[m] / rms[m]).sum::<f64>() / live.len() as f64 }
            })
            .collect()
    }
}

/// The reweighting rule's settings.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LooRule {
    /// Step size: a domain one RMS above the others gets e^η times their relative weight.
    pub eta: f64,
    /// No domain's new weight exceeds this.
    pub max_weight: f64,
}

impl Default for LooRule {
    fn default() -> Self {
        LooRule { eta: 0.5, max_weight: 0.6 }
    }
}

/// `w′ ∝ w · exp(η · score)`, normalised, clipped at `max_weight`.
pub fn reweight(base: &[f64], scores: &[f64], rule: LooRule) -> Result<Vec<f64>> {
    if base.len() != scores.len() || base.is_empty() {
        return Err(Error::Invalid("one score per base weight".into()));
    }
    // Scores are a few RMS at most, so η ≤ 10 keeps every factor far from overflow.
    if !(0.0..=10.0).contains(&rule.eta) {
        return Err(Error::Invalid(format!("eta must be in [0, 10], got {}", rule.eta)));
    }
    let live = base.iter().filter(|w| **w > 0.0).count();
    if !(rule.max_weight > 0.0 && rule.max_weight <= 1.0) || rule.max_weight * (live as f64) < 1.0 {
        return Err(Error::Invalid(format!(
            "max_weight {} must be in (0, 1] and at least 1/{live} (the domains with weight)",
            rule.max_weight
        )));
    }
    let raw: Vec<f64> = base.iter().zip(scores).map(|(w, s)| w * (rule.eta * s).exp()).collect();
    let sum: f64 = raw.iter().sum();
    if !(sum > 0.0 && sum.is_finite()) {
        return Err(Error::Invalid("the base weights sum to zero".into()));
    }
    let clipped = clip(raw.into_iter().map(|x| x / sum).collect(), rule.max_weight);
    // Exactly 1 again after the shares moved.
    let total: f64 = clipped.iter().sum();
    Ok(clipped.into_iter().map(|x| x / total).collect())
}

/// Caps every weight at `cap`, handing the excess to the uncapped weights in proportion.
fn clip(mut w: Vec<f64>, cap: f64) -> Vec<f64> {
    let mut capped = vec![false; w.len()];
    loop {
        let over: Vec<usize> = (0..w.len()).filter(|&i| !capped[i] && w[i] > cap).collect();
        if over.is_empty() {
            return w;
        }
        let excess: f64 = over.iter().map(|&i| w[i] - cap).sum();
        for &i in &over {
            w[i] = cap;
            capped[i] = true;
        }
        let free: f64 = (0..w.len()).filter(|&i| !capped[i]).map(|i| w[i]).sum();
        if free <= 0.0 {
            return w;
        }
        for i in (0..w.len()).filter(|&i| !capped[i]) {
            w[i] += excess * w[i] / free;
        }
    }
}

/// Base and new weights by domain.
pub fn by_domain(domains: &[String], w: &[f64]) -> BTreeMap<String, f64> {
    domains.iter().cloned().zip(w.iter().copied()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runs::Run;

    fn table(all: &[f64], without: &[&[f64]]) -> RunsTable {
        let domains: Vec<String> = (0..without.len()).map(|i| format!("d{i}")).collect();
        let mut rows = vec![Run { index: ALL.into(), weights: vec![], scale: vec![], metrics: all.to_vec() }];
        for (d, m) in domains.iter().zip(without) {
            rows.push(Run { index: super::without(d), weights: vec![], scale: vec![], metrics: m.to_vec() });
        }
        RunsTable { domains, scales: vec![], metrics: vec!["x_val_loss".into(), "x_exact_match".into()], rows }
    }

    #[test]
    fn deltas_are_signed_so_positive_helps() {
        // Without d0 the loss rises and accuracy falls: d0 helps on both.
        let t = table(&[2.0, 0.5], &[&[2.5, 0.3], &[1.9, 0.6]]);
        let d = Deltas::from_table(&t).unwrap();
        assert!((d.delta[0][0] - 0.5).abs() < 1e-12 && (d.delta[0][1] - 0.2).abs() < 1e-12);
        assert!(d.delta[1][0] < 0.0 && d.delta[1][1] < 0.0);
        let s = d.scores();
        assert!(s[0] > 0.0 && s[1] < 0.0);
    }

    proptest::proptest! {
        #[test]
        fn reweighting_keeps_a_distribution_and_is_monotone(
            base in proptest::collection::vec(0.01f64..1.0, 2..7),
            scores in proptest::collection::vec(-3.0f64..3.0, 7),
            bump in 0.01f64..2.0,
            k in 0usize..7,
        ) {
            let n = base.len();
            let (scores, k) = (&scores[..n], k % n);
            let rule = LooRule { eta: 0.7, max_weight: 1.0 };
            let w = reweight(&base, scores, rule).unwrap();
            proptest::prop_assert!(w.iter().all(|x| *x >= 0.0));
            proptest::prop_assert!((w.iter().sum::<f64>() - 1.0).abs() < 1e-9);
            // Raising one domain's score never lowers its weight, nor raises another's.
            let mut higher = scores.to_vec();
            higher[k] += bump;
            let w2 = reweight(&base, &higher, rule).unwrap();
            proptest::prop_assert!(w2[k] > w[k] - 1e-12);
            for i in (0..n).filter(|&i| i != k) {
                proptest::prop_assert!(w2[i] <= w[i] + 1e-12);
            }
            // A cap holds, and the result still sums to 1.
            let capped = reweight(&base, scores, LooRule { eta: 0.7, max_weight: 0.5 }).unwrap();
            proptest::prop_assert!(capped.iter().all(|x| *x <= 0.5 + 1e-12));
            proptest::prop_assert!((capped.iter().sum::<f64>() - 1.0).abs() < 1e-9);
        }
    }

    #[test]
    fn zero_deltas_move_nothing() {
        let base = [0.5, 0.3, 0.2];
        let t = table(&[2.0, 0.5], &[&[2.0, 0.5], &[2.0, 0.5], &[2.0, 0.5]]);
        let scores = Deltas::from_table(&t).unwrap().scores();
        assert_eq!(scores, [0.0, 0.0, 0.0]);
        assert_eq!(reweight(&base, &scores, LooRule::default()).unwrap(), base);
        // A domain with Δ = 0 among others that move keeps its factor of 1: only the
        // normalisation moves it, and it stays between the one that gained and the one that lost.
        let w = reweight(&base, &[1.0, 0.0, -1.0], LooRule { eta: 0.5, max_weight: 1.0 }).unwrap();
        let z: f64 = 0.5 * 0.5f64.exp() + 0.3 + 0.2 * (-0.5f64).exp();
        assert!((w[1] - 0.3 / z).abs() < 1e-12);
        assert!(w[0] / 0.5 > w[1] / 0.3 && w[1] / 0.3 > w[2] / 0.2);
    }

    #[test]
    fn plan_differs_only_in_the_removed_domain() {
        let domains: Vec<String> = ["a", "b", "c"].iter().map(|s| s.to_string()).collect();
        let runs = plan(&domains, &[0.5, 0.3, 0.2]).unwrap();
        assert_eq!(runs.len(), 4);
        for (k, (index, w)) in runs.iter().enumerate().skip(1) {
            assert_eq!(index, &without(&domains[k - 1]));
            assert_eq!(w[k - 1], 0.0);
            // The others keep their ratios to each other.
            let others: Vec<usize> = (0..3).filter(|&i| i != k - 1).collect();
            let (i, j) = (others[0], others[1]);
            assert!((w[i] / w[j] - runs[0].1[i] / runs[0].1[j]).abs() < 1e-12);
        }
    }
}

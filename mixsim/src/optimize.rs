//! Minimising a predicted objective over the capped simplex.
//!
//! Surrogates include trees (piecewise constant, no gradient), so the search is derivative
//! free: score many Dirichlet draws around the prior plus the anchors (RegMix's simulation
//! step), then polish the best few by moving weight between pairs of domains with a shrinking
//! step, always inside the bounds. Deterministic in the seed.

use crate::rng::SplitMix64;
use crate::simplex;

/// Search settings.
#[derive(Debug, Clone, PartialEq)]
pub struct SearchConfig {
    /// Random candidates scored.
    pub candidates: usize,
    /// Best candidates polished by pairwise moves.
    pub polish: usize,
    /// Seed of the candidate draws.
    pub seed: u64,
}

impl Default for SearchConfig {
    fn default() -> Self {
        SearchConfig { candidates: 20_000, polish: 4, seed: 7 }
    }
}

/// The bounds, the prior and the anchors the search starts from.
pub struct Space<'a> {
    /// Lower bound per domain.
    pub lo: &'a [f64],
    /// Upper bound per domain.
    pub hi: &'a [f64],
    /// Centre of the random draws.
    pub prior: &'a [f64],
    /// Mixtures always scored (baselines, the prior).
    pub anchors: &'a [Vec<f64>],
}

/// The feasible mixture with the lowest `objective` found, and its value.
pub fn minimise(space: &Space<'_>, objective: &dyn Fn(&[f64]) -> f64, config: &SearchConfig) -> (Vec<f64>, f64) {
    // A surrogate that overflows somewhere must not win there: NaN sorts anywhere (a negative
    // NaN first), so every non-finite value counts as the worst.
    let objective = |w: &[f64]| Some(objective(w)).filter(|v| v.is_finite()).unwrap_or(f64::INFINITY);
    let objective = &objective;
    let (lo, hi) = (space.lo, space.hi);
    let mut rng = SplitMix64::new(config.seed);
    let mut scored: Vec<(f64, Vec<f64>)> = Vec::with_capacity(config.candidates + space.anchors.len());
    for anchor in space.anchors {
        let w = simplex::project(anchor, lo, hi);
        scored.push((objective(&w), w));
    }
    let schedule = crate::design::DesignConfig::DEFAULT_CONCENTRATIONS;
    for i in 0..config.candidates {
        let c = schedule[i % schedule.len()];
        let w = simplex::project(&crate::design::draw_around(&mut rng, space.prior, hi, c), lo, hi);
        scored.push((objective(&w), w));
    }
    scored.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mut best = scored[0].clone();
    for (value, start) in scored.into_iter().take(config.polish.max(1)) {
        let (w, v) = polish(start, value, lo, hi, objective);
        if v < best.0 {
            best = (v, w);
        }
    }
    (best.1, best.0)
}

/// Pairwise coordinate descent: move `step` of weight from domain `i` to `j` when that lowers
/// the objective; halve the step when no move helps.
fn polish(
    mut w: Vec<f64>,
    mut value: f64,
    lo: &[f64],
    hi: &[f64],
    objective: &dyn Fn(&[f64]) -> f64,
) -> (Vec<f64>, f64) {
    let n = w.len();
    let mut step: f64 = 0.05;
    while step > 1e-4 {
        let mut improved = false;
        for i in 0..n {
            for j in 0..n {
                let delta = step.min(w[i] - lo[i]).min(hi[j] - w[j]);
                if i == j || delta <= 1e-12 {
                    continue;
                }
                let mut trial = w.clone();
                trial[i] -= delta;
                trial[j] += delta;
                let v = objective(&trial);
                if v < value - 1e-12 {
                    (w, value, improved) = (trial, v, true);
                }
            }
        }
        if !improved {
            step *= 0.5;
        }
    }
    (w, value)
}

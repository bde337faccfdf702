//! Swarm design: which mixtures the proxies train on.
//!
//! Dirichlet draws around a prior, cycling through a concentration schedule so the swarm holds
//! both near-prior mixtures (high concentration) and extreme ones (low), each inside the
//! budget's caps and minimum weights. The first runs are the anchors every report compares
//! against (the prior, natural, uniform and UniMax mixtures), so the surrogate is fitted where
//! it is later asked about.

use crate::budget::Budget;
use crate::error::{Error, Result};
use crate::rng::SplitMix64;
use crate::simplex;

/// Redraws before falling back to projecting the last draw onto the caps.
const REJECTION_TRIES: usize = 64;

/// How to draw the swarm.
#[derive(Debug, Clone, PartialEq)]
pub struct DesignConfig {
    /// Number of mixtures, anchors included.
    pub runs: usize,
    /// Centre of the draws, one weight per domain (sums to 1).
    pub prior: Vec<f64>,
    /// Concentration multipliers cycled over the draws: a draw uses `α = c · D · prior`, so
    /// `c = 1` spreads like a uniform Dirichlet around the prior and small `c` gives extremes.
    pub concentrations: Vec<f64>,
    /// Start with the anchor mixtures.
    pub anchors: bool,
    /// Seed of every draw.
    pub seed: u64,
}

impl DesignConfig {
    /// The schedule used when none is given: from near-one-hot to close to the prior.
    pub const DEFAULT_CONCENTRATIONS: [f64; 5] = [0.25, 0.5, 1.0, 2.0, 4.0];
}

/// The swarm's mixtures, each feasible for `budget`; deterministic in the config.
pub fn design(budget: &Budget, config: &DesignConfig) -> Result<Vec<Vec<f64>>> {
    let n = budget.domains.len();
    if config.prior.len() != n || (config.prior.iter().sum::<f64>() - 1.0).abs() > 1e-6 {
        return Err(Error::Invalid(format!("the prior needs {n} weights summing to 1, got {:?}", config.prior)));
    }
    if config.concentrations.is_empty() || config.concentrations.iter().any(|c| c.is_nan() || *c <= 0.0) {
        return Err(Error::Invalid("concentrations must be positive and at least one".into()));
    }
    let (lo, hi) = (budget.lower(), budget.upper());
    let mut runs: Vec<Vec<f64>> = Vec::with_capacity(config.runs);
    if config.anchors {
        runs = anchors(budget, &config.prior);
        runs.truncate(config.runs);
    }
    let mut rng = SplitMix64::new(config.seed);
    let mut draw = 0usize;
    while runs.len() < config.runs {
        let c = config.concentrations[draw % config.concentrations.len()];
        draw += 1;
        let mut w = Vec::new();
        for attempt in 0..=REJECTION_TRIES {
            w = draw_around(&mut rng, &config.prior, &hi, c);
            if simplex::feasible(&w, &lo, &hi, 0.0) {
                break;
            }
            if attempt == REJECTION_TRIES {
                w = simplex::project(&w, &lo, &hi);
            }
        }
        runs.push(w);
    }
    Ok(runs)
}

/// The distinct anchor mixtures a design starts with: the prior, natural, uniform and UniMax,
/// each projected into the budget's bounds.
pub fn anchors(budget: &Budget, prior: &[f64]) -> Vec<Vec<f64>> {
    let (lo, hi) = (budget.lower(), budget.upper());
    let mut out: Vec<Vec<f64>> = Vec::new();
    for anchor in [prior.to_vec(), budget.natural(), budget.uniform(), budget.unimax()] {
        let w = simplex::project(&anchor, &lo, &hi);
        if !out.iter().any(|r| simplex::same(r, &w)) {
            out.push(w);
        }
    }
    out
}

/// One Dirichlet draw with `α = c · D · prior` over the domains that may take weight (`hi > 0`,
/// `D` of them; each prior weight floored at 1e-3 so every α is positive); the rest get 0.
pub(crate) fn draw_around(rng: &mut SplitMix64, prior: &[f64], hi: &[f64], c: f64) -> Vec<f64> {
    let active: Vec<usize> = (0..hi.len()).filter(|&j| hi[j] > 0.0).collect();
    let alpha: Vec<f64> = active.iter().map(|&j| c * active.len() as f64 * prior[j].max(1e-3)).collect();
    let x = rng.dirichlet(&alpha);
    let mut w = vec![0.0; hi.len()];
    active.iter().zip(&x).for_each(|(&j, v)| w[j] = *v);
    w
}

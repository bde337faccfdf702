//! The exponential data-mixing law `y = c + exp(Σ_j t_j w_j)`, fitted with a robust Huber loss.

use serde::{Deserialize, Serialize};

use super::Surrogate;
use super::linear::{Linear, solve};
use crate::rng::SplitMix64;

/// Ye et al.'s law. Weights sum to one, so an `exp(a)` scale folds into the `t_j`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MixingLaw {
    /// Irreducible loss `c`.
    pub offset: f64,
    /// One exponent coefficient per domain.
    pub exponents: Vec<f64>,
    /// Restarts tried; the best Huber loss wins.
    pub restarts: usize,
    /// Seed for the restart perturbations.
    pub seed: u64,
}

impl Default for MixingLaw {
    fn default() -> Self {
        MixingLaw { offset: 0.0, exponents: Vec::new(), restarts: 12, seed: 0x6d69_786c_6177 }
    }
}

const MAX_ITERATIONS: usize = 200;

fn law(offset: f64, exponents: &[f64], w: &[f64]) -> f64 {
    offset + exponents.iter().zip(w).map(|(t, w)| t * w).sum::<f64>().exp()
}

fn huber(r: f64, delta: f64) -> f64 {
    if r.abs() <= delta { 0.5 * r * r } else { delta * (r.abs() - 0.5 * delta) }
}

fn total_loss(params: &[f64], x: &[Vec<f64>], y: &[f64], delta: f64) -> f64 {
    x.iter().zip(y).map(|(w, &t)| huber(t - law(params[0], &params[1..], w), delta)).sum()
}

/// Levenberg–Marquardt on the Huber loss via iteratively reweighted least squares: each step
/// is Gauss–Newton with weights `min(1, δ/|r|)`, damped until the loss drops.
fn refine(mut params: Vec<f64>, x: &[Vec<f64>], y: &[f64], delta: f64) -> (Vec<f64>, f64) {
    let p = params.len();
    let mut loss = total_loss(&params, x, y, delta);
    let mut damping = 1e-3;
    for _ in 0..MAX_ITERATIONS {
        let mut jtj = vec![vec![0.0; p]; p];
        let mut jtr = vec![0.0; p];
        for (w, &target) in x.iter().zip(y) {
            let e = params[1..].iter().zip(w).map(|(t, w)| t * w).sum::<f64>().exp();
            let r = target - (params[0] + e);
            let weight = if r.abs() <= delta { 1.0 } else { delta / r.abs() };
            let grad: Vec<f64> = std::iter::once(1.0).chain(w.iter().map(|w| e * w)).collect();
            for i in 0..p {
                jtr[i] += weight * grad[i] * r;
                for j in 0..p {
                    jtj[i][j] += weight * grad[i] * grad[j];
                }
            }
        }
        let mut improved = false;
        while damping < 1e10 {
            let mut damped = jtj.clone();
            for (i, row) in damped.iter_mut().enumerate() {
                row[i] += damping * (jtj[i][i] + 1e-12);
            }
            if let Some(step) = solve(damped, jtr.clone()) {
                let candidate: Vec<f64> = params.iter().zip(&step).map(|(a, s)| a + s).collect();
                let candidate_loss = total_loss(&candidate, x, y, delta);
                if candidate_loss.is_finite() && candidate_loss < loss {
                    let relative = (loss - candidate_loss) / loss.max(1e-300);
                    params = candidate;
                    loss = candidate_loss;
                    damping = (damping * 0.3).max(1e-12);
                    improved = relative > 1e-12;
                    break;
                }
            }
            damping *= 10.0;
        }
        if !improved {
            break;
        }
    }
    (params, loss)
}

impl Surrogate for MixingLaw {
    fn fit(&mut self, x: &[Vec<f64>], y: &[f64]) {
        let min_y = y.iter().copied().fold(f64::INFINITY, f64::min);
        let max_y = y.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let span = (max_y - min_y).max(1e-9);
        // δ from the spread of y: residuals beyond ~5% of the range count linearly, so a few
        // diverged proxy runs cannot drag the fit.
        let delta = 0.05 * span;
        let mut rng = SplitMix64::new(self.seed);
        let mut best: Option<(Vec<f64>, f64)> = None;
        for restart in 0..self.restarts.max(1) {
            // Start from a guess of c below every observation, then t from a linear fit of
            // log(y − c) on w: the law is exactly linear there, so Gauss–Newton starts close.
            let fraction = [0.5, 0.9, 0.99, 0.2][restart % 4] + 0.05 * (restart / 4) as f64;
            let offset = min_y - fraction.min(0.999) * (min_y.abs().max(span));
            let logs: Vec<f64> = y.iter().map(|t| (t - offset).max(1e-12).ln()).collect();
            let mut start = Linear::default();
            start.fit(x, &logs);
            let mut params = vec![offset];
            params.extend(start.coefficients.iter().map(|t| t + start.intercept));
            if restart >= 4 {
                for p in params[1..].iter_mut() {
                    *p += 0.1 * (rng.next_f64() - 0.5);
                }
            }
            let (params, loss) = refine(params, x, y, delta);
            if best.as_ref().is_none_or(|(_, b)| loss < *b) {
                best = Some((params, loss));
            }
        }
        let (params, _) = best.expect("at least one restart runs");
        self.offset = params[0];
        self.exponents = params[1..].to_vec();
    }

    fn predict(&self, x: &[f64]) -> f64 {
        law(self.offset, &self.exponents, x)
    }

    fn name(&self) -> &'static str {
        "mixing_law"
    }
}

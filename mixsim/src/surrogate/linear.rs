//! Ridge regression on mixture weights, closed form, plus the dense solver the mixing law reuses.

use serde::{Deserialize, Serialize};

use super::Surrogate;

/// `y = b + Σ_j a_j w_j`, fitted by ridge-regularised normal equations.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Linear {
    /// Intercept.
    pub intercept: f64,
    /// One coefficient per domain.
    pub coefficients: Vec<f64>,
}

/// Weights sum to one, so the intercept and the coefficients are collinear; a small ridge
/// term on the coefficients makes the system definite without visibly biasing predictions.
const RIDGE_LAMBDA: f64 = 1e-6;

impl Surrogate for Linear {
    fn fit(&mut self, x: &[Vec<f64>], y: &[f64]) {
        let d = x.first().map_or(0, Vec::len);
        // Design columns: [1, w_1, ..., w_d].
        let mut ata = vec![vec![0.0; d + 1]; d + 1];
        let mut aty = vec![0.0; d + 1];
        for (row, &target) in x.iter().zip(y) {
            let features: Vec<f64> = std::iter::once(1.0).chain(row.iter().copied()).collect();
            for i in 0..=d {
                aty[i] += features[i] * target;
                for j in 0..=d {
                    ata[i][j] += features[i] * features[j];
                }
            }
        }
        for (i, row) in ata.iter_mut().enumerate().skip(1) {
            row[i] += RIDGE_LAMBDA * x.len() as f64;
        }
        let solution = solve(ata, aty).unwrap_or_else(|| vec![0.0; d + 1]);
        self.intercept = solution[0];
        self.coefficients = solution[1..].to_vec();
    }

    fn predict(&self, x: &[f64]) -> f64 {
        self.intercept + self.coefficients.iter().zip(x).map(|(a, w)| a * w).sum::<f64>()
    }

    fn name(&self) -> &'static str {
        "linear"
    }
}

/// Solves `a · s = b` by Gaussian elimination with partial pivoting; `None` when singular.
pub(crate) fn solve(mut a: Vec<Vec<f64>>, mut b: Vec<f64>) -> Option<Vec<f64>> {
    let n = b.len();
    for col in 0..n {
        let pivot = (col..n).max_by(|&i, &j| a[i][col].abs().total_cmp(&a[j][col].abs()))?;
        if a[pivot][col].abs() < 1e-300 {
            return None;
        }
        a.swap(col, pivot);
        b.swap(col, pivot);
        let (upper, lower) = a.split_at_mut(col + 1);
        let pivot_row = &upper[col];
        for (offset, row) in lower.iter_mut().enumerate() {
            let factor = row[col] / pivot_row[col];
            if factor != 0.0 {
                for (cell, p) in row[col..].iter_mut().zip(&pivot_row[col..]) {
                    *cell -= factor * p;
                }
                b[col + 1 + offset] -= factor * b[col];
            }
        }
    }
    let mut s = vec![0.0; n];
    for row in (0..n).rev() {
        let tail: f64 = (row + 1..n).map(|k| a[row][k] * s[k]).sum();
        s[row] = (b[row] - tail) / a[row][row];
    }
    s.iter().all(|v| v.is_finite()).then_some(s)
}

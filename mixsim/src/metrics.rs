//! Rank and error metrics for surrogate predictions, and seeded k-fold cross-validation.

use serde::Serialize;

use crate::rng::SplitMix64;
use crate::surrogate::Surrogate;

/// Ranks from 1, ties get the average of the ranks they span (so Spearman matches scipy).
fn average_ranks(values: &[f64]) -> Vec<f64> {
    let mut order: Vec<usize> = (0..values.len()).collect();
    order.sort_by(|&a, &b| values[a].total_cmp(&values[b]));
    let mut ranks = vec![0.0; values.len()];
    let mut start = 0;
    while start < order.len() {
        let mut end = start + 1;
        while end < order.len() && values[order[end]] == values[order[start]] {
            end += 1;
        }
        let rank = (start + end + 1) as f64 / 2.0;
        for &i in &order[start..end] {
            ranks[i] = rank;
        }
        start = end;
    }
    ranks
}

/// Pearson correlation; 0 when either side is constant (a constant predictor ranks nothing).
pub fn pearson(a: &[f64], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len(), "pearson needs equal lengths");
    let n = a.len() as f64;
    let (mean_a, mean_b) = (a.iter().sum::<f64>() / n, b.iter().sum::<f64>() / n);
    let (mut cov, mut var_a, mut var_b) = (0.0, 0.0, 0.0);
    for (x, y) in a.iter().zip(b) {
        cov += (x - mean_a) * (y - mean_b);
        var_a += (x - mean_a).powi(2);
        var_b += (y - mean_b).powi(2);
    }
    if var_a == 0.0 || var_b == 0.0 { 0.0 } else { cov / (var_a * var_b).sqrt() }
}

/// Spearman rank correlation with average ranks for ties.
pub fn spearman(a: &[f64], b: &[f64]) -> f64 {
    pearson(&average_ranks(a), &average_ranks(b))
}

/// Mean absolute error.
pub fn mae(a: &[f64], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len(), "mae needs equal lengths");
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).sum::<f64>() / a.len() as f64
}

/// Scores of pooled out-of-fold predictions, and the predictions themselves.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CvReport {
    /// Spearman ρ between predictions and observations.
    pub spearman: f64,
    /// Pearson r.
    pub pearson: f64,
    /// Mean absolute error, in the metric's units.
    pub mae: f64,
    /// Each row's out-of-fold prediction, in the rows' order (what a predicted-vs-actual plot
    /// shows).
    pub predicted: Vec<f64>,
}

impl CvReport {
    /// Scores predictions against observations.
    pub fn score(predicted: &[f64], observed: &[f64]) -> CvReport {
        CvReport {
            spearman: spearman(predicted, observed),
            pearson: pearson(predicted, observed),
            mae: mae(predicted, observed),
            predicted: predicted.to_vec(),
        }
    }
}

/// k-fold CV: rows shuffled by `seed`, each fold predicted by a model fitted on the others;
/// the scores are over all out-of-fold predictions pooled, which is steadier than a fold mean.
pub fn kfold_cv(make: impl Fn() -> Box<dyn Surrogate>, x: &[Vec<f64>], y: &[f64], k: usize, seed: u64) -> CvReport {
    assert!(k >= 2 && k <= x.len(), "k-fold needs 2 <= k <= rows");
    let mut order: Vec<usize> = (0..x.len()).collect();
    SplitMix64::new(seed).shuffle(&mut order);
    let mut predicted = vec![0.0; x.len()];
    for fold in 0..k {
        let (mut train_x, mut train_y, mut held) = (Vec::new(), Vec::new(), Vec::new());
        for (pos, &row) in order.iter().enumerate() {
            if pos % k == fold {
                held.push(row);
            } else {
                train_x.push(x[row].clone());
                train_y.push(y[row]);
            }
        }
        let mut model = make();
        model.fit(&train_x, &train_y);
        for row in held {
            predicted[row] = model.predict(&x[row]);
        }
    }
    CvReport::score(&predicted, y)
}

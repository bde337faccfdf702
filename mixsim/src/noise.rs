//! Seed noise: how far a metric moves when only the training seed changes. A swarm measures it
//! by training its anchor mixtures again with other seeds (`mix swarm --replicates K`); any runs
//! table whose rows repeat a mixture gives the same estimate.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::runs::RunsTable;

/// The pooled within-mixture standard deviation of one quantity.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct SeedNoise {
    /// Standard deviation of one run's value around its mixture's mean.
    pub std: f64,
    /// Degrees of freedom behind it: runs in repeated mixtures minus the number of mixtures.
    pub dof: usize,
    /// Mixtures that were run more than once.
    pub mixtures: usize,
}

/// Pooled standard deviation of `values` within groups of identical `weights` rows (bit-equal:
/// replicates share one designed row); `None` when no mixture repeats.
pub fn pooled(weights: &[Vec<f64>], values: &[f64]) -> Option<SeedNoise> {
    let mut groups: BTreeMap<Vec<u64>, Vec<f64>> = BTreeMap::new();
    for (w, v) in weights.iter().zip(values) {
        groups.entry(w.iter().map(|x| x.to_bits()).collect()).or_default().push(*v);
    }
    let (mut squares, mut dof, mut mixtures) = (0.0, 0usize, 0usize);
    for group in groups.values().filter(|g| g.len() > 1) {
        let mean = group.iter().sum::<f64>() / group.len() as f64;
        squares += group.iter().map(|v| (v - mean).powi(2)).sum::<f64>();
        dof += group.len() - 1;
        mixtures += 1;
    }
    (dof > 0).then(|| SeedNoise { std: (squares / dof as f64).sqrt(), dof, mixtures })
}

/// Seed noise of `Σ weight × metric` over the table's repeated mixtures.
pub fn objective_noise(table: &RunsTable, objective: &[(String, f64)]) -> Result<Option<SeedNoise>> {
    let mut values = vec![0.0; table.rows.len()];
    for (metric, a) in objective {
        let (_, y) = table.xy(metric)?;
        values.iter_mut().zip(&y).for_each(|(v, y)| *v += a * y);
    }
    let weights: Vec<Vec<f64>> = table.rows.iter().map(|r| r.weights.clone()).collect();
    Ok(pooled(&weights, &values))
}

/// Two-sided 95 % quantile of Student's t with `dof` degrees of freedom (table to 30, then the
/// normal's 1.96): few replicates give a wide interval rather than a falsely narrow one.
pub fn t95(dof: usize) -> f64 {
    const TABLE: [f64; 30] = [
        12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145, 2.131,
        2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042,
    ];
    match dof {
        0 => f64::INFINITY,
        d if d <= 30 => TABLE[d - 1],
        _ => 1.96,
    }
}

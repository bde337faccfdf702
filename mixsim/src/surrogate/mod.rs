//! Surrogates: models from mixture weights to one metric, and CV-based choice among them.

mod gbdt;
mod law;
mod linear;

use serde::{Deserialize, Serialize};

pub use gbdt::{Gbdt, GbdtConfig, Node};
pub use law::MixingLaw;
pub use linear::Linear;

use crate::metrics::{CvReport, kfold_cv};

/// A regressor from mixture weights to a metric value.
pub trait Surrogate {
    /// Fits on weight rows `x` and targets `y` (same length, at least one row).
    fn fit(&mut self, x: &[Vec<f64>], y: &[f64]);
    /// Predicts the metric for one weight row.
    fn predict(&self, x: &[f64]) -> f64;
    /// A short stable name, e.g. `gbdt`.
    fn name(&self) -> &'static str;
}

/// Any of our surrogates, as a closed set so a fitted one can be saved and loaded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum AnySurrogate {
    /// Ridge regression.
    Linear(Linear),
    /// Exponential mixing law.
    MixingLaw(MixingLaw),
    /// Gradient-boosted trees.
    Gbdt(Gbdt),
    /// Average of members.
    Ensemble(Ensemble),
}

impl Surrogate for AnySurrogate {
    fn fit(&mut self, x: &[Vec<f64>], y: &[f64]) {
        match self {
            AnySurrogate::Linear(s) => s.fit(x, y),
            AnySurrogate::MixingLaw(s) => s.fit(x, y),
            AnySurrogate::Gbdt(s) => s.fit(x, y),
            AnySurrogate::Ensemble(s) => s.fit(x, y),
        }
    }

    fn predict(&self, x: &[f64]) -> f64 {
        match self {
            AnySurrogate::Linear(s) => s.predict(x),
            AnySurrogate::MixingLaw(s) => s.predict(x),
            AnySurrogate::Gbdt(s) => s.predict(x),
            AnySurrogate::Ensemble(s) => s.predict(x),
        }
    }

    fn name(&self) -> &'static str {
        match self {
            AnySurrogate::Linear(s) => s.name(),
            AnySurrogate::MixingLaw(s) => s.name(),
            AnySurrogate::Gbdt(s) => s.name(),
            AnySurrogate::Ensemble(s) => s.name(),
        }
    }
}

/// Unweighted mean of member predictions: trees and the law err differently on this data.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Ensemble {
    /// Members, each fitted on the same data.
    pub members: Vec<AnySurrogate>,
}

impl Surrogate for Ensemble {
    fn fit(&mut self, x: &[Vec<f64>], y: &[f64]) {
        for member in &mut self.members {
            member.fit(x, y);
        }
    }

    fn predict(&self, x: &[f64]) -> f64 {
        let n = self.members.len().max(1) as f64;
        self.members.iter().map(|m| m.predict(x)).sum::<f64>() / n
    }

    fn name(&self) -> &'static str {
        "ensemble"
    }
}

/// The unfitted candidates `auto` compares, in a fixed order (ties keep the earlier one).
pub fn candidates() -> Vec<AnySurrogate> {
    vec![
        AnySurrogate::Linear(Linear::default()),
        AnySurrogate::MixingLaw(MixingLaw::default()),
        AnySurrogate::Gbdt(Gbdt::default()),
        AnySurrogate::Ensemble(Ensemble {
            members: vec![AnySurrogate::Gbdt(Gbdt::default()), AnySurrogate::MixingLaw(MixingLaw::default())],
        }),
    ]
}

/// Picks the candidate with the best k-fold CV Spearman on `(x, y)` and fits it on all rows.
/// Returns the fitted choice and every candidate's CV report, for the caller to log.
pub fn auto(x: &[Vec<f64>], y: &[f64], k: usize, seed: u64) -> (AnySurrogate, Vec<(String, CvReport)>) {
    let mut reports = Vec::new();
    let mut best: Option<(f64, AnySurrogate)> = None;
    for candidate in candidates() {
        let template = candidate.clone();
        let report = kfold_cv(|| Box::new(template.clone()), x, y, k, seed);
        reports.push((candidate.name().to_string(), report));
        if best.as_ref().is_none_or(|(s, _)| report.spearman > *s) {
            best = Some((report.spearman, candidate));
        }
    }
    let (_, mut chosen) = best.expect("candidates() is not empty");
    chosen.fit(x, y);
    (chosen, reports)
}

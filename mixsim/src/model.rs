//! The fitted-model artifact: surrogate parameters plus domain order and target, saved as JSON.

use std::path::Path;

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::metrics::{CvReport, kfold_cv};
use crate::rng::SplitMix64;
use crate::runs::RunsTable;
use crate::surrogate::{self, AnySurrogate, Surrogate};
use corpus::atomic::write_file;

/// The version [`FittedModel::save`] writes and [`FittedModel::load`] reads.
pub const FORMAT_VERSION: u32 = 1;

/// Which surrogate to fit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SurrogateKind {
    /// Ridge regression.
    Linear,
    /// Exponential mixing law.
    MixingLaw,
    /// Gradient-boosted trees.
    Gbdt,
    /// Mean of trees and the mixing law.
    Ensemble,
    /// Best 5-fold CV Spearman among the above.
    Auto,
}

/// Folds and seed for [`SurrogateKind::Auto`]; fixed so a refit picks the same surrogate.
const AUTO_FOLDS: usize = 5;
const AUTO_SEED: u64 = 17;

/// A fitted surrogate for one target metric, with the domain order its inputs must follow.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FittedModel {
    /// Artifact version; see [`FORMAT_VERSION`].
    pub format_version: u32,
    /// The metric predicted, e.g. `the_pile_pile_cc_val_loss`.
    pub target: String,
    /// Domain names in input order.
    pub domains: Vec<String>,
    /// The surrogate kind and parameters.
    pub surrogate: AnySurrogate,
    /// The same surrogate refitted on bootstrap resamples of the runs: the spread of their
    /// predictions is the uncertainty reported beside each prediction.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub bootstrap: Vec<AnySurrogate>,
}

/// The fewest runs a surrogate is fitted on: each cross-validation fold must leave at least
/// two runs to fit.
pub const MIN_RUNS: usize = 3;

/// Folds of the cross-validation on `runs` runs: [`AUTO_FOLDS`], or leave-one-out when there
/// are fewer runs; an error below [`MIN_RUNS`].
pub fn cv_folds(runs: usize) -> Result<usize> {
    if runs < MIN_RUNS {
        return Err(Error::Invalid(format!(
            "fitting a surrogate needs at least {MIN_RUNS} runs with this metric, the table has {runs}; \
             run a larger swarm (mix swarm --runs N)"
        )));
    }
    Ok(AUTO_FOLDS.min(runs))
}

impl FittedModel {
    /// Fits `kind` on every run of `table` for the metric `target`.
    pub fn fit(table: &RunsTable, target: &str, kind: SurrogateKind) -> Result<FittedModel> {
        Ok(Self::fit_with_cv(table, target, kind)?.0)
    }

    /// Like [`FittedModel::fit`], also returning 5-fold CV scores on the runs: every
    /// candidate's for `Auto` (the choice is the best Spearman), else the chosen kind's.
    pub fn fit_with_cv(
        table: &RunsTable,
        target: &str,
        kind: SurrogateKind,
    ) -> Result<(FittedModel, Vec<(String, CvReport)>)> {
        let (x, y) = table.xy(target)?;
        let k = cv_folds(x.len())?;
        let (surrogate, reports) = match kind {
            SurrogateKind::Auto => surrogate::auto(&x, &y, k, AUTO_SEED),
            other => {
                let template = unfitted(other);
                let report = kfold_cv(|| Box::new(template.clone()), &x, &y, k, AUTO_SEED);
                let mut fitted = template.clone();
                fitted.fit(&x, &y);
                let name = fitted.name().to_string();
                (fitted, vec![(name, report)])
            }
        };
        let model = FittedModel {
            format_version: FORMAT_VERSION,
            target: target.to_string(),
            domains: table.domains.clone(),
            surrogate,
            bootstrap: Vec::new(),
        };
        Ok((model, reports))
    }

    /// Adds `members` copies of the surrogate, each fitted on a resample (with replacement)
    /// of the runs; seeded. Members whose fit predicts non-finite values are left out.
    pub fn with_bootstrap(mut self, table: &RunsTable, members: usize, seed: u64) -> Result<FittedModel> {
        let (x, y) = table.xy(&self.target)?;
        let mut rng = SplitMix64::new(seed);
        // Resamples drawn in order first, so members are the same whatever the thread count.
        let resamples: Vec<Vec<usize>> =
            (0..members).map(|_| (0..x.len()).map(|_| (rng.next_u64() % x.len() as u64) as usize).collect()).collect();
        let fit_one = |rows: &Vec<usize>| {
            let bx: Vec<Vec<f64>> = rows.iter().map(|&r| x[r].clone()).collect();
            let by: Vec<f64> = rows.iter().map(|&r| y[r]).collect();
            let mut member = fresh(self.surrogate.name());
            member.fit(&bx, &by);
            member
        };
        self.bootstrap = resamples.par_iter().map(fit_one).collect();
        // A resample can leave a fit degenerate (too few distinct runs for a law's exponents):
        // such a member predicts non-finite values and would turn every spread into NaN.
        self.bootstrap.retain(|m| x.iter().all(|w| m.predict(w).is_finite()));
        Ok(self)
    }

    /// The name of the fitted surrogate, e.g. `mixing_law`.
    pub fn surrogate_name(&self) -> &'static str {
        self.surrogate.name()
    }

    /// The prediction for one weight row in the model's domain order.
    pub fn predict(&self, weights: &[f64]) -> f64 {
        self.surrogate.predict(weights)
    }

    /// The bootstrap standard deviation for one weight row; `None` without bootstrap members.
    pub fn std(&self, weights: &[f64]) -> Option<f64> {
        if self.bootstrap.len() < 2 {
            return None;
        }
        let p: Vec<f64> = self.bootstrap.iter().map(|m| m.predict(weights)).collect();
        let mean = p.iter().sum::<f64>() / p.len() as f64;
        Some((p.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (p.len() - 1) as f64).sqrt())
    }

    /// Predicts each weight row; `domains` must equal the model's, in order, so a reordered
    /// input file cannot silently feed weights to the wrong coefficients.
    pub fn predict_rows(&self, domains: &[String], rows: &[Vec<f64>]) -> Result<Vec<f64>> {
        if domains != self.domains.as_slice() {
            return Err(Error::DomainMismatch { expected: self.domains.clone(), got: domains.to_vec() });
        }
        Ok(rows.iter().map(|w| self.surrogate.predict(w)).collect())
    }

    /// Like [`FittedModel::predict_rows`], with each prediction's bootstrap std when known.
    pub fn predict_rows_with_std(&self, domains: &[String], rows: &[Vec<f64>]) -> Result<Vec<(f64, Option<f64>)>> {
        let predicted = self.predict_rows(domains, rows)?;
        Ok(predicted.into_iter().zip(rows).map(|(p, w)| (p, self.std(w))).collect())
    }

    /// Writes pretty JSON atomically.
    pub fn save(&self, path: &Path) -> Result<()> {
        let json =
            serde_json::to_vec_pretty(self).map_err(|source| Error::Json { path: path.to_path_buf(), source })?;
        Ok(write_file(path, &json)?)
    }

    /// Reads a model, refusing other format versions before parsing the rest.
    pub fn load(path: &Path) -> Result<FittedModel> {
        let text =
            std::fs::read_to_string(path).map_err(|source| Error::Io { path: path.to_path_buf(), cause: source })?;
        let json = |source| Error::Json { path: path.to_path_buf(), source };
        #[derive(Deserialize)]
        struct Version {
            format_version: u32,
        }
        let version: Version = serde_json::from_str(&text).map_err(json)?;
        if version.format_version != FORMAT_VERSION {
            return Err(Error::FormatVersion {
                path: path.to_path_buf(),
                got: version.format_version,
                expected: FORMAT_VERSION,
            });
        }
        serde_json::from_str(&text).map_err(json)
    }
}

/// A fresh surrogate of a concrete kind (not `Auto`).
fn unfitted(kind: SurrogateKind) -> AnySurrogate {
    fresh(match kind {
        SurrogateKind::Linear => "linear",
        SurrogateKind::MixingLaw => "mixing_law",
        SurrogateKind::Gbdt => "gbdt",
        SurrogateKind::Ensemble | SurrogateKind::Auto => "ensemble",
    })
}

/// A fresh surrogate by its name.
fn fresh(name: &str) -> AnySurrogate {
    surrogate::candidates().into_iter().find(|c| c.name() == name).expect("every name has a candidate")
}

/// Layout version of [`CvFile`].
pub const CV_FORMAT_VERSION: u32 = 1;

/// How well each surrogate behind a proposal predicted the runs it was fitted on, out of fold
/// (`<proposal>.cv.json` beside the proposal): the numbers behind a predicted-vs-observed plot.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CvFile {
    /// Layout version; see [`CV_FORMAT_VERSION`].
    pub format_version: u32,
    /// One entry per objective metric.
    pub metrics: Vec<CvMetric>,
}

/// Cross-validation of the surrogate chosen for one metric.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CvMetric {
    /// The metric, e.g. `books_val_loss`.
    pub metric: String,
    /// The chosen surrogate.
    pub surrogate: String,
    /// Folds (leave-one-out when equal to the runs).
    pub folds: usize,
    /// Spearman ρ of the out-of-fold predictions against the observations.
    pub spearman: f64,
    /// Pearson r of the same.
    pub pearson: f64,
    /// Mean absolute error of the same, in the metric's units.
    pub mae: f64,
    /// Run ids, row by row.
    pub runs: Vec<String>,
    /// Each run's observed value.
    pub observed: Vec<f64>,
    /// Each run's out-of-fold prediction.
    pub predicted: Vec<f64>,
}

impl CvMetric {
    /// The entry for `model`, from the CV reports [`FittedModel::fit_with_cv`] returned.
    pub fn new(table: &RunsTable, model: &FittedModel, reports: &[(String, CvReport)]) -> Result<CvMetric> {
        let (_, observed) = table.xy(&model.target)?;
        let name = model.surrogate_name();
        let report = reports
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, r)| r)
            .ok_or_else(|| Error::Invalid(format!("no cross-validation report for the chosen surrogate {name}")))?;
        Ok(CvMetric {
            metric: model.target.clone(),
            surrogate: name.to_string(),
            folds: cv_folds(observed.len())?,
            spearman: report.spearman,
            pearson: report.pearson,
            mae: report.mae,
            runs: table.rows.iter().map(|r| r.index.clone()).collect(),
            observed,
            predicted: report.predicted.clone(),
        })
    }
}

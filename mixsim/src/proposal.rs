//! Mix proposals: the mixture that minimises a weighted objective over predicted metrics
//! within the budget's caps, rounded to whole quanta of tokens, with its predictions, the
//! baselines predicted the same way, and each domain's utility — written as TOML that the
//! trainer's loader reads directly (`[weights]`, `[max_epochs]`).

use std::collections::BTreeMap;
use std::path::Path;

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::budget::Budget;
use crate::error::{Error, Result};
use crate::model::FittedModel;
use crate::noise::{SeedNoise, t95};
use crate::optimize::{self, SearchConfig, Space};
use crate::rounding::round_tokens;
use crate::simplex;
use crate::surrogate::Surrogate;
use corpus::atomic::write_file;

/// The version [`Proposal::save`] writes.
pub const PROPOSAL_FORMAT_VERSION: u32 = 1;

/// Step of the finite difference behind each domain's marginal utility; coarse enough that a
/// tree surrogate's steps register.
const UTILITY_STEP: f64 = 0.02;

/// What to optimise.
#[derive(Debug, Clone)]
pub struct ProposeConfig {
    /// `(metric, weight)`: the objective is `Σ weight × predicted metric` (lower is better;
    /// give a negative weight to a metric where higher is better, such as accuracy).
    pub objective: Vec<(String, f64)>,
    /// Strength of `KL(w ‖ prior)` added to the objective (0: none).
    pub kl_weight: f64,
    /// The search minimises `objective + risk × its bootstrap std`: far from the swarm the
    /// surrogates disagree, and a proposal should not bet on an extrapolation (0: mean only).
    pub risk: f64,
    /// The prior of the KL term and of the search's draws.
    pub prior: Vec<f64>,
    /// Tokens are rounded to multiples of this.
    pub quantum: u64,
    /// Search settings.
    pub search: SearchConfig,
    /// How the bootstrap members' views become one mixture.
    pub aggregate: Aggregate,
    /// Seed noise of the objective, measured on replicated runs; widens the gains' intervals.
    pub seed_noise: Option<SeedNoise>,
    /// What the predictions are on, in words (e.g. the proxies' size and tokens).
    pub scale: String,
}

/// How the proposal is chosen from the fitted surrogates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Aggregate {
    /// The minimiser of the surrogates' prediction (+ risk × bootstrap std).
    Argmin,
    /// The mean of each bootstrap member's minimiser (bagging). Meant to steady a noisy swarm's
    /// choice; measured on the demo corpus it moved more across swarm seeds than `Argmin`.
    Bagged,
}

impl Aggregate {
    /// The name written in the proposal.
    pub fn name(self) -> &'static str {
        match self {
            Aggregate::Argmin => "argmin",
            Aggregate::Bagged => "bagged",
        }
    }
}

/// Predicted gain of the proposal over a baseline (baseline − proposal on the objective, so
/// positive = the proposal is better), on the scale the surrogates were fitted on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Gain {
    /// The surrogates' predicted gain.
    pub mean: f64,
    /// Bootstrap spread of the gain (member-wise differences: both mixtures seen by one member),
    /// as 1.4826 × the median absolute deviation so one member's wild extrapolation cannot
    /// dominate it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub surrogate_std: Option<f64>,
    /// 95 % interval of the expected gain from the surrogates' uncertainty (the bootstrap refits
    /// on resampled noisy runs, so the seed noise in the swarm is part of it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<[f64; 2]>,
    /// 95 % interval of the difference one run of each mixture would show: surrogate
    /// uncertainty plus twice the measured seed variance, with Student's t on the noise's dof.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub one_run_interval: Option<[f64; 2]>,
    /// Seeds per mixture a paired comparison needs to detect this gain (5 % two-sided, 80 %
    /// power) given the measured seed noise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seeds_for_power: Option<u64>,
    /// `better`, `worse` or `not distinguishable` (the expected-gain interval against 0).
    pub verdict: String,
}

/// A predicted value with its bootstrap spread.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Prediction {
    /// The surrogate's prediction.
    pub mean: f64,
    /// Bootstrap standard deviation, when the model has bootstrap members.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub std: Option<f64>,
    /// `mean ± 1.96 std`, when `std` is known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<[f64; 2]>,
}

/// A baseline mixture predicted like the proposal.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Baseline {
    /// Its weights.
    pub weights: BTreeMap<String, f64>,
    /// Predicted objective.
    pub objective: f64,
    /// Predicted metrics.
    pub predicted: BTreeMap<String, Prediction>,
}

/// The proposal file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Proposal {
    /// See [`PROPOSAL_FORMAT_VERSION`].
    pub format_version: u32,
    /// Training tokens of the target run.
    pub target_tokens: u64,
    /// Token rounding unit.
    pub quantum_tokens: u64,
    /// Metric → weight in the objective.
    pub objective: BTreeMap<String, f64>,
    /// KL strength toward the prior.
    pub kl_weight: f64,
    /// Weight of the objective's bootstrap std in the search.
    pub risk: f64,
    /// Predicted objective at the proposal (mean, without the risk term).
    pub predicted_objective: f64,
    /// Bootstrap std of the objective at the proposal, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub objective_std: Option<f64>,
    /// Metric → surrogate that predicted it.
    pub surrogates: BTreeMap<String, String>,
    /// The mixture (after rounding): token shares by domain.
    pub weights: BTreeMap<String, f64>,
    /// Epoch caps by domain (capped domains only); the trainer checks them.
    pub max_epochs: BTreeMap<String, f64>,
    /// Training tokens per domain at the target budget.
    pub tokens: BTreeMap<String, u64>,
    /// Training tokens each domain has.
    pub available_tokens: BTreeMap<String, u64>,
    /// Epochs per domain at the target budget.
    pub epochs: BTreeMap<String, f64>,
    /// Largest weight each domain's cap allows.
    pub max_weight: BTreeMap<String, f64>,
    /// Predicted metrics at the proposal.
    pub predicted: BTreeMap<String, Prediction>,
    /// Marginal utility per domain: how much the objective falls per unit of weight moved to
    /// the domain (proportionally from the others); positive = worth more.
    pub utility: BTreeMap<String, f64>,
    /// Predicted objective change when the domain is left out (its weight spread over the
    /// rest, caps kept); positive = leaving it out hurts.
    pub leave_one_out: BTreeMap<String, f64>,
    /// `natural`, `uniform`, `unimax` (and `prior` when given), predicted the same way.
    pub baselines: BTreeMap<String, Baseline>,
    /// What the predictions are on: values are on the surrogates' training scale (the proxies),
    /// not the target run's.
    #[serde(default)]
    pub scale: String,
    /// How the mixture was chosen (`argmin` or `bagged`).
    #[serde(default)]
    pub aggregate: String,
    /// Seed noise of the objective, when the runs repeat mixtures.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed_noise: Option<SeedNoise>,
    /// Predicted gain over each baseline, with intervals.
    #[serde(default)]
    pub gains: BTreeMap<String, Gain>,
    /// Std over bootstrap members of each member's own best mixture, by domain: how far the
    /// proposal could move on another swarm of the same size.
    #[serde(default)]
    pub bootstrap_spread: BTreeMap<String, f64>,
}

/// Proposes a mixture for `budget`. `models` must hold one fitted model per objective metric,
/// all over the budget's domains.
pub fn propose(budget: &Budget, models: &[FittedModel], config: &ProposeConfig) -> Result<Proposal> {
    if config.objective.is_empty() {
        return Err(Error::Invalid("the objective names no metric".into()));
    }
    let mut terms = Vec::new();
    for (metric, weight) in &config.objective {
        let model = models
            .iter()
            .find(|m| &m.target == metric)
            .ok_or_else(|| Error::Invalid(format!("no fitted model for objective metric `{metric}`")))?;
        if model.domains != budget.domains {
            return Err(Error::DomainMismatch { expected: budget.domains.clone(), got: model.domains.clone() });
        }
        terms.push((model, *weight));
    }
    let predicted = |w: &[f64]| -> f64 { terms.iter().map(|(m, a)| a * m.predict(w)).sum() };
    let objective = |w: &[f64]| -> f64 { predicted(w) + config.kl_weight * simplex::kl(w, &config.prior) };
    // Bootstrap member b of every metric saw the same resample, so member-wise sums are draws
    // of the whole objective and their spread is its uncertainty.
    let members = terms.iter().map(|(m, _)| m.bootstrap.len()).min().unwrap_or(0);
    let member = |b: usize, w: &[f64]| -> f64 { terms.iter().map(|(m, a)| a * m.bootstrap[b].predict(w)).sum() };
    let objective_std = |w: &[f64]| -> Option<f64> {
        let draws: Vec<f64> = (0..members).map(|b| member(b, w)).collect();
        std_dev(&draws)
    };
    let cautious = |w: &[f64]| objective(w) + config.risk * objective_std(w).unwrap_or(0.0);
    let (lo, hi) = (budget.lower(), budget.upper());
    let baselines = [
        ("natural", budget.natural()),
        ("uniform", budget.uniform()),
        ("unimax", budget.unimax()),
        ("prior", config.prior.clone()),
    ];
    let anchors: Vec<Vec<f64>> = baselines.iter().map(|(_, w)| w.clone()).collect();
    let space = Space { lo: &lo, hi: &hi, prior: &config.prior, anchors: &anchors };
    let member_objective = |b: usize, w: &[f64]| member(b, w) + config.kl_weight * simplex::kl(w, &config.prior);
    let member_best = member_minimisers(&space, members, &member_objective, &config.search);
    let best = match config.aggregate {
        Aggregate::Argmin => optimize::minimise(&space, &cautious, &config.search).0,
        Aggregate::Bagged if member_best.len() >= 2 => {
            let n = budget.domains.len();
            let mean: Vec<f64> =
                (0..n).map(|j| member_best.iter().map(|w| w[j]).sum::<f64>() / member_best.len() as f64).collect();
            // A mean of feasible points is feasible; the projection only absorbs rounding.
            simplex::project(&mean, &lo, &hi)
        }
        Aggregate::Bagged => {
            return Err(Error::Invalid("a bagged proposal needs at least 2 bootstrap members per metric".into()));
        }
    };

    let min_tokens: Vec<u64> = lo.iter().map(|l| (l * budget.target_tokens as f64).ceil() as u64).collect();
    let tokens = round_tokens(&best, budget.target_tokens, config.quantum, &budget.cap_tokens(), &min_tokens)?;
    let total: u64 = tokens.iter().sum();
    let weights: Vec<f64> = tokens.iter().map(|&t| t as f64 / total as f64).collect();

    let predict = |w: &[f64]| -> BTreeMap<String, Prediction> {
        terms.iter().map(|(m, _)| (m.target.clone(), prediction(m.predict(w), m.std(w)))).collect()
    };
    let (utility, leave_one_out) = utilities(&weights, &lo, &hi, &objective);
    let gain = |base: &[f64]| -> Gain {
        let mean = predicted(base) - predicted(&weights);
        let draws: Vec<f64> = (0..members).map(|b| member(b, base) - member(b, &weights)).collect();
        gain_with_noise(mean, robust_std(&draws).map(|(s, n)| (s, n - 1)), config.seed_noise)
    };
    let (mut baseline_table, mut gains) = (BTreeMap::new(), BTreeMap::new());
    for (name, w) in &baselines {
        if *name == "prior" && baselines[..3].iter().any(|(_, b)| simplex::same(b, w)) {
            continue;
        }
        baseline_table.insert(
            name.to_string(),
            Baseline { weights: budget.named(w), objective: objective(w), predicted: predict(w) },
        );
        gains.insert(name.to_string(), gain(w));
    }
    let spread: Vec<f64> = (0..budget.domains.len())
        .map(|j| std_dev(&member_best.iter().map(|w| w[j]).collect::<Vec<_>>()).unwrap_or(0.0))
        .collect();
    let capped = |j: usize| budget.max_epochs[j].map(|c| (budget.domains[j].clone(), c));
    Ok(Proposal {
        format_version: PROPOSAL_FORMAT_VERSION,
        target_tokens: total,
        quantum_tokens: config.quantum,
        objective: config.objective.iter().cloned().collect(),
        kl_weight: config.kl_weight,
        risk: config.risk,
        predicted_objective: objective(&weights),
        objective_std: objective_std(&weights),
        surrogates: terms.iter().map(|(m, _)| (m.target.clone(), m.surrogate_name().to_string())).collect(),
        weights: budget.named(&weights),
        max_epochs: (0..budget.domains.len()).filter_map(capped).collect(),
        tokens: budget.domains.iter().cloned().zip(tokens.iter().copied()).collect(),
        available_tokens: budget.domains.iter().cloned().zip(budget.available.iter().copied()).collect(),
        epochs: budget.named(&budget.epochs(&weights)),
        max_weight: budget.named(&hi),
        predicted: predict(&weights),
        utility: budget.named(&utility),
        leave_one_out: budget.named(&leave_one_out),
        baselines: baseline_table,
        scale: config.scale.clone(),
        aggregate: config.aggregate.name().to_string(),
        seed_noise: config.seed_noise,
        gains,
        bootstrap_spread: if member_best.is_empty() { BTreeMap::new() } else { budget.named(&spread) },
    })
}

/// Sample standard deviation of the finite values (a member that overflows at a point says
/// nothing there); `None` below two.
fn std_dev(values: &[f64]) -> Option<f64> {
    let finite: Vec<f64> = values.iter().copied().filter(|v| v.is_finite()).collect();
    if finite.len() < 2 {
        return None;
    }
    let mean = finite.iter().sum::<f64>() / finite.len() as f64;
    Some((finite.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (finite.len() - 1) as f64).sqrt())
}

/// A standard deviation that one wild member cannot inflate: 1.4826 × the median absolute
/// deviation (equal to the std for normal draws). A mixing law refitted on a resample can
/// extrapolate absurdly outside the swarm (a baseline past a cap), and the plain std of 16
/// members would then be that one member's error. Also returns the count of finite values.
fn robust_std(values: &[f64]) -> Option<(f64, usize)> {
    let mut finite: Vec<f64> = values.iter().copied().filter(|v| v.is_finite()).collect();
    if finite.len() < 2 {
        return None;
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        let n = v.len();
        if n % 2 == 1 { v[n / 2] } else { 0.5 * (v[n / 2 - 1] + v[n / 2]) }
    };
    let centre = median(&mut finite);
    let mut deviations: Vec<f64> = finite.iter().map(|v| (v - centre).abs()).collect();
    Some((1.4826 * median(&mut deviations), finite.len()))
}

/// Two-sided 5 % and 80 % power quantiles of the normal, for the seeds a paired test needs.
const Z_ALPHA: f64 = 1.959_964;
const Z_POWER: f64 = 0.841_621;

/// A gain's intervals and verdict from its surrogate spread (std, dof: members − 1; Student's t,
/// as 16 members estimate a std loosely) and the measured seed noise.
pub fn gain_with_noise(mean: f64, surrogate: Option<(f64, usize)>, noise: Option<SeedNoise>) -> Gain {
    let surrogate_std = surrogate.map(|(s, _)| s);
    let interval = surrogate.map(|(s, dof)| [mean - t95(dof) * s, mean + t95(dof) * s]);
    // One run of each mixture adds the seed variance twice (independent noise per run).
    let one_run_interval = noise.map(|n| {
        let half = t95(n.dof) * (surrogate_std.unwrap_or(0.0).powi(2) + 2.0 * n.std * n.std).sqrt();
        [mean - half, mean + half]
    });
    let seeds_for_power = noise.filter(|n| mean > 0.0 && n.std > 0.0).map(|n| {
        let seeds = (Z_ALPHA + Z_POWER).powi(2) * 2.0 * n.std * n.std / (mean * mean);
        seeds.ceil().clamp(2.0, 1e9) as u64
    });
    let verdict = match interval {
        Some([lo, _]) if lo > 0.0 => "better",
        Some([_, hi]) if hi < 0.0 => "worse",
        Some(_) => "not distinguishable",
        None => "unknown (no bootstrap members)",
    };
    Gain { mean, surrogate_std, interval, one_run_interval, seeds_for_power, verdict: verdict.to_string() }
}

/// Each bootstrap member's own best mixture (a smaller search than the main one), members in
/// parallel; the same whatever the thread count, as each member's search has its own seed.
fn member_minimisers(
    space: &Space<'_>,
    members: usize,
    objective: &(dyn Fn(usize, &[f64]) -> f64 + Sync),
    search: &SearchConfig,
) -> Vec<Vec<f64>> {
    if members < 2 {
        return Vec::new();
    }
    let one = |b: usize| {
        let config = SearchConfig {
            candidates: (search.candidates / 4).max(500),
            polish: 2,
            seed: search.seed.wrapping_add(1 + b as u64),
        };
        let (w, value) = optimize::minimise(space, &|w: &[f64]| objective(b, w), &config);
        value.is_finite().then_some(w)
    };
    // Collected in member order, so the same whatever the thread count.
    let found: Vec<Option<Vec<f64>>> = (0..members).into_par_iter().map(one).collect();
    found.into_iter().flatten().collect()
}

fn prediction(mean: f64, std: Option<f64>) -> Prediction {
    Prediction { mean, std, interval: std.map(|s| [mean - 1.96 * s, mean + 1.96 * s]) }
}

/// Per domain: the marginal utility `−∂f/∂t` along `w + t (e_j − w)`, and the objective change
/// when the domain is dropped.
fn utilities(w: &[f64], lo: &[f64], hi: &[f64], f: &dyn Fn(&[f64]) -> f64) -> (Vec<f64>, Vec<f64>) {
    let base = f(w);
    let n = w.len();
    let mut utility = vec![0.0; n];
    let mut loo = vec![0.0; n];
    for j in 0..n {
        let moved: Vec<f64> =
            (0..n).map(|i| w[i] * (1.0 - UTILITY_STEP) + if i == j { UTILITY_STEP } else { 0.0 }).collect();
        utility[j] = -(f(&moved) - base) / UTILITY_STEP;
        if hi[j] == 0.0 {
            continue;
        }
        let rest = 1.0 - w[j];
        let mut dropped: Vec<f64> = (0..n).map(|i| if i == j || rest <= 0.0 { 0.0 } else { w[i] / rest }).collect();
        let (mut lo_j, mut hi_j) = (lo.to_vec(), hi.to_vec());
        (lo_j[j], hi_j[j]) = (0.0, 0.0);
        if hi_j.iter().sum::<f64>() >= 1.0 && lo_j.iter().sum::<f64>() <= 1.0 {
            dropped = simplex::project(&dropped, &lo_j, &hi_j);
            loo[j] = f(&dropped) - base;
        } else {
            // Without this domain the caps cannot fill the budget: leaving it out is not an option.
            loo[j] = f64::INFINITY;
        }
    }
    (utility, loo)
}

impl Proposal {
    /// Writes the proposal as TOML, atomically.
    pub fn save(&self, path: &Path) -> Result<()> {
        let mut text = String::from(
            "# mixforge mix proposal. `mixforge train --mix THIS` reads [weights] and [max_epochs];\n\
             # `mixforge mix materialize --proposal THIS` writes it out as shards.\n",
        );
        let mut copy = self.clone();
        // TOML has no infinity literal in every reader; an impossible leave-one-out is omitted.
        copy.leave_one_out.retain(|_, v| v.is_finite());
        text.push_str(
            &toml::to_string(&copy).map_err(|e| Error::Toml { path: path.to_path_buf(), message: e.to_string() })?,
        );
        Ok(write_file(path, text.as_bytes())?)
    }

    /// Reads a proposal file.
    pub fn load(path: &Path) -> Result<Proposal> {
        let text =
            std::fs::read_to_string(path).map_err(|source| Error::Io { path: path.to_path_buf(), cause: source })?;
        let toml_err = |e: toml::de::Error| Error::Toml { path: path.to_path_buf(), message: e.to_string() };
        // The version first: a newer layout is refused by its version, not by a missing field.
        #[derive(Deserialize)]
        struct Version {
            format_version: u32,
        }
        let version: Version = toml::from_str(&text).map_err(toml_err)?;
        if version.format_version != PROPOSAL_FORMAT_VERSION {
            return Err(Error::FormatVersion {
                path: path.to_path_buf(),
                got: version.format_version,
                expected: PROPOSAL_FORMAT_VERSION,
            });
        }
        toml::from_str(&text).map_err(toml_err)
    }

    /// `domain,weight,tokens,epochs,utility,leave_one_out` rows, for the reports.
    pub fn utility_csv(&self) -> String {
        let mut out = String::from("domain,weight,tokens,epochs,utility,leave_one_out\n");
        for (d, w) in &self.weights {
            let loo = self.leave_one_out.get(d).map_or(String::new(), |v| v.to_string());
            out.push_str(&format!("{d},{w},{},{},{},{loo}\n", self.tokens[d], self.epochs[d], self.utility[d]));
        }
        out
    }
}

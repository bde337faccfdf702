//! `mixforge merge --search`: choose merge weights on a probe split — validation sequences past
//! the first `--probe-after` of each domain, so never the sequences `eval` scores — by a simplex
//! grid, a greedy soup (the baseline), or the simulator's surrogates: a seeded design of weights
//! is measured, a surrogate is fitted on it (mixsim, with cross-validation), and the weights it
//! predicts best are measured too. Every measured point and the prediction go to
//! `OUT/search.json`.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, Result, bail};
use corpus::shards::Shards;
use mixsim::model::CvMetric;
use mixsim::{FittedModel, RunsTable, SurrogateKind};
use serde::Serialize;
use tch::{Device, Tensor};
use train::data::{Loader, LoaderConfig, Mixture};
use train::merge::Merger;
use train::rng::Rng;

use crate::cli::SearchArg;

/// One measured merge.
#[derive(Debug, Clone, Serialize)]
pub struct Point {
    /// `one-hot`, `grid`, `soup`, `design`, `surrogate`.
    pub kind: String,
    pub weights: Vec<f64>,
    /// Mean over domains of the probe loss.
    pub probe_loss: f64,
    /// The probe loss per domain.
    pub per_domain: BTreeMap<String, f64>,
}

/// `OUT/search.json`.
#[derive(Debug, Serialize)]
struct SearchFile {
    format_version: u32,
    method: String,
    checkpoints: Vec<String>,
    probe_after: usize,
    probe_sequences: usize,
    evaluated: Vec<Point>,
    chosen: Point,
    /// The surrogate's prediction at the chosen weights (surrogate search).
    predicted: Option<f64>,
    /// The probe's domains, in the order of the surrogates below.
    domains: Vec<String>,
    /// Cross-validation of each domain's surrogate on the design (surrogate search).
    cv: Vec<CvMetric>,
}

/// Measures merges on the probe split.
pub struct Probe<'a> {
    merger: &'a Merger,
    tensors: BTreeMap<String, Tensor>,
    seen: BTreeMap<Vec<u64>, Vec<f64>>,
    pub points: Vec<Point>,
}

impl<'a> Probe<'a> {
    /// The probe sequences of `shards` (or the first checkpoint's shards).
    pub fn new(merger: &'a Merger, shards: Option<&Path>, seq_len: usize, after: usize, n: usize) -> Result<Probe<'a>> {
        let dir = shards.unwrap_or(merger.shards());
        let shards = Shards::open(dir).with_context(|| format!("probe shards {}", dir.display()))?;
        let tokenizer = corpus::tokenize::load(&shards.tokenizer_path())?;
        let config = LoaderConfig::evaluation(seq_len, train::data::eos_id(&tokenizer)?);
        let loader = Loader::new(&shards, &Mixture::uniform(&shards), config)?;
        let tensors = train::trainer::window_tensors(&loader, after, n, Device::Cpu);
        if tensors.is_empty() {
            bail!(
                "no probe sequences: the validation split has no sequence past the first {after} of any domain; lower --probe-after or hold out more (val_fraction)"
            );
        }
        Ok(Probe { merger, tensors, seen: BTreeMap::new(), points: Vec::new() })
    }

    /// The probe loss per domain (in domain order) of the merge with `weights`, measured once
    /// per distinct weights.
    pub fn losses(&mut self, kind: &str, weights: &[f64]) -> Result<Vec<f64>> {
        let key: Vec<u64> = weights.iter().map(|w| w.to_bits()).collect();
        if let Some(l) = self.seen.get(&key) {
            return Ok(l.clone());
        }
        let model = self.merger.model(weights, Device::Cpu)?;
        let per_domain = train::trainer::validation_loss(&model, &self.tensors, 8);
        let losses: Vec<f64> = per_domain.values().copied().collect();
        self.seen.insert(key, losses.clone());
        self.points.push(Point {
            kind: kind.to_string(),
            weights: weights.to_vec(),
            probe_loss: mean(&losses),
            per_domain,
        });
        Ok(losses)
    }

    /// The probe's domains, in the order [`Probe::losses`] returns them.
    pub fn domains(&self) -> Vec<String> {
        self.tensors.keys().cloned().collect()
    }
}

fn mean(x: &[f64]) -> f64 {
    x.iter().sum::<f64>() / x.len().max(1) as f64
}

/// Every weight vector on the simplex with coordinates in multiples of 1/`steps`.
pub fn simplex_grid(k: usize, steps: usize) -> Vec<Vec<f64>> {
    fn rec(k: usize, left: usize, steps: usize, prefix: &mut Vec<usize>, out: &mut Vec<Vec<f64>>) {
        if prefix.len() == k - 1 {
            prefix.push(left);
            out.push(prefix.iter().map(|&c| c as f64 / steps as f64).collect());
            prefix.pop();
            return;
        }
        for c in 0..=left {
            prefix.push(c);
            rec(k, left - c, steps, prefix, out);
            prefix.pop();
        }
    }
    let mut out = Vec::new();
    rec(k, steps, steps.max(1), &mut Vec::new(), &mut out);
    out
}

fn one_hot(k: usize, i: usize) -> Vec<f64> {
    (0..k).map(|j| if i == j { 1.0 } else { 0.0 }).collect()
}

/// Dirichlet(1, …, 1) draws: normalised exponentials, seeded.
fn dirichlet(rng: &mut Rng, k: usize) -> Vec<f64> {
    let e: Vec<f64> = (0..k).map(|_| -(1.0 - rng.next_f64()).ln()).collect();
    let sum: f64 = e.iter().sum();
    e.iter().map(|x| x / sum).collect()
}

/// Greedy soup (Wortsman et al. 2022): checkpoints by their own probe loss, each added to the
/// uniform soup when that does not make it worse.
/// Measures a merge: its kind (for the record) and weights → the probe loss per domain.
type Measure<'a> = dyn FnMut(&str, &[f64]) -> Result<Vec<f64>> + 'a;

fn greedy_soup(losses: &mut Measure, k: usize) -> Result<Vec<f64>> {
    let mut loss = |kind: &str, w: &[f64]| losses(kind, w).map(|l| mean(&l));
    let mut alone: Vec<(usize, f64)> =
        (0..k).map(|i| Ok((i, loss("one-hot", &one_hot(k, i))?))).collect::<Result<_>>()?;
    alone.sort_by(|a, b| a.1.total_cmp(&b.1));
    let mut soup = vec![alone[0].0];
    let mut best = alone[0].1;
    let uniform = |members: &[usize]| -> Vec<f64> {
        (0..k).map(|i| if members.contains(&i) { 1.0 / members.len() as f64 } else { 0.0 }).collect()
    };
    for &(i, _) in &alone[1..] {
        let mut trial = soup.clone();
        trial.push(i);
        let l = loss("soup", &uniform(&trial))?;
        if l <= best {
            (soup, best) = (trial, l);
        }
    }
    Ok(uniform(&soup))
}

/// Surrogate search, as a mix proposal is made: a seeded design is measured, one surrogate is
/// fitted per domain's probe loss (each loss falls as its specialist's weight grows, which a
/// mixing law captures; their mean has an interior optimum), and the weights whose predicted
/// mean is lowest are returned with that prediction and the CV of the first domain's fit.
fn surrogate(losses: &mut Measure, k: usize, design: usize, seed: u64) -> Result<(Vec<f64>, f64, Vec<CvMetric>)> {
    let mut rng = Rng::new(seed);
    let mut points: Vec<Vec<f64>> = (0..k).map(|i| one_hot(k, i)).collect();
    points.push(vec![1.0 / k as f64; k]);
    while points.len() < design.max(k + 3) {
        points.push(dirichlet(&mut rng, k));
    }
    let mut rows = Vec::new();
    for (i, w) in points.iter().enumerate() {
        let l = losses("design", w)?;
        rows.push(mixsim::Run { index: format!("m{i:03}"), weights: w.clone(), scale: Vec::new(), metrics: l });
    }
    let metrics: Vec<String> = (0..rows[0].metrics.len()).map(|d| format!("domain{d}_probe_loss")).collect();
    let table = RunsTable { domains: (0..k).map(|i| format!("ckpt{i}")).collect(), scales: Vec::new(), metrics, rows };
    let mut models = Vec::new();
    let mut cv = Vec::new();
    for metric in &table.metrics {
        let (model, reports) = FittedModel::fit_with_cv(&table, metric, SurrogateKind::Auto)?;
        cv.push(CvMetric::new(&table, &model, &reports)?);
        models.push(model);
    }
    let predict = |w: &[f64]| models.iter().map(|m| m.predict(w)).sum::<f64>() / models.len() as f64;
    // The surrogates are cheap: many candidates, the grid and the design among them.
    let mut candidates = simplex_grid(k, 10);
    candidates.extend(points.iter().cloned());
    candidates.extend((0..20_000).map(|_| dirichlet(&mut rng, k)));
    let best = candidates
        .into_iter()
        .map(|w| (predict(&w), w))
        .min_by(|a, b| a.0.total_cmp(&b.0))
        .expect("candidates are not empty");
    Ok((best.1, best.0, cv))
}

/// Runs the search and writes the merge with the chosen weights, and `search.json`.
pub fn search(
    merger: &Merger,
    args: &crate::cli::MergeArgs,
    method: SearchArg,
    names: &[String],
) -> Result<(Vec<f64>, f64)> {
    let k = merger.len();
    let mut probe =
        Probe::new(merger, args.probe_shards.as_deref(), args.probe_seq_len, args.probe_after, args.probe_sequences)?;
    let (mut predicted, mut cv) = (None, Vec::new());
    let chosen = match method {
        SearchArg::Grid => {
            for w in simplex_grid(k, args.grid_steps) {
                probe.losses("grid", &w)?;
            }
            let best = probe.points.iter().min_by(|a, b| a.probe_loss.total_cmp(&b.probe_loss)).expect("a grid point");
            best.weights.clone()
        }
        SearchArg::GreedySoup => greedy_soup(&mut |kind, w| probe.losses(kind, w), k)?,
        SearchArg::Surrogate => {
            let design = args.design.unwrap_or(4 * k + 8);
            let (w, p, c) = surrogate(&mut |kind, w| probe.losses(kind, w), k, design, args.seed)?;
            predicted = Some(p);
            cv = c;
            w
        }
    };
    let loss = mean(&probe.losses("chosen", &chosen)?);
    let kind = probe.points.iter().find(|p| p.weights == chosen).map_or("chosen".to_string(), |p| p.kind.clone());
    let file = SearchFile {
        format_version: 1,
        method: format!("{method:?}").to_lowercase(),
        checkpoints: names.to_vec(),
        probe_after: args.probe_after,
        probe_sequences: args.probe_sequences,
        evaluated: probe.points.clone(),
        chosen: match probe.points.iter().find(|p| p.weights == chosen) {
            Some(p) => Point { kind, ..p.clone() },
            None => Point { kind, weights: chosen.clone(), probe_loss: loss, per_domain: BTreeMap::new() },
        },
        domains: probe.domains(),
        predicted,
        cv,
    };
    std::fs::create_dir_all(&args.out)?;
    corpus::atomic::write_json(&args.out.join("search.json"), &file)?;
    Ok((chosen, loss))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Synthetic per-domain losses a_d·exp(−3 w_d): their mean is lowest where
    /// a_d·e^(−3 w_d) is equal across d, i.e. at w_d = ln(a_d)/3 + c with Σ w = 1.
    const A: [f64; 3] = [1.0, 2.0, 4.0];

    fn losses(w: &[f64]) -> Vec<f64> {
        w.iter().zip(A).map(|(x, a)| a * (-3.0 * x).exp()).collect()
    }

    fn optimum() -> Vec<f64> {
        let c = (1.0 - A.iter().map(|a| a.ln() / 3.0).sum::<f64>()) / 3.0;
        A.iter().map(|a| a.ln() / 3.0 + c).collect()
    }

    #[test]
    fn surrogate_search_finds_a_known_optimum_and_repeats_from_its_seed() {
        let run = |seed| {
            let mut measured = 0;
            let mut f = |_: &str, w: &[f64]| -> Result<Vec<f64>> {
                measured += 1;
                Ok(losses(w))
            };
            let (w, predicted, cv) = surrogate(&mut f, 3, 20, seed).unwrap();
            (w, predicted, cv[0].spearman, measured)
        };
        let (w, predicted, rho, measured) = run(7);
        assert_eq!(measured, 20, "the design only: the pick is measured by the caller");
        let target = optimum();
        let distance: f64 = w.iter().zip(&target).map(|(x, t)| (x - t).abs()).sum();
        assert!(distance < 0.05, "{w:?} is near {target:?}");
        assert!((predicted - mean(&losses(&w))).abs() < 0.01 && rho > 0.9, "predicted {predicted}, ρ {rho}");
        assert_eq!(run(7).0, w, "the same seed, the same weights");
    }

    #[test]
    fn greedy_soup_keeps_only_what_helps() {
        // Checkpoints 0 and 2 are best alone and best together; adding 1 hurts.
        let mut f = |_: &str, w: &[f64]| -> Result<Vec<f64>> {
            Ok(vec![(w[0] - 0.5).powi(2) + (w[2] - 0.5).powi(2) + w[1].powi(2)])
        };
        let soup = greedy_soup(&mut f, 3).unwrap();
        assert_eq!(soup, vec![0.5, 0.0, 0.5]);
    }

    #[test]
    fn the_grid_covers_the_simplex_once() {
        let grid = simplex_grid(3, 4);
        assert_eq!(grid.len(), 15, "C(4 + 2, 2) points");
        assert!(grid.iter().all(|w| (w.iter().sum::<f64>() - 1.0).abs() < 1e-12));
        let mut keys: Vec<String> = grid.iter().map(|w| format!("{w:?}")).collect();
        keys.sort();
        keys.dedup();
        assert_eq!(keys.len(), 15);
    }
}

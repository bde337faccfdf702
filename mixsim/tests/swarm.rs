//! Running a swarm through the proxy trait: bounded parallelism, atomic appends, resume after a
//! failure without rerunning finished runs, and the proposal it leads to.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use mixsim::{
    Budget, DesignConfig, FittedModel, Proposal, ProposeConfig, ProxyJob, ProxyTrainer, RunsTable, SearchConfig,
    SurrogateKind, SwarmDir, SwarmPlan, SwarmProgress, design, propose, simplex,
};

use crate::common::scratch;
use crate::design::demo_like_budget;

/// Per-domain loss `c_j + exp(t_j · w_j)` with a little cross-domain transfer: convex, with a
/// known optimum, so a proposal can be checked against the truth.
pub fn true_losses(w: &[f64]) -> Vec<f64> {
    // Code and wiki matter most: the optimum (~0.55 code, ~0.43 wiki) is far from every baseline.
    let scale = [1.2, 2.0, 2.5, 0.8, 1.6];
    let floor = [3.0, 2.0, 1.5, 3.5, 2.8];
    let amplitude = [0.6, 3.0, 0.4, 0.3, 2.5];
    (0..w.len())
        .map(|j| {
            let transfer: f64 = (0..w.len()).filter(|&k| k != j).map(|k| 0.1 * w[k]).sum();
            floor[j] + amplitude[j] * (-(scale[j] * w[j] + transfer)).exp()
        })
        .collect()
}

pub fn true_objective(w: &[f64]) -> f64 {
    let l = true_losses(w);
    l.iter().sum::<f64>() / l.len() as f64
}

/// A trainer that evaluates the formula, counts calls, and fails on one chosen run.
struct Formula {
    domains: Vec<String>,
    calls: AtomicUsize,
    trained: Mutex<Vec<String>>,
    fail_on: Option<String>,
}

impl ProxyTrainer for Formula {
    fn train(&self, job: &ProxyJob) -> Result<BTreeMap<String, f64>, String> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        self.trained.lock().unwrap().push(job.index.clone());
        if self.fail_on.as_deref() == Some(job.index.as_str()) {
            return Err("out of memory (simulated)".into());
        }
        assert!((job.data_fraction - 0.25).abs() < 1e-12, "repetition-matched: proxy/target tokens");
        let w: Vec<f64> = self.domains.iter().map(|d| job.weights[d]).collect();
        let mut metrics: BTreeMap<String, f64> =
            self.domains.iter().cloned().zip(true_losses(&w)).map(|(d, l)| (format!("{d}_val_loss"), l)).collect();
        metrics.insert("avg_val_loss".into(), true_objective(&w));
        Ok(metrics)
    }

    fn params(&self) -> u64 {
        1000
    }
}

pub struct Quiet;

impl SwarmProgress for Quiet {
    fn finished(&self, _: &mixsim::Run, _: usize, _: usize) {}
}

pub fn plan(budget: &Budget, runs: usize) -> SwarmPlan {
    let config = DesignConfig {
        runs,
        prior: budget.natural(),
        concentrations: DesignConfig::DEFAULT_CONCENTRATIONS.to_vec(),
        anchors: true,
        seed: 11,
    };
    SwarmPlan {
        format_version: mixsim::swarm::PLAN_FORMAT_VERSION,
        domains: budget.domains.clone(),
        proxy_tokens: budget.target_tokens / 4,
        target_tokens: budget.target_tokens,
        seed: 0,
        proxy: serde_json::json!({"model": "formula"}),
        runs: design(budget, &config)
            .unwrap()
            .into_iter()
            .enumerate()
            .map(|(k, w)| (format!("run{k:03}"), w))
            .collect(),
        run_seeds: BTreeMap::new(),
    }
}

fn formula(budget: &Budget, fail_on: Option<&str>) -> Formula {
    Formula {
        domains: budget.domains.clone(),
        calls: AtomicUsize::new(0),
        trained: Mutex::new(Vec::new()),
        fail_on: fail_on.map(String::from),
    }
}

#[test]
fn failed_swarm_resumes_without_rerunning_finished_runs() {
    let budget = demo_like_budget(1_000_000, 4.0, 0.0);
    let plan = plan(&budget, 24);
    let dir = scratch("swarm_resume");
    let swarm = SwarmDir::new(&dir).unwrap();

    let failing = formula(&budget, Some("run010"));
    let err = mixsim::run_swarm(&swarm, &plan, &failing, 2, &Quiet).expect_err("run010 fails");
    assert!(err.to_string().contains("run010") && err.to_string().contains("out of memory"), "{err}");
    let partial = RunsTable::read_csv(&dir.join("runs.csv")).unwrap();
    let finished: Vec<String> = partial.rows.iter().map(|r| r.index.clone()).collect();
    assert!(finished.len() >= 10 && finished.len() < 24, "{finished:?}");
    assert!(!finished.contains(&"run010".to_string()));

    let good = formula(&budget, None);
    let table = mixsim::run_swarm(&swarm, &plan, &good, 2, &Quiet).unwrap();
    assert_eq!(table.rows.len(), 24);
    assert_eq!(good.calls.load(Ordering::SeqCst), 24 - finished.len(), "finished runs were trained again");
    assert!(good.trained.lock().unwrap().iter().all(|i| !finished.contains(i)));

    // The resumed table equals one run without interruption (rows in plan order).
    let fresh_dir = scratch("swarm_fresh");
    let fresh =
        mixsim::run_swarm(&SwarmDir::new(&fresh_dir).unwrap(), &plan, &formula(&budget, None), 1, &Quiet).unwrap();
    assert_eq!(table, fresh);
    assert_eq!(std::fs::read(dir.join("runs.csv")).unwrap(), std::fs::read(fresh_dir.join("runs.csv")).unwrap());
    assert_eq!(table.scales, ["params", "tokens"]);

    // Parquet beside the CSV, same rows and columns.
    let file = std::fs::File::open(dir.join("runs.parquet")).unwrap();
    let reader = parquet::file::reader::SerializedFileReader::new(file).unwrap();
    use parquet::file::reader::FileReader;
    let meta = reader.metadata();
    assert_eq!(meta.file_metadata().num_rows(), 24);
    assert_eq!(meta.file_metadata().schema_descr().num_columns(), 1 + 5 + 2 + 6);

    // A different plan in the same directory is refused instead of mixing two swarms.
    let other = SwarmPlan { proxy_tokens: 1, ..plan.clone() };
    assert!(mixsim::run_swarm(&swarm, &other, &good, 1, &Quiet).is_err());
}

#[test]
fn proposal_beats_baselines_on_the_true_objective_and_respects_caps() {
    let budget = demo_like_budget(1_000_000, 4.0, 0.0);
    let plan = plan(&budget, 32);
    let dir = scratch("swarm_propose");
    let table = mixsim::run_swarm(&SwarmDir::new(&dir).unwrap(), &plan, &formula(&budget, None), 2, &Quiet).unwrap();
    let metrics: Vec<String> = budget.domains.iter().map(|d| format!("{d}_val_loss")).collect();
    let models: Vec<FittedModel> = metrics
        .iter()
        .map(|m| FittedModel::fit(&table, m, SurrogateKind::MixingLaw).unwrap().with_bootstrap(&table, 8, 1).unwrap())
        .collect();
    let config = ProposeConfig {
        objective: metrics.iter().map(|m| (m.clone(), 0.2)).collect(),
        kl_weight: 0.0,
        risk: 1.0,
        prior: budget.natural(),
        quantum: 1000,
        search: SearchConfig { candidates: 5000, ..SearchConfig::default() },
        aggregate: mixsim::Aggregate::Argmin,
        seed_noise: None,
        scale: "formula".into(),
    };
    let proposal = propose(&budget, &models, &config).unwrap();
    let w: Vec<f64> = budget.domains.iter().map(|d| proposal.weights[d]).collect();
    let truth = true_objective(&w);
    for name in ["natural", "uniform", "unimax"] {
        let b: Vec<f64> = budget.domains.iter().map(|d| proposal.baselines[name].weights[d]).collect();
        assert!(truth < true_objective(&b) - 0.05, "proposal {truth} vs {name} {}", true_objective(&b));
    }
    // Close to the best feasible mixture of the true objective (found by brute search).
    let (lo, hi) = (budget.lower(), budget.upper());
    let space = mixsim::optimize::Space { lo: &lo, hi: &hi, prior: &budget.natural(), anchors: &[] };
    let (_, best) = mixsim::optimize::minimise(&space, &true_objective, &SearchConfig::default());
    assert!(truth - best < 0.01, "proposal {truth} vs optimum {best}");
    // Caps hold after rounding; tokens are whole quanta summing to the target.
    for (j, d) in budget.domains.iter().enumerate() {
        assert!(proposal.tokens[d] <= budget.cap_tokens()[j] && proposal.tokens[d].is_multiple_of(1000));
        assert!(proposal.epochs[d] <= 4.0 + 1e-12);
    }
    assert_eq!(proposal.tokens.values().sum::<u64>(), 1_000_000);
    assert!(simplex::feasible(&w, &lo, &hi, 1e-12));
    // Intervals from the bootstrap; utility is largest where the truth's gradient is.
    assert!(proposal.predicted.values().all(|p| p.std.is_some_and(|s| s >= 0.0) && p.interval.is_some()));
    let loo = &proposal.leave_one_out;
    assert!(loo["code"] > 0.05 && loo["wiki"] > 0.05, "dropping code or wiki must hurt: {loo:?}");
    assert!(w[1] > 0.4 && w[4] > 0.3, "{w:?}");
    // A floor keeps every domain in (users' complaint: small domains dropped), still within caps.
    let floored = demo_like_budget(1_000_000, 4.0, 0.02);
    let kept = propose(&floored, &models, &config).unwrap();
    for (j, d) in floored.domains.iter().enumerate() {
        assert!(kept.weights[d] >= 0.02 - 1e-12 && kept.tokens[d] <= floored.cap_tokens()[j], "{d}: {kept:?}");
    }
    // The file round-trips.
    let path = dir.join("proposal.toml");
    proposal.save(&path).unwrap();
    assert_eq!(Proposal::load(&path).unwrap(), proposal);
}

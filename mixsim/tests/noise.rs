//! Seed noise on synthetic truth with known noise: the replicated anchors measure it, the
//! proposal's gain intervals cover what a run would show at the stated rate, and a proposal is
//! the same for the same seed.

use std::collections::BTreeMap;

use mixsim::noise::{objective_noise, pooled};
use mixsim::rng::SplitMix64;
use mixsim::{
    Aggregate, Budget, FittedModel, Proposal, ProposeConfig, ProxyJob, ProxyTrainer, RunsTable, SearchConfig,
    SurrogateKind, SwarmDir, propose,
};

use crate::common::scratch;
use crate::design::demo_like_budget;
use crate::swarm::{Quiet, plan, true_losses, true_objective};

/// The swarm formula plus Gaussian noise of std `sigma` on every per-domain loss, drawn from
/// the run's seed and index (a replicate differs from its anchor only by the seed).
struct Noisy {
    domains: Vec<String>,
    sigma: f64,
    salt: u64,
}

impl ProxyTrainer for Noisy {
    fn train(&self, job: &ProxyJob) -> Result<BTreeMap<String, f64>, String> {
        let w: Vec<f64> = self.domains.iter().map(|d| job.weights[d]).collect();
        let hash = job
            .index
            .bytes()
            .fold(self.salt ^ job.seed.wrapping_mul(0x9e37), |h, b| h.wrapping_mul(0x100_0000_01b3) ^ u64::from(b));
        let mut rng = SplitMix64::new(hash);
        let losses: Vec<f64> = true_losses(&w).iter().map(|l| l + self.sigma * rng.normal()).collect();
        let mut metrics: BTreeMap<String, f64> = self
            .domains
            .iter()
            .cloned()
            .zip(losses.iter().copied())
            .map(|(d, l)| (format!("{d}_val_loss"), l))
            .collect();
        metrics.insert("avg_val_loss".into(), losses.iter().sum::<f64>() / losses.len() as f64);
        Ok(metrics)
    }

    fn params(&self) -> u64 {
        1000
    }
}

/// Every per-domain metric at weight 1/5: the objective's noise is `sigma / √5`.
fn objective(budget: &Budget) -> Vec<(String, f64)> {
    budget.domains.iter().map(|d| (format!("{d}_val_loss"), 0.2)).collect()
}

/// A noisy swarm of `runs` designed mixtures whose 3 anchors run `copies` times in all.
fn noisy_swarm(name: &str, budget: &Budget, runs: usize, copies: usize, sigma: f64, salt: u64) -> RunsTable {
    let mut plan = plan(budget, runs);
    plan.replicate(3, copies);
    let trainer = Noisy { domains: budget.domains.clone(), sigma, salt };
    mixsim::run_swarm(&SwarmDir::new(&scratch(name)).unwrap(), &plan, &trainer, 2, &Quiet).unwrap()
}

fn proposal(budget: &Budget, table: &RunsTable, seed: u64) -> Proposal {
    let objective = objective(budget);
    let models: Vec<FittedModel> = objective
        .iter()
        .map(|(m, _)| {
            FittedModel::fit(table, m, SurrogateKind::MixingLaw).unwrap().with_bootstrap(table, 16, seed).unwrap()
        })
        .collect();
    let config = ProposeConfig {
        seed_noise: objective_noise(table, &objective).unwrap(),
        objective,
        kl_weight: 0.0,
        risk: 0.0,
        prior: budget.natural(),
        quantum: 1000,
        search: SearchConfig { candidates: 2000, polish: 2, seed },
        aggregate: Aggregate::Argmin,
        scale: "synthetic".into(),
    };
    propose(budget, &models, &config).unwrap()
}

#[test]
fn pooled_std_is_the_within_mixture_spread() {
    let a = vec![0.5, 0.5];
    let b = vec![0.2, 0.8];
    let weights = vec![a.clone(), a.clone(), a, b.clone(), b, vec![1.0, 0.0]];
    // Group a: 1, 2, 3 (squares 2); group b: 10, 14 (squares 8); the single run adds nothing.
    let noise = pooled(&weights, &[1.0, 2.0, 3.0, 10.0, 14.0, 99.0]).unwrap();
    assert_eq!((noise.dof, noise.mixtures), (3, 2));
    assert!((noise.std - (10.0f64 / 3.0).sqrt()).abs() < 1e-12);
    assert!(pooled(&[vec![1.0], vec![0.5]], &[1.0, 2.0]).is_none(), "no repeated mixture, no estimate");
}

#[test]
fn replicated_anchors_measure_the_seed_noise() {
    let budget = demo_like_budget(1_000_000, 4.0, 0.0);
    let sigma = 0.1;
    // 3 anchors × 11 runs: 30 degrees of freedom; the estimate's sd is about 13 % of the truth.
    let table = noisy_swarm("noise_measured", &budget, 24, 11, sigma, 1);
    assert_eq!(table.rows.len(), 24 + 3 * 10);
    let noise = objective_noise(&table, &objective(&budget)).unwrap().unwrap();
    assert_eq!((noise.mixtures, noise.dof), (3, 30));
    let truth = sigma * 0.2f64.sqrt();
    assert!((noise.std / truth - 1.0).abs() < 0.35, "measured {} for true {truth}", noise.std);
    // Without noise the replicates agree exactly.
    let quiet = noisy_swarm("noise_zero", &budget, 12, 3, 0.0, 1);
    assert!(objective_noise(&quiet, &objective(&budget)).unwrap().unwrap().std < 1e-12);
}

#[test]
fn gain_intervals_cover_at_the_stated_rate() {
    let budget = demo_like_budget(1_000_000, 4.0, 0.0);
    let sigma = 0.08;
    let sigma_objective = sigma * 0.2f64.sqrt();
    let trials = 30u64;
    let (mut one_run_hits, mut expected_hits, mut total) = (0, 0, 0);
    for trial in 0..trials {
        let table = noisy_swarm(&format!("noise_cover_{trial}"), &budget, 24, 3, sigma, 100 + trial);
        let p = proposal(&budget, &table, trial);
        let w: Vec<f64> = budget.domains.iter().map(|d| p.weights[d]).collect();
        let mut rng = SplitMix64::new(7_000 + trial);
        for (name, gain) in &p.gains {
            let b: Vec<f64> = budget.domains.iter().map(|d| p.baselines[name].weights[d]).collect();
            let truth = true_objective(&b) - true_objective(&w);
            // What a user sees training each mixture once: the truth plus two runs' noise.
            let observed = truth + sigma_objective * std::f64::consts::SQRT_2 * rng.normal();
            let [lo, hi] = gain.one_run_interval.expect("noise is measured");
            one_run_hits += usize::from(lo <= observed && observed <= hi);
            let [lo, hi] = gain.interval.expect("bootstrap members");
            expected_hits += usize::from(lo <= truth && truth <= hi);
            total += 1;
        }
    }
    let one_run = one_run_hits as f64 / total as f64;
    let expected = expected_hits as f64 / total as f64;
    eprintln!("coverage over {total} gains: one run {one_run:.3}, expected {expected:.3}");
    // 95 % intervals over 90 gains: a binomial sd of 2.3 %, so 0.88 is three sds below.
    assert!(one_run >= 0.88, "one-run intervals covered {one_run}");
    assert!(expected >= 0.88, "expected-gain intervals covered {expected}");
}

#[test]
fn proposals_are_the_same_for_the_same_seed() {
    let budget = demo_like_budget(1_000_000, 4.0, 0.0);
    let table = noisy_swarm("noise_same_seed", &budget, 24, 3, 0.05, 3);
    let again = noisy_swarm("noise_same_seed_again", &budget, 24, 3, 0.05, 3);
    assert_eq!(table, again);
    assert_eq!(proposal(&budget, &table, 5), proposal(&budget, &again, 5));
    let p = proposal(&budget, &table, 5);
    assert!(p.seed_noise.is_some() && p.gains.len() == 3 && p.bootstrap_spread.len() == 5, "{p:?}");
}

//! `mixforge mix swarm`: designs the swarm and trains its proxies through
//! `mixsim::ProxyTrainer` wired to `train::proxy`, so mixsim itself never links libtorch.

use std::collections::BTreeMap;
use std::io::Write;

use anyhow::{Context, Result, bail};
use indicatif::ProgressBar;
use mixforge::commands::mix::{AVG_VAL_LOSS, budget, prior};
use mixsim::{DesignConfig, ProxyJob, ProxyTrainer, SwarmDir, SwarmPlan, SwarmProgress};
use train::ModelConfig;
use train::proxy::ProxySpec;

use crate::cli::MixSwarmArgs;

/// Trains proxies with the trainer's proxy API.
struct TchProxy {
    spec: ProxySpec,
    params: u64,
}

impl ProxyTrainer for TchProxy {
    fn train(&self, job: &ProxyJob) -> std::result::Result<BTreeMap<String, f64>, String> {
        let spec = ProxySpec {
            weights: job.weights.clone(),
            tokens: job.tokens,
            data_fraction: job.data_fraction,
            seed: job.seed,
            ..self.spec.clone()
        };
        let result = train::proxy::run(&spec).map_err(|e| e.to_string())?;
        let mut metrics: BTreeMap<String, f64> =
            result.val_loss.iter().map(|(d, loss)| (format!("{d}_val_loss"), *loss)).collect();
        let mean = result.val_loss.values().sum::<f64>() / result.val_loss.len().max(1) as f64;
        metrics.insert(AVG_VAL_LOSS.to_string(), mean);
        metrics.extend(result.tasks.iter().map(|(t, acc)| (format!("{t}_acc"), *acc)));
        Ok(metrics)
    }

    fn params(&self) -> u64 {
        self.params
    }
}

/// One bar for the swarm, its message the last run's average loss.
struct SwarmBar(ProgressBar);

impl SwarmProgress for SwarmBar {
    fn finished(&self, run: &mixsim::Run, done: usize, _total: usize) {
        self.0.set_position(done as u64);
        self.0.set_message(format!("run {} done", run.index));
    }
}

/// `mix swarm`: designs the swarm and trains its proxies (resuming a killed swarm in `--out`).
pub fn swarm(args: &MixSwarmArgs, threads: usize, out: &mut impl Write) -> Result<()> {
    let budget = budget(&args.budget)?;
    let prior = prior(&args.budget.prior, &budget)?;
    if args.proxy_tokens == 0 || args.runs == 0 {
        bail!("--runs and --proxy-tokens must be positive");
    }
    let design = DesignConfig {
        runs: args.runs,
        prior,
        concentrations: args.concentrations.clone(),
        anchors: true,
        seed: args.seed,
    };
    let mixtures = mixsim::design(&budget, &design)?;
    let shards = corpus::shards::Shards::open(&args.budget.shards)?;
    let mut model = ModelConfig::resolve(&args.model)?;
    model.vocab_size = shards.manifest().vocab_size as usize;
    let spec = ProxySpec {
        shards: args.budget.shards.clone(),
        model: model.clone(),
        weights: BTreeMap::new(),
        tokens: args.proxy_tokens,
        seq_len: args.seq_len,
        batch_size: args.batch_size,
        lr: args.lr,
        seed: args.seed,
        eval_sequences: args.eval_sequences,
        tasks: args.task.clone(),
        task_limit: args.task_limit,
        data_fraction: 1.0,
    };
    let mut plan = SwarmPlan {
        format_version: mixsim::swarm::PLAN_FORMAT_VERSION,
        domains: budget.domains.clone(),
        proxy_tokens: args.proxy_tokens,
        target_tokens: budget.target_tokens,
        seed: args.seed,
        proxy: serde_json::to_value(&spec).context("describing the proxy")?,
        runs: mixtures.into_iter().enumerate().map(|(k, w)| (format!("run{k:03}"), w)).collect(),
        run_seeds: BTreeMap::new(),
    };
    let anchors = mixsim::design::anchors(&budget, &design.prior).len().min(args.runs);
    plan.replicate(anchors, args.replicates.max(1));
    let dir = SwarmDir::new(&args.out)?;
    let done = dir.finished()?.map_or(0, |t| t.rows.len());
    // Proxies run in parallel, each on one libtorch thread: more intra-op threads would change
    // the order of float sums, and with it the last digits of every metric.
    let cores = if threads > 0 { threads } else { std::thread::available_parallelism().map_or(1, |n| n.get()) };
    let jobs = if args.jobs == 0 { cores } else { args.jobs }.clamp(1, plan.runs.len());
    tch::set_num_threads(1);
    writeln!(
        out,
        "swarm: {} proxies ({} designed, {} replicates of the {anchors} anchors for seed noise; {} params, {} tokens \
         each, {:.3} of every domain) for a {}-token target, {jobs} at a time; {done} already done",
        plan.runs.len(),
        args.runs,
        plan.runs.len() - args.runs,
        model.param_count(),
        args.proxy_tokens,
        plan.job(0).data_fraction,
        budget.target_tokens
    )?;
    let bar = crate::progress::bar(plan.runs.len() as u64, "proxies", "runs");
    bar.set_position(done as u64);
    let trainer = TchProxy { spec, params: model.param_count() };
    let table = mixsim::run_swarm(&dir, &plan, &trainer, jobs, &SwarmBar(bar.clone()))?;
    bar.finish_and_clear();
    let m = table.metric_position(AVG_VAL_LOSS)?;
    let (best, worst) = table
        .rows
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), r| (lo.min(r.metrics[m]), hi.max(r.metrics[m])));
    writeln!(out, "{} runs → {} (avg_val_loss {best:.4} … {worst:.4})", table.rows.len(), dir.runs_csv().display())?;
    Ok(())
}

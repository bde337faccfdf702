//! Running a swarm: each designed mixture trained by a [`ProxyTrainer`], with bounded
//! parallelism, every finished run appended to the runs table atomically, so a killed swarm
//! resumes where it stopped and never reruns a finished proxy.
//!
//! A swarm directory holds `plan.json` (what is being run; a resume must ask for the same),
//! `design.csv` (the mixtures, RegMix format), and `runs.csv` + `runs.parquet` (finished runs).

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::runs::{Run, RunsTable};
use corpus::atomic::write_file;

/// The version of `plan.json`.
pub const PLAN_FORMAT_VERSION: u32 = 1;

/// One proxy to train.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProxyJob {
    /// The run's id in the runs table.
    pub index: String,
    /// Mixture weights by domain.
    pub weights: BTreeMap<String, f64>,
    /// Training tokens of the proxy.
    pub tokens: u64,
    /// Fraction of each domain's tokens the proxy may read (proxy / target tokens), so it
    /// repeats each domain as often as the target run would.
    pub data_fraction: f64,
    /// Seed of the proxy's initialisation and data order.
    pub seed: u64,
}

/// Trains a proxy on a mixture and reports its metrics (name → value, lower or higher is
/// better as the metric says). The CLI implements it with the trainer; tests with a formula.
pub trait ProxyTrainer: Sync {
    /// Trains one proxy; the error text is shown to the user with the run's index.
    fn train(&self, job: &ProxyJob) -> std::result::Result<BTreeMap<String, f64>, String>;
    /// Parameters of the proxy model, recorded as the runs' scale.
    fn params(&self) -> u64;
}

/// What a swarm runs: its mixtures and the scale of each proxy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SwarmPlan {
    /// See [`PLAN_FORMAT_VERSION`].
    pub format_version: u32,
    /// Domain names, the order of every weight row.
    pub domains: Vec<String>,
    /// Training tokens of each proxy.
    pub proxy_tokens: u64,
    /// Training tokens of the run the swarm simulates.
    pub target_tokens: u64,
    /// Seed of every proxy.
    pub seed: u64,
    /// Free-form description of the proxy (model, sequence length, …), checked on resume.
    pub proxy: serde_json::Value,
    /// `(index, weights)` per run.
    pub runs: Vec<(String, Vec<f64>)>,
    /// Runs trained with another seed than [`SwarmPlan::seed`]: the replicates that measure
    /// seed noise (see [`SwarmPlan::replicate`]).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub run_seeds: BTreeMap<String, u64>,
}

impl SwarmPlan {
    /// The proxy job of run `k`.
    pub fn job(&self, k: usize) -> ProxyJob {
        let (index, weights) = &self.runs[k];
        ProxyJob {
            index: index.clone(),
            weights: self.domains.iter().cloned().zip(weights.iter().copied()).collect(),
            tokens: self.proxy_tokens,
            data_fraction: (self.proxy_tokens as f64 / self.target_tokens as f64).min(1.0),
            seed: self.run_seeds.get(index).copied().unwrap_or(self.seed),
        }
    }

    /// Adds `copies − 1` more runs of each of the first `first` mixtures (the anchors), with
    /// seeds `seed + 1`, `seed + 2`, …: the same mixture trained again, so the spread of their
    /// metrics is the seed noise the surrogates and the proposal's intervals account for.
    pub fn replicate(&mut self, first: usize, copies: usize) {
        let originals: Vec<(String, Vec<f64>)> = self.runs.iter().take(first).cloned().collect();
        for r in 1..copies as u64 {
            for (index, weights) in &originals {
                let name = format!("{index}-seed{}", self.seed + r);
                self.run_seeds.insert(name.clone(), self.seed + r);
                self.runs.push((name, weights.clone()));
            }
        }
    }
}

/// The files of a swarm directory.
pub struct SwarmDir {
    dir: PathBuf,
}

impl SwarmDir {
    /// A swarm directory (created when missing).
    pub fn new(dir: &Path) -> Result<SwarmDir> {
        std::fs::create_dir_all(dir).map_err(|source| Error::Io { path: dir.to_path_buf(), cause: source })?;
        Ok(SwarmDir { dir: dir.to_path_buf() })
    }

    /// `runs.csv`.
    pub fn runs_csv(&self) -> PathBuf {
        self.dir.join("runs.csv")
    }

    /// `plan.json`.
    pub fn plan_path(&self) -> PathBuf {
        self.dir.join("plan.json")
    }

    /// Writes the plan and design, or checks that an existing plan is the same one.
    pub fn start(&self, plan: &SwarmPlan) -> Result<()> {
        let path = self.plan_path();
        if path.exists() {
            let text =
                std::fs::read_to_string(&path).map_err(|source| Error::Io { path: path.clone(), cause: source })?;
            let existing: SwarmPlan =
                serde_json::from_str(&text).map_err(|source| Error::Json { path: path.clone(), source })?;
            if existing != *plan {
                return Err(Error::Invalid(format!(
                    "{} holds a different swarm (other mixtures, scale or proxy); resume it with the same \
                     settings, or use a new --out",
                    path.display()
                )));
            }
            return Ok(());
        }
        let mut design = String::from("index");
        plan.domains.iter().for_each(|d| design.push_str(&format!(",train_{d}")));
        design.push('\n');
        for (index, weights) in &plan.runs {
            design.push_str(index);
            weights.iter().for_each(|w| design.push_str(&format!(",{w}")));
            design.push('\n');
        }
        write_file(&self.dir.join("design.csv"), design.as_bytes())?;
        let json = serde_json::to_vec_pretty(plan).map_err(|source| Error::Json { path: path.clone(), source })?;
        Ok(write_file(&path, &json)?)
    }

    /// The finished runs so far (none before the first finishes).
    pub fn finished(&self) -> Result<Option<RunsTable>> {
        let path = self.runs_csv();
        if !path.exists() {
            return Ok(None);
        }
        RunsTable::read_csv(&path).map(Some)
    }

    fn save(&self, table: &RunsTable) -> Result<()> {
        table.write_csv(&self.runs_csv())?;
        table.write_parquet(&self.dir.join("runs.parquet"))
    }
}

/// Progress of a swarm, for the caller's bar.
pub trait SwarmProgress: Sync {
    /// `done` of `total` runs are finished; `run` just did.
    fn finished(&self, run: &Run, done: usize, total: usize);
}

/// Runs every unfinished run of `plan` with up to `jobs` proxies at once; returns the full
/// table. A failing proxy stops new runs, lets the running ones finish and save, and is
/// reported with its index.
pub fn run_swarm(
    dir: &SwarmDir,
    plan: &SwarmPlan,
    trainer: &dyn ProxyTrainer,
    jobs: usize,
    progress: &dyn SwarmProgress,
) -> Result<RunsTable> {
    dir.start(plan)?;
    let mut table = dir.finished()?.unwrap_or_else(|| RunsTable {
        domains: plan.domains.clone(),
        scales: vec!["params".into(), "tokens".into()],
        metrics: Vec::new(),
        rows: Vec::new(),
    });
    let done: BTreeSet<String> = table.rows.iter().map(|r| r.index.clone()).collect();
    let queue: VecDeque<usize> = (0..plan.runs.len()).filter(|&k| !done.contains(&plan.runs[k].0)).collect();
    let total = plan.runs.len();
    let queue = Mutex::new(queue);
    let table_lock = Mutex::new((&mut table, None::<Error>));
    let stop = AtomicBool::new(false);
    std::thread::scope(|scope| {
        for _ in 0..jobs.max(1) {
            scope.spawn(|| {
                while !stop.load(Ordering::SeqCst) {
                    let Some(k) = queue.lock().expect("queue lock").pop_front() else { break };
                    let job = plan.job(k);
                    let outcome = trainer.train(&job);
                    let mut guard = table_lock.lock().expect("table lock");
                    let (table, error) = &mut *guard;
                    let result = outcome
                        .map_err(|message| Error::Proxy { index: job.index.clone(), message })
                        .and_then(|metrics| append(table, plan, k, trainer.params(), metrics))
                        .and_then(|()| dir.save(table));
                    match result {
                        Ok(()) => progress.finished(table.rows.last().expect("just appended"), table.rows.len(), total),
                        Err(e) => {
                            stop.store(true, Ordering::SeqCst);
                            error.get_or_insert(e);
                        }
                    }
                }
            });
        }
    });
    if let Some(e) = table_lock.into_inner().expect("table lock").1 {
        return Err(e);
    }
    // Runs finish out of order; keep the table in plan order for people reading it.
    let order: BTreeMap<&str, usize> = plan.runs.iter().enumerate().map(|(k, (i, _))| (i.as_str(), k)).collect();
    table.rows.sort_by_key(|r| order.get(r.index.as_str()).copied().unwrap_or(usize::MAX));
    dir.save(&table)?;
    Ok(table)
}

fn append(
    table: &mut RunsTable,
    plan: &SwarmPlan,
    k: usize,
    params: u64,
    metrics: BTreeMap<String, f64>,
) -> Result<()> {
    let (index, weights) = &plan.runs[k];
    if table.metrics.is_empty() && table.rows.is_empty() {
        table.metrics = metrics.keys().cloned().collect();
    }
    let values = table
        .metrics
        .iter()
        .map(|m| {
            metrics.get(m).copied().filter(|v| v.is_finite()).ok_or_else(|| Error::Proxy {
                index: index.clone(),
                message: format!("metric `{m}` is missing or not finite (got {:?})", metrics.get(m)),
            })
        })
        .collect::<Result<Vec<f64>>>()?;
    table.rows.push(Run {
        index: index.clone(),
        weights: weights.clone(),
        scale: vec![params as f64, plan.proxy_tokens as f64],
        metrics: values,
    });
    Ok(())
}

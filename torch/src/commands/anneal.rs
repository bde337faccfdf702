//! `mixforge anneal`: specialists branched from one checkpoint, each annealed briefly (learning
//! rate from its peak to 0, no warm-up) on its own mixture, a bounded number at once. Each
//! specialist is an ordinary training run in `OUT/<name>/`; `OUT/anneal.json` lists them, and a
//! killed anneal resumes without retraining the finished ones.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use corpus::shards::Shards;
use serde::{Deserialize, Serialize};
use train::data::Mixture;

use crate::cli::{AnnealArgs, CapPolicyArg, TeacherPackingArg, TrainArgs};

/// `OUT/anneal.json`.
#[derive(Debug, Serialize, Deserialize)]
struct AnnealRecord {
    format_version: u32,
    init: PathBuf,
    specialists: BTreeMap<String, SpecialistRecord>,
}

/// One specialist: its mixture and, once finished, its result.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct SpecialistRecord {
    weights: BTreeMap<String, f64>,
    finished: bool,
    #[serde(default)]
    val_loss: BTreeMap<String, f64>,
}

/// `base` moved toward `domain` by `tilt` (w' = (1 − tilt) w + tilt e_d), with the domain kept
/// within its epoch cap at `tokens` (the rest spread over the others in proportion).
pub fn tilted(base: &Mixture, domain: &str, tilt: f64, available: &BTreeMap<String, u64>, tokens: u64) -> Mixture {
    let total: f64 = base.weights.values().sum();
    let mut w: BTreeMap<String, f64> =
        base.weights.iter().map(|(d, x)| (d.clone(), (1.0 - tilt) * x / total)).collect();
    *w.entry(domain.to_string()).or_default() += tilt;
    if let (Some(cap), Some(avail)) = (base.max_epochs.get(domain), available.get(domain)) {
        let most = (cap * *avail as f64 / tokens.max(1) as f64).min(1.0);
        let over = w[domain] - most;
        if over > 0.0 {
            let others: f64 = w.iter().filter(|(d, _)| *d != domain).map(|(_, x)| x).sum();
            for (d, x) in w.iter_mut() {
                if d == domain {
                    *x = most;
                } else if others > 0.0 {
                    *x += over * *x / others;
                }
            }
        }
    }
    Mixture { weights: w, max_epochs: base.max_epochs.clone() }
}

fn specialists(args: &AnnealArgs, shards: &Shards) -> Result<Vec<(String, Mixture)>> {
    if !args.specialists.is_empty() {
        return args
            .specialists
            .iter()
            .map(|flag| {
                let Some((name, mix)) = flag.split_once('=') else {
                    bail!("--specialist {flag:?}: expected NAME=MIX (a mixture TOML, natural or uniform)");
                };
                let mixture = match mix {
                    "natural" => Mixture::natural(shards),
                    "uniform" => Mixture::uniform(shards),
                    path => Mixture::from_toml_file(Path::new(path))?,
                };
                corpus::config::check_domain_name(name).map_err(|e| anyhow::anyhow!("--specialist {flag:?}: {e}"))?;
                Ok((name.to_string(), mixture))
            })
            .collect();
    }
    // One per domain: the base mixture tilted toward it.
    let base = match &args.mix {
        None => Mixture::natural(shards),
        Some(p) if p.as_os_str() == "natural" => Mixture::natural(shards),
        Some(p) if p.as_os_str() == "uniform" => Mixture::uniform(shards),
        Some(p) => Mixture::from_toml_file(p)?,
    };
    let available: BTreeMap<String, u64> =
        shards.manifest().domains.iter().map(|(d, s)| (d.clone(), s.train_tokens)).collect();
    let tokens = args.steps.map_or(args.tokens.unwrap_or(0), |s| s * (args.seq_len * args.batch_size) as u64);
    Ok(shards.manifest().domains.keys().map(|d| (d.clone(), tilted(&base, d, args.tilt, &available, tokens))).collect())
}

/// `anneal`: the table of specialists' validation losses goes to `out`.
pub fn anneal(args: &AnnealArgs, threads: usize, out: &mut dyn Write) -> Result<()> {
    let shards = Shards::open(&args.shards)?;
    let plan = specialists(args, &shards)?;
    if plan.is_empty() {
        bail!("no specialists: the shards have no domain and no --specialist was given");
    }
    std::fs::create_dir_all(&args.out).with_context(|| format!("creating {}", args.out.display()))?;
    let record_path = args.out.join("anneal.json");
    let mut record: AnnealRecord = match std::fs::read(&record_path) {
        Ok(bytes) => serde_json::from_slice(&bytes).with_context(|| format!("reading {}", record_path.display()))?,
        Err(_) => AnnealRecord { format_version: 1, init: args.init.clone(), specialists: BTreeMap::new() },
    };
    for (name, mixture) in &plan {
        match record.specialists.get(name) {
            Some(old) if old.weights != mixture.weights => bail!(
                "{}: specialist {name} was started on another mixture; anneal into a new --out",
                record_path.display()
            ),
            Some(_) => {}
            None => {
                record.specialists.insert(
                    name.clone(),
                    SpecialistRecord { weights: mixture.weights.clone(), finished: false, val_loss: BTreeMap::new() },
                );
            }
        }
    }
    corpus::atomic::write_json(&record_path, &record)?;
    let todo: Vec<&(String, Mixture)> = plan.iter().filter(|(n, _)| !record.specialists[n].finished).collect();
    let cores = if threads > 0 { threads } else { std::thread::available_parallelism().map_or(1, |n| n.get()) };
    let jobs = if args.jobs == 0 { cores } else { args.jobs }.clamp(1, todo.len().max(1));
    // libtorch's intra-op threads are per process: the cores are shared out between the jobs.
    tch::set_num_threads((cores / jobs).max(1) as i32);
    eprintln!(
        "annealing {} specialists from {} ({} already finished), {jobs} at a time",
        plan.len(),
        args.init.display(),
        plan.len() - todo.len()
    );
    let record = std::sync::Mutex::new(record);
    let next = std::sync::atomic::AtomicUsize::new(0);
    let failure: std::sync::Mutex<Option<anyhow::Error>> = std::sync::Mutex::new(None);
    std::thread::scope(|scope| {
        for _ in 0..jobs {
            scope.spawn(|| {
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    let Some((name, mixture)) = todo.get(i) else { break };
                    match one(args, name, mixture) {
                        Ok(val_loss) => {
                            let mut r = record.lock().expect("not poisoned");
                            let s = r.specialists.get_mut(name).expect("planned");
                            s.finished = true;
                            s.val_loss = val_loss;
                            if let Err(e) = corpus::atomic::write_json(&record_path, &*r) {
                                failure.lock().expect("not poisoned").get_or_insert(e.into());
                            }
                        }
                        Err(e) => {
                            failure
                                .lock()
                                .expect("not poisoned")
                                .get_or_insert(e.context(format!("specialist {name}")));
                            break;
                        }
                    }
                }
            });
        }
    });
    if let Some(e) = failure.into_inner().expect("not poisoned") {
        return Err(e);
    }
    let record = record.into_inner().expect("not poisoned");
    let domains: Vec<&String> = shards.manifest().domains.keys().collect();
    write!(out, "{:<14}", "specialist")?;
    for d in &domains {
        write!(out, " {d:>10}")?;
    }
    writeln!(out)?;
    for (name, s) in &record.specialists {
        write!(out, "{name:<14}")?;
        for d in &domains {
            write!(out, " {:>10.4}", s.val_loss.get(*d).copied().unwrap_or(f64::NAN))?;
        }
        writeln!(out)?;
    }
    writeln!(out, "specialists → {}/<name>; record → {}", args.out.display(), record_path.display())?;
    Ok(())
}

/// Trains (or resumes) one specialist; returns its validation loss per domain.
fn one(args: &AnnealArgs, name: &str, mixture: &Mixture) -> Result<BTreeMap<String, f64>> {
    let dir = args.out.join(name);
    let mix_path = args.out.join(format!("{name}.mix.toml"));
    corpus::atomic::write_file(&mix_path, toml::to_string(mixture)?.as_bytes())?;
    let resume = train::checkpoint::resolve(&dir).is_ok();
    if !resume && dir.exists() {
        // Killed before its first checkpoint: nothing to keep.
        std::fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))?;
    }
    let train = TrainArgs {
        model: "tiny".into(),
        init: Some(args.init.clone()),
        phase: "anneal".into(),
        shards: args.shards.clone(),
        mix: Some(mix_path),
        steps: args.steps,
        tokens: args.tokens,
        out: dir.clone(),
        teacher: None,
        teacher_cache: None,
        resume,
        batch_size: args.batch_size,
        seq_len: args.seq_len,
        grad_accum: 1,
        lr: args.lr,
        // Annealing: the full learning rate at once, decayed to 0.
        warmup: 0,
        min_lr_ratio: 0.0,
        weight_decay: 0.1,
        grad_clip: 1.0,
        seed: args.seed,
        eval_every: 0,
        eval_sequences: args.eval_sequences,
        checkpoint_every: args.checkpoint_every,
        keep_checkpoints: 1,
        doc_mask: false,
        reset_positions: false,
        rope_theta: None,
        teacher_packing: TeacherPackingArg::Same,
        qat: None,
        fixed_scales: false,
        cap_policy: CapPolicyArg::Warn,
        kd_temperature: 1.0,
        ce_weight: 0.0,
        device: args.device.clone(),
    };
    let mut log = Vec::new();
    let outcome = super::train::train_with(&train, &[], &mut log)?;
    corpus::atomic::write_file(&args.out.join(format!("{name}.log")), &log)?;
    Ok(outcome.val_loss)
}

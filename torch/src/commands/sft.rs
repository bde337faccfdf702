//! `mixforge sft` (instruction tuning) and `mixforge mix loo` (leave-one-out reweighting of
//! instruction domains, its D + 1 fine-tunes run by the swarm runner).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use corpus::instruct::InstructSource;
use mixsim::loo::{self, Deltas, LooRule};
use mixsim::{ProxyJob, ProxyTrainer, RunsTable, SwarmDir, SwarmPlan, SwarmProgress};
use serde::{Deserialize, Serialize};
use tch::Device;
use train::checkpoint;
use train::data::{CapPolicy, LoaderConfig, Mixture};
use train::eval::Item;
use train::optim::AdamWConfig;
use train::sft::{Dataset, DomainCounts, SftData};
use train::trainer::{TrainConfig, Trainer};

use crate::cli::{InstructArgs, MixLooArgs, SftArgs, SftTrainingArgs};

/// What an instruction fine-tune reports (`summary.json`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SftSummary {
    pub steps: u64,
    pub tokens: u64,
    pub final_train_loss: f64,
    /// Cross-entropy per learned (assistant) token of each domain's held-out examples.
    pub val_loss: BTreeMap<String, f64>,
    /// Greedy exact match over each domain's held-out short answers (≤ 16 learned tokens).
    pub exact_match: BTreeMap<String, f64>,
    /// How many held-out short answers each exact match is over.
    pub exact_match_items: BTreeMap<String, usize>,
    /// Task accuracies (`--eval`).
    pub tasks: BTreeMap<String, f64>,
    pub weights: BTreeMap<String, f64>,
    pub data: BTreeMap<String, DomainCounts>,
    /// The `--init` model on the same held-out examples.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub before: Option<Before>,
}

/// A fine-tune's starting model on its held-out examples (`before.json`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Before {
    pub val_loss: BTreeMap<String, f64>,
    pub exact_match: BTreeMap<String, f64>,
}

const BEFORE: &str = "before.json";

/// The instruction sources `--data` and `--sources` name, with absolute paths (a resumed run
/// finds them from anywhere).
pub fn instruct_sources(args: &InstructArgs) -> Result<Vec<InstructSource>> {
    let mut sources: Vec<InstructSource> =
        args.data.iter().map(|s| InstructSource::parse_cli(s).map_err(anyhow::Error::msg)).collect::<Result<_>>()?;
    if let Some(file) = &args.sources {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct File {
            source: Vec<InstructSource>,
        }
        let text = std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
        let parsed: File =
            toml::from_str(&text).with_context(|| format!("{}: expected [[source]] tables", file.display()))?;
        let base = file.parent().unwrap_or(Path::new("."));
        for mut s in parsed.source {
            s.paths = s.paths.iter().map(|p| base.join(p).to_string_lossy().into_owned()).collect();
            sources.push(s);
        }
    }
    if sources.is_empty() {
        bail!("give instruction data: --data DOMAIN=PATH (repeatable) or --sources FILE.toml");
    }
    for s in &mut sources {
        s.paths = s
            .paths
            .iter()
            .map(|p| std::path::absolute(p).map(|a| a.to_string_lossy().into_owned()).unwrap_or_else(|_| p.clone()))
            .collect();
    }
    Ok(sources)
}

/// The tokenizer file of a checkpoint (mixforge run or step directory, or Hugging Face dir).
fn checkpoint_tokenizer(path: &Path) -> Result<PathBuf> {
    let dir = if path.join("config.json").exists() && !path.join("state.json").exists() {
        path.to_path_buf()
    } else {
        checkpoint::resolve(path)?
    };
    let tokenizer = dir.join("tokenizer.json");
    if !tokenizer.exists() {
        bail!("{}: no tokenizer.json beside the weights", dir.display());
    }
    Ok(tokenizer)
}

/// The weights `--mix` names, over the data's domains.
fn mixture(mix: Option<&Path>, data: &Dataset) -> Result<Mixture> {
    Ok(match mix {
        None => data.natural(),
        Some(p) if p.as_os_str() == "natural" => data.natural(),
        Some(p) if p.as_os_str() == "uniform" => data.uniform(),
        Some(path) => Mixture::from_toml_file(path)?,
    })
}

/// A fine-tune's config: the `--init` model with a fresh optimizer on the instruction data.
fn sft_config(
    data: &InstructArgs,
    sources: Vec<InstructSource>,
    t: &SftTrainingArgs,
    mix: Option<&Path>,
) -> Result<(TrainConfig, Dataset)> {
    if t.seq_len == 0 || t.batch_size == 0 {
        bail!("--seq-len and --batch-size must be positive");
    }
    let tokenizer = checkpoint_tokenizer(&data.init)?;
    let dataset = Dataset::load(&sources, &tokenizer, data.val_fraction, t.seq_len + 1)?;
    let (model, _) = crate::commands::train::parent_model(&data.init)?;
    if t.seq_len > model.max_seq_len {
        bail!("--seq-len {} is longer than the model's window ({} tokens)", t.seq_len, model.max_seq_len);
    }
    let eos = train::data::eos_id(&corpus::tokenize::load(&tokenizer)?)?;
    let tokens_per_step = (t.seq_len * t.batch_size) as u64 * t.grad_accum.max(1);
    let steps = match (t.steps, t.tokens) {
        (Some(s), _) => s,
        (None, Some(n)) => n.div_ceil(tokens_per_step).max(1),
        (None, None) => bail!("give --steps or --tokens"),
    };
    let mixture = mixture(mix, &dataset)?;
    let config = TrainConfig {
        model,
        shards: PathBuf::new(),
        mixture,
        loader: LoaderConfig {
            seq_len: t.seq_len,
            batch_size: t.batch_size,
            seed: t.seed,
            doc_mask: true,
            reset_positions: true,
            cap_policy: CapPolicy::Warn,
            eos_id: eos,
            data_fraction: 1.0,
        },
        optim: AdamWConfig {
            lr: t.lr,
            min_lr_ratio: t.min_lr_ratio,
            weight_decay: t.weight_decay,
            warmup_steps: t.warmup,
            grad_clip: t.grad_clip,
            ..AdamWConfig::default()
        },
        steps,
        grad_accum: t.grad_accum,
        eval_every: 0,
        eval_sequences: t.eval_examples,
        checkpoint_every: 0,
        keep_checkpoints: 2,
        teacher: None,
        kd: Default::default(),
        seed: t.seed,
        shards_ref: Default::default(),
        teacher_ref: Default::default(),
        phase: "sft".into(),
        init: Some(checkpoint::Lineage { parents: vec![checkpoint::Parent::of(&data.init, None)?], method: None }),
        teacher_packing: Default::default(),
        teacher_cache: None,
        sft: Some(SftData { sources, val_fraction: data.val_fraction, fingerprint: String::new(), tokenizer }),
    };
    Ok((config, dataset))
}

/// The parts of a config a resumed fine-tune must share with the flags given now.
fn fixed_settings(c: &TrainConfig) -> serde_json::Value {
    let sft = c.sft.as_ref().map(|s| (&s.sources, s.val_fraction));
    serde_json::json!({"mixture": c.mixture, "loader": c.loader, "optim": c.optim, "grad_accum": c.grad_accum,
        "eval_sequences": c.eval_sequences, "sft": sft})
}

/// `sft`: trains (or resumes) an instruction fine-tune and scores it.
pub fn sft(args: &SftArgs, out: &mut dyn Write) -> Result<SftSummary> {
    sft_with(args, instruct_sources(&args.data)?, out)
}

/// [`sft`] on `sources` (the recipe's, or the flags').
pub fn sft_with(args: &SftArgs, sources: Vec<InstructSource>, out: &mut dyn Write) -> Result<SftSummary> {
    let device = train::device::pick(Some(&args.device))?;
    let (mut config, dataset) = sft_config(&args.data, sources, &args.training, args.mix.as_deref())?;
    config.eval_every = args.eval_every;
    config.checkpoint_every = args.checkpoint_every;
    config.keep_checkpoints = args.keep_checkpoints;
    print_data(out, &dataset, &config.mixture)?;
    let resumable = args.resume && checkpoint::resolve(&args.out).is_ok();
    if args.resume && !resumable && args.out.join("metrics.jsonl").exists() {
        eprintln!("{} has no checkpoint yet: starting it again", args.out.display());
        std::fs::remove_file(args.out.join("metrics.jsonl"))?;
    }
    let mut trainer = if resumable {
        let wanted = fixed_settings(&config);
        let t = Trainer::resume_with(&args.out, device, |stored, _| {
            if fixed_settings(stored) != wanted {
                return Err(train::Error::Config(
                    "the data, mixture or training flags differ from the run's: a resumed fine-tune keeps its \
                     settings (only --steps/--tokens may extend it); train into a new --out instead"
                        .into(),
                ));
            }
            if config.steps < stored.steps {
                return Err(train::Error::Config(format!(
                    "--steps/--tokens asks for {} steps, fewer than the run's {}",
                    config.steps, stored.steps
                )));
            }
            stored.steps = config.steps;
            // Cadence may change on resume, as with `train`.
            stored.eval_every = config.eval_every;
            stored.checkpoint_every = config.checkpoint_every;
            stored.keep_checkpoints = config.keep_checkpoints;
            Ok(())
        })
        .with_context(|| format!("resuming {}", args.out.display()))?;
        eprintln!("resuming {} at step {}/{}", args.out.display(), t.step, t.config.steps);
        t
    } else {
        eprintln!(
            "fine-tuning {} parameters for {} steps ({} tokens/step) on {device:?} → {}",
            config.model.param_count(),
            config.steps,
            config.tokens_per_step(),
            args.out.display()
        );
        let t = Trainer::with_data(config, Some(dataset), Some(&args.out), device)?;
        // The starting model on the same held-out examples, for before/after.
        let em = t.exact_match();
        let before = Before { val_loss: t.validate(), exact_match: em.into_iter().map(|(d, (x, _))| (d, x)).collect() };
        corpus::atomic::write_json(&args.out.join(BEFORE), &before)?;
        t
    };
    let outcome = trainer.train(true)?;
    let tasks = score_tasks(&trainer, &read_tasks(&args.eval, args.eval_limit)?)?;
    let mut summary = summarize(&trainer, outcome, tasks);
    summary.before = reports::stages::read_json(&args.out.join(BEFORE)).ok();
    print_summary(out, &summary)?;
    corpus::atomic::write_json(&args.out.join("summary.json"), &summary)?;
    writeln!(out, "checkpoint: {}", checkpoint::resolve(&args.out)?.display())?;
    Ok(summary)
}

fn summarize(trainer: &Trainer, outcome: train::trainer::Outcome, tasks: BTreeMap<String, f64>) -> SftSummary {
    let em = trainer.exact_match();
    let data = match &trainer.loader {
        train::trainer::Source::Sft(l) => l.data().counts(),
        train::trainer::Source::Shards(_) => BTreeMap::new(),
    };
    let total: f64 = trainer.config.mixture.weights.values().sum();
    SftSummary {
        steps: outcome.steps,
        tokens: outcome.tokens,
        final_train_loss: outcome.final_train_loss,
        val_loss: outcome.val_loss,
        exact_match: em.iter().map(|(d, (x, _))| (d.clone(), *x)).collect(),
        exact_match_items: em.iter().map(|(d, (_, n))| (d.clone(), *n)).collect(),
        tasks,
        weights: trainer.config.mixture.weights.iter().map(|(d, w)| (d.clone(), w / total)).collect(),
        data,
        before: None,
    }
}

fn read_tasks(paths: &[PathBuf], limit: Option<usize>) -> Result<Vec<(String, Vec<Item>)>> {
    paths
        .iter()
        .map(|p| {
            let name = p.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default();
            let name = name.split('.').next().unwrap_or_default().to_string();
            Ok((name, train::eval::read_task(p, limit)?))
        })
        .collect()
}

fn score_tasks(trainer: &Trainer, tasks: &[(String, Vec<Item>)]) -> Result<BTreeMap<String, f64>> {
    if tasks.is_empty() {
        return Ok(BTreeMap::new());
    }
    let tokenizer = match &trainer.config.sft {
        Some(s) => corpus::tokenize::load(&s.tokenizer)?,
        None => bail!("not an instruction run"),
    };
    tasks
        .iter()
        .map(|(name, items)| {
            Ok((name.clone(), train::eval::evaluate_chat(&trainer.model, &tokenizer, name, items)?.acc))
        })
        .collect()
}

fn print_data(out: &mut dyn Write, data: &Dataset, mixture: &Mixture) -> Result<()> {
    let total: f64 = mixture.weights.values().sum();
    writeln!(
        out,
        "{:<14} {:>7} {:>9} {:>9} {:>10} {:>9} {:>9} {:>7}",
        "domain", "weight", "train", "held-out", "tokens", "learned", "malformed", "cut"
    )?;
    for (d, c) in data.counts() {
        let w = mixture.weights.get(&d).copied().unwrap_or(0.0) / total;
        writeln!(
            out,
            "{d:<14} {w:>7.3} {:>9} {:>9} {:>10} {:>9} {:>9} {:>7}",
            c.train_examples, c.val_examples, c.train_tokens, c.learned_tokens, c.malformed, c.truncated
        )?;
    }
    for d in &data.domains {
        for m in d.malformed.iter().take(3) {
            writeln!(out, "  malformed {}:{}: {}", m.path.display(), m.line, m.reason)?;
        }
        if d.malformed.len() > 3 {
            writeln!(out, "  … and {} more malformed records in {}", d.malformed.len() - 3, d.name)?;
        }
    }
    Ok(())
}

fn print_summary(out: &mut dyn Write, s: &SftSummary) -> Result<()> {
    writeln!(out, "fine-tuned {} steps, {} tokens; final train loss {:.4}", s.steps, s.tokens, s.final_train_loss)?;
    writeln!(out, "  {:<14} {:>12} {:>12}", "domain", "val loss", "exact match")?;
    for (d, loss) in &s.val_loss {
        let em = match (s.exact_match.get(d), s.exact_match_items.get(d)) {
            (Some(x), Some(n)) => format!("{x:.3} of {n}"),
            _ => "-".into(),
        };
        writeln!(out, "  {d:<14} {loss:>12.4} {em:>12}")?;
    }
    for (t, acc) in &s.tasks {
        writeln!(out, "  task {t:<20} acc {acc:.4}")?;
    }
    Ok(())
}

/// Trains the leave-one-out runs, each a fine-tune in `runs/<index>`.
struct LooProxy {
    base: TrainConfig,
    /// The instruction data, read once for every run.
    data: Dataset,
    dir: PathBuf,
    tasks: Vec<(String, Vec<Item>)>,
}

impl LooProxy {
    fn run(&self, job: &ProxyJob) -> Result<BTreeMap<String, f64>> {
        let run = self.dir.join("runs").join(&job.index);
        let mut trainer = if checkpoint::resolve(&run).is_ok() {
            Trainer::resume(&run, Device::Cpu)?
        } else {
            // Killed before its first checkpoint: start it again.
            if run.exists() {
                std::fs::remove_dir_all(&run).with_context(|| format!("clearing {}", run.display()))?;
            }
            let mut config = self.base.clone();
            config.mixture = Mixture { weights: job.weights.clone(), max_epochs: BTreeMap::new() };
            Trainer::with_data(config, Some(self.data.clone()), Some(&run), Device::Cpu)?
        };
        let outcome = trainer.train(false)?;
        let summary = summarize(&trainer, outcome, score_tasks(&trainer, &self.tasks)?);
        corpus::atomic::write_json(&run.join("summary.json"), &summary)?;
        let mut metrics: BTreeMap<String, f64> =
            summary.val_loss.iter().map(|(d, x)| (format!("{d}_val_loss"), *x)).collect();
        metrics.extend(summary.exact_match.iter().map(|(d, x)| (format!("{d}_exact_match"), *x)));
        metrics.extend(summary.tasks.iter().map(|(t, x)| (format!("{t}_acc"), *x)));
        Ok(metrics)
    }
}

impl ProxyTrainer for LooProxy {
    fn train(&self, job: &ProxyJob) -> std::result::Result<BTreeMap<String, f64>, String> {
        self.run(job).map_err(|e| format!("{e:#}"))
    }

    fn params(&self) -> u64 {
        self.base.model.param_count()
    }
}

struct LooBar(indicatif::ProgressBar);

impl SwarmProgress for LooBar {
    fn finished(&self, run: &mixsim::Run, done: usize, _total: usize) {
        self.0.set_position(done as u64);
        self.0.set_message(format!("{} done", run.index));
    }
}

/// What `mix loo` writes beside its runs (`loo.json`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LooResult {
    pub rule: LooRule,
    pub rule_text: String,
    pub deltas: Deltas,
    pub scores: BTreeMap<String, f64>,
    pub base: BTreeMap<String, f64>,
    pub weights: BTreeMap<String, f64>,
}

/// `mix loo`: the D + 1 fine-tunes, the Δ matrix and the reweighted mixture.
pub fn loo(args: &MixLooArgs, threads: usize, out: &mut dyn Write) -> Result<LooResult> {
    loo_with(args, instruct_sources(&args.data)?, threads, out)
}

/// [`loo`] on `sources`.
pub fn loo_with(
    args: &MixLooArgs,
    sources: Vec<InstructSource>,
    threads: usize,
    out: &mut dyn Write,
) -> Result<LooResult> {
    let (base, dataset) = sft_config(&args.data, sources, &args.training, args.mix.as_deref())?;
    print_data(out, &dataset, &base.mixture)?;
    let domains: Vec<String> = dataset.domains.iter().map(|d| d.name.clone()).collect();
    let base_weights: Vec<f64> = domains.iter().map(|d| base.mixture.weights.get(d).copied().unwrap_or(0.0)).collect();
    let rule = LooRule { eta: args.eta, max_weight: args.max_weight };
    // Checked before hours of training, not after.
    loo::reweight(&base_weights, &vec![0.0; domains.len()], rule)?;
    let runs = loo::plan(&domains, &base_weights)?;
    let mut described = serde_json::to_value(fixed_settings(&base))?;
    described["steps"] = base.steps.into();
    described["init"] = serde_json::to_value(&base.init)?;
    described["eval"] = serde_json::to_value(&args.eval)?;
    let plan = SwarmPlan {
        format_version: mixsim::swarm::PLAN_FORMAT_VERSION,
        domains: domains.clone(),
        proxy_tokens: base.steps * base.tokens_per_step(),
        target_tokens: base.steps * base.tokens_per_step(),
        seed: base.seed,
        proxy: described,
        runs,
        run_seeds: BTreeMap::new(),
    };
    let dir = SwarmDir::new(&args.out)?;
    let done = dir.finished()?.map_or(0, |t| t.rows.len());
    let cores = if threads > 0 { threads } else { std::thread::available_parallelism().map_or(1, |n| n.get()) };
    let jobs = if args.jobs == 0 { cores } else { args.jobs }.clamp(1, plan.runs.len());
    // One libtorch thread per run: the runs' numbers do not depend on --jobs.
    tch::set_num_threads(1);
    writeln!(
        out,
        "leave-one-out: {} fine-tunes of {} steps ({} tokens each), {jobs} at a time; {done} already done",
        plan.runs.len(),
        base.steps,
        plan.proxy_tokens
    )?;
    let bar = crate::progress::bar(plan.runs.len() as u64, "fine-tunes", "runs");
    bar.set_position(done as u64);
    let tasks = read_tasks(&args.eval, args.eval_limit)?;
    let proxy = LooProxy { base: base.clone(), data: dataset, dir: args.out.clone(), tasks };
    let table = mixsim::run_swarm(&dir, &plan, &proxy, jobs, &LooBar(bar.clone()))?;
    bar.finish_and_clear();
    let result = reweigh(&table, &base_weights, rule)?;
    write_loo(&args.out, &result)?;
    print_loo(out, &result)?;
    writeln!(out, "weights → {} (sft --mix reads it)", args.out.join("loo.toml").display())?;
    Ok(result)
}

fn reweigh(table: &RunsTable, base: &[f64], rule: LooRule) -> Result<LooResult> {
    let deltas = Deltas::from_table(table)?;
    let scores = deltas.scores();
    let weights = loo::reweight(base, &scores, rule)?;
    let sum: f64 = base.iter().sum();
    let base: Vec<f64> = base.iter().map(|w| w / sum).collect();
    Ok(LooResult {
        rule,
        rule_text: "w' ∝ w · exp(eta · score), score = mean over metrics of Δ / RMS over domains of Δ; clipped at \
                    max_weight"
            .into(),
        scores: loo::by_domain(&deltas.domains, &scores),
        base: loo::by_domain(&deltas.domains, &base),
        weights: loo::by_domain(&deltas.domains, &weights),
        deltas,
    })
}

fn write_loo(dir: &Path, r: &LooResult) -> Result<()> {
    let mut csv = format!("domain,{}\n", r.deltas.metrics.join(","));
    for (d, row) in r.deltas.domains.iter().zip(&r.deltas.delta) {
        let cells: Vec<String> = row.iter().map(|x| format!("{x}")).collect();
        csv.push_str(&format!("{d},{}\n", cells.join(",")));
    }
    corpus::atomic::write_file(&dir.join("deltas.csv"), csv.as_bytes())?;
    corpus::atomic::write_json(&dir.join("loo.json"), r)?;
    let mut toml = String::from(
        "# Instruction-domain weights from leave-one-out fine-tunes (mixforge mix loo).\n# Rule (ours; the paper \
         does not publish its own): ",
    );
    toml.push_str(&format!(
        "{}\n# eta = {}, max_weight = {}\n\n[weights]\n",
        r.rule_text, r.rule.eta, r.rule.max_weight
    ));
    for (d, w) in &r.weights {
        toml.push_str(&format!("{} = {w}\n", toml_key(d)));
    }
    toml.push_str("\n[loo.base]\n");
    for (d, w) in &r.base {
        toml.push_str(&format!("{} = {w}\n", toml_key(d)));
    }
    toml.push_str("\n[loo.score]\n");
    for (d, s) in &r.scores {
        toml.push_str(&format!("{} = {s}\n", toml_key(d)));
    }
    corpus::atomic::write_file(&dir.join("loo.toml"), toml.as_bytes())?;
    Ok(())
}

fn toml_key(key: &str) -> String {
    if key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') {
        key.to_string()
    } else {
        format!("{key:?}")
    }
}

fn print_loo(out: &mut dyn Write, r: &LooResult) -> Result<()> {
    writeln!(out, "Δ (positive: the domain helps; what removing it costs)")?;
    write!(out, "  {:<14}", "removed")?;
    for m in &r.deltas.metrics {
        write!(out, " {:>16}", truncate(m, 16))?;
    }
    writeln!(out, " {:>8} {:>7} {:>7}", "score", "before", "after")?;
    for (d, row) in r.deltas.domains.iter().zip(&r.deltas.delta) {
        write!(out, "  {d:<14}")?;
        for x in row {
            write!(out, " {x:>16.4}")?;
        }
        writeln!(out, " {:>8.3} {:>7.3} {:>7.3}", r.scores[d], r.base[d], r.weights[d])?;
    }
    Ok(())
}

fn truncate(s: &str, n: usize) -> String {
    if s.chars().count() <= n { s.to_string() } else { s.chars().take(n - 1).collect::<String>() + "…" }
}

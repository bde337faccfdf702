//! `mixforge train | eval | generate | export | model params | doctor`.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

use anyhow::{Context, Result, bail};
use clap::parser::ValueSource;
use clap::{ArgMatches, Args};
use corpus::shards::Shards;
use train::checkpoint;
use train::data::{CapPolicy, Loader, LoaderConfig, Mixture};
use train::eval;
use train::generate::{self, Sampling};
use train::hf;
use train::loss::KdConfig;
use train::optim::AdamWConfig;
use train::trainer::{self, TeacherPacking, TrainConfig, Trainer};
use train::{AttnKind, ModelConfig};

use crate::cli::{
    CapPolicyArg, EvalArgs, ExportArgs, GenerateArgs, ModelChoice, ModelCommand, SchemeArg, TeacherPackingArg,
    TrainArgs,
};

pub fn doctor() -> Result<()> {
    let mut out = std::io::stdout().lock();
    for (key, value) in train::device::report() {
        writeln!(out, "{key:>18}: {value}")?;
    }
    Ok(())
}

pub fn model(command: ModelCommand) -> Result<()> {
    let args = match command {
        ModelCommand::Params(args) => args,
        ModelCommand::Speed(args) => return speed(&args),
    };
    let config = resolve_model(&args.model)?;
    let mut out = std::io::stdout().lock();
    let global = config.layer_types.iter().filter(|k| **k == AttnKind::Global).count();
    writeln!(out, "parameters: {}", config.param_count())?;
    writeln!(
        out,
        "layers {} ({} global, {} local, window {}), d_model {}, heads {}/{} kv, head_dim {}, ffn {}, vocab {}, tied {}",
        config.n_layers(),
        global,
        config.n_layers() - global,
        config.sliding_window,
        config.d_model,
        config.n_heads,
        config.n_kv_heads,
        config.head_dim,
        config.ffn_dim,
        config.vocab_size,
        config.tie_embeddings
    )?;
    Ok(())
}

/// Forward tokens per second of a checkpoint on the CPU: `batch` windows of `seq_len` tokens
/// per forward, after a warm-up, for at least `seconds` (and three forwards).
pub fn cpu_tokens_per_s(checkpoint: &Path, seq_len: usize, batch: usize, seconds: f64) -> Result<f64> {
    let model = hf::load_any(checkpoint, tch::Device::Cpu, false)?.model;
    let n = (batch * seq_len) as i64;
    let ids = tch::Tensor::arange(n, (tch::Kind::Int64, tch::Device::Cpu)).remainder(model.config.vocab_size as i64);
    let inputs = train::model::Inputs::tokens(ids.view([batch as i64, seq_len as i64]));
    tch::no_grad(|| {
        let _ = model.forward(&inputs);
        let clock = std::time::Instant::now();
        let mut reps = 0;
        while reps < 3 || clock.elapsed().as_secs_f64() < seconds {
            let _ = model.forward(&inputs);
            reps += 1;
        }
        Ok((reps * batch * seq_len) as f64 / clock.elapsed().as_secs_f64())
    })
}

fn speed(args: &crate::cli::ModelSpeedArgs) -> Result<()> {
    let tps = cpu_tokens_per_s(&args.checkpoint, args.seq_len, args.batch_size, args.seconds)?;
    let mut out = std::io::stdout().lock();
    if args.json {
        let json = serde_json::json!({
            "checkpoint": args.checkpoint, "tokens_per_s": tps, "seq_len": args.seq_len,
            "batch_size": args.batch_size, "threads": tch::get_num_threads(),
        });
        writeln!(out, "{json}")?;
    } else {
        writeln!(
            out,
            "{tps:.0} tokens/s ({} × {} tokens per forward, {} threads)",
            args.batch_size,
            args.seq_len,
            tch::get_num_threads()
        )?;
    }
    Ok(())
}

fn resolve_model(choice: &ModelChoice) -> Result<ModelConfig> {
    Ok(match (&choice.preset, &choice.config) {
        (Some(name), _) => ModelConfig::preset(name)?,
        (_, Some(path)) => ModelConfig::from_toml_file(path)?,
        _ => bail!("give --preset NAME or --config FILE"),
    })
}

/// Flags a resumed run may be given with new values: they extend it (`steps`, `tokens`, checked
/// below) or only change when it validates and checkpoints, or where it runs. `shards` and
/// `teacher` may point at a new place holding the same data.
const RESUME_MAY_CHANGE: [&str; 9] =
    ["out", "resume", "device", "steps", "tokens", "eval_every", "checkpoint_every", "keep_checkpoints", "threads"];

pub fn train(args: &TrainArgs, matches: &ArgMatches) -> Result<()> {
    // The flags typed on the command line (not their defaults); clap's derive also lists the
    // struct's own group among the ids, which is no flag.
    let flags = TrainArgs::augment_args(clap::Command::new("train"));
    let given: Vec<String> = flags
        .get_arguments()
        .map(|a| a.get_id().as_str().to_string())
        .chain(["threads".to_string()])
        .filter(|id| matches.try_contains_id(id).unwrap_or(false))
        .filter(|id| matches.value_source(id) == Some(ValueSource::CommandLine))
        .collect();
    train_with(args, &given, &mut std::io::stdout().lock()).map(|_| ())
}

/// Trains (or resumes, with `args.resume`) as the flags say; `given` names the flags the user
/// typed, which a resumed run checks against its own. Results are written to `out`.
pub fn train_with(args: &TrainArgs, given: &[String], out: &mut dyn Write) -> Result<trainer::Outcome> {
    let device = train::device::pick(Some(&args.device))?;
    let resumable = args.resume && checkpoint::resolve(&args.out).is_ok();
    if args.resume && !resumable && args.out.join("metrics.jsonl").exists() {
        // Killed before its first checkpoint: nothing to resume, start again.
        eprintln!("{} has no checkpoint yet: starting it again", args.out.display());
        std::fs::remove_file(args.out.join("metrics.jsonl"))?;
    }
    let mut trainer = if resumable {
        let t = Trainer::resume_with(&args.out, device, |stored, step| {
            adjust_resumed(args, given, stored, step).map_err(|e| train::Error::Config(format!("{e:#}")))
        })
        .with_context(|| format!("resuming {}", args.out.display()))?;
        eprintln!("resuming {} at step {}/{}", args.out.display(), t.step, t.config.steps);
        t
    } else {
        let config = train_config(args, true)?;
        let params = config.model.param_count();
        eprintln!(
            "training {} parameters for {} steps ({} tokens/step) on {:?} → {}",
            params,
            config.steps,
            config.tokens_per_step(),
            device,
            args.out.display()
        );
        Trainer::new(config, Some(&args.out), device)?
    };
    let outcome = trainer.train(true)?;
    writeln!(
        out,
        "trained {} steps, {} tokens, {:.0} tokens/s; final train loss {:.4}",
        outcome.steps, outcome.tokens, outcome.tokens_per_s, outcome.final_train_loss
    )?;
    print_val(out, &outcome.val_loss)?;
    let summary = args.out.join("summary.json");
    corpus::atomic::write_json(&summary, &outcome)?;
    writeln!(out, "checkpoint: {}", checkpoint::resolve(&args.out)?.display())?;
    Ok(outcome)
}

/// Checks the flags given to a resumed run against the config it started with: a flag that
/// would change the run is refused, naming it; more steps extend the schedule (stated); new
/// places for the same shards or teacher are taken.
fn adjust_resumed(args: &TrainArgs, given: &[String], stored: &mut TrainConfig, step: u64) -> Result<()> {
    let wanted = train_config(args, false)?;
    for id in given.iter().filter(|id| !RESUME_MAY_CHANGE.contains(&id.as_str())) {
        let flag = format!("--{}", id.replace('_', "-"));
        match id.as_str() {
            "shards" | "teacher" => {
                let (new, old_ref) = match id.as_str() {
                    "shards" => (Some(wanted.shards.clone()), &stored.shards_ref),
                    _ => (wanted.teacher.clone(), &stored.teacher_ref),
                };
                let same = match (&new, &old_ref.xxh3) {
                    (Some(path), Some(recorded)) => checkpoint::fingerprint(path).as_ref() == Some(recorded),
                    // A checkpoint written before inputs were fingerprinted: the user's word.
                    (Some(path), None) => {
                        eprintln!(
                            "note: this run's checkpoint predates input fingerprints; trusting {flag} {}",
                            path.display()
                        );
                        true
                    }
                    (None, _) => false,
                };
                if !same {
                    bail!(
                        "{flag} {} is not the data this run started with (its fingerprint differs); a resumed \
                         run keeps its inputs: train into a new --out instead",
                        new.map(|p| p.display().to_string()).unwrap_or_default()
                    );
                }
                match id.as_str() {
                    "shards" => stored.shards = wanted.shards.clone(),
                    _ => stored.teacher = wanted.teacher.clone(),
                }
            }
            other => {
                let (old, new) = (setting(other, stored)?, setting(other, &wanted)?);
                if old != new {
                    bail!(
                        "{flag} {new} differs from the run's {old}: a resumed run keeps the settings it started \
                         with (only --steps/--tokens may extend it; --eval-every, --checkpoint-every, \
                         --keep-checkpoints and --device may change); train into a new --out instead"
                    );
                }
            }
        }
    }
    let steps = match (args.steps, args.tokens) {
        (Some(s), _) => Some(s),
        (None, Some(t)) => Some(t.div_ceil(stored.tokens_per_step()).max(1)),
        (None, None) => None,
    };
    if let Some(steps) = steps.filter(|s| *s != stored.steps) {
        if steps < stored.steps {
            bail!(
                "--steps/--tokens asks for {steps} steps, fewer than the run's {}: a resumed run can only be \
                 extended",
                stored.steps
            );
        }
        let (before, after) = (stored.optim.lr_at(step, stored.steps), stored.optim.lr_at(step, steps));
        eprintln!(
            "extending the run from {} to {steps} steps: warm-up then cosine decay now spans {steps} steps; the \
             learning rate at step {step} moves from {before:.3e} to {after:.3e}",
            stored.steps
        );
        stored.steps = steps;
    }
    if given.iter().any(|g| g == "eval_every") {
        stored.eval_every = args.eval_every;
    }
    if given.iter().any(|g| g == "checkpoint_every") {
        stored.checkpoint_every = args.checkpoint_every;
    }
    if given.iter().any(|g| g == "keep_checkpoints") {
        stored.keep_checkpoints = args.keep_checkpoints;
    }
    Ok(())
}

/// The value a training flag set in a config, for comparing a resumed run's flags.
fn setting(id: &str, c: &TrainConfig) -> Result<serde_json::Value> {
    use serde_json::to_value as v;
    Ok(match id {
        "model" => v(&c.model)?,
        "mix" => v(&c.mixture)?,
        "batch_size" => v(c.loader.batch_size)?,
        "seq_len" => v(c.loader.seq_len)?,
        "grad_accum" => v(c.grad_accum)?,
        "lr" => v(c.optim.lr)?,
        "warmup" => v(c.optim.warmup_steps)?,
        "min_lr_ratio" => v(c.optim.min_lr_ratio)?,
        "weight_decay" => v(c.optim.weight_decay)?,
        "grad_clip" => v(c.optim.grad_clip)?,
        "seed" => v(c.seed)?,
        "eval_sequences" => v(c.eval_sequences)?,
        "doc_mask" => v(c.loader.doc_mask)?,
        "reset_positions" => v(c.loader.reset_positions)?,
        "cap_policy" => v(c.loader.cap_policy)?,
        "kd_temperature" => v(c.kd.temperature)?,
        "ce_weight" => v(c.kd.ce_weight)?,
        "init" => v(c.init.as_ref().map(|l| l.parents.iter().map(|p| p.path.clone()).collect::<Vec<_>>()))?,
        "phase" => v(&c.phase)?,
        "rope_theta" => v(c.model.rope_theta)?,
        "teacher_packing" => v(c.teacher_packing)?,
        "teacher_cache" => v(&c.teacher_cache)?,
        "qat" | "fixed_scales" => v(&c.model.quant)?,
        other => bail!("--{} cannot be checked against a resumed run", other.replace('_', "-")),
    })
}

/// The config the flags describe; `fresh` is false for a resumed run, which has its own steps
/// (and whose flags are only compared with what it stored, defaults included).
fn train_config(args: &TrainArgs, fresh: bool) -> Result<TrainConfig> {
    let shards_dir = args.shards.canonicalize().with_context(|| format!("shards {}", args.shards.display()))?;
    let shards = Shards::open(&shards_dir)?;
    let (model, init) = match &args.init {
        Some(path) => {
            let (model, tokenizer) = parent_model(path)?;
            let ours = std::fs::read(shards.tokenizer_path())?;
            if ours != tokenizer {
                bail!(
                    "--init {}: its tokenizer differs from the shards' ({}); train from it on shards made with its tokenizer",
                    path.display(),
                    shards.tokenizer_path().display()
                );
            }
            let parent = checkpoint::Parent::of(path, None)?;
            let mut model = model;
            if fresh && args.seq_len > model.max_seq_len {
                eprintln!("the model's window grows from {} to {} tokens (--seq-len)", model.max_seq_len, args.seq_len);
                model.max_seq_len = args.seq_len;
            }
            (model, Some(checkpoint::Lineage { parents: vec![parent], method: None }))
        }
        None => {
            let mut model = ModelConfig::resolve(&args.model)?;
            model.vocab_size = shards.manifest().vocab_size as usize;
            (model, None)
        }
    };
    let mut model = model;
    if let Some(scheme) = args.qat {
        let mut quant = train::quant::QuantConfig::new(scheme_of(scheme));
        quant.learnable_scales &= !args.fixed_scales;
        match &model.quant {
            // A PTQ/QAT checkpoint keeps its own choices (which layers) under the same scheme.
            Some(q) if q.scheme == quant.scheme => {
                model.quant.as_mut().expect("quantized").learnable_scales = quant.learnable_scales
            }
            Some(q) => bail!(
                "--init {} is quantized for the {} scheme, not {}: start from its full-precision parent",
                args.init.as_ref().expect("--qat requires --init").display(),
                q.scheme.name(),
                quant.scheme.name()
            ),
            None => model = quant.apply(&model),
        }
    }
    if let Some(theta) = args.rope_theta {
        if !(theta > 0.0 && theta.is_finite()) {
            bail!("--rope-theta {theta} must be positive");
        }
        model.rope_theta = theta;
    }
    let mixture = match &args.mix {
        None => Mixture::natural(&shards),
        Some(p) if p.as_os_str() == "natural" => Mixture::natural(&shards),
        Some(p) if p.as_os_str() == "uniform" => Mixture::uniform(&shards),
        Some(path) => Mixture::from_toml_file(path)?,
    };
    let tokenizer = corpus::tokenize::load(&shards.tokenizer_path())?;
    let loader = LoaderConfig {
        seq_len: args.seq_len,
        batch_size: args.batch_size,
        seed: args.seed,
        doc_mask: args.doc_mask,
        reset_positions: args.reset_positions,
        cap_policy: match args.cap_policy {
            CapPolicyArg::Warn => CapPolicy::Warn,
            CapPolicyArg::Stop => CapPolicy::Stop,
        },
        eos_id: train::data::eos_id(&tokenizer)?,
        data_fraction: 1.0,
    };
    if fresh && args.seq_len > model.max_seq_len {
        bail!("--seq-len {} is longer than the model's max_seq_len {}", args.seq_len, model.max_seq_len);
    }
    let tokens_per_step = (args.seq_len * args.batch_size) as u64 * args.grad_accum.max(1);
    let steps = match (args.steps, args.tokens) {
        (Some(s), _) => s,
        (None, Some(t)) => t.div_ceil(tokens_per_step).max(1),
        (None, None) if fresh => bail!("give --steps or --tokens"),
        (None, None) => 0,
    };
    Ok(TrainConfig {
        model,
        shards: shards_dir,
        mixture,
        loader,
        optim: AdamWConfig {
            lr: args.lr,
            min_lr_ratio: args.min_lr_ratio,
            weight_decay: args.weight_decay,
            warmup_steps: args.warmup,
            grad_clip: args.grad_clip,
            ..AdamWConfig::default()
        },
        steps,
        grad_accum: args.grad_accum,
        eval_every: args.eval_every,
        eval_sequences: args.eval_sequences,
        checkpoint_every: args.checkpoint_every,
        keep_checkpoints: args.keep_checkpoints,
        teacher: match (&args.teacher, &args.init) {
            // Self-distillation: the starting checkpoint, in full precision (see `load_teacher`).
            (Some(t), Some(init)) if t.as_os_str() == "self" => {
                Some(init.canonicalize().unwrap_or_else(|_| init.clone()))
            }
            (Some(t), None) if t.as_os_str() == "self" => {
                bail!("--teacher self needs --init (the model to distil from)")
            }
            (t, _) => t.as_ref().map(|p| p.canonicalize().unwrap_or_else(|_| p.clone())),
        },
        kd: KdConfig { temperature: args.kd_temperature, ce_weight: args.ce_weight },
        seed: args.seed,
        shards_ref: Default::default(),
        teacher_ref: Default::default(),
        phase: args.phase.clone(),
        init,
        teacher_cache: args.teacher_cache.as_ref().map(|p| p.canonicalize().unwrap_or_else(|_| p.clone())),
        teacher_packing: match args.teacher_packing {
            TeacherPackingArg::Same => TeacherPacking::Same,
            TeacherPackingArg::PerDoc => TeacherPacking::PerDoc,
        },
        sft: None,
    })
}

/// The model config and tokenizer bytes of a checkpoint (mixforge or Hugging Face).
pub(crate) fn parent_model(path: &Path) -> Result<(ModelConfig, Vec<u8>)> {
    if path.join("config.json").exists() && !path.join("state.json").exists() {
        let tokenizer = path.join("tokenizer.json");
        return Ok((
            hf::read_hf_config(&path.join("config.json"))?,
            std::fs::read(&tokenizer).with_context(|| format!("reading {}", tokenizer.display()))?,
        ));
    }
    let dir = checkpoint::resolve(path)?;
    let state = checkpoint::read_state(&dir)?;
    let tokenizer = dir.join("tokenizer.json");
    Ok((state.config.model, std::fs::read(&tokenizer).with_context(|| format!("reading {}", tokenizer.display()))?))
}

/// `merge`.
pub fn merge(args: &crate::cli::MergeArgs, out: &mut dyn Write) -> Result<()> {
    use crate::cli::MergeMethodArg;
    use train::merge::Method;
    let n = args.checkpoints.len();
    let weights = if args.weights.is_empty() { vec![1.0 / n as f64; n] } else { args.weights.clone() };
    let method = match args.method {
        MergeMethodArg::Linear => Method::Linear,
        MergeMethodArg::TaskArithmetic => Method::TaskArithmetic,
        MergeMethodArg::Ties => Method::Ties { density: args.density },
    };
    // Only a merge replaces a merge; a training run is never overwritten.
    corpus::atomic::check_replaceable(&args.out, "merged checkpoint (a training run has metrics.jsonl)", |d| {
        !d.join("metrics.jsonl").exists()
            && checkpoint::resolve(d).and_then(|s| checkpoint::read_state(&s)).is_ok_and(|s| s.config.phase == "merge")
    })?;
    let merger = train::merge::Merger::open(&args.checkpoints, method, args.base.as_deref())?;
    let weights = match args.search {
        None => weights,
        Some(search) => {
            let names: Vec<String> = args.checkpoints.iter().map(|p| p.display().to_string()).collect();
            let (chosen, loss) = super::merge_search::search(&merger, args, search, &names)?;
            writeln!(
                out,
                "{search:?} search: probe loss {loss:.4} at weights {chosen:?} (every point: {})",
                args.out.join("search.json").display()
            )?;
            chosen
        }
    };
    let dir = merger.write(&weights, &args.out).with_context(|| format!("merging into {}", args.out.display()))?;
    writeln!(out, "merged {n} checkpoints ({}, weights {:?}) → {}", method.name(), weights, dir.display())?;
    Ok(())
}

pub fn print_val(out: &mut dyn Write, val: &std::collections::BTreeMap<String, f64>) -> Result<()> {
    if val.is_empty() {
        return Ok(());
    }
    writeln!(out, "  {:<12} {:>9} {:>11}", "domain", "val loss", "perplexity")?;
    for (domain, loss) in val {
        writeln!(out, "  {domain:<12} {loss:>9.4} {:>11.2}", loss.exp())?;
    }
    Ok(())
}

/// What [`score`] measures of a checkpoint.
pub struct Scoring<'a> {
    /// Shards for validation loss (default: the ones the checkpoint was trained on, when found).
    pub shards: Option<&'a Path>,
    pub eval_sequences: usize,
    /// Validation window (default: the checkpoint's training window).
    pub seq_len: Option<usize>,
    /// Score past the model's window when `seq_len` (or an item) is longer, instead of refusing:
    /// RoPE takes any position, and a phase's "before" is measured this way.
    pub extend_window: bool,
    /// Buckets of loss by position in the window (none: not measured).
    pub by_position: Option<usize>,
    pub tasks: &'a [std::path::PathBuf],
    pub limit: Option<usize>,
    pub device: &'a str,
    /// Ask generation items through the chat template (instruction-tuned models).
    pub chat: bool,
}

/// What [`score`] measured.
#[derive(Debug, Default, serde::Serialize)]
pub struct Scores {
    /// Mean validation cross-entropy per domain.
    pub val: BTreeMap<String, f64>,
    /// Per domain, mean loss in each of `by_position` equal buckets of window positions.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub by_position: BTreeMap<String, Vec<f64>>,
    pub tasks: Vec<eval::TaskScore>,
}

/// Validation loss per domain and task scores of a checkpoint.
pub fn score(checkpoint: &Path, s: &Scoring) -> Result<Scores> {
    let device = train::device::for_checkpoint(checkpoint, Some(s.device))?;
    let mut loaded = hf::load_any(checkpoint, device, false)?;
    if s.extend_window
        && let Some(n) = s.seq_len
    {
        loaded.model.config.max_seq_len = loaded.model.config.max_seq_len.max(n);
    }
    let tokenizer = corpus::tokenize::load(&loaded.tokenizer)?;
    let step_dir = checkpoint::resolve(checkpoint).ok();
    let state = step_dir.as_ref().and_then(|d| checkpoint::read_state(d).ok());
    // Validation runs on the shards the checkpoint was trained on, wherever they are now; when
    // they cannot be found the user is told, not left with a table that silently lacks them.
    let shards_dir = match (s.shards, &state, &step_dir) {
        (Some(dir), _, _) => Some(dir.to_path_buf()),
        (None, Some(st), _) if st.config.sft.is_some() => {
            eprintln!(
                "note: an instruction fine-tune: its held-out instruction scores are in its summary.json; pass \
                 --shards to score corpus validation windows"
            );
            None
        }
        (None, Some(st), Some(dir)) => {
            let run = dir.parent().and_then(Path::parent).unwrap_or(dir);
            match checkpoint::locate(run, &st.config.shards, &st.config.shards_ref, "shards") {
                Ok(found) => Some(found),
                Err(e) => {
                    eprintln!("note: no validation loss: {e}");
                    None
                }
            }
        }
        _ => None,
    };
    let mut scores = Scores::default();
    if let Some(dir) = shards_dir {
        let shards = Shards::open(&dir)?;
        let window = loaded.model.config.max_seq_len;
        let seq_len = match s.seq_len {
            Some(n) if n > window => bail!("--seq-len {n} is longer than the model's window of {window} tokens"),
            Some(n) => n,
            None => state.as_ref().map_or(256, |st| st.config.loader.seq_len).min(window),
        };
        let config = LoaderConfig::evaluation(seq_len, train::data::eos_id(&tokenizer)?);
        let loader = Loader::new(&shards, &Mixture::uniform(&shards), config)?;
        let tensors = trainer::validation_tensors(&loader, s.eval_sequences, device);
        for (domain, seqs) in &tensors {
            let per_position = trainer::position_loss(&loaded.model, seqs, 8);
            let mean = per_position.iter().sum::<f64>() / per_position.len().max(1) as f64;
            scores.val.insert(domain.clone(), mean);
            if let Some(buckets) = s.by_position {
                scores.by_position.insert(domain.clone(), bucket_means(&per_position, buckets));
            }
        }
    }
    for path in s.tasks {
        let items = eval::read_task(path, s.limit)?;
        let name = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
        let score = if s.chat { eval::evaluate_chat } else { eval::evaluate };
        scores.tasks.push(score(&loaded.model, &tokenizer, &name, &items)?);
    }
    Ok(scores)
}

/// Means of `xs` over `buckets` consecutive, nearly equal ranges.
fn bucket_means(xs: &[f64], buckets: usize) -> Vec<f64> {
    let buckets = buckets.clamp(1, xs.len().max(1));
    (0..buckets)
        .map(|b| {
            let (from, to) = (b * xs.len() / buckets, (b + 1) * xs.len() / buckets);
            xs[from..to].iter().sum::<f64>() / (to - from).max(1) as f64
        })
        .collect()
}

pub fn eval(args: &EvalArgs) -> Result<()> {
    let scoring = Scoring {
        shards: args.shards.as_deref(),
        eval_sequences: args.eval_sequences,
        seq_len: args.seq_len,
        extend_window: false,
        by_position: args.by_position,
        tasks: &args.tasks,
        limit: args.limit,
        device: &args.device,
        chat: args.chat,
    };
    let scores = score(&args.checkpoint, &scoring)?;
    let mut out = std::io::stdout().lock();
    if args.json {
        let perplexity: BTreeMap<_, _> = scores.val.iter().map(|(d, l)| (d.clone(), l.exp())).collect();
        let mut json = serde_json::json!({"val_loss": scores.val, "val_perplexity": perplexity, "tasks": scores.tasks});
        if !scores.by_position.is_empty() {
            json["val_loss_by_position"] = serde_json::to_value(&scores.by_position)?;
        }
        writeln!(out, "{}", serde_json::to_string_pretty(&json)?)?;
        return Ok(());
    }
    print_val(&mut out, &scores.val)?;
    for (domain, buckets) in &scores.by_position {
        let cells: Vec<String> = buckets.iter().map(|x| format!("{x:.3}")).collect();
        writeln!(out, "  {domain:<12} by position: {}", cells.join(" "))?;
    }
    if !scores.tasks.is_empty() {
        writeln!(out, "  {:<20} {:>6} {:>8} {:>9} {:>11}", "task", "items", "acc", "acc_norm", "perplexity")?;
        for t in &scores.tasks {
            let opt = |x: Option<f64>, p: usize| x.map_or("-".to_string(), |v| format!("{v:.p$}"));
            writeln!(
                out,
                "  {:<20} {:>6} {:>8.4} {:>9} {:>11}",
                t.task,
                t.items,
                t.acc,
                opt(t.acc_norm, 4),
                opt(t.perplexity, 2)
            )?;
            if let Some(rank) = t.rank_acc {
                writeln!(out, "    key ranked first among its distractors: {rank:.4}")?;
            }
            for cell in t.grid.iter().flatten() {
                writeln!(
                    out,
                    "    length {:>6} depth {:>4.2}: exact {:.3}, key ranked first {:.3} ({} items)",
                    cell.length, cell.depth, cell.exact, cell.rank_acc, cell.items
                )?;
            }
        }
    }
    Ok(())
}

/// `teacher cache`: the batches a `train` run with the same data flags reads, through the teacher.
pub fn teacher_cache(args: &crate::cli::TeacherCacheArgs) -> Result<()> {
    // The loader config and mixture come from `train`'s own flag handling, so they are the
    // ones the run will build.
    // The teacher stands in for the student's model (`--init`): its window grows to --seq-len
    // and its tokenizer must be the shards'.
    let mut flags: Vec<String> = ["train", "--shards"].map(String::from).to_vec();
    flags.push(args.shards.display().to_string());
    flags.extend(["--init".to_string(), args.teacher.display().to_string()]);
    let mut add = |k: &str, v: String| flags.extend([k.to_string(), v]);
    add("--batch-size", args.batch_size.to_string());
    add("--seq-len", args.seq_len.to_string());
    add("--grad-accum", args.grad_accum.to_string());
    add("--seed", args.seed.to_string());
    add("--kd-temperature", args.kd_temperature.to_string());
    add("--out", "unused".into());
    match (args.steps, args.tokens) {
        (Some(s), _) => add("--steps", s.to_string()),
        (None, Some(t)) => add("--tokens", t.to_string()),
        (None, None) => bail!("give --steps or --tokens"),
    }
    if let Some(mix) = &args.mix {
        add("--mix", mix.display().to_string());
    }
    if args.doc_mask {
        flags.push("--doc-mask".into());
    }
    if args.reset_positions {
        flags.push("--reset-positions".into());
    }
    if matches!(args.cap_policy, CapPolicyArg::Stop) {
        flags.extend(["--cap-policy".to_string(), "stop".to_string()]);
    }
    let matches = TrainArgs::augment_args(clap::Command::new("train")).try_get_matches_from(&flags)?;
    let train_args = <TrainArgs as clap::FromArgMatches>::from_arg_matches(&matches)?;
    let config = train_config(&train_args, true)?;
    let device = train::device::pick(Some(&args.device))?;
    let teacher = trainer::load_teacher(&args.teacher, config.model.vocab_size, args.seq_len, device)?;
    let shards = Shards::open(&config.shards)?;
    let loader = Loader::new(&shards, &config.mixture, config.loader.clone())?;
    let spec = train::teacher_cache::CacheSpec {
        packing: match args.teacher_packing {
            TeacherPackingArg::Same => TeacherPacking::Same,
            TeacherPackingArg::PerDoc => TeacherPacking::PerDoc,
        },
        batches: config.steps * config.grad_accum,
        top_k: args.top_k,
        temperature: args.kd_temperature,
    };
    let bar = indicatif::ProgressBar::with_draw_target(Some(spec.batches), indicatif::ProgressDrawTarget::stderr())
        .with_style(
            indicatif::ProgressStyle::with_template("{prefix:>8} [{bar:30}] {pos}/{len} batches eta {eta}")
                .expect("valid template")
                .progress_chars("=> "),
        )
        .with_prefix("cache");
    let meta =
        train::teacher_cache::write(&teacher, loader, &config.mixture, spec, &args.out, &|i| bar.set_position(i))?;
    bar.finish_and_clear();
    writeln!(
        std::io::stdout().lock(),
        "cached the teacher's top-{} over {} micro-batches → {}; the cache drops {:.4} of its probability mass per token",
        meta.top_k,
        meta.batches,
        args.out.display(),
        meta.dropped_mass
    )?;
    Ok(())
}

pub fn generate(args: &GenerateArgs) -> Result<()> {
    let device = train::device::for_checkpoint(&args.checkpoint, Some(&args.device))?;
    let loaded = hf::load_any(&args.checkpoint, device, false)?;
    let tokenizer = corpus::tokenize::load(&loaded.tokenizer)?;
    let sampling = Sampling { temperature: args.temperature, top_k: args.top_k, seed: args.seed };
    if args.chat {
        let mut messages = Vec::new();
        messages.extend(args.system.as_deref().map(|s| corpus::instruct::Message::new("system", s)));
        messages.push(corpus::instruct::Message::new("user", args.prompt.as_str()));
        let reply = generate::chat(&loaded.model, &tokenizer, &messages, args.max_new_tokens, sampling)?;
        writeln!(std::io::stdout().lock(), "{reply}")?;
        return Ok(());
    }
    let text = generate::generate(&loaded.model, &tokenizer, &args.prompt, args.max_new_tokens, sampling)?;
    writeln!(std::io::stdout().lock(), "{}{}", args.prompt, text)?;
    Ok(())
}

pub fn export(args: &ExportArgs) -> Result<()> {
    let loaded = hf::load_any(&args.checkpoint, tch::Device::Cpu, false)?;
    let model = &loaded.model;
    let mut out = std::io::stdout().lock();
    if args.int4 {
        train::int4::export(model, &loaded.tokenizer, &args.out)?;
        let bytes = train::int4::size_on_disk(&args.out);
        writeln!(
            out,
            "exported {} as packed int4 ({:.2} MB) → {}",
            scheme_name(model),
            bytes as f64 / 1e6,
            args.out.display()
        )?;
    } else if args.gguf {
        train::gguf::export(model, &loaded.tokenizer, &args.out)?;
        let bytes = std::fs::metadata(&args.out).map(|m| m.len()).unwrap_or(0);
        writeln!(
            out,
            "exported {} as GGUF Q4_0 ({:.2} MB) → {}",
            scheme_name(model),
            bytes as f64 / 1e6,
            args.out.display()
        )?;
        if model.config.layer_types.contains(&AttnKind::Local) {
            writeln!(
                out,
                "note: llama.cpp's llama architecture has no per-layer sliding window; it matches this model on \
                 sequences of at most {} tokens",
                model.config.sliding_window
            )?;
        }
    } else {
        hf::export(model, &loaded.tokenizer, &args.out)?;
        writeln!(
            out,
            "exported {} parameters as MinistralForCausalLM → {}",
            model.config.param_count(),
            args.out.display()
        )?;
        if model.config.quant.as_ref().is_some_and(|q| q.scheme == train::quant::Scheme::Cpu) {
            writeln!(
                out,
                "note: the weights are the int4 ones; the cpu scheme's int8 activations are not part of an HF model"
            )?;
        }
    }
    Ok(())
}

fn scheme_name(model: &train::Llama) -> &'static str {
    model.config.quant.as_ref().map_or("a full-precision model", |q| q.scheme.name())
}

/// `mixforge quantize`: the PTQ baseline, a checkpoint with the scheme in its config.
pub fn quantize(args: &crate::cli::QuantizeArgs, out: &mut dyn Write) -> Result<()> {
    let dir = checkpoint::resolve(&args.checkpoint)?;
    let mut state = checkpoint::read_state(&dir)?;
    let source = hf::load_any(&dir, tch::Device::Cpu, false)?.model;
    if let Some(q) = &source.config.quant {
        bail!(
            "{} is already quantized ({}); quantize its full-precision parent",
            args.checkpoint.display(),
            q.scheme.name()
        );
    }
    let mut quant = train::quant::QuantConfig::new(scheme_of(args.scheme));
    quant.embeddings = !args.keep_embeddings;
    let config = quant.apply(&source.config);
    let model = train::Llama::new(config.clone(), tch::Device::Cpu, 0, false)?;
    let tensors: BTreeMap<String, tch::Tensor> =
        source.params.named().iter().map(|(n, t)| (n.clone(), t.shallow_clone())).collect();
    model.params.load(&train::quant::prepare(tensors, &source.config, &config)?, &dir.display().to_string())?;
    corpus::atomic::check_replaceable(&args.out, "quantized checkpoint (a training run has metrics.jsonl)", |d| {
        !d.join("metrics.jsonl").exists()
            && checkpoint::resolve(d)
                .and_then(|s| checkpoint::read_state(&s))
                .is_ok_and(|s| s.config.phase == "quantize")
    })?;
    state.step = 0;
    state.tokens_seen = 0;
    state.config.model = config;
    state.config.phase = "quantize".into();
    state.config.init = Some(checkpoint::Lineage {
        parents: vec![checkpoint::Parent::of(&dir, None)?],
        method: Some(format!("ptq-{}", quant.scheme.name())),
    });
    std::fs::create_dir_all(&args.out)?;
    let written = checkpoint::save(&args.out, &state, &model, None, &dir.join("tokenizer.json"))?;
    let int4 = model.int4_weights()?;
    let params: i64 = int4.iter().map(|(_, q)| q.codes.numel() as i64).sum();
    writeln!(
        out,
        "quantized {} of {} parameters to int4 ({} scheme) → {}",
        params,
        model.config.param_count(),
        quant.scheme.name(),
        written.display()
    )?;
    Ok(())
}

/// The trainer's scheme for the flag's value.
pub fn scheme_of(arg: SchemeArg) -> train::quant::Scheme {
    match arg {
        SchemeArg::Cpu => train::quant::Scheme::Cpu,
        SchemeArg::Accel => train::quant::Scheme::Accel,
    }
}

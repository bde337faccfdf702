//! `mixforge train | eval | generate | export | model params | doctor`.

use std::io::Write;

use anyhow::{Context, Result, bail};
use corpus::shards::Shards;
use train::checkpoint;
use train::data::{CapPolicy, Loader, LoaderConfig, Mixture};
use train::eval;
use train::generate::{self, Sampling};
use train::hf;
use train::loss::KdConfig;
use train::optim::AdamWConfig;
use train::trainer::{self, TrainConfig, Trainer};
use train::{AttnKind, ModelConfig};

use crate::cli::{CapPolicyArg, EvalArgs, ExportArgs, GenerateArgs, ModelChoice, ModelCommand, TrainArgs};

pub fn doctor() -> Result<()> {
    let mut out = std::io::stdout().lock();
    for (key, value) in train::device::report() {
        writeln!(out, "{key:>18}: {value}")?;
    }
    Ok(())
}

pub fn model(command: ModelCommand) -> Result<()> {
    let ModelCommand::Params(args) = command;
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

fn resolve_model(choice: &ModelChoice) -> Result<ModelConfig> {
    Ok(match (&choice.preset, &choice.config) {
        (Some(name), _) => ModelConfig::preset(name)?,
        (_, Some(path)) => ModelConfig::from_toml_file(path)?,
        _ => bail!("give --preset NAME or --config FILE"),
    })
}

pub fn train(args: &TrainArgs) -> Result<()> {
    let device = train::device::pick(Some(&args.device))?;
    let resumable = args.resume && checkpoint::resolve(&args.out).is_ok();
    let mut trainer = if resumable {
        let t = Trainer::resume(&args.out, device).with_context(|| format!("resuming {}", args.out.display()))?;
        eprintln!("resuming {} at step {}/{}", args.out.display(), t.step, t.config.steps);
        t
    } else {
        let config = train_config(args)?;
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
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "trained {} steps, {} tokens, {:.0} tokens/s; final train loss {:.4}",
        outcome.steps, outcome.tokens, outcome.tokens_per_s, outcome.final_train_loss
    )?;
    print_val(&mut out, &outcome.val_loss)?;
    let summary = args.out.join("summary.json");
    corpus::atomic::write_json(&summary, &outcome)?;
    writeln!(out, "checkpoint: {}", checkpoint::resolve(&args.out)?.display())?;
    Ok(())
}

fn train_config(args: &TrainArgs) -> Result<TrainConfig> {
    let shards_dir = args.shards.canonicalize().with_context(|| format!("shards {}", args.shards.display()))?;
    let shards = Shards::open(&shards_dir)?;
    let mut model = ModelConfig::resolve(&args.model)?;
    model.vocab_size = shards.manifest().vocab_size as usize;
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
    if args.seq_len > model.max_seq_len {
        bail!("--seq-len {} is longer than the model's max_seq_len {}", args.seq_len, model.max_seq_len);
    }
    let tokens_per_step = (args.seq_len * args.batch_size) as u64 * args.grad_accum.max(1);
    let steps = match (args.steps, args.tokens) {
        (Some(s), _) => s,
        (None, Some(t)) => t.div_ceil(tokens_per_step).max(1),
        (None, None) => bail!("give --steps or --tokens"),
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
        teacher: args.teacher.as_ref().map(|p| p.canonicalize().unwrap_or_else(|_| p.clone())),
        kd: KdConfig { temperature: args.kd_temperature, ce_weight: args.ce_weight },
        seed: args.seed,
    })
}

fn print_val(out: &mut impl Write, val: &std::collections::BTreeMap<String, f64>) -> Result<()> {
    if val.is_empty() {
        return Ok(());
    }
    writeln!(out, "  {:<12} {:>9} {:>11}", "domain", "val loss", "perplexity")?;
    for (domain, loss) in val {
        writeln!(out, "  {domain:<12} {loss:>9.4} {:>11.2}", loss.exp())?;
    }
    Ok(())
}

pub fn eval(args: &EvalArgs) -> Result<()> {
    let device = train::device::pick(Some(&args.device))?;
    let loaded = hf::load_any(&args.checkpoint, device, false)?;
    let tokenizer = corpus::tokenize::load(&loaded.tokenizer)?;
    let state = checkpoint::resolve(&args.checkpoint).and_then(|d| checkpoint::read_state(&d)).ok();
    let shards_dir = args.shards.clone().or_else(|| state.as_ref().map(|s| s.config.shards.clone()));
    let mut val = std::collections::BTreeMap::new();
    if let Some(dir) = shards_dir.filter(|d| d.exists()) {
        let shards = Shards::open(&dir)?;
        let seq_len = state.as_ref().map_or(256, |s| s.config.loader.seq_len).min(loaded.model.config.max_seq_len);
        let config = LoaderConfig {
            seq_len,
            batch_size: 8,
            seed: 0,
            doc_mask: false,
            reset_positions: false,
            cap_policy: CapPolicy::Warn,
            eos_id: train::data::eos_id(&tokenizer)?,
            data_fraction: 1.0,
        };
        let loader = Loader::new(&shards, &Mixture::uniform(&shards), config)?;
        let tensors = trainer::validation_tensors(&loader, args.eval_sequences, device);
        val = trainer::validation_loss(&loaded.model, &tensors, 8);
    }
    let mut scores = Vec::new();
    for path in &args.tasks {
        let items = eval::read_task(path, args.limit)?;
        let name = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
        scores.push(eval::evaluate(&loaded.model, &tokenizer, &name, &items)?);
    }
    let mut out = std::io::stdout().lock();
    if args.json {
        let perplexity: std::collections::BTreeMap<_, _> = val.iter().map(|(d, l)| (d.clone(), l.exp())).collect();
        let json = serde_json::json!({"val_loss": val, "val_perplexity": perplexity, "tasks": scores});
        writeln!(out, "{}", serde_json::to_string_pretty(&json)?)?;
        return Ok(());
    }
    print_val(&mut out, &val)?;
    if !scores.is_empty() {
        writeln!(out, "  {:<20} {:>6} {:>8} {:>9} {:>11}", "task", "items", "acc", "acc_norm", "perplexity")?;
        for s in &scores {
            let opt = |x: Option<f64>, p: usize| x.map_or("-".to_string(), |v| format!("{v:.p$}"));
            writeln!(
                out,
                "  {:<20} {:>6} {:>8.4} {:>9} {:>11}",
                s.task,
                s.items,
                s.acc,
                opt(s.acc_norm, 4),
                opt(s.perplexity, 2)
            )?;
        }
    }
    Ok(())
}

pub fn generate(args: &GenerateArgs) -> Result<()> {
    let device = train::device::pick(Some(&args.device))?;
    let loaded = hf::load_any(&args.checkpoint, device, false)?;
    let tokenizer = corpus::tokenize::load(&loaded.tokenizer)?;
    let sampling = Sampling { temperature: args.temperature, top_k: args.top_k, seed: args.seed };
    let text = generate::generate(&loaded.model, &tokenizer, &args.prompt, args.max_new_tokens, sampling)?;
    writeln!(std::io::stdout().lock(), "{}{}", args.prompt, text)?;
    Ok(())
}

pub fn export(args: &ExportArgs) -> Result<()> {
    let loaded = hf::load_any(&args.checkpoint, tch::Device::Cpu, false)?;
    hf::export(&loaded.model, &loaded.tokenizer, &args.out)?;
    writeln!(
        std::io::stdout().lock(),
        "exported {} parameters as MinistralForCausalLM → {}",
        loaded.model.config.param_count(),
        args.out.display()
    )?;
    Ok(())
}

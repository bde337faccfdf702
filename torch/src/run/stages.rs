//! What each stage of `mixforge run` reads from the recipe and does, through the same code as
//! the single commands (`corpus run`, `corpus shard`, `mix swarm`, `mix propose`, `train`,
//! `eval`, `report`).

use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::ValueEnum;
use corpus::config::{PipelineConfig, Stages};
use corpus::shards::ShardConfig;
use reports::layout;
use reports::stages::{EvalFile, EvalRow, StageMetric};
use serde_json::{Value, json};

use super::Ctx;
use crate::cli::{
    AggregateArg, BudgetArgs, CapPolicyArg, MixProposeArgs, MixSwarmArgs, SurrogateArg, TeacherPackingArg, TrainArgs,
};
use crate::commands;
use crate::progress::Bars;
use crate::recipe::Recipe;

/// Whether the recipe runs `stage` (the index only when `[search]` asks for it).
pub fn enabled(stage: &str, recipe: &Recipe) -> bool {
    match stage {
        "index" => recipe.search.as_ref().is_some_and(|s| s.index),
        "long_context" => recipe.long_context.is_some(),
        "specialists" | "merge" => recipe.specialists.is_some(),
        "qat" | "export" => recipe.qat.is_some(),
        "loo" => recipe.sft.as_ref().is_some_and(|s| s.mix == "loo"),
        "sft" => recipe.sft.is_some(),
        _ => true,
    }
}

/// Stages that continue an interrupted attempt over what it left (shard chunks, finished
/// proxies, checkpoints); the others start again.
pub fn resumable(stage: &str) -> bool {
    matches!(stage, "shards" | "swarm" | "train" | "long_context" | "specialists" | "qat" | "loo" | "sft")
}

/// The resolved recipe settings a stage depends on; their hash decides whether it reruns.
pub fn section(stage: &str, r: &Recipe) -> Result<Value> {
    Ok(match stage {
        "corpus" => {
            json!({"sources": r.sources, "filter": r.filter, "dedup": r.dedup, "decontam": r.decontam, "batch_docs": r.batch_docs})
        }
        "shards" => json!({"shards": r.shards}),
        "index" => json!({"search": r.search}),
        // The budget the swarm and the proposal aim at is the training run's.
        "swarm" => json!({"swarm": r.swarm, "target_tokens": r.train.target_tokens()}),
        "propose" => json!({"propose": r.propose, "swarm": r.swarm, "target_tokens": r.train.target_tokens()}),
        "train" => json!({"train": r.train}),
        // The phase trains with [train]'s mixture and device; its scores use eval's sequences.
        "long_context" => {
            json!({"long_context": r.long_context, "train": r.train, "eval_sequences": r.eval.eval_sequences})
        }
        "specialists" => json!({"specialists": r.specialists}),
        // The probe starts after the sequences evaluation scores, at training's length.
        "merge" => json!({"merge": r.merge, "probe_after": r.eval.eval_sequences, "seq_len": r.train.seq_len}),
        "eval" => json!({
            "eval": r.eval,
            "merged": r.specialists.is_some(),
            "long_context": r.long_context.is_some(),
            "seq_len": r.train.seq_len
        }),
        // QAT trains with [train]'s mixture and device and scores like evaluation does.
        "qat" => json!({
            "qat": r.qat,
            "train": r.train,
            "eval": r.eval,
            "merged": r.specialists.is_some(),
            "long_context": r.long_context.is_some()
        }),
        "export" => json!({"eval": r.eval, "seq_len": r.train.seq_len}),
        // The ablations depend on everything in [sft] but the final fine-tune's own steps and mix.
        "loo" => r.sft.as_ref().map_or(Value::Null, |s| {
            json!({"data": s.data, "seq_len": s.seq_len, "batch_size": s.batch_size, "lr": s.lr, "warmup": s.warmup,
                "val_fraction": s.val_fraction, "eval_examples": s.eval_examples, "loo_steps": s.loo_steps,
                "loo_base": s.loo_base, "eta": s.eta, "max_weight": s.max_weight, "seed": s.seed})
        }),
        "sft" => json!({"sft": r.sft, "device": r.train.device}),
        "report" => json!({"report": r.report}),
        other => bail!("unknown stage {other}"),
    })
}

/// Files outside the run a stage reads, whose bytes are part of its inputs.
pub fn external_inputs(stage: &str, r: &Recipe) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    match stage {
        "corpus" => {
            files.extend(corpus::ingest::expand_sources(&r.sources)?.into_iter().map(|f| f.path));
            files.extend(r.decontam.iter().flat_map(|d| d.evals.iter().cloned()));
        }
        "shards" => files.extend(r.shards.as_ref().and_then(|s| s.tokenizer.clone())),
        "swarm" | "propose" => {
            if !["natural", "uniform"].contains(&r.swarm.prior.as_str()) {
                files.push(PathBuf::from(&r.swarm.prior));
            }
            if stage == "swarm" {
                files.extend(model_file(&r.swarm.model));
            }
        }
        "train" => files.extend(model_file(&r.train.model)),
        "long_context" => {
            if let Some(l) = &r.long_context {
                files.extend(model_file(&l.teacher_model));
                files.extend(l.teacher.as_deref().map(teacher_weights).transpose()?.into_iter().flatten());
            }
        }
        "eval" => files.extend(r.eval.tasks.iter().cloned()),
        "loo" | "sft" => {
            for source in r.sft.iter().flat_map(|s| s.data.iter()) {
                files.extend(corpus::instruct::files(source)?);
            }
        }
        _ => {}
    }
    Ok(files)
}

/// The weights file of a teacher given as a checkpoint or Hugging Face directory.
fn teacher_weights(teacher: &std::path::Path) -> Result<Vec<PathBuf>> {
    let dir = train::checkpoint::resolve(teacher).unwrap_or_else(|_| teacher.to_path_buf());
    let weights = dir.join("model.safetensors");
    if weights.exists() {
        return Ok(vec![weights]);
    }
    // A sharded Hugging Face checkpoint: its index and every shard it names.
    let index = dir.join("model.safetensors.index.json");
    if !index.exists() {
        bail!(
            "[long_context] teacher {}: no model.safetensors or model.safetensors.index.json there (a mixforge run or a Hugging Face directory)",
            teacher.display()
        );
    }
    let map: Value = reports::stages::read_json(&index)?;
    let mut files: Vec<PathBuf> = map["weight_map"]
        .as_object()
        .map(|m| m.values().filter_map(Value::as_str).map(|f| dir.join(f)).collect())
        .unwrap_or_default();
    files.sort();
    files.dedup();
    files.insert(0, index);
    Ok(files)
}

/// A model given as a config file (not a preset name): its bytes are an input.
fn model_file(model: &str) -> Option<PathBuf> {
    train::ModelConfig::preset(model).is_err().then(|| PathBuf::from(model))
}

fn metric(name: &str, value: f64, higher_is_better: Option<bool>) -> StageMetric {
    StageMetric { name: name.to_string(), value, higher_is_better }
}

/// Runs one stage; what it prints goes to `log`. Returns its headline numbers.
pub fn execute(stage: &str, ctx: &Ctx, log: &mut Vec<u8>) -> Result<Vec<StageMetric>> {
    match stage {
        "corpus" => corpus_stage(ctx, log),
        "shards" => shards_stage(ctx, log),
        "index" => {
            let n = corpus::search::build_index(&ctx.path(layout::CORPUS), &ctx.path(layout::INDEX), &Bars::new())?;
            writeln!(log, "indexed {n} documents")?;
            Ok(vec![metric("documents indexed", n as f64, None)])
        }
        "swarm" => swarm_stage(ctx, log),
        "propose" => propose_stage(ctx, log),
        "train" => train_stage(ctx, log),
        "long_context" => long_context_stage(ctx, log),
        "specialists" => specialists_stage(ctx, log),
        "merge" => merge_stage(ctx, log),
        "eval" => eval_stage(ctx, log),
        "qat" => qat_stage(ctx, log),
        "loo" => loo_stage(ctx, log),
        "sft" => sft_stage(ctx, log),
        "export" => export_stage(ctx, log),
        "report" => {
            let written = reports::write(ctx.run, ctx.recipe.report.title.as_deref())?;
            writeln!(log, "report: {}\nmarkdown: {}", written.html.display(), written.markdown.display())?;
            Ok(vec![metric("figures", written.report.figures().len() as f64, None)])
        }
        other => bail!("unknown stage {other}"),
    }
}

fn corpus_stage(ctx: &Ctx, log: &mut Vec<u8>) -> Result<Vec<StageMetric>> {
    let r = ctx.recipe;
    let config = PipelineConfig {
        sources: r.sources.clone(),
        filter: r.filter.clone(),
        dedup: r.dedup.clone(),
        decontam: r.decontam.clone(),
        stages: Stages::ALL,
        strict: false,
        out: ctx.path(layout::CORPUS),
        batch_docs: r.batch_docs.unwrap_or(4096),
    };
    let report = corpus::pipeline::run(&config, &Bars::new())?;
    log.write_all(commands::corpus::render_report(&report, &config).as_bytes())?;
    let t = &report.manifest.accounting.totals;
    Ok(vec![
        metric("documents in", t.docs_in as f64, None),
        metric("documents kept", t.docs_kept as f64, None),
        metric("kept share (%)", 100.0 * t.docs_kept as f64 / t.docs_in.max(1) as f64, None),
    ])
}

fn shards_stage(ctx: &Ctx, log: &mut Vec<u8>) -> Result<Vec<StageMetric>> {
    let s = ctx.recipe.shards.as_ref().context("the run needs a [shards] section")?;
    let config = ShardConfig {
        input: ctx.path(layout::CORPUS),
        out: ctx.path(layout::SHARDS),
        tokenizer: commands::shards::tokenizer_choice(s.tokenizer.as_deref(), s.vocab_size, s.sample_docs)?,
        val_fraction: s.val_fraction,
        split_seed: s.split_seed,
        chunk_docs: s.chunk_docs,
    };
    let manifest = corpus::shards::write(&config, &Bars::new())?;
    log.write_all(commands::shards::render_shards(&manifest, &config.out).as_bytes())?;
    Ok(vec![
        metric("tokens", manifest.total_tokens as f64, None),
        metric("vocabulary", manifest.vocab_size as f64, None),
    ])
}

fn budget(ctx: &Ctx) -> BudgetArgs {
    let s = &ctx.recipe.swarm;
    BudgetArgs {
        shards: ctx.path(layout::SHARDS),
        target_tokens: ctx.recipe.train.target_tokens(),
        max_epochs: s.max_epochs,
        min_weight: s.min_weight,
        prior: s.prior.clone(),
    }
}

fn swarm_stage(ctx: &Ctx, log: &mut Vec<u8>) -> Result<Vec<StageMetric>> {
    let s = &ctx.recipe.swarm;
    let args = MixSwarmArgs {
        budget: budget(ctx),
        out: ctx.path(layout::SWARM),
        runs: s.runs,
        replicates: s.replicates,
        proxy_tokens: s.proxy_tokens,
        concentrations: s.concentrations.clone(),
        model: s.model.clone(),
        seq_len: s.seq_len,
        batch_size: s.batch_size,
        lr: s.lr,
        eval_sequences: s.eval_sequences,
        task: Vec::new(),
        task_limit: None,
        jobs: 0,
        seed: s.seed,
    };
    commands::swarm::swarm(&args, ctx.threads, log)?;
    let table = mixsim::RunsTable::read_csv(&args.out.join("runs.csv"))?;
    let m = table.metric_position("avg_val_loss")?;
    let best = table.rows.iter().map(|r| r.metrics[m]).fold(f64::INFINITY, f64::min);
    Ok(vec![metric("proxy runs", table.rows.len() as f64, None), metric("best proxy mean val loss", best, Some(false))])
}

fn propose_stage(ctx: &Ctx, log: &mut Vec<u8>) -> Result<Vec<StageMetric>> {
    let p = &ctx.recipe.propose;
    let surrogate = SurrogateArg::from_str(&p.surrogate, true).map_err(|_| {
        anyhow::anyhow!("[propose] surrogate = {:?}: expected auto, gbdt, mixing-law, linear or ensemble", p.surrogate)
    })?;
    let aggregate = AggregateArg::from_str(&p.aggregate, true)
        .map_err(|_| anyhow::anyhow!("[propose] aggregate = {:?}: expected argmin or bagged", p.aggregate))?;
    std::fs::create_dir_all(ctx.path(layout::PROPOSE))?;
    let args = MixProposeArgs {
        runs: ctx.path(layout::SWARM).join("runs.csv"),
        budget: budget(ctx),
        objective: p.objective.clone(),
        surrogate,
        bootstrap: p.bootstrap,
        kl_weight: p.kl_weight,
        risk: p.risk,
        aggregate,
        quantum_tokens: None,
        seed: p.seed,
        out: ctx.path(layout::PROPOSAL),
    };
    commands::mix::propose(&args, log)?;
    let proposal = mixsim::Proposal::load(&args.out)?;
    let cv: mixsim::model::CvFile = reports::stages::read_json(&ctx.path(layout::PROPOSAL_CV))?;
    let rho = cv.metrics.iter().map(|m| m.spearman).sum::<f64>() / cv.metrics.len().max(1) as f64;
    Ok(vec![
        metric("predicted objective (proxy scale)", proposal.predicted_objective, Some(false)),
        metric("surrogate CV Spearman (mean)", rho, Some(true)),
    ])
}

/// The training flags `[train]` describes (the train stage's run; later phases change some).
fn train_args(ctx: &Ctx) -> Result<TrainArgs> {
    let t = &ctx.recipe.train;
    let mix = match t.mix.as_str() {
        "proposal" => ctx.path(layout::PROPOSAL),
        "natural" | "uniform" => PathBuf::from(&t.mix),
        other => bail!("[train] mix = {other:?}: expected proposal, natural or uniform"),
    };
    Ok(TrainArgs {
        model: t.model.clone(),
        init: None,
        phase: "pretrain".into(),
        shards: ctx.path(layout::SHARDS),
        mix: Some(mix),
        steps: if t.tokens.is_some() { None } else { t.steps },
        tokens: t.tokens,
        out: ctx.path(layout::TRAIN),
        teacher: None,
        teacher_cache: None,
        resume: ctx.resume,
        batch_size: t.batch_size,
        seq_len: t.seq_len,
        grad_accum: t.grad_accum,
        lr: t.lr,
        warmup: t.warmup,
        min_lr_ratio: t.min_lr_ratio,
        weight_decay: t.weight_decay,
        grad_clip: t.grad_clip,
        seed: t.seed,
        eval_every: t.eval_every,
        eval_sequences: t.eval_sequences,
        checkpoint_every: t.checkpoint_every,
        keep_checkpoints: t.keep_checkpoints,
        doc_mask: t.doc_mask,
        reset_positions: t.reset_positions,
        rope_theta: None,
        teacher_packing: TeacherPackingArg::Same,
        qat: None,
        fixed_scales: false,
        cap_policy: CapPolicyArg::Warn,
        kd_temperature: 1.0,
        ce_weight: 0.0,
        device: t.device.clone(),
    })
}

/// Training uses every thread again (the swarm ran its proxies on one libtorch thread each).
fn use_all_threads(ctx: &Ctx) {
    let threads =
        if ctx.threads > 0 { ctx.threads } else { std::thread::available_parallelism().map_or(1, |n| n.get()) };
    tch::set_num_threads(threads as i32);
}

fn train_stage(ctx: &Ctx, log: &mut Vec<u8>) -> Result<Vec<StageMetric>> {
    use_all_threads(ctx);
    let args = train_args(ctx)?;
    if args.steps.is_none() && args.tokens.is_none() {
        bail!("[train] needs steps or tokens");
    }
    let outcome = commands::train::train_with(&args, &[], log)?;
    let mean = outcome.val_loss.values().sum::<f64>() / outcome.val_loss.len().max(1) as f64;
    Ok(vec![
        metric("final train loss", outcome.final_train_loss, Some(false)),
        metric("mean val loss", mean, Some(false)),
        metric("tokens/s", outcome.tokens_per_s, Some(true)),
    ])
}

/// The model later phases start from: the long-context phase's when the run has one.
fn phase_base(ctx: &Ctx) -> PathBuf {
    if ctx.recipe.long_context.is_some() {
        ctx.path(layout::LONG_CONTEXT).join("model")
    } else {
        ctx.path(layout::TRAIN)
    }
}

fn long_context_stage(ctx: &Ctx, log: &mut Vec<u8>) -> Result<Vec<StageMetric>> {
    let l = ctx.recipe.long_context.as_ref().context("the run has no [long_context]")?;
    use_all_threads(ctx);
    let dir = ctx.path(layout::LONG_CONTEXT);
    let packing = TeacherPackingArg::from_str(&l.packing, true)
        .map_err(|_| anyhow::anyhow!("[long_context] packing = {:?}: expected same or per-doc", l.packing))?;
    let phase = |out: PathBuf| -> Result<TrainArgs> {
        Ok(TrainArgs {
            seq_len: l.seq_len,
            batch_size: l.batch_size,
            grad_accum: 1,
            steps: Some(l.steps),
            tokens: None,
            lr: l.lr,
            warmup: (l.steps / 10).max(1),
            seed: l.seed,
            eval_every: 0,
            checkpoint_every: (l.steps / 2).max(1),
            out,
            ..train_args(ctx)?
        })
    };
    let teacher = match &l.teacher {
        Some(path) => path.clone(),
        None => {
            // No long-window teacher given: train one on the same data at the phase's window.
            let out = dir.join("teacher");
            let args = TrainArgs {
                model: l.teacher_model.clone(),
                steps: Some(l.teacher_steps),
                lr: l.teacher_lr,
                warmup: (l.teacher_steps / 10).max(1),
                phase: "teacher".into(),
                checkpoint_every: (l.teacher_steps / 2).max(1),
                // A long-context teacher sees across documents, whatever [train] does.
                doc_mask: false,
                reset_positions: false,
                ..phase(out.clone())?
            };
            writeln!(log, "training a teacher on {}-token windows → {}", l.seq_len, out.display())?;
            commands::train::train_with(&args, &[], log)?;
            out
        }
    };
    let args = TrainArgs {
        init: Some(ctx.path(layout::TRAIN)),
        phase: "long-context".into(),
        teacher: Some(teacher.clone()),
        rope_theta: l.rope_theta,
        teacher_packing: packing,
        // IPD: the packed window whole, attention across documents, positions not reset.
        doc_mask: false,
        reset_positions: false,
        ..phase(dir.join("model"))?
    };
    commands::train::train_with(&args, &[], log)?;
    let niah = dir.join("niah.jsonl");
    let distractors = 9;
    let lengths =
        if l.niah_lengths.is_empty() { vec![l.seq_len / 4, l.seq_len / 2, l.seq_len] } else { l.niah_lengths.clone() };
    commands::niah::make(
        &crate::cli::NiahMakeArgs {
            filler: ctx.path(layout::SHARDS),
            domain: l.niah_domain.clone(),
            tokenizer: None,
            lengths,
            depths: vec![0.0, 0.25, 0.5, 0.75, 1.0],
            per_cell: l.niah_per_cell,
            distractors,
            seed: l.seed,
            out: niah.clone(),
        },
        log,
    )?;
    let shards = ctx.path(layout::SHARDS);
    let tasks = [niah];
    let scoring = commands::train::Scoring {
        shards: Some(&shards),
        eval_sequences: ctx.recipe.eval.eval_sequences.min(16),
        seq_len: Some(l.seq_len),
        // The model before the phase may have a shorter window: it is measured past it.
        extend_window: true,
        by_position: Some(8),
        tasks: &tasks,
        limit: None,
        device: &ctx.recipe.train.device,
        chat: false,
    };
    let mut models = std::collections::BTreeMap::new();
    for (name, checkpoint) in [("before", ctx.path(layout::TRAIN)), ("after", dir.join("model")), ("teacher", teacher)]
    {
        let scores = commands::train::score(&checkpoint, &scoring)?;
        let needle = scores.tasks.first().context("the needle task was scored")?;
        let grid = needle
            .grid
            .iter()
            .flatten()
            .map(|c| reports::stages::NeedleCell {
                length: c.length,
                depth: c.depth,
                items: c.items,
                exact: c.exact,
                rank_acc: c.rank_acc,
            })
            .collect();
        writeln!(
            log,
            "{name}: needle exact {:.3}, key ranked first {:.3}",
            needle.acc,
            needle.rank_acc.unwrap_or(0.0)
        )?;
        models.insert(
            name.to_string(),
            reports::stages::LongContextScores {
                val_loss: scores.val,
                by_position: scores.by_position,
                needle_exact: needle.acc,
                needle_rank_acc: needle.rank_acc.unwrap_or(0.0),
                grid,
            },
        );
    }
    let mean = |m: &std::collections::BTreeMap<String, f64>| m.values().sum::<f64>() / m.len().max(1) as f64;
    let metrics = vec![
        metric("needle rank acc before", models["before"].needle_rank_acc, Some(true)),
        metric("needle rank acc after", models["after"].needle_rank_acc, Some(true)),
        metric("long-window val loss after", mean(&models["after"].val_loss), Some(false)),
    ];
    let file = reports::stages::LongContextFile {
        format_version: reports::stages::LONG_CONTEXT_FORMAT_VERSION,
        seq_len: l.seq_len,
        chance: 1.0 / (distractors + 1) as f64,
        models,
    };
    corpus::atomic::write_json(&ctx.path(layout::LONG_CONTEXT_SCORES), &file)?;
    Ok(metrics)
}

/// The specialists' names (their folders under `specialists/`), in order.
fn specialist_names(ctx: &Ctx) -> Result<Vec<String>> {
    let path = ctx.path(layout::SPECIALISTS).join("anneal.json");
    let record: Value = reports::stages::read_json(&path)?;
    Ok(record["specialists"].as_object().map(|m| m.keys().cloned().collect()).unwrap_or_default())
}

fn specialists_stage(ctx: &Ctx, log: &mut Vec<u8>) -> Result<Vec<StageMetric>> {
    let s = ctx.recipe.specialists.as_ref().context("the run has no [specialists]")?;
    let args = crate::cli::AnnealArgs {
        init: phase_base(ctx),
        shards: ctx.path(layout::SHARDS),
        specialists: Vec::new(),
        mix: Some(ctx.path(layout::PROPOSAL)),
        tilt: s.tilt,
        steps: Some(s.steps),
        tokens: None,
        lr: s.lr,
        seq_len: s.seq_len,
        batch_size: s.batch_size,
        jobs: 0,
        seed: s.seed,
        eval_sequences: ctx.recipe.train.eval_sequences,
        checkpoint_every: (s.steps / 2).max(1),
        device: ctx.recipe.train.device.clone(),
        out: ctx.path(layout::SPECIALISTS),
    };
    commands::anneal::anneal(&args, ctx.threads, log)?;
    Ok(vec![metric("specialists", specialist_names(ctx)?.len() as f64, None)])
}

fn merge_stage(ctx: &Ctx, log: &mut Vec<u8>) -> Result<Vec<StageMetric>> {
    let m = &ctx.recipe.merge;
    let method = crate::cli::MergeMethodArg::from_str(&m.method, true)
        .map_err(|_| anyhow::anyhow!("[merge] method = {:?}: expected linear, task-arithmetic or ties", m.method))?;
    let search = match m.search.as_str() {
        "none" => None,
        other => Some(crate::cli::SearchArg::from_str(other, true).map_err(|_| {
            anyhow::anyhow!("[merge] search = {other:?}: expected surrogate, grid, greedy-soup or none")
        })?),
    };
    let dir = ctx.path(layout::SPECIALISTS);
    let args = crate::cli::MergeArgs {
        checkpoints: specialist_names(ctx)?.iter().map(|n| dir.join(n)).collect(),
        weights: Vec::new(),
        search,
        probe_after: ctx.recipe.eval.eval_sequences,
        probe_sequences: m.probe_sequences,
        probe_seq_len: ctx.recipe.train.seq_len,
        probe_shards: Some(ctx.path(layout::SHARDS)),
        grid_steps: 4,
        design: None,
        seed: m.seed,
        method,
        base: Some(phase_base(ctx)),
        density: m.density,
        out: ctx.path(layout::MERGE),
    };
    commands::train::merge(&args, log)?;
    let search_file = ctx.path(layout::MERGE).join("search.json");
    let mut metrics = Vec::new();
    if search_file.exists() {
        let search: Value = reports::stages::read_json(&search_file)?;
        if let Some(loss) = search["chosen"]["probe_loss"].as_f64() {
            metrics.push(metric("merge probe loss", loss, Some(false)));
        }
    }
    Ok(metrics)
}

/// The run's final full-precision model (relative path, stage): the merge when there is one,
/// else the last phase's.
fn final_model(ctx: &Ctx) -> (String, &'static str) {
    if ctx.recipe.specialists.is_some() {
        (layout::MERGE.to_string(), "merge")
    } else if ctx.recipe.long_context.is_some() {
        (format!("{}/model", layout::LONG_CONTEXT), "long_context")
    } else {
        (layout::TRAIN.to_string(), "train")
    }
}

fn eval_stage(ctx: &Ctx, log: &mut Vec<u8>) -> Result<Vec<StageMetric>> {
    let e = &ctx.recipe.eval;
    let (final_dir, final_name) = final_model(ctx);
    let checkpoint = ctx.path(&final_dir);
    let shards = ctx.path(layout::SHARDS);
    let scoring = eval_scoring(ctx, &shards);
    let commands::train::Scores { val, tasks: scores, .. } = commands::train::score(&checkpoint, &scoring)?;
    commands::train::print_val(log, &val)?;
    let mut rows = Vec::new();
    for (domain, loss) in &val {
        // `n` is the most sequences scored per domain; a small domain may have fewer.
        let n = e.eval_sequences as u64;
        rows.push(EvalRow {
            task: format!("val/{domain}"),
            metric: "loss".into(),
            value: *loss,
            stderr: None,
            n,
            higher_is_better: false,
        });
        rows.push(EvalRow {
            task: format!("val/{domain}"),
            metric: "perplexity".into(),
            value: loss.exp(),
            stderr: None,
            n,
            higher_is_better: false,
        });
    }
    let mut metrics = Vec::new();
    if !val.is_empty() {
        metrics.push(metric("mean val loss", val.values().sum::<f64>() / val.len() as f64, Some(false)));
    }
    for s in &scores {
        let n = s.items as u64;
        // The standard error of a mean of 0/1 outcomes (sample standard deviation / √n), as
        // lm-evaluation-harness reports it.
        let stderr = |p: f64| (n > 1).then(|| (p * (1.0 - p) / (n - 1) as f64).sqrt());
        rows.push(EvalRow {
            task: s.task.clone(),
            metric: "acc".into(),
            value: s.acc,
            stderr: stderr(s.acc),
            n,
            higher_is_better: true,
        });
        if let Some(acc_norm) = s.acc_norm {
            rows.push(EvalRow {
                task: s.task.clone(),
                metric: "acc_norm".into(),
                value: acc_norm,
                stderr: stderr(acc_norm),
                n,
                higher_is_better: true,
            });
        }
        if let Some(ppl) = s.perplexity {
            rows.push(EvalRow {
                task: s.task.clone(),
                metric: "perplexity".into(),
                value: ppl,
                stderr: None,
                n,
                higher_is_better: false,
            });
        }
        writeln!(log, "{}: acc {:.4} over {} items", s.task, s.acc, s.items)?;
        metrics.push(metric(&format!("{} acc", s.task), s.acc, Some(true)));
    }
    // JSON has no NaN or infinity: a value that is not finite (an overflowing perplexity) is
    // left out rather than written as a null the reader would refuse.
    rows.retain(|r| r.value.is_finite());
    std::fs::create_dir_all(ctx.path("eval"))?;
    // With specialists, every model's validation loss, for comparing them with the base.
    let mut models = std::collections::BTreeMap::new();
    if ctx.recipe.specialists.is_some() {
        models.insert(final_name.to_string(), val.clone());
        let mut others = vec![("base".to_string(), phase_base(ctx))];
        for name in specialist_names(ctx)? {
            others.push((format!("specialist {name}"), ctx.path(layout::SPECIALISTS).join(&name)));
        }
        let val_only = commands::train::Scoring { tasks: &[], ..scoring };
        for (name, dir) in others {
            models.insert(name, commands::train::score(&dir, &val_only)?.val);
        }
    }
    let file =
        EvalFile { format_version: reports::stages::EVAL_FORMAT_VERSION, checkpoint: final_dir.clone(), rows, models };
    corpus::atomic::write_json(&ctx.path(layout::EVAL), &file)?;
    Ok(metrics)
}

/// A model scored as the evaluation stage scores every model it compares: `[eval]`'s sequences
/// and tasks over the training run's windows (a long-context model's own window would give it
/// more context than the others).
fn eval_scoring<'a>(ctx: &'a Ctx, shards: &'a std::path::Path) -> commands::train::Scoring<'a> {
    let e = &ctx.recipe.eval;
    commands::train::Scoring {
        shards: Some(shards),
        eval_sequences: e.eval_sequences,
        seq_len: Some(ctx.recipe.train.seq_len),
        extend_window: false,
        by_position: None,
        tasks: &e.tasks,
        limit: e.limit,
        device: &ctx.recipe.train.device,
        chat: false,
    }
}

fn quant_scores(ctx: &Ctx, checkpoint: &std::path::Path) -> Result<reports::stages::QuantScores> {
    let shards = ctx.path(layout::SHARDS);
    let scores = commands::train::score(checkpoint, &eval_scoring(ctx, &shards))?;
    Ok(reports::stages::QuantScores {
        val_loss: scores.val,
        tasks: scores.tasks.iter().map(|t| (t.task.clone(), t.acc)).collect(),
    })
}

fn mean_loss(s: &reports::stages::QuantScores) -> f64 {
    s.val_loss.values().sum::<f64>() / s.val_loss.len().max(1) as f64
}

/// PTQ of the final model, then QAT from it; all three scored on the same windows.
fn qat_stage(ctx: &Ctx, log: &mut Vec<u8>) -> Result<Vec<StageMetric>> {
    let q = ctx.recipe.qat.as_ref().context("the run has no [qat]")?;
    let scheme = crate::cli::SchemeArg::from_str(&q.scheme, true)
        .map_err(|_| anyhow::anyhow!("[qat] scheme = {:?}: expected cpu or accel", q.scheme))?;
    let distil = match q.teacher.as_str() {
        "self" => true,
        "labels" => false,
        other => bail!("[qat] teacher = {other:?}: expected self (self-distillation) or labels"),
    };
    use_all_threads(ctx);
    let base = ctx.path(&final_model(ctx).0);
    let dir = ctx.path(layout::QAT);
    let ptq = dir.join("ptq");
    if !ptq.join("checkpoints/latest").exists() {
        // A PTQ killed while writing leaves no `latest`: it is redone from scratch.
        if ptq.exists() {
            std::fs::remove_dir_all(&ptq).with_context(|| format!("removing {}", ptq.display()))?;
        }
        let args = crate::cli::QuantizeArgs {
            checkpoint: base.clone(),
            scheme,
            keep_embeddings: !q.embeddings,
            out: ptq.clone(),
        };
        commands::train::quantize(&args, log)?;
    }
    // QAT starts from the PTQ checkpoint (its scheme and quantized layers); `self` is its
    // full-precision weights, the final model's.
    let args = TrainArgs {
        init: Some(ptq.clone()),
        phase: "qat".into(),
        steps: Some(q.steps),
        tokens: None,
        out: dir.join("model"),
        teacher: distil.then(|| PathBuf::from("self")),
        qat: Some(scheme),
        fixed_scales: scheme == crate::cli::SchemeArg::Accel && !q.learnable_scales,
        lr: q.lr,
        warmup: (q.steps / 10).min(ctx.recipe.train.warmup),
        batch_size: q.batch_size,
        seed: q.seed,
        ..train_args(ctx)?
    };
    let tokens = q.steps * (q.batch_size * args.seq_len) as u64 * args.grad_accum.max(1);
    commands::train::train_with(&args, &[], log)?;
    let mut models = std::collections::BTreeMap::new();
    for (name, checkpoint) in [("fp", base), ("ptq", ptq), ("qat", dir.join("model"))] {
        let scores = quant_scores(ctx, &checkpoint)?;
        writeln!(log, "{name}: mean val loss {:.4}", mean_loss(&scores))?;
        models.insert(name.to_string(), scores);
    }
    let (fp, ptq, qat) = (mean_loss(&models["fp"]), mean_loss(&models["ptq"]), mean_loss(&models["qat"]));
    let file = reports::stages::QatFile {
        format_version: reports::stages::QAT_FORMAT_VERSION,
        scheme: q.scheme.to_lowercase(),
        teacher: q.teacher.clone(),
        tokens,
        seq_len: ctx.recipe.train.seq_len,
        models,
    };
    corpus::atomic::write_json(&ctx.path(layout::QAT_SCORES), &file)?;
    Ok(vec![
        metric("PTQ loss increase", ptq - fp, Some(false)),
        metric("QAT loss increase", qat - fp, Some(false)),
        metric("share of PTQ loss recovered", if ptq != fp { (ptq - qat) / (ptq - fp) } else { f64::NAN }, Some(true)),
    ])
}

/// The QAT model as packed int4, GGUF and (dequantized) HF; sizes and CPU speed against the
/// full-precision model; the real int4 model's scores.
fn export_stage(ctx: &Ctx, log: &mut Vec<u8>) -> Result<Vec<StageMetric>> {
    let dir = ctx.path(layout::EXPORT);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let qat = ctx.path(&format!("{}/model", layout::QAT));
    let loaded = train::hf::load_any(&qat, tch::Device::Cpu, false)?;
    let (int4, gguf, hf) = (dir.join("int4"), dir.join("model.gguf"), dir.join("hf"));
    train::int4::export(&loaded.model, &loaded.tokenizer, &int4)?;
    train::gguf::export(&loaded.model, &loaded.tokenizer, &gguf)?;
    train::hf::export(&loaded.model, &loaded.tokenizer, &hf)?;
    let fp = train::checkpoint::resolve(&ctx.path(&final_model(ctx).0))?;
    let seq_len = ctx.recipe.train.seq_len;
    let rel = |p: &std::path::Path| p.strip_prefix(ctx.run).unwrap_or(p).display().to_string();
    let file_size = |p: &std::path::Path| std::fs::metadata(p).map_or(0, |m| m.len());
    let files = vec![
        reports::stages::ExportedFile {
            format: "fp32 checkpoint".into(),
            path: rel(&fp.join("model.safetensors")),
            bytes: file_size(&fp.join("model.safetensors")),
            tokens_per_s: Some(commands::train::cpu_tokens_per_s(&fp, seq_len, 4, 1.0)?),
        },
        reports::stages::ExportedFile {
            format: "int4 (mixforge)".into(),
            path: rel(&int4),
            bytes: train::int4::size_on_disk(&int4),
            tokens_per_s: Some(commands::train::cpu_tokens_per_s(&int4, seq_len, 4, 1.0)?),
        },
        reports::stages::ExportedFile {
            format: "GGUF Q4_0 (llama.cpp)".into(),
            path: rel(&gguf),
            bytes: file_size(&gguf),
            tokens_per_s: None,
        },
        reports::stages::ExportedFile {
            format: "HF safetensors (int4 values in fp32)".into(),
            path: rel(&hf),
            bytes: train::int4::size_on_disk(&hf),
            tokens_per_s: None,
        },
    ];
    for f in &files {
        writeln!(
            log,
            "{}: {:.2} MB{}",
            f.format,
            f.bytes as f64 / 1e6,
            f.tokens_per_s.map_or(String::new(), |t| format!(", {t:.0} tokens/s"))
        )?;
    }
    let int4_scores = quant_scores(ctx, &int4)?;
    let speedup = files[1].tokens_per_s.unwrap_or(f64::NAN) / files[0].tokens_per_s.unwrap_or(f64::NAN);
    let metrics = vec![
        metric("int4 size / fp32 size", files[1].bytes as f64 / files[0].bytes.max(1) as f64, Some(false)),
        metric("int4 CPU speed / fp32", speedup, Some(true)),
        metric("int4 mean val loss", mean_loss(&int4_scores), Some(false)),
    ];
    let file = reports::stages::ExportsFile {
        format_version: reports::stages::QAT_FORMAT_VERSION,
        files,
        int4_scores,
        threads: tch::get_num_threads() as usize,
    };
    corpus::atomic::write_json(&ctx.path(layout::EXPORTS), &file)?;
    Ok(metrics)
}

/// `[sft]`'s data and training settings, for `steps` steps from the final model.
fn instruct_settings(ctx: &Ctx, steps: u64) -> Result<(crate::cli::InstructArgs, crate::cli::SftTrainingArgs)> {
    let s = ctx.recipe.sft.as_ref().context("the run has no [sft]")?;
    if s.data.is_empty() {
        bail!("[sft] names no instruction data: add [[sft.data]] tables (domain, paths)");
    }
    let data = crate::cli::InstructArgs {
        init: ctx.path(&final_model(ctx).0),
        data: Vec::new(),
        sources: None,
        val_fraction: s.val_fraction,
    };
    let training = crate::cli::SftTrainingArgs {
        steps: Some(steps),
        tokens: None,
        batch_size: s.batch_size,
        seq_len: s.seq_len,
        grad_accum: 1,
        lr: s.lr,
        warmup: s.warmup.min(steps / 5),
        min_lr_ratio: 0.1,
        weight_decay: 0.0,
        grad_clip: 1.0,
        eval_examples: s.eval_examples,
        seed: s.seed,
    };
    Ok((data, training))
}

/// The D + 1 leave-one-out fine-tunes and the reweighted mixture (`loo/loo.toml`).
fn loo_stage(ctx: &Ctx, log: &mut Vec<u8>) -> Result<Vec<StageMetric>> {
    let s = ctx.recipe.sft.as_ref().context("the run has no [sft]")?;
    let (data, training) = instruct_settings(ctx, s.loo_steps)?;
    let args = crate::cli::MixLooArgs {
        data,
        training,
        mix: Some(PathBuf::from(&s.loo_base)),
        eval: Vec::new(),
        eval_limit: None,
        eta: s.eta,
        max_weight: s.max_weight,
        jobs: 0,
        out: ctx.path(layout::LOO),
    };
    let result = commands::sft::loo_with(&args, s.data.clone(), ctx.threads, log)?;
    let moved = result.weights.iter().map(|(d, w)| (w - result.base[d]).abs()).sum::<f64>() / 2.0;
    Ok(vec![
        metric("leave-one-out fine-tunes", (result.deltas.domains.len() + 1) as f64, None),
        metric("weight moved by the rule", moved, None),
    ])
}

/// The instruction fine-tune of the final model, scored before and after.
fn sft_stage(ctx: &Ctx, log: &mut Vec<u8>) -> Result<Vec<StageMetric>> {
    use_all_threads(ctx);
    let s = ctx.recipe.sft.as_ref().context("the run has no [sft]")?;
    let (data, training) = instruct_settings(ctx, s.steps)?;
    let mix = match s.mix.as_str() {
        "loo" => ctx.path(&format!("{}/loo.toml", layout::LOO)),
        "natural" | "uniform" => PathBuf::from(&s.mix),
        other => bail!("[sft] mix = {other:?}: expected natural, uniform or loo"),
    };
    let args = crate::cli::SftArgs {
        data,
        training,
        mix: Some(mix),
        out: ctx.path(&format!("{}/model", layout::SFT)),
        resume: true,
        eval_every: 0,
        checkpoint_every: (s.steps / 4).max(1),
        keep_checkpoints: 2,
        eval: Vec::new(),
        eval_limit: None,
        device: ctx.recipe.train.device.clone(),
    };
    let summary = commands::sft::sft_with(&args, s.data.clone(), log)?;
    let before = summary.before.clone().context("the fine-tune recorded no starting scores (before.json)")?;
    let tokens_total: f64 = summary.data.values().map(|c| c.train_tokens as f64).sum();
    let loo = if s.mix == "loo" {
        let r: commands::sft::LooResult = reports::stages::read_json(&ctx.path(&format!("{}/loo.json", layout::LOO)))?;
        Some(reports::stages::LooSummary {
            domains: r.deltas.domains,
            metrics: r.deltas.metrics,
            delta: r.deltas.delta,
            scores: r.scores,
            base: r.base,
            eta: r.rule.eta,
            max_weight: r.rule.max_weight,
            steps: s.loo_steps,
        })
    } else {
        None
    };
    let file = reports::stages::InstructFile {
        format_version: reports::stages::INSTRUCT_FORMAT_VERSION,
        mix: s.mix.clone(),
        weights: summary.weights.clone(),
        natural: summary.data.iter().map(|(d, c)| (d.clone(), c.train_tokens as f64 / tokens_total)).collect(),
        tokens: summary.tokens,
        held_out: summary.data.iter().map(|(d, c)| (d.clone(), c.val_examples)).collect(),
        short_answers: summary.exact_match_items.clone(),
        malformed: summary.data.iter().map(|(d, c)| (d.clone(), c.malformed)).collect(),
        before: reports::stages::InstructScores { val_loss: before.val_loss.clone(), exact_match: before.exact_match },
        after: reports::stages::InstructScores {
            val_loss: summary.val_loss.clone(),
            exact_match: summary.exact_match.clone(),
        },
        loo,
    };
    corpus::atomic::write_json(&ctx.path(layout::SFT_SCORES), &file)?;
    let mean = |m: &std::collections::BTreeMap<String, f64>| m.values().sum::<f64>() / m.len().max(1) as f64;
    Ok(vec![
        metric("held-out instruction loss before", mean(&before.val_loss), Some(false)),
        metric("held-out instruction loss after", mean(&summary.val_loss), Some(false)),
        metric("exact match after (mean over domains)", mean(&summary.exact_match), Some(true)),
    ])
}

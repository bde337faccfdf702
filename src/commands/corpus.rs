//! `mixforge corpus ...`: build a pipeline config from the recipe and flags, run it, report.

use std::io::Write;

use anyhow::{Context, Result};
use corpus::config::{DedupScope, FilterMode, PipelineConfig, Stages};
use corpus::decontam::DecontamConfig;
use corpus::pipeline::parts::{self, Shard};
use corpus::pipeline::{self, RunReport};

use crate::cli::{CorpusCommand, FilterModeArg, FinishArgs, ReduceArgs, RunArgs, ScopeArg};
use crate::progress::Bars;
use crate::recipe::{self, Recipe};

/// Runs one corpus command.
pub fn run(command: CorpusCommand) -> Result<()> {
    let (args, stages) = match command {
        CorpusCommand::Shard(args) => return super::shards::shard(&args),
        CorpusCommand::Decode(args) => return super::shards::decode(&args),
        CorpusCommand::Index(args) => return super::shards::index(&args),
        CorpusCommand::Search(args) => return super::shards::search(&args),
        CorpusCommand::Reduce(args) => return reduce(&args),
        CorpusCommand::Finish(args) => return finish(&args),
        CorpusCommand::Slurm(args) => return super::slurm::submit(args),
        CorpusCommand::Run(args) => (args, Stages::ALL),
        CorpusCommand::Ingest(args) => (args, Stages { profile: false, filter: false, dedup: false }),
        CorpusCommand::Profile(args) => (args, Stages { profile: true, filter: false, dedup: false }),
        CorpusCommand::Filter(args) => (args, Stages { profile: true, filter: true, dedup: false }),
        CorpusCommand::Dedup(args) => (args, Stages { profile: false, filter: false, dedup: true }),
        CorpusCommand::Decontam(args) => {
            anyhow::ensure!(
                !args.evals.is_empty() || args.recipe.is_some(),
                "corpus decontam needs evaluation sets: --eval FILE (repeatable) or a recipe with [decontam] evals"
            );
            (args, Stages { profile: false, filter: false, dedup: false })
        }
    };
    let json = args.json;
    let full_run = stages == Stages::ALL;
    let shard = args.shard.as_deref().map(Shard::parse).transpose()?;
    // A shard without a recipe or sources takes its settings from the run directory.
    let settled = shard.filter(|_| args.recipe.is_none() && args.sources.is_empty());
    if settled.is_some() && has_setting_flags(&args) {
        anyhow::bail!(
            "--shard without a recipe or --source takes every setting from OUT/parts/config.json; drop the other \
             flags, or give the recipe and flags every part was made with"
        );
    }
    let (config, later) = if let Some(shard) = settled {
        let out =
            args.out.clone().context("--shard without a recipe or --source needs --out (a sharded run's folder)")?;
        let (config, count, _) = parts::load_settings(&out)?;
        anyhow::ensure!(
            shard.count == count,
            "{} was set up for {count} shards (parts/config.json), not {}",
            out.display(),
            shard.count
        );
        (config, recipe::LaterStages::default())
    } else {
        pipeline_config(args, stages)?
    };
    if let Some(shard) = shard {
        let part = parts::run_part(&config, shard, &Bars::new())
            .with_context(|| format!("part {shard} of the corpus run in {}", config.out.display()))?;
        writeln!(
            std::io::stdout().lock(),
            "part {shard}: {} input files, {} documents, {} malformed records → {}",
            part.files,
            part.docs,
            part.rejected,
            part.path.display()
        )?;
        return Ok(());
    }
    let report =
        pipeline::run(&config, &Bars::new()).with_context(|| format!("corpus run into {}", config.out.display()))?;
    let mut text = render_report(&report, &config);
    if full_run {
        text.push_str(&super::shards::after_run(&config.out, &later)?);
    }
    print_run(&config, &text, json)
}

/// Whether any flag changing the corpus settings was given.
fn has_setting_flags(args: &RunArgs) -> bool {
    args.strict
        || args.filter_mode.is_some()
        || args.threshold.is_some()
        || args.num_perm.is_some()
        || args.bands.is_some()
        || args.rows.is_some()
        || args.ngram.is_some()
        || args.seed.is_some()
        || args.scope.is_some()
        || args.no_verify
        || args.no_minhash
        || args.no_exact
        || !args.evals.is_empty()
        || args.decontam_ngram.is_some()
        || args.drop_contaminated
}

/// `corpus reduce`: a sharded run's parts into the outputs of one run.
fn reduce(args: &ReduceArgs) -> Result<()> {
    let (config, report) = parts::reduce(&args.out, args.finish_by_shard, &Bars::new())
        .with_context(|| format!("reducing the sharded corpus run in {}", args.out.display()))?;
    let mut text = render_report(&report, &config);
    if args.finish_by_shard {
        text.push_str(&format!(
            "kept documents next: `mixforge corpus finish --out {out} --shard I/N` for each task, then `mixforge \
             corpus finish --out {out}`\n",
            out = args.out.display()
        ));
    }
    print_run(&config, &text, args.json)
}

/// `corpus finish`: one task's share of the kept files, or the merge of every task's.
fn finish(args: &FinishArgs) -> Result<()> {
    let context = || format!("finishing the sharded corpus run in {}", args.out.display());
    if let Some(shard) = &args.shard {
        let shard = Shard::parse(shard)?;
        let task = pipeline::finish::run_task(&args.out, shard, &Bars::new()).with_context(context)?;
        let done = if task.already_done { " (already done for this reduce)" } else { "" };
        writeln!(
            std::io::stdout().lock(),
            "finish {shard}: {} kept documents, {} row groups encoded, {} rows left to the merge{done} → {}",
            task.kept,
            task.groups,
            task.edge_rows,
            task.dir.display()
        )?;
        return Ok(());
    }
    let (config, report) = pipeline::finish::merge(&args.out, &Bars::new()).with_context(context)?;
    print_run(&config, &render_report(&report, &config), args.json)
}

/// Prints the run's summary, or its manifest with `--json`.
fn print_run(config: &PipelineConfig, text: &str, json: bool) -> Result<()> {
    let mut stdout = std::io::stdout().lock();
    if json {
        let manifest: serde_json::Value = serde_json::from_slice(&std::fs::read(config.out.join("manifest.json"))?)?;
        serde_json::to_writer_pretty(&mut stdout, &manifest)?;
        writeln!(stdout)?;
    } else {
        write!(stdout, "{text}")?;
    }
    Ok(())
}

/// Recipe first, then flags on top. Also returns the recipe's later stages (shards, index).
pub fn pipeline_config(args: RunArgs, stages: Stages) -> Result<(PipelineConfig, recipe::LaterStages)> {
    let mut recipe = match &args.recipe {
        Some(path) => Recipe::load(path)?,
        None => Recipe::default(),
    };
    if !args.sources.is_empty() {
        recipe.sources = args.sources.iter().map(|s| recipe::parse_source_flag(s)).collect::<Result<_>>()?;
    }
    if recipe.sources.is_empty() {
        anyhow::bail!("no sources: pass a recipe (e.g. recipes/demo.toml) or --source DOMAIN=PATH_OR_GLOB");
    }
    if let Some(mode) = args.filter_mode {
        recipe.filter.mode = match mode {
            FilterModeArg::Annotate => FilterMode::Annotate,
            FilterModeArg::Drop => FilterMode::Drop,
            FilterModeArg::Off => FilterMode::Off,
        };
    }
    let dedup = &mut recipe.dedup;
    if let Some(t) = args.threshold {
        dedup.threshold = t;
    }
    if let Some(n) = args.num_perm {
        dedup.num_perm = n;
    }
    if args.bands.is_some() {
        (dedup.bands, dedup.rows) = (args.bands, args.rows);
    }
    if let Some(n) = args.ngram {
        dedup.ngram = n;
    }
    if let Some(seed) = args.seed {
        dedup.seed = seed;
    }
    if let Some(scope) = args.scope {
        dedup.scope = match scope {
            ScopeArg::Global => DedupScope::Global,
            ScopeArg::PerDomain => DedupScope::PerDomain,
        };
    }
    if !args.evals.is_empty() || args.decontam_ngram.is_some() || args.drop_contaminated {
        let decontam =
            recipe.decontam.get_or_insert_with(|| DecontamConfig { evals: Vec::new(), ngram: 13, drop: false });
        decontam.evals.extend(args.evals.iter().cloned());
        if let Some(n) = args.decontam_ngram {
            decontam.ngram = n;
        }
        decontam.drop |= args.drop_contaminated;
    }
    let dedup = &mut recipe.dedup;
    dedup.verify &= !args.no_verify;
    dedup.minhash &= !args.no_minhash;
    dedup.exact &= !args.no_exact;
    let later = recipe::LaterStages { shards: recipe.shards, search: recipe.search };
    let config = PipelineConfig {
        sources: recipe.sources,
        filter: recipe.filter,
        dedup: recipe.dedup,
        decontam: recipe.decontam,
        stages,
        strict: args.strict,
        out: args.out.unwrap_or_else(recipe::default_out),
        batch_docs: recipe.batch_docs.unwrap_or(4096),
    };
    Ok((config, later))
}

/// The human-readable report printed after a run.
pub fn render_report(report: &RunReport, config: &PipelineConfig) -> String {
    let m = &report.manifest;
    let t = &m.accounting.totals;
    let mut out = String::new();
    if !report.summary.is_empty() {
        out.push_str(&corpus::summary::render(&report.summary));
        out.push('\n');
    }
    out.push_str(&format!(
        "documents: {} in = {} kept + {} dropped; {} malformed records rejected\n",
        t.docs_in,
        t.docs_kept,
        t.dropped.values().sum::<u64>(),
        t.rejected_total()
    ));
    for (reason, n) in &t.dropped {
        out.push_str(&format!("  dropped {reason}: {n}\n"));
    }
    for (reason, n) in &t.rejected {
        out.push_str(&format!("  rejected {reason}: {n} (see rejects.jsonl)\n"));
    }
    if !t.filter_flagged.is_empty() {
        let mode = if config.filter.mode == FilterMode::Drop { "dropped" } else { "flagged, kept" };
        out.push_str(&format!("quality rules ({mode}):\n"));
        for (rule, n) in &t.filter_flagged {
            out.push_str(&format!("  {rule}: {n}\n"));
        }
    }
    if !t.contaminated.is_empty() {
        out.push_str("contaminated documents (by benchmark):\n");
        for (benchmark, n) in &t.contaminated {
            out.push_str(&format!("  {benchmark}: {n}\n"));
        }
    }
    if let Some(d) = &m.dedup_report {
        if let Some(lsh) = d.lsh {
            let curve: Vec<String> = d.s_curve.iter().map(|(s, p)| format!("P({s:.1})={p:.3}")).collect();
            out.push_str(&format!(
                "minhash: {} perms, {} bands × {} rows, {}-grams; candidate probability {}\n",
                config.dedup.num_perm,
                lsh.bands,
                lsh.rows,
                config.dedup.ngram,
                curve.join(" ")
            ));
        }
        out.push_str(&format!(
            "dedup: {} exact + {} near duplicates removed; {} clusters (largest {}); {} candidate pairs, {} verified, {} rejected\n",
            d.exact_removed, d.near_removed, d.clusters, d.largest_cluster, d.candidate_pairs, d.verified_pairs, d.rejected_pairs
        ));
        if !d.oversized_clusters.is_empty() {
            out.push_str(&format!("  oversized clusters kept whole: {:?}\n", d.oversized_clusters));
        }
    }
    let total = m.timings.get("total").copied().unwrap_or(0.0);
    out.push_str(&format!("time: {total:.2} s ({:.1} MB/s of text)\n", t.bytes_in as f64 / 1e6 / total.max(1e-9)));
    out.push_str(&format!("outputs in {}:\n", config.out.display()));
    for rel in m.outputs.values() {
        out.push_str(&format!("  {rel}\n"));
    }
    out.push_str("  manifest.json\n");
    out
}

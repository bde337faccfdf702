//! `mixforge mix import | fit | predict | propose | materialize`: the data-mix simulator's
//! commands that need no libtorch. `mix swarm` and `mix loo` train models, so they run in
//! `mixforge-torch` (`torch/src/commands/swarm.rs`), sharing `budget` and `prior` from here.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use mixsim::model::{CvFile, CvMetric};
use mixsim::{
    Aggregate, Budget, FittedModel, MaterializeConfig, Proposal, ProposeConfig, RunsTable, SearchConfig, SurrogateKind,
};

use crate::cli::{AggregateArg, BudgetArgs, MixCommand, MixProposeArgs, SurrogateArg};

/// The metric every swarm records and `propose` optimises by default: the mean over domains of
/// the per-domain validation loss.
pub const AVG_VAL_LOSS: &str = "avg_val_loss";

/// Runs one mix command other than `swarm` and `loo` (see `needs_libtorch`).
pub fn run(command: MixCommand) -> Result<()> {
    let mut stdout = std::io::stdout().lock();
    match command {
        MixCommand::Import(args) => {
            let table = RunsTable::import_regmix(&args.mixtures, &args.metrics)?;
            table.write_csv(&args.out)?;
            writeln!(
                stdout,
                "imported {} runs: {} domains, {} metrics → {}",
                table.rows.len(),
                table.domains.len(),
                table.metrics.len(),
                args.out.display()
            )?;
            writeln!(stdout, "metrics: {}", table.metrics.join(", "))?;
        }
        MixCommand::Fit(args) => {
            let table = RunsTable::read_csv(&args.runs)?;
            let (model, _) = fit(&table, &args.target, args.surrogate, args.bootstrap, &mut stdout)
                .with_context(|| format!("fitting {} on {}", args.target, args.runs.display()))?;
            model.save(&args.out)?;
            writeln!(stdout, "chosen: {} → {}", model.surrogate_name(), args.out.display())?;
        }
        MixCommand::Predict(args) => {
            let model = FittedModel::load(&args.model)?;
            let (indices, domains, rows) = mixsim::read_mixtures(&args.mixtures)?;
            let predicted = model.predict_rows_with_std(&domains, &rows)?;
            let with_std = !model.bootstrap.is_empty();
            let mut csv = String::from(if with_std { "index,predicted,std\n" } else { "index,predicted\n" });
            for (index, (p, std)) in indices.iter().zip(&predicted) {
                match std {
                    Some(s) if with_std => csv.push_str(&format!("{index},{p},{s}\n")),
                    _ => csv.push_str(&format!("{index},{p}\n")),
                }
            }
            corpus::atomic::write_file(&args.out, csv.as_bytes())?;
            writeln!(stdout, "predicted {} for {} mixtures → {}", model.target, predicted.len(), args.out.display())?;
        }
        MixCommand::Propose(args) => propose(&args, &mut stdout)?,
        MixCommand::Swarm(_) | MixCommand::Loo(_) => unreachable!("mix swarm and loo run in mixforge-torch"),
        MixCommand::Materialize(args) => {
            let proposal = Proposal::load(&args.proposal)?;
            let config = MaterializeConfig {
                proposal: args.proposal.clone(),
                shards: args.shards.clone(),
                tokens: args.tokens,
                out: args.out.clone(),
                seed: args.seed,
                chunk_docs: args.chunk_docs,
            };
            let manifest = mixsim::materialize(&config, &proposal)?;
            let mixture = manifest.mixture.as_ref().expect("materialize records its mixture");
            writeln!(
                stdout,
                "{:<12} {:>8} {:>8} {:>12} {:>8} {:>6}",
                "domain", "weight", "realised", "tokens", "epochs", "cap"
            )?;
            for (d, r) in &mixture.domains {
                let cap = r.max_epochs.map_or("-".to_string(), |c| c.to_string());
                writeln!(
                    stdout,
                    "{d:<12} {:>8.4} {:>8.4} {:>12} {:>8.3} {cap:>6}",
                    r.weight, r.realised_weight, r.tokens, r.epochs
                )?;
            }
            writeln!(
                stdout,
                "{} training tokens in {} stream shards → {}",
                mixture.tokens,
                mixture.stream.len(),
                args.out.display()
            )?;
        }
    }
    Ok(())
}

fn surrogate_kind(arg: SurrogateArg) -> SurrogateKind {
    match arg {
        SurrogateArg::Auto => SurrogateKind::Auto,
        SurrogateArg::Gbdt => SurrogateKind::Gbdt,
        SurrogateArg::MixingLaw => SurrogateKind::MixingLaw,
        SurrogateArg::Linear => SurrogateKind::Linear,
        SurrogateArg::Ensemble => SurrogateKind::Ensemble,
    }
}

/// Fits one metric, printing the CV table, and adds bootstrap members. Also returns the
/// chosen surrogate's out-of-fold predictions.
fn fit(
    table: &RunsTable,
    target: &str,
    surrogate: SurrogateArg,
    bootstrap: usize,
    out: &mut impl Write,
) -> Result<(FittedModel, CvMetric)> {
    let (model, reports) = FittedModel::fit_with_cv(table, target, surrogate_kind(surrogate))?;
    let k = mixsim::model::cv_folds(table.rows.len())?;
    writeln!(out, "{k}-fold CV on {} runs, target {target}:", table.rows.len())?;
    writeln!(out, "  {:<12} {:>9} {:>9} {:>9}", "surrogate", "spearman", "pearson", "mae")?;
    for (name, r) in &reports {
        writeln!(out, "  {name:<12} {:>9.4} {:>9.4} {:>9.4}", r.spearman, r.pearson, r.mae)?;
    }
    let cv = CvMetric::new(table, &model, &reports)?;
    Ok((model.with_bootstrap(table, bootstrap, 0x626f_6f74)?, cv))
}

pub fn budget(args: &BudgetArgs) -> Result<Budget> {
    let cap = (args.max_epochs > 0.0).then_some(args.max_epochs);
    Budget::from_shards(&args.shards, args.target_tokens, cap, &BTreeMap::new(), args.min_weight)
        .with_context(|| format!("budget from {}", args.shards.display()))
}

/// `natural`, `uniform`, or a TOML file's `[weights]` in the budget's domain order.
pub fn prior(name: &str, budget: &Budget) -> Result<Vec<f64>> {
    match name {
        "natural" => Ok(budget.natural()),
        "uniform" => Ok(budget.uniform()),
        path => {
            let mixture = corpus::shards::Mixture::from_toml_file(Path::new(path))
                .with_context(|| format!("--prior {path}: expected natural, uniform or a TOML file with [weights]"))?;
            if let Some(d) = mixture.weights.keys().find(|d| !budget.domains.contains(d)) {
                bail!("--prior {path} weights domain `{d}`, which the shards do not have");
            }
            let w: Vec<f64> = budget.domains.iter().map(|d| mixture.weights.get(d).copied().unwrap_or(0.0)).collect();
            let sum: f64 = w.iter().sum();
            Ok(w.iter().map(|x| x / sum).collect())
        }
    }
}

/// `METRIC[=WEIGHT]` terms. None given: the mean of the per-domain validation losses, each
/// domain's loss with its own surrogate (a per-domain mixing law is convex in the weights, so
/// their mean has an interior optimum; one law fitted to the mean would not).
fn objective_terms(terms: &[String], table: &RunsTable) -> Result<Vec<(String, f64)>> {
    if terms.is_empty() {
        let per_domain: Vec<&String> =
            table.metrics.iter().filter(|m| m.ends_with("_val_loss") && m.as_str() != AVG_VAL_LOSS).collect();
        if per_domain.is_empty() {
            bail!("the runs table has no `<domain>_val_loss` metrics; name the objective with --objective METRIC");
        }
        let w = 1.0 / per_domain.len() as f64;
        return Ok(per_domain.into_iter().map(|m| (m.clone(), w)).collect());
    }
    terms
        .iter()
        .map(|t| match t.split_once('=') {
            None => Ok((t.clone(), 1.0)),
            Some((m, w)) => {
                let w: f64 = w
                    .parse()
                    .ok()
                    .filter(|w: &f64| w.is_finite())
                    .with_context(|| format!("--objective {t}: the weight after `=` must be a number"))?;
                Ok((m.to_string(), w))
            }
        })
        .collect()
}

/// `mix propose`: fits a surrogate per objective metric and writes the proposal, its utility
/// table and its cross-validation beside it.
pub fn propose(args: &MixProposeArgs, out: &mut impl Write) -> Result<()> {
    let table = RunsTable::read_csv(&args.runs)?;
    let budget = budget(&args.budget)?;
    if table.domains != budget.domains {
        bail!(
            "the runs in {} are over domains {:?} but {} has {:?}",
            args.runs.display(),
            table.domains,
            args.budget.shards.display(),
            budget.domains
        );
    }
    let prior = prior(&args.budget.prior, &budget)?;
    let objective = objective_terms(&args.objective, &table)?;
    let (mut models, mut cv) = (Vec::new(), Vec::new());
    for (metric, _) in &objective {
        let (model, metric_cv) = fit(&table, metric, args.surrogate, args.bootstrap, out)?;
        models.push(model);
        cv.push(metric_cv);
    }
    writeln!(
        out,
        "objective: {}",
        objective.iter().map(|(m, w)| format!("{w:.3} × {m}")).collect::<Vec<_>>().join(" + ")
    )?;
    let seed_noise = mixsim::noise::objective_noise(&table, &objective)?;
    let config = ProposeConfig {
        objective,
        kl_weight: args.kl_weight,
        risk: args.risk,
        prior,
        quantum: args.quantum_tokens.unwrap_or((budget.target_tokens / 1000).max(1)),
        search: SearchConfig { seed: args.seed, ..SearchConfig::default() },
        aggregate: match args.aggregate {
            AggregateArg::Argmin => Aggregate::Argmin,
            AggregateArg::Bagged => Aggregate::Bagged,
        },
        seed_noise,
        scale: scale_of(&table),
    };
    let proposal = mixsim::propose(&budget, &models, &config)?;
    proposal.save(&args.out)?;
    // Beside the proposal, named after it: the command writes nothing outside --out's folder.
    let utility_path: PathBuf = args.out.with_extension("utility.csv");
    corpus::atomic::write_file(&utility_path, proposal.utility_csv().as_bytes())?;
    let cv_path: PathBuf = args.out.with_extension("cv.json");
    corpus::atomic::write_json(&cv_path, &CvFile { format_version: mixsim::model::CV_FORMAT_VERSION, metrics: cv })?;
    print_proposal(&proposal, out)?;
    writeln!(
        out,
        "proposal → {}; utility → {}; surrogate cross-validation → {}",
        args.out.display(),
        utility_path.display(),
        cv_path.display()
    )?;
    Ok(())
}

/// The gain over each baseline with its intervals, and plainly whether it is distinguishable.
fn print_gains(p: &Proposal, out: &mut impl Write) -> Result<()> {
    match p.seed_noise {
        Some(n) => writeln!(
            out,
            "seed noise of the objective: std {:.4} (from {} mixtures run more than once, {} dof)",
            n.std, n.mixtures, n.dof
        )?,
        None => writeln!(
            out,
            "seed noise: not measured (no mixture in the runs table was run twice; mix swarm --replicates 3 does)"
        )?,
    }
    let range = |i: Option<[f64; 2]>| i.map_or("-".to_string(), |[lo, hi]| format!("{lo:+.4} … {hi:+.4}"));
    writeln!(
        out,
        "{:<9} {:>9}  {:<21} {:<21} {:<20} seeds for 80% power",
        "gain over", "predicted", "95% expected", "95% one run each", "verdict"
    )?;
    for (name, g) in &p.gains {
        let seeds = g.seeds_for_power.map_or("-".to_string(), |s| s.to_string());
        writeln!(
            out,
            "{name:<9} {:>+9.4}  {:<21} {:<21} {:<20} {seeds}",
            g.mean,
            range(g.interval),
            range(g.one_run_interval),
            g.verdict
        )?;
    }
    let unclear: Vec<&str> = p.gains.iter().filter(|(_, g)| g.verdict != "better").map(|(n, _)| n.as_str()).collect();
    if !unclear.is_empty() {
        writeln!(
            out,
            "the proposal is not distinguishable from (or worse than) {} on this swarm: a different seed could rank \
             them the other way",
            unclear.join(", ")
        )?;
    }
    Ok(())
}

/// What the runs' values are: the proxies' losses at their own size, which a target run of
/// another size does not share (RegMix relies on the ranking transferring, not the values).
fn scale_of(table: &RunsTable) -> String {
    let single = |name: &str| -> Option<f64> {
        let k = table.scales.iter().position(|s| s == name)?;
        let first = table.rows.first()?.scale[k];
        table.rows.iter().all(|r| r.scale[k] == first).then_some(first)
    };
    match (single("params"), single("tokens")) {
        (Some(p), Some(t)) => format!("proxy scale ({p} params, {t} tokens): proxy losses, not the target's"),
        _ => "the runs table's scale (its proxies' metrics, not the target's)".to_string(),
    }
}

fn print_proposal(p: &Proposal, out: &mut impl Write) -> Result<()> {
    let names = ["natural", "uniform", "unimax"];
    write!(out, "{:<12} {:>9}", "domain", "proposal")?;
    for n in names {
        write!(out, " {n:>8}")?;
    }
    writeln!(out, " {:>8} {:>6} {:>9} {:>9}", "epochs", "cap", "utility", "drop Δ")?;
    for (d, w) in &p.weights {
        write!(out, "{d:<12} {w:>9.4}")?;
        for n in names {
            write!(out, " {:>8.4}", p.baselines.get(n).and_then(|b| b.weights.get(d)).copied().unwrap_or(f64::NAN))?;
        }
        let cap = p.max_epochs.get(d).map_or("-".into(), |c| c.to_string());
        let loo = p.leave_one_out.get(d).map_or("n/a".into(), |v| format!("{v:+.4}"));
        writeln!(out, " {:>8.3} {cap:>6} {:>+9.4} {loo:>9}", p.epochs[d], p.utility[d])?;
    }
    if !p.bootstrap_spread.is_empty() {
        let spread: Vec<String> = p.bootstrap_spread.iter().map(|(d, s)| format!("{d} {s:.3}")).collect();
        writeln!(out, "spread of the bootstrap members' own best mixtures (std): {}", spread.join(", "))?;
    }
    writeln!(out, "predictions are on the {}", p.scale)?;
    match p.objective_std {
        Some(s) => writeln!(
            out,
            "predicted objective: proposal {:.4} ± {s:.4} (bootstrap std; chosen by {})",
            p.predicted_objective, p.aggregate
        )?,
        None => {
            writeln!(out, "predicted objective: proposal {:.4} (chosen by {})", p.predicted_objective, p.aggregate)?
        }
    }
    for (name, b) in &p.baselines {
        writeln!(out, "                     {name:<8} {:.4}", b.objective)?;
    }
    if p.risk > 0.0 && p.aggregate == "argmin" {
        writeln!(out, "(the search minimised mean + {} × bootstrap std; utility and drop Δ are on the mean)", p.risk)?;
    }
    print_gains(p, out)?;
    for (metric, pred) in &p.predicted {
        match pred.interval {
            Some([lo, hi]) => writeln!(out, "{metric}: {:.4} (95% bootstrap interval {lo:.4} … {hi:.4})", pred.mean)?,
            None => writeln!(out, "{metric}: {:.4}", pred.mean)?,
        }
    }
    Ok(())
}

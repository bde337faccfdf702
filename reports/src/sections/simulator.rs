//! The simulator: the swarm's mixtures and losses, how well the surrogates predict held-out
//! runs, and the proposal against natural, uniform and UniMax with utility and leave-one-out.

use mixsim::model::CvFile;
use mixsim::{Proposal, RunsTable};

use crate::csv::{Cell, Csv};
use crate::error::{Error, Result};
use crate::page::{Block, DataFile, Section, Table};
use crate::plot::{self, Series};
use crate::sections::{figure, num};
use crate::stages::read_json;
use crate::{Run, layout};

/// The predicted gain over each baseline with both intervals, the verdict and the seeds a
/// paired comparison would need: how sure the swarm is, on the scale it was measured.
fn gains(p: &Proposal) -> Block {
    let range =
        |i: Option<[f64; 2]>| i.map_or("–".to_string(), |[lo, hi]| format!("{} … {}", num(lo, 4), num(hi, 4)));
    let mut csv = Csv::new(&[
        "baseline",
        "gain",
        "interval_low",
        "interval_high",
        "one_run_low",
        "one_run_high",
        "verdict",
        "seeds_for_power",
    ]);
    let mut rows = Vec::new();
    for (name, g) in &p.gains {
        let bounds = |i: Option<[f64; 2]>| i.map_or((Cell::None, Cell::None), |[l, h]| (Cell::F(l), Cell::F(h)));
        let ((lo, hi), (lo1, hi1)) = (bounds(g.interval), bounds(g.one_run_interval));
        let seeds = g.seeds_for_power.map(|s| s as f64);
        csv.row(&[
            Cell::S(name),
            Cell::F(g.mean),
            lo,
            hi,
            lo1,
            hi1,
            Cell::S(&g.verdict),
            seeds.map_or(Cell::None, Cell::F),
        ]);
        rows.push(vec![
            name.clone(),
            num(g.mean, 4),
            range(g.interval),
            range(g.one_run_interval),
            g.verdict.clone(),
            g.seeds_for_power.map_or("–".into(), |s| s.to_string()),
        ]);
    }
    let noise = match p.seed_noise {
        Some(n) => format!(
            "seed noise of the objective {} (pooled over {} mixtures run more than once, {} dof)",
            num(n.std, 4),
            n.mixtures,
            n.dof
        ),
        None => "seed noise not measured (no mixture was run twice)".to_string(),
    };
    Block::Table(Table {
        caption: format!(
            "Predicted gain of the proposal over each baseline (positive: the proposal is better), on the {}; {noise}. The expected interval is the surrogates' bootstrap; the one-run interval adds two runs' seed noise: what training each once would show.",
            p.scale
        ),
        header: ["baseline", "gain", "95% expected", "95% one run each", "verdict", "seeds for 80% power"]
            .map(String::from)
            .to_vec(),
        rows,
        data: Some(DataFile { name: "proposal-gains.csv".into(), contents: csv.finish() }),
    })
}

/// The baselines a proposal is compared with, in table order.
const BASELINES: [&str; 3] = ["natural", "uniform", "unimax"];

pub fn section(run: &Run) -> Result<Option<Section>> {
    let runs_path = run.path(layout::SWARM).join("runs.csv");
    if !runs_path.exists() {
        return Ok(None);
    }
    let table = RunsTable::read_csv(&runs_path).map_err(|e| Error::parse(&runs_path, e))?;
    let mut s = Section::new("simulator", "Data-mix simulator");
    s.text(format!(
        "{} proxy runs over {} domains; each proxy's metrics are its validation losses per domain. The surrogates fitted on them choose the proposal.",
        table.rows.len(),
        table.domains.len()
    ));
    s.blocks.push(swarm_weights(&table)?);
    let cv_path = run.path(layout::PROPOSAL_CV);
    if cv_path.exists() {
        let cv: CvFile = read_json(&cv_path)?;
        s.blocks.extend(cross_validation(&cv)?);
    }
    let proposal_path = run.path(layout::PROPOSAL);
    if proposal_path.exists() {
        let p = Proposal::load(&proposal_path).map_err(|e| Error::parse(&proposal_path, e))?;
        s.blocks.extend(proposal(&p)?);
    }
    Ok(Some(s))
}

fn swarm_weights(table: &RunsTable) -> Result<Block> {
    let mut header = vec!["run"];
    header.extend(table.domains.iter().map(String::as_str));
    let metric_names: Vec<&str> = table.metrics.iter().map(String::as_str).collect();
    header.extend(&metric_names);
    let mut csv = Csv::new(&header);
    for r in &table.rows {
        let mut cells = vec![Cell::S(&r.index)];
        cells.extend(r.weights.iter().map(|w| Cell::F(*w)));
        cells.extend(r.metrics.iter().map(|m| Cell::F(*m)));
        csv.row(&cells);
    }
    let runs: Vec<String> = table.rows.iter().map(|r| r.index.trim_start_matches("run").to_string()).collect();
    let series: Vec<(String, Vec<f64>)> = table
        .domains
        .iter()
        .enumerate()
        .map(|(d, name)| (name.clone(), table.rows.iter().map(|r| r.weights[d]).collect()))
        .collect();
    let svg = plot::stacked("Swarm: mixture weights of each proxy run", "weight", &runs, &series)?;
    Ok(figure(
        "swarm-weights",
        "Each bar is one proxy run's mixture (runs in swarm order); the data file has every run's weights and metrics.",
        svg,
        csv.finish(),
    ))
}

fn cross_validation(cv: &CvFile) -> Result<Vec<Block>> {
    let mut csv = Csv::new(&["metric", "run", "observed", "predicted_out_of_fold"]);
    let mut series = Vec::new();
    let mut rows = Vec::new();
    for m in &cv.metrics {
        for ((run, o), p) in m.runs.iter().zip(&m.observed).zip(&m.predicted) {
            csv.row(&[Cell::S(&m.metric), Cell::S(run), Cell::F(*o), Cell::F(*p)]);
        }
        series.push(Series {
            name: m.metric.clone(),
            points: m.observed.iter().copied().zip(m.predicted.iter().copied()).collect(),
        });
        rows.push(vec![
            m.metric.clone(),
            m.surrogate.clone(),
            if m.folds == m.runs.len() { "leave-one-out".into() } else { format!("{}-fold", m.folds) },
            num(m.spearman, 3),
            num(m.mae, 4),
        ]);
    }
    let svg = plot::predicted_vs_actual("Surrogates: predicted vs observed (out of fold)", &series)?;
    Ok(vec![
        figure(
            "surrogate-cv",
            "Each point is a proxy run predicted by a surrogate fitted without it; on the line, the prediction is exact.",
            svg,
            csv.finish(),
        ),
        Block::Table(Table {
            caption: "Cross-validation of the chosen surrogate per metric".into(),
            header: ["metric", "surrogate", "folds", "Spearman ρ", "MAE"].map(String::from).to_vec(),
            rows,
            data: None,
        }),
    ])
}

fn proposal(p: &Proposal) -> Result<Vec<Block>> {
    let domains: Vec<String> = p.weights.keys().cloned().collect();
    let baseline =
        |name: &str, d: &str| p.baselines.get(name).and_then(|b| b.weights.get(d)).copied().unwrap_or(f64::NAN);
    let mut csv = Csv::new(&[
        "domain",
        "proposal",
        "natural",
        "uniform",
        "unimax",
        "epochs",
        "max_epochs",
        "utility",
        "leave_one_out",
    ]);
    let mut rows = Vec::new();
    for d in &domains {
        let cap = p.max_epochs.get(d).copied();
        let loo = p.leave_one_out.get(d).copied();
        csv.row(&[
            Cell::S(d),
            Cell::F(p.weights[d]),
            Cell::F(baseline("natural", d)),
            Cell::F(baseline("uniform", d)),
            Cell::F(baseline("unimax", d)),
            Cell::F(p.epochs[d]),
            cap.map_or(Cell::None, Cell::F),
            Cell::F(p.utility[d]),
            loo.map_or(Cell::None, Cell::F),
        ]);
        rows.push(vec![
            d.clone(),
            num(p.weights[d], 4),
            num(baseline("natural", d), 4),
            num(baseline("uniform", d), 4),
            num(baseline("unimax", d), 4),
            format!("{} / {}", num(p.epochs[d], 2), cap.map_or("–".into(), |c| num(c, 1))),
            format!("{:+.4}", p.utility[d]),
            loo.map_or("–".into(), |v| format!("{v:+.4}")),
        ]);
    }
    let weights_csv = csv.finish();
    let mut series = vec![("proposal".to_string(), domains.iter().map(|d| p.weights[d]).collect::<Vec<_>>())];
    for b in BASELINES {
        series.push((b.to_string(), domains.iter().map(|d| baseline(b, d)).collect()));
    }
    let svg = plot::bars("Proposal against the baselines: weight per domain", "weight", &domains, &series)?;
    let mut blocks = vec![figure(
        "proposal-weights",
        format!("Mixture weights for a {}-token target budget, each within its epoch cap.", p.target_tokens),
        svg,
        weights_csv.clone(),
    )];
    blocks.push(Block::Table(Table {
        caption: "Proposal per domain: weights against baselines, epochs against caps, utility (improvement of the objective per unit of weight moved to the domain) and drop Δ (objective change when the domain is removed; positive: removing it hurts)".into(),
        header: ["domain", "proposal", "natural", "uniform", "UniMax", "epochs / cap", "utility", "drop Δ"].map(String::from).to_vec(),
        rows,
        data: Some(DataFile { name: "proposal-table.csv".into(), contents: weights_csv }),
    }));
    let mut ucsv = Csv::new(&["domain", "utility", "leave_one_out"]);
    for d in &domains {
        ucsv.row(&[Cell::S(d), Cell::F(p.utility[d]), p.leave_one_out.get(d).map_or(Cell::None, |v| Cell::F(*v))]);
    }
    let series = [
        ("utility".to_string(), domains.iter().map(|d| p.utility[d]).collect()),
        (
            "leave-one-out Δ".to_string(),
            domains.iter().map(|d| p.leave_one_out.get(d).copied().unwrap_or(f64::NAN)).collect(),
        ),
    ];
    let svg = plot::bars(
        "Per-domain utility and drop Δ (predicted objective)",
        "positive: the domain helps",
        &domains,
        &series,
    )?;
    blocks.push(figure(
        "proposal-utility",
        "Both on the predicted objective, both positive when the domain helps: utility is the improvement per unit of weight moved to the domain (a slope); drop Δ is how much the objective worsens when the domain is removed and its weight spread over the others (a difference, in the objective's units).",
        svg,
        ucsv.finish(),
    ));
    if !p.gains.is_empty() {
        blocks.push(gains(p));
    }
    // Plainly: is the proposal predicted to beat the baselines, and by more than the spread?
    let best = BASELINES
        .iter()
        .filter_map(|b| p.baselines.get(*b).map(|x| (*b, x.objective)))
        .min_by(|a, b| a.1.total_cmp(&b.1));
    if let Some((name, objective)) = best {
        let gap = objective - p.predicted_objective;
        let spread = p
            .objective_std
            .map_or(String::new(), |s| format!(" (bootstrap std of the proposal's objective {})", num(s, 4)));
        let verdict = match p.objective_std {
            _ if gap <= 0.0 => format!(
                "the best baseline, {name}, is predicted as good or better ({} against the proposal's {})",
                num(objective, 4),
                num(p.predicted_objective, 4)
            ),
            Some(s) if gap < s => format!(
                "the proposal is predicted {} better than the best baseline, {name}: less than the spread{spread}, so the swarm cannot tell them apart",
                num(gap, 4)
            ),
            _ => format!("the proposal is predicted {} better than the best baseline, {name}{spread}", num(gap, 4)),
        };
        let risk = if p.risk > 0.0 {
            format!(
                " The search minimised the predicted mean + {} × its bootstrap std, which favours mixtures the swarm has evidence for over a lower but less certain mean.",
                p.risk
            )
        } else {
            String::new()
        };
        if p.gains.is_empty() {
            blocks.push(Block::Text(format!("Predicted objective (mean, proxy scale): {verdict}.{risk}")));
        }
    }
    // Predicted metrics with intervals, for the proposal and each baseline.
    let mut pcsv = Csv::new(&["mixture", "metric", "predicted", "interval_low", "interval_high"]);
    let mut prow = Vec::new();
    let mut mixtures = vec![("proposal", p.predicted_objective, &p.predicted)];
    for b in BASELINES {
        if let Some(base) = p.baselines.get(b) {
            mixtures.push((b, base.objective, &base.predicted));
        }
    }
    for (name, objective, predicted) in &mixtures {
        pcsv.row(&[Cell::S(name), Cell::S("objective"), Cell::F(*objective), Cell::None, Cell::None]);
        for (metric, pred) in predicted.iter() {
            let (lo, hi) = pred.interval.map_or((Cell::None, Cell::None), |[l, h]| (Cell::F(l), Cell::F(h)));
            pcsv.row(&[Cell::S(name), Cell::S(metric), Cell::F(pred.mean), lo, hi]);
        }
        let mut row = vec![name.to_string(), num(*objective, 4)];
        row.extend(p.predicted.keys().map(|m| match predicted.get(m) {
            Some(pred) => match pred.interval {
                Some([l, h]) => format!("{} [{}, {}]", num(pred.mean, 3), num(l, 3), num(h, 3)),
                None => num(pred.mean, 3),
            },
            None => "–".into(),
        }));
        prow.push(row);
    }
    let mut header = vec!["mixture".to_string(), "objective".to_string()];
    header.extend(p.predicted.keys().cloned());
    blocks.push(Block::Table(Table {
        caption: "Predicted metrics (surrogate scale, proxy size) with 95% bootstrap intervals where known".into(),
        header,
        rows: prow,
        data: Some(DataFile { name: "proposal-predicted.csv".into(), contents: pcsv.finish() }),
    }));
    Ok(blocks)
}

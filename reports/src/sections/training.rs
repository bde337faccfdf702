//! Training: loss, learning rate, gradient norm and throughput per step, validation loss per
//! domain over steps, and the evaluation table.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::csv::{Cell, Csv};
use crate::error::{Error, Result};
use crate::page::{Block, DataFile, Section, Table};
use crate::plot::{self, Series};
use crate::sections::{figure, num};
use crate::stages::{EvalFile, read_json};
use crate::{Run, layout};

/// One line of `metrics.jsonl`: a training step, or a validation.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Line {
    Step { step: u64, lr: f64, loss: f64, grad_norm: f64, tokens: u64, tokens_per_s: f64 },
    Val { step: u64, val_loss: BTreeMap<String, f64> },
}

/// A step's numbers.
pub struct Step {
    pub step: u64,
    pub lr: f64,
    pub loss: f64,
    pub grad_norm: f64,
    pub tokens: u64,
    pub tokens_per_s: f64,
}

/// Validation losses per domain at one step.
pub type Validation = (u64, BTreeMap<String, f64>);

/// A training curve: figure id, title, y axis, the value per step, caption.
type Curve = (&'static str, &'static str, &'static str, fn(&Step) -> f64, &'static str);

/// Reads `metrics.jsonl`: steps, and validation losses by step.
pub fn read_metrics(path: &std::path::Path) -> Result<(Vec<Step>, Vec<Validation>)> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let (mut steps, mut vals) = (Vec::new(), Vec::new());
    for (i, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        match serde_json::from_str(line).map_err(|e| Error::parse(path, format!("line {}: {e}", i + 1)))? {
            Line::Step { step, lr, loss, grad_norm, tokens, tokens_per_s } => {
                steps.push(Step { step, lr, loss, grad_norm, tokens, tokens_per_s })
            }
            Line::Val { step, val_loss } => vals.push((step, val_loss)),
        }
    }
    Ok((steps, vals))
}

pub fn section(run: &Run) -> Result<Option<Section>> {
    let metrics_path = run.path(layout::TRAIN).join("metrics.jsonl");
    let eval_path = run.path(layout::EVAL);
    if !metrics_path.exists() && !eval_path.exists() {
        return Ok(None);
    }
    let mut s = Section::new("training", "Training");
    if metrics_path.exists() {
        let (steps, vals) = read_metrics(&metrics_path)?;
        s.text(format!(
            "{} steps, {} tokens; final training loss {}.",
            steps.len(),
            steps.last().map_or(0, |x| x.tokens),
            steps.last().map_or("–".into(), |x| num(x.loss, 4))
        ));
        let mut csv = Csv::new(&["step", "tokens", "loss", "lr", "grad_norm", "tokens_per_s"]);
        for x in &steps {
            csv.row(&[
                Cell::U(x.step),
                Cell::U(x.tokens),
                Cell::F(x.loss),
                Cell::F(x.lr),
                Cell::F(x.grad_norm),
                Cell::F(x.tokens_per_s),
            ]);
        }
        let data = csv.finish();
        let curves: [Curve; 4] = [
            (
                "train-loss",
                "Training loss",
                "cross-entropy (nats/token)",
                |x| x.loss,
                "Training loss per optimizer step.",
            ),
            ("train-lr", "Learning rate", "learning rate", |x| x.lr, "Warm-up then cosine decay."),
            (
                "train-grad-norm",
                "Gradient norm (before clipping)",
                "global L2 norm",
                |x| x.grad_norm,
                "Global gradient norm per step.",
            ),
            (
                "train-throughput",
                "Throughput",
                "tokens / s",
                |x| x.tokens_per_s,
                "Training tokens per second per step (evaluation excluded).",
            ),
        ];
        for (id, title, y, value, caption) in curves {
            let series =
                [Series { name: title.into(), points: steps.iter().map(|x| (x.step as f64, value(x))).collect() }];
            let svg = plot::lines(title, "step", y, &series)?;
            let mut block = figure(id, caption, svg, String::new());
            if let Block::Figure(f) = &mut block {
                f.data = DataFile { name: "train-steps.csv".into(), contents: data.clone() };
            }
            s.blocks.push(block);
        }
        if !vals.is_empty() {
            let domains: Vec<String> = vals
                .iter()
                .flat_map(|(_, v)| v.keys().cloned())
                .collect::<std::collections::BTreeSet<_>>()
                .into_iter()
                .collect();
            let mut csv = Csv::new(&["step", "domain", "val_loss"]);
            let mut series: Vec<Series> =
                domains.iter().map(|d| Series { name: d.clone(), points: Vec::new() }).collect();
            for (step, v) in &vals {
                for (k, d) in domains.iter().enumerate() {
                    if let Some(loss) = v.get(d) {
                        csv.row(&[Cell::U(*step), Cell::S(d), Cell::F(*loss)]);
                        series[k].points.push((*step as f64, *loss));
                    }
                }
            }
            let svg = plot::lines("Validation loss per domain", "step", "cross-entropy (nats/token)", &series)?;
            s.blocks.push(figure("val-loss", "Held-out loss per domain at each validation.", svg, csv.finish()));
        }
    }
    if eval_path.exists() {
        let eval: EvalFile = read_json(&eval_path)?;
        let mut csv = Csv::new(&["task", "metric", "value", "stderr", "n", "higher_is_better"]);
        let mut rows = Vec::new();
        for r in &eval.rows {
            csv.row(&[
                Cell::S(&r.task),
                Cell::S(&r.metric),
                Cell::F(r.value),
                r.stderr.map_or(Cell::None, Cell::F),
                Cell::U(r.n),
                Cell::S(if r.higher_is_better { "true" } else { "false" }),
            ]);
            rows.push(vec![
                r.task.clone(),
                format!("{} {}", r.metric, if r.higher_is_better { "↑" } else { "↓" }),
                num(r.value, 4),
                r.stderr.map_or("–".into(), |e| format!("± {}", num(e, 4))),
                r.n.to_string(),
            ]);
        }
        s.blocks.push(Block::Table(Table {
            caption: format!(
                "Evaluation of {} (standard error of the mean over items; – where it is not known)",
                eval.checkpoint
            ),
            header: ["task", "metric", "value", "stderr", "n"].map(String::from).to_vec(),
            rows,
            data: Some(DataFile { name: "eval.csv".into(), contents: csv.finish() }),
        }));
    }
    Ok(Some(s))
}

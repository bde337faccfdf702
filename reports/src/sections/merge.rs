//! Specialists and their merge: each model's held-out loss per domain against the base, the
//! merge weights, and how well the weight search predicted what it measured.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::csv::{Cell, Csv};
use crate::error::Result;
use crate::page::{Block, DataFile, Section, Table};
use crate::plot::{self, Series};
use crate::sections::{figure, num};
use crate::stages::{EvalFile, read_json};
use crate::{Run, layout};

/// The parts of `merge/search.json` shown.
#[derive(Debug, Deserialize)]
struct SearchFile {
    method: String,
    checkpoints: Vec<String>,
    evaluated: Vec<Point>,
    chosen: Point,
    predicted: Option<f64>,
    #[serde(default)]
    domains: Vec<String>,
    #[serde(default)]
    cv: Vec<mixsim::model::CvMetric>,
}

#[derive(Debug, Deserialize)]
struct Point {
    kind: String,
    weights: Vec<f64>,
    probe_loss: f64,
}

pub fn section(run: &Run) -> Result<Option<Section>> {
    let eval_path = run.path(layout::EVAL);
    let search_path = run.path(layout::MERGE).join("search.json");
    let eval: Option<EvalFile> = if eval_path.exists() { Some(read_json(&eval_path)?) } else { None };
    let models = eval.map(|e| e.models).unwrap_or_default();
    if models.is_empty() && !search_path.exists() {
        return Ok(None);
    }
    let mut s = Section::new("merge", "Specialists and merge");
    if let Some(base) = models.get("base") {
        let domains: Vec<String> = base.keys().cloned().collect();
        let names: Vec<String> = models.keys().filter(|n| *n != "base").cloned().collect();
        let mut csv = Csv::new(&["model", "domain", "val_loss", "delta_vs_base"]);
        let mut values = Vec::new();
        for name in &names {
            let row: Vec<f64> = domains
                .iter()
                .map(|d| {
                    let v = models[name].get(d).copied().unwrap_or(f64::NAN);
                    csv.row(&[Cell::S(name), Cell::S(d), Cell::F(v), Cell::F(v - base[d])]);
                    v - base[d]
                })
                .collect();
            values.push(row);
        }
        for d in &domains {
            csv.row(&[Cell::S("base"), Cell::S(d), Cell::F(base[d]), Cell::F(0.0)]);
        }
        let svg =
            plot::heatmap("Held-out loss against the base model (blue: lower, better)", &names, &domains, &values)?;
        s.blocks.push(figure(
            "merge-deltas",
            "Validation loss per domain of each specialist and of the merge, minus the base's: a specialist should gain on its domain; a good merge gains across them.",
            svg,
            csv.finish(),
        ));
        let mean = |m: &BTreeMap<String, f64>| m.values().sum::<f64>() / m.len().max(1) as f64;
        let best = names
            .iter()
            .filter(|n| n.starts_with("specialist"))
            .map(|n| (n, mean(&models[n])))
            .min_by(|a, b| a.1.total_cmp(&b.1));
        if let (Some((best_name, best_loss)), Some(merged)) = (best, models.get("merge")) {
            s.text(format!(
                "Mean held-out loss over domains: base {}, best specialist ({best_name}) {}, merge {}.",
                num(mean(base), 4),
                num(best_loss, 4),
                num(mean(merged), 4)
            ));
        }
    }
    if search_path.exists() {
        let search: SearchFile = read_json(&search_path)?;
        let names: Vec<String> = search
            .checkpoints
            .iter()
            .map(|c| std::path::Path::new(c).file_name().map_or(c.clone(), |n| n.to_string_lossy().into_owned()))
            .collect();
        let mut csv = Csv::new(&["checkpoint", "weight"]);
        for (n, w) in names.iter().zip(&search.chosen.weights) {
            csv.row(&[Cell::S(n), Cell::F(*w)]);
        }
        let svg = plot::bars(
            &format!("Merge weights ({} search)", search.method),
            "weight",
            &names,
            &[("weight".into(), search.chosen.weights.clone())],
        )?;
        s.blocks.push(figure("merge-weights", "The weights the search chose, one per specialist.", svg, csv.finish()));
        let best_measured = search.evaluated.iter().map(|p| p.probe_loss).fold(f64::INFINITY, f64::min);
        let mut text = format!(
            "The search measured {} merges on the probe split (validation sequences after those the evaluation scores); the chosen one ({}) has probe loss {}, the best measured {}.",
            search.evaluated.len(),
            search.chosen.kind,
            num(search.chosen.probe_loss, 4),
            num(best_measured, 4)
        );
        if let Some(p) = search.predicted {
            text.push_str(&format!(" The surrogates predicted {} there.", num(p, 4)));
        }
        s.text(text);
        if !search.cv.is_empty() {
            let mut csv = Csv::new(&["domain", "observed", "predicted_out_of_fold"]);
            let mut series = Vec::new();
            for (k, m) in search.cv.iter().enumerate() {
                let name = search.domains.get(k).cloned().unwrap_or_else(|| m.metric.clone());
                for (o, p) in m.observed.iter().zip(&m.predicted) {
                    csv.row(&[Cell::S(&name), Cell::F(*o), Cell::F(*p)]);
                }
                series.push(Series {
                    name,
                    points: m.observed.iter().copied().zip(m.predicted.iter().copied()).collect(),
                });
            }
            let svg =
                plot::predicted_vs_actual("Merge search: probe loss predicted vs measured (out of fold)", &series)?;
            s.blocks.push(figure(
                "merge-search-cv",
                "Each point is a merge of the design, predicted by a surrogate fitted without it.",
                svg,
                csv.finish(),
            ));
        }
        let mut pcsv = Csv::new(&["kind", "weights", "probe_loss"]);
        for p in &search.evaluated {
            let w = p.weights.iter().map(|x| format!("{x:.4}")).collect::<Vec<_>>().join(" ");
            pcsv.row(&[Cell::S(&p.kind), Cell::S(&w), Cell::F(p.probe_loss)]);
        }
        s.blocks.push(Block::Table(Table {
            caption: "Every merge the search measured".into(),
            header: vec!["kind".into(), "merges".into(), "best probe loss".into()],
            rows: ["one-hot", "grid", "soup", "design", "chosen"]
                .iter()
                .filter_map(|k| {
                    let pts: Vec<&Point> = search.evaluated.iter().filter(|p| p.kind == *k).collect();
                    (!pts.is_empty()).then(|| {
                        vec![
                            k.to_string(),
                            pts.len().to_string(),
                            num(pts.iter().map(|p| p.probe_loss).fold(f64::INFINITY, f64::min), 4),
                        ]
                    })
                })
                .collect(),
            data: Some(DataFile { name: "merge-search-points.csv".into(), contents: pcsv.finish() }),
        }));
    }
    Ok(Some(s))
}

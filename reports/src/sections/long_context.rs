//! The long-context phase: needle-in-a-haystack rank accuracy per (length, depth) before and
//! after it (and the teacher's), and validation loss by position in the phase's window.

use crate::csv::{Cell, Csv};
use crate::error::Result;
use crate::page::{Block, DataFile, Section, Table};
use crate::plot::{self, Series};
use crate::sections::{figure, num};
use crate::stages::{LongContextFile, LongContextScores, read_json};
use crate::{Run, layout};

/// The models in the order shown.
const ORDER: [&str; 3] = ["before", "after", "teacher"];

pub fn section(run: &Run) -> Result<Option<Section>> {
    let path = run.path(layout::LONG_CONTEXT_SCORES);
    if !path.exists() {
        return Ok(None);
    }
    let file: LongContextFile = read_json(&path)?;
    let models: Vec<(&str, &LongContextScores)> =
        ORDER.iter().filter_map(|n| file.models.get(*n).map(|m| (*n, m))).collect();
    let mut s = Section::new("long-context", "Long context (implicit positional distillation)");
    s.text(format!(
        "The trained model continued on the same documents packed into {}-token windows, learning its teacher's logits over the whole window. Needle items hide a 5-digit key in held-out text at five depths and ask for it at the end; \"rank\" is the share of items whose key is more likely than each of the distractors (chance {}).",
        file.seq_len,
        num(file.chance, 2)
    ));
    let mut csv = Csv::new(&["model", "needle_exact", "needle_rank_acc", "mean_val_loss"]);
    let rows = models
        .iter()
        .map(|(name, m)| {
            let mean = m.val_loss.values().sum::<f64>() / m.val_loss.len().max(1) as f64;
            csv.row(&[Cell::S(name), Cell::F(m.needle_exact), Cell::F(m.needle_rank_acc), Cell::F(mean)]);
            vec![name.to_string(), num(m.needle_exact, 3), num(m.needle_rank_acc, 3), num(mean, 4)]
        })
        .collect();
    s.blocks.push(Block::Table(Table {
        caption: format!("Needle scores and mean validation loss over {}-token windows", file.seq_len),
        header: vec!["model".into(), "needle exact".into(), "needle rank".into(), "mean val loss".into()],
        rows,
        data: Some(DataFile { name: "long-context-scores.csv".into(), contents: csv.finish() }),
    }));
    for (name, m) in &models {
        let lengths: Vec<usize> = dedup(m.grid.iter().map(|c| c.length));
        let depths: Vec<String> = dedup(m.grid.iter().map(|c| num(c.depth, 2)));
        let mut csv = Csv::new(&["length", "depth", "items", "exact", "rank_acc"]);
        let mut values = vec![vec![f64::NAN; depths.len()]; lengths.len()];
        for c in &m.grid {
            csv.row(&[
                Cell::U(c.length as u64),
                Cell::F(c.depth),
                Cell::U(c.items as u64),
                Cell::F(c.exact),
                Cell::F(c.rank_acc),
            ]);
            let (r, k) = (
                lengths.iter().position(|l| *l == c.length).expect("listed"),
                depths.iter().position(|d| *d == num(c.depth, 2)).expect("listed"),
            );
            values[r][k] = c.rank_acc;
        }
        let rows: Vec<String> = lengths.iter().map(|l| format!("{l} tokens")).collect();
        let columns: Vec<String> = depths.iter().map(|d| format!("depth {d}")).collect();
        let svg = plot::heatmap(&format!("Needle rank accuracy: {name}"), &rows, &columns, &values)?;
        s.blocks.push(figure(
            &format!("niah-{name}"),
            format!(
                "Share of needle items whose key outscores its distractors, by item length and needle depth ({name})."
            ),
            svg,
            csv.finish(),
        ));
    }
    let mut csv = Csv::new(&["model", "bucket", "mean_loss"]);
    let mut series = Vec::new();
    for (name, m) in &models {
        let buckets = m.by_position.values().map(Vec::len).max().unwrap_or(0);
        let points: Vec<(f64, f64)> = (0..buckets)
            .map(|b| {
                let xs: Vec<f64> = m.by_position.values().filter_map(|v| v.get(b).copied()).collect();
                let mean = xs.iter().sum::<f64>() / xs.len().max(1) as f64;
                // The bucket's middle position in the window.
                ((b as f64 + 0.5) * file.seq_len as f64 / buckets as f64, mean)
            })
            .collect();
        for (x, y) in &points {
            csv.row(&[Cell::S(name), Cell::F(*x), Cell::F(*y)]);
        }
        series.push(Series { name: name.to_string(), points });
    }
    if series.iter().any(|s| !s.points.is_empty()) {
        let svg = plot::lines("Validation loss by position in the window", "position", "loss (nats/token)", &series)?;
        s.blocks.push(figure(
            "loss-by-position",
            "Mean validation loss over domains at each part of the window: a model that uses long context keeps lowering its loss further into the window.",
            svg,
            csv.finish(),
        ));
    }
    Ok(Some(s))
}

/// The distinct values in first-seen order.
fn dedup<T: PartialEq>(items: impl Iterator<Item = T>) -> Vec<T> {
    let mut out = Vec::new();
    for x in items {
        if !out.contains(&x) {
            out.push(x);
        }
    }
    out
}

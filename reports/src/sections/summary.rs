//! The summary: each stage's headline numbers in one metric × stage table.

use crate::Run;
use crate::csv::{Cell, Csv};
use crate::error::Result;
use crate::page::{Block, DataFile, Section, Table};
use crate::sections::num;

pub fn section(run: &Run) -> Result<Option<Section>> {
    if run.records.iter().all(|r| r.metrics.is_empty()) {
        return Ok(None);
    }
    let stages: Vec<&str> = run.records.iter().map(|r| r.stage.as_str()).collect();
    // Metric names in first-seen order, with their direction.
    let mut metrics: Vec<(String, Option<bool>)> = Vec::new();
    for r in &run.records {
        for m in &r.metrics {
            if !metrics.iter().any(|(n, _)| *n == m.name) {
                metrics.push((m.name.clone(), m.higher_is_better));
            }
        }
    }
    let mut header = vec!["metric".to_string()];
    header.extend(stages.iter().map(|s| s.to_string()));
    let mut csv = Csv::new(&["metric", "stage", "value", "higher_is_better"]);
    let mut rows = Vec::new();
    for (name, better) in &metrics {
        let arrow = match better {
            Some(true) => " ↑",
            Some(false) => " ↓",
            None => "",
        };
        let mut row = vec![format!("{name}{arrow}")];
        for r in &run.records {
            match r.metrics.iter().find(|m| m.name == *name) {
                Some(m) => {
                    // Counts (no direction, whole) read as counts; measurements keep their decimals.
                    let count = m.higher_is_better.is_none() && m.value == m.value.trunc() && m.value.abs() < 1e15;
                    row.push(if count {
                        format!("{}", m.value as i64)
                    } else {
                        num(m.value, if m.value.abs() >= 100.0 { 1 } else { 4 })
                    });
                    let dir = match better {
                        Some(true) => "true",
                        Some(false) => "false",
                        None => "",
                    };
                    csv.row(&[Cell::S(name), Cell::S(&r.stage), Cell::F(m.value), Cell::S(dir)]);
                }
                None => row.push("–".into()),
            }
        }
        rows.push(row);
    }
    let mut s = Section::new("summary", "Summary");
    s.text("Each stage's headline numbers (↑ higher is better, ↓ lower is better, – the stage has no such value).");
    s.blocks.push(Block::Table(Table {
        caption: "Metric × stage".into(),
        header,
        rows,
        data: Some(DataFile { name: "summary.csv".into(), contents: csv.finish() }),
    }));
    Ok(Some(s))
}

//! The run card: what ran, on what, from which source and recipe, and how long each stage took.

use crate::Run;
use crate::csv::{Cell, Csv};
use crate::error::Result;
use crate::page::{Block, DataFile, Section, Table};
use crate::plot;
use crate::sections::{figure, num};
use crate::stages::Status;

pub fn section(run: &Run) -> Result<Option<Section>> {
    let Some(card) = &run.card else {
        return Ok(None);
    };
    let mut s = Section::new("run", "Run card");
    let commit = match (&card.commit, card.dirty) {
        (Some(c), Some(true)) => format!("{c} (with uncommitted changes)"),
        (Some(c), _) => c.clone(),
        (None, _) => "unknown (binary built outside a git checkout)".into(),
    };
    let mut rows = vec![
        vec!["mixforge".to_string(), card.version.clone()],
        vec!["commit".into(), commit],
        vec!["libtorch".into(), card.libtorch.clone()],
    ];
    rows.extend(card.hardware.iter().map(|(k, v)| vec![k.clone(), v.clone()]));
    let threads = if card.threads == 0 { "one per core".to_string() } else { card.threads.to_string() };
    rows.push(vec!["threads".into(), threads]);
    rows.push(vec!["preset".into(), card.preset.clone()]);
    rows.push(vec!["recipe hash (xxh3-128, resolved)".into(), card.recipe_hash.clone()]);
    rows.extend(card.seeds.iter().map(|(k, v)| vec![format!("seed: {k}"), v.to_string()]));
    s.blocks.push(Block::Table(Table {
        caption: String::new(),
        header: vec!["setting".into(), "value".into()],
        rows,
        data: None,
    }));

    let mut csv = Csv::new(&["stage", "status", "wall_s", "resumed", "outputs"]);
    let mut table = Table {
        caption: "Stages".into(),
        header: ["stage", "status", "wall time (s)", "resumed", "files written"].map(String::from).to_vec(),
        ..Table::default()
    };
    for r in &run.records {
        let status = match r.status {
            Status::Done => "done",
            Status::Running => "running or killed",
            Status::Failed => "failed",
        };
        csv.row(&[
            Cell::S(&r.stage),
            Cell::S(status),
            Cell::F(r.wall_s),
            Cell::S(if r.resumed { "yes" } else { "no" }),
            Cell::U(r.outputs.len() as u64),
        ]);
        table.rows.push(vec![
            r.stage.clone(),
            status.into(),
            num(r.wall_s, 2),
            if r.resumed { "yes".into() } else { "no".into() },
            r.outputs.len().to_string(),
        ]);
    }
    table.data = Some(DataFile { name: "stages.csv".into(), contents: csv.finish() });
    let mut times = Csv::new(&["stage", "wall_s"]);
    for r in &run.records {
        times.row(&[Cell::S(&r.stage), Cell::F(r.wall_s)]);
    }
    s.blocks.push(Block::Table(table));
    if !run.records.is_empty() {
        let names: Vec<String> = run.records.iter().map(|r| r.stage.clone()).collect();
        let values: Vec<f64> = run.records.iter().map(|r| r.wall_s).collect();
        let svg = plot::bars("Wall time per stage (last attempt)", "seconds", &names, &[("wall time".into(), values)])?;
        s.blocks.push(figure("stage-times", "Where the run's time went, per stage.", svg, times.finish()));
    }
    if let Some(failed) = run.records.iter().find(|r| r.status == Status::Failed) {
        s.text(format!("Stage `{}` failed: {}", failed.stage, failed.error.as_deref().unwrap_or("(no message)")));
    }
    s.blocks.push(Block::Code {
        caption: "Recipe, resolved (preset and defaults filled in)".into(),
        text: card.resolved_recipe.clone(),
    });
    if !card.recipe_text.is_empty() {
        s.blocks.push(Block::Code { caption: "Recipe as written".into(), text: card.recipe_text.clone() });
    }
    Ok(Some(s))
}

//! Phase 4: the final model under int4 quantization, PTQ against QAT (as torchao reports QAT:
//! full precision, PTQ and QAT rows, signed degradation, share recovered), and the exports'
//! size and CPU speed.

use crate::csv::{Cell, Csv};
use crate::error::Result;
use crate::page::{Block, DataFile, Section, Table};
use crate::plot;
use crate::sections::{figure, num};
use crate::stages::{ExportsFile, QatFile, QuantScores, read_json};
use crate::{Run, layout};

const ORDER: [(&str, &str); 3] = [("fp", "full precision"), ("ptq", "PTQ (no training)"), ("qat", "QAT")];

fn mean(s: &QuantScores) -> f64 {
    s.val_loss.values().sum::<f64>() / s.val_loss.len().max(1) as f64
}

pub fn section(run: &Run) -> Result<Option<Section>> {
    let path = run.path(layout::QAT_SCORES);
    if !path.exists() {
        return Ok(None);
    }
    let file: QatFile = read_json(&path)?;
    let models: Vec<(&str, &str, &QuantScores)> =
        ORDER.iter().filter_map(|(k, label)| file.models.get(*k).map(|m| (*k, *label, m))).collect();
    let Some(fp) = file.models.get("fp").map(mean) else { return Ok(None) };
    let ptq = file.models.get("ptq").map_or(f64::NAN, mean);
    let scheme = match file.scheme.as_str() {
        "cpu" => "int4 weights in groups of 32 with int8 dynamic per-token activations (the CPU scheme)",
        _ => "int4 weights per output channel with learned scales, 16-bit activations (the accelerator scheme)",
    };
    let teacher = if file.teacher == "self" { "distilling from the full-precision model" } else { "on labels" };
    let mut s = Section::new("quantization", "Quantization (int4)");
    s.text(format!(
        "The final model quantized to {scheme}. PTQ applies the quantizer with no training; QAT trains the fake-quantized model for {} tokens {teacher}. Losses are over {}-token validation windows; Δ is the quantized model's loss minus full precision's, and \"recovered\" the share of PTQ's increase that QAT removes.",
        crate::sections::count(file.tokens),
        file.seq_len
    ));
    let domains: Vec<String> = models.first().map(|(_, _, m)| m.val_loss.keys().cloned().collect()).unwrap_or_default();
    let tasks: Vec<String> = models.first().map(|(_, _, m)| m.tasks.keys().cloned().collect()).unwrap_or_default();
    let mut header = vec!["model".to_string()];
    header.extend(domains.iter().cloned());
    header.extend(["mean".into(), "Δ vs fp".into(), "recovered".into()]);
    header.extend(tasks.iter().cloned());
    let mut columns: Vec<&str> = vec!["model"];
    columns.extend(domains.iter().map(String::as_str));
    columns.extend(["mean_val_loss", "delta_vs_fp", "recovered"]);
    columns.extend(tasks.iter().map(String::as_str));
    let mut csv = Csv::new(&columns);
    let mut rows = Vec::new();
    for (key, label, m) in &models {
        let mean = mean(m);
        let recovered = if *key == "qat" && ptq != fp { (ptq - mean) / (ptq - fp) } else { f64::NAN };
        let mut cells = vec![Cell::S(key)];
        let mut row = vec![label.to_string()];
        for d in &domains {
            let v = m.val_loss.get(d).copied().unwrap_or(f64::NAN);
            cells.push(Cell::F(v));
            row.push(num(v, 4));
        }
        cells.extend([Cell::F(mean), Cell::F(mean - fp), Cell::F(recovered)]);
        row.extend([num(mean, 4), format!("{:+.4}", mean - fp), num(recovered, 2)]);
        for t in &tasks {
            let v = m.tasks.get(t).copied().unwrap_or(f64::NAN);
            cells.push(Cell::F(v));
            row.push(num(v, 3));
        }
        csv.row(&cells);
        rows.push(row);
    }
    s.blocks.push(Block::Table(Table {
        caption: "Validation loss per domain (nats/token) and task accuracy".into(),
        header,
        rows,
        data: Some(DataFile { name: "quantization.csv".into(), contents: csv.finish() }),
    }));
    // What quantization costs per domain: the loss above full precision's.
    let fp_loss = &file.models["fp"].val_loss;
    let quantized: Vec<&(&str, &str, &QuantScores)> = models.iter().filter(|(k, _, _)| *k != "fp").collect();
    let series: Vec<(String, Vec<f64>)> = quantized
        .iter()
        .map(|(_, label, m)| (label.to_string(), domains.iter().map(|d| m.val_loss[d] - fp_loss[d]).collect()))
        .collect();
    let mut csv = Csv::new(&["model", "domain", "val_loss", "delta_vs_fp"]);
    for (key, _, m) in &quantized {
        for d in &domains {
            csv.row(&[Cell::S(key), Cell::S(d), Cell::F(m.val_loss[d]), Cell::F(m.val_loss[d] - fp_loss[d])]);
        }
    }
    let svg = plot::bars("Loss increase over full precision", "Δ loss (nats/token)", &domains, &series)?;
    s.blocks.push(figure(
        "quantization-loss",
        "Validation loss above full precision's, per domain, after PTQ and after QAT (lower is better; 0 is no cost).",
        svg,
        csv.finish(),
    ));

    let exports = run.path(layout::EXPORTS);
    if exports.exists() {
        let e: ExportsFile = read_json(&exports)?;
        let fp_speed = e.files.first().and_then(|f| f.tokens_per_s);
        let int4_speed = e.files.get(1).and_then(|f| f.tokens_per_s);
        let small = match (int4_speed, fp_speed) {
            (Some(i), Some(f)) if i < f => {
                " At this model size the int4 kernels' fixed per-call costs outweigh the smaller weights; `just bench-int4` measures larger models."
            }
            _ => "",
        };
        let mut csv = Csv::new(&["format", "path", "bytes", "tokens_per_s"]);
        let rows = e
            .files
            .iter()
            .map(|f| {
                csv.row(&[
                    Cell::S(&f.format),
                    Cell::S(&f.path),
                    Cell::U(f.bytes),
                    Cell::F(f.tokens_per_s.unwrap_or(f64::NAN)),
                ]);
                let speed = match (f.tokens_per_s, fp_speed) {
                    (Some(t), Some(base)) => format!("{} ({}×)", num(t, 0), num(t / base, 2)),
                    _ => "–".into(),
                };
                vec![f.format.clone(), f.path.clone(), format!("{:.2} MB", f.bytes as f64 / 1e6), speed]
            })
            .collect();
        s.blocks.push(Block::Table(Table {
            caption: format!(
                "The exports: size on disk and forward tokens/s on this CPU ({} threads). The real int4 model (libtorch's int4 kernels, bf16 activations) scores a mean validation loss of {} against the fake-quantized QAT model's {}.{small}",
                e.threads,
                num(mean(&e.int4_scores), 4),
                num(file.models.get("qat").map_or(f64::NAN, mean), 4)
            ),
            header: vec!["format".into(), "path".into(), "size".into(), "tokens/s".into()],
            rows,
            data: Some(DataFile { name: "exports.csv".into(), contents: csv.finish() }),
        }));
    }
    Ok(Some(s))
}

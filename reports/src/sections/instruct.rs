//! Instruction tuning: the weights the fine-tune used (and the leave-one-out Δ matrix behind
//! them), and each domain's held-out loss and exact match before and after.

use crate::csv::{Cell, Csv};
use crate::error::Result;
use crate::page::{Block, DataFile, Section, Table};
use crate::plot;
use crate::sections::{count, figure, num};
use crate::stages::{InstructFile, read_json};
use crate::{Run, layout};

pub fn section(run: &Run) -> Result<Option<Section>> {
    let path = run.path(layout::SFT_SCORES);
    if !path.exists() {
        return Ok(None);
    }
    let f: InstructFile = read_json(&path)?;
    let mut s = Section::new("instruct", "Instruction tuning");
    let how = match (f.mix.as_str(), &f.loo) {
        ("loo", Some(l)) => format!(
            "on weights set from leave-one-out fine-tunes ({} runs of {} steps: all domains, then each domain left out). The rule is ours (the paper does not publish its own): w′ ∝ w · exp(η · score) with η = {}, capped at {}, where a domain's score is the mean over metrics of what removing it cost, divided by that metric's RMS over domains",
            l.domains.len() + 1,
            l.steps,
            l.eta,
            l.max_weight
        ),
        (mix, _) => format!("on the {mix} mix"),
    };
    s.text(format!(
        "The final model fine-tuned through the chat template for {} tokens {how}. The loss counts only the assistant's tokens; held-out loss is per assistant token on each domain's held-out examples, and exact match asks greedy decoding to write a short answer (at most 16 tokens) exactly, <|im_end|> included.",
        count(f.tokens)
    ));
    let domains: Vec<String> = f.weights.keys().cloned().collect();
    let get = |m: &std::collections::BTreeMap<String, f64>, d: &str| m.get(d).copied().unwrap_or(f64::NAN);
    let mut csv = Csv::new(&[
        "domain",
        "natural_weight",
        "weight",
        "held_out",
        "val_loss_before",
        "val_loss_after",
        "exact_match_before",
        "exact_match_after",
        "short_answers",
        "malformed",
    ]);
    let mut rows = Vec::new();
    for d in &domains {
        let (nat, w) = (get(&f.natural, d), get(&f.weights, d));
        let (lb, la) = (get(&f.before.val_loss, d), get(&f.after.val_loss, d));
        let (eb, ea) = (get(&f.before.exact_match, d), get(&f.after.exact_match, d));
        let held_out = f.held_out.get(d).copied().unwrap_or(0);
        let short = f.short_answers.get(d).copied().unwrap_or(0);
        let malformed = f.malformed.get(d).copied().unwrap_or(0);
        csv.row(&[
            Cell::S(d),
            Cell::F(nat),
            Cell::F(w),
            Cell::U(held_out as u64),
            Cell::F(lb),
            Cell::F(la),
            Cell::F(eb),
            Cell::F(ea),
            Cell::U(short as u64),
            Cell::U(malformed as u64),
        ]);
        let em = if short > 0 { format!("{} → {} (of {short})", num(eb, 3), num(ea, 3)) } else { "–".into() };
        rows.push(vec![
            d.clone(),
            num(nat, 3),
            num(w, 3),
            held_out.to_string(),
            format!("{} → {}", num(lb, 3), num(la, 3)),
            em,
            malformed.to_string(),
        ]);
    }
    s.blocks.push(Block::Table(Table {
        caption: "Per instruction domain: weights, held-out loss (nats per assistant token) and exact match, before → after the fine-tune".into(),
        header: ["domain", "natural", "weight", "held-out", "loss", "exact match", "malformed"].map(String::from).to_vec(),
        rows,
        data: Some(DataFile { name: "instruct.csv".into(), contents: csv.finish() }),
    }));
    if let Some(l) = &f.loo {
        // Each metric's Δ over its RMS across domains: what the rule sums, comparable across metrics.
        let rms: Vec<f64> = (0..l.metrics.len())
            .map(|m| (l.delta.iter().map(|r| r[m] * r[m]).sum::<f64>() / l.domains.len().max(1) as f64).sqrt())
            .collect();
        // Metrics no removal moved (every Δ 0: exact match at a size that answers nothing) carry no
        // signal; the rule leaves them out, and so does the figure.
        let live: Vec<usize> = (0..l.metrics.len()).filter(|&m| rms[m] > 0.0).collect();
        let scaled: Vec<Vec<f64>> = l.delta.iter().map(|r| live.iter().map(|&m| r[m] / rms[m]).collect()).collect();
        let mut csv = Csv::new(&["removed", "metric", "delta", "delta_over_rms"]);
        for (d, (raw, sc)) in l.domains.iter().zip(l.delta.iter().zip(&scaled)) {
            for (&m, y) in live.iter().zip(sc) {
                csv.row(&[Cell::S(d), Cell::S(&l.metrics[m]), Cell::F(raw[m]), Cell::F(*y)]);
            }
        }
        let rows: Vec<String> = l.domains.iter().map(|d| format!("without {d}")).collect();
        let columns: Vec<String> = live.iter().map(|&m| l.metrics[m].clone()).collect();
        let dropped = l.metrics.len() - live.len();
        let note = if dropped > 0 {
            format!(" {dropped} metrics no removal moved (every Δ 0) are left out, as the rule leaves them out.")
        } else {
            String::new()
        };
        let svg = plot::heatmap("What removing a domain costs (Δ / RMS)", &rows, &columns, &scaled)?;
        s.blocks.push(figure(
            "instruct-loo",
            format!("Leave-one-out Δ per metric, each divided by its RMS over domains: red where removing the domain made the metric worse (the domain helps), blue where it made it better.{note}"),
            svg,
            csv.finish(),
        ));
        let series = vec![
            ("before (base)".to_string(), domains.iter().map(|d| get(&l.base, d)).collect()),
            ("after the rule".to_string(), domains.iter().map(|d| get(&f.weights, d)).collect()),
        ];
        let mut csv = Csv::new(&["domain", "base", "loo", "score"]);
        for d in &domains {
            csv.row(&[Cell::S(d), Cell::F(get(&l.base, d)), Cell::F(get(&f.weights, d)), Cell::F(get(&l.scores, d))]);
        }
        let svg = plot::bars("Instruction-domain weights", "weight", &domains, &series)?;
        s.blocks.push(figure(
            "instruct-weights",
            "The weights before and after the leave-one-out rule.",
            svg,
            csv.finish(),
        ));
    }
    Ok(Some(s))
}

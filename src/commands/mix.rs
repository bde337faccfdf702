//! `mixforge mix import | fit | predict`: runs tables and surrogate models.

use std::io::Write;

use anyhow::{Context, Result};
use mixsim::{FittedModel, RunsTable, Surrogate, SurrogateKind};

use crate::cli::{MixCommand, SurrogateArg};

/// Runs one mix command.
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
            let kind = match args.surrogate {
                SurrogateArg::Auto => SurrogateKind::Auto,
                SurrogateArg::Gbdt => SurrogateKind::Gbdt,
                SurrogateArg::MixingLaw => SurrogateKind::MixingLaw,
                SurrogateArg::Linear => SurrogateKind::Linear,
                SurrogateArg::Ensemble => SurrogateKind::Ensemble,
            };
            let (model, reports) = FittedModel::fit_with_cv(&table, &args.target, kind)
                .with_context(|| format!("fitting {} on {}", args.target, args.runs.display()))?;
            writeln!(stdout, "5-fold CV on {} runs, target {}:", table.rows.len(), args.target)?;
            writeln!(stdout, "  {:<12} {:>9} {:>9} {:>9}", "surrogate", "spearman", "pearson", "mae")?;
            for (name, r) in &reports {
                writeln!(stdout, "  {name:<12} {:>9.4} {:>9.4} {:>9.4}", r.spearman, r.pearson, r.mae)?;
            }
            model.save(&args.out)?;
            writeln!(stdout, "chosen: {} → {}", model.surrogate.name(), args.out.display())?;
        }
        MixCommand::Predict(args) => {
            let model = FittedModel::load(&args.model)?;
            let (indices, domains, rows) = mixsim::read_mixtures(&args.mixtures)?;
            let predicted = model.predict_rows(&domains, &rows)?;
            let mut csv = String::from("index,predicted\n");
            for (index, p) in indices.iter().zip(&predicted) {
                csv.push_str(&format!("{index},{p}\n"));
            }
            corpus::atomic::write_file(&args.out, csv.as_bytes())?;
            writeln!(stdout, "predicted {} for {} mixtures → {}", model.target, predicted.len(), args.out.display())?;
        }
    }
    Ok(())
}

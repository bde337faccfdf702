//! `mixforge report RUN`: renders a run's report from its artifacts (no libtorch needed).

use std::io::Write;
use std::path::Path;

use anyhow::{Context, Result};

/// `mixforge report RUN`.
pub fn report(run: &Path) -> Result<()> {
    let written = reports::write(run, None).with_context(|| format!("writing the report of {}", run.display()))?;
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "report: {}", written.html.display())?;
    writeln!(stdout, "markdown: {}", written.markdown.display())?;
    writeln!(
        stdout,
        "{} figures, {} data files in {}",
        written.report.figures().len(),
        written.report.data_files().len(),
        written.html.parent().map_or(String::new(), |p| p.join("data").display().to_string())
    )?;
    Ok(())
}

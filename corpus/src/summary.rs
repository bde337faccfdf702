//! Per-domain summary of a profile (documents, bytes, tokens, quantiles), computed with polars
//! and written as `summary.parquet` and `summary.json`.

use std::path::Path;

use polars::prelude::*;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::profile::DocRecord;

/// One domain's row of the summary.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DomainSummary {
    /// Domain name (`all` for the totals row).
    pub domain: String,
    /// Documents read.
    pub docs: u64,
    /// Documents kept.
    pub docs_kept: u64,
    /// Text bytes read.
    pub bytes: u64,
    /// Text bytes kept.
    pub bytes_kept: u64,
    /// Estimated tokens kept.
    pub est_tokens_kept: u64,
    /// Estimated tokens per kept document: 10th percentile.
    pub tokens_p10: f64,
    /// ... median.
    pub tokens_p50: f64,
    /// ... 90th percentile.
    pub tokens_p90: f64,
    /// ... largest.
    pub tokens_max: f64,
    /// Mean fraction of letters among characters, over kept documents.
    pub mean_alpha_frac: f64,
    /// Documents failing at least one quality rule.
    pub docs_flagged: u64,
}

/// Builds the per-domain table (plus an `all` row) from the run's records; `domains[i]` is
/// the domain of source `i` (several sources may share one).
pub fn summarize(records: &[DocRecord], domains: &[String]) -> Result<(DataFrame, Vec<DomainSummary>)> {
    let table_err = |source| Error::Table { path: "summary".into(), source };
    let domain: Vec<&str> = records.iter().map(|r| domains[usize::from(r.source.0)].as_str()).collect();
    let bytes: Vec<u64> = records.iter().map(|r| r.bytes).collect();
    let tokens: Vec<u64> =
        records.iter().map(|r| r.signals.as_ref().map_or(r.bytes.div_ceil(4), |s| s.est_tokens)).collect();
    let alpha: Vec<f32> = records.iter().map(|r| r.signals.as_ref().map_or(f32::NAN, |s| s.alpha_frac)).collect();
    let kept: Vec<bool> = records.iter().map(|r| r.drop.is_none()).collect();
    let flagged: Vec<bool> = records.iter().map(|r| !r.rules.is_empty()).collect();
    let df = df!(
        "domain" => domain,
        "bytes" => bytes,
        "est_tokens" => tokens,
        "alpha_frac" => alpha,
        "kept" => kept,
        "flagged" => flagged,
    )
    .map_err(table_err)?;
    let aggregations = || {
        let kept_tokens = col("est_tokens").filter(col("kept"));
        [
            len().cast(DataType::UInt64).alias("docs"),
            col("kept").sum().cast(DataType::UInt64).alias("docs_kept"),
            col("bytes").sum().cast(DataType::UInt64).alias("bytes"),
            col("bytes").filter(col("kept")).sum().cast(DataType::UInt64).alias("bytes_kept"),
            kept_tokens.clone().sum().cast(DataType::UInt64).alias("est_tokens_kept"),
            kept_tokens.clone().quantile(lit(0.1), QuantileMethod::Linear).cast(DataType::Float64).alias("tokens_p10"),
            kept_tokens.clone().quantile(lit(0.5), QuantileMethod::Linear).cast(DataType::Float64).alias("tokens_p50"),
            kept_tokens.clone().quantile(lit(0.9), QuantileMethod::Linear).cast(DataType::Float64).alias("tokens_p90"),
            kept_tokens.max().cast(DataType::Float64).alias("tokens_max"),
            col("alpha_frac").filter(col("kept")).mean().cast(DataType::Float64).alias("mean_alpha_frac"),
            col("flagged").sum().cast(DataType::UInt64).alias("docs_flagged"),
        ]
    };
    let per_domain = df
        .clone()
        .lazy()
        .group_by([col("domain")])
        .agg(aggregations())
        .sort(["domain"], SortMultipleOptions::default())
        .collect()
        .map_err(table_err)?;
    let all = df.lazy().select(aggregations()).with_column(lit("all").alias("domain")).collect().map_err(table_err)?;
    let all = all.select(per_domain.get_column_names_owned()).map_err(table_err)?;
    let table = per_domain.vstack(&all).map_err(table_err)?;
    let rows = rows(&table).map_err(table_err)?;
    Ok((table, rows))
}

fn rows(table: &DataFrame) -> PolarsResult<Vec<DomainSummary>> {
    let u = |name: &str| -> PolarsResult<Vec<u64>> {
        Ok(table.column(name)?.as_materialized_series().u64()?.iter().map(|v| v.unwrap_or(0)).collect())
    };
    let f = |name: &str| -> PolarsResult<Vec<f64>> {
        Ok(table.column(name)?.as_materialized_series().f64()?.iter().map(|v| v.unwrap_or(f64::NAN)).collect())
    };
    let domain: Vec<String> = table
        .column("domain")?
        .as_materialized_series()
        .str()?
        .iter()
        .map(|v| v.unwrap_or_default().to_string())
        .collect();
    let (docs, docs_kept, bytes, bytes_kept, tokens, flagged) =
        (u("docs")?, u("docs_kept")?, u("bytes")?, u("bytes_kept")?, u("est_tokens_kept")?, u("docs_flagged")?);
    let (p10, p50, p90, max, alpha) =
        (f("tokens_p10")?, f("tokens_p50")?, f("tokens_p90")?, f("tokens_max")?, f("mean_alpha_frac")?);
    Ok((0..table.height())
        .map(|i| DomainSummary {
            domain: domain[i].clone(),
            docs: docs[i],
            docs_kept: docs_kept[i],
            bytes: bytes[i],
            bytes_kept: bytes_kept[i],
            est_tokens_kept: tokens[i],
            tokens_p10: p10[i],
            tokens_p50: p50[i],
            tokens_p90: p90[i],
            tokens_max: max[i],
            mean_alpha_frac: alpha[i],
            docs_flagged: flagged[i],
        })
        .collect())
}

/// Writes the table as Parquet (atomically).
pub fn write_parquet(path: &Path, table: &mut DataFrame) -> Result<()> {
    let mut file = crate::atomic::AtomicFile::create(path)?;
    ParquetWriter::new(file.writer())
        .finish(table)
        .map_err(|source| Error::Table { path: path.to_path_buf(), source })?;
    file.commit()
}

/// A plain-text table for terminals.
pub fn render(rows: &[DomainSummary]) -> String {
    let header = ["domain", "docs", "kept", "MB", "MB kept", "est. tokens", "tok p10", "tok p50", "tok p90", "flagged"];
    let body: Vec<[String; 10]> = rows
        .iter()
        .map(|r| {
            [
                r.domain.clone(),
                r.docs.to_string(),
                r.docs_kept.to_string(),
                format!("{:.2}", r.bytes as f64 / 1e6),
                format!("{:.2}", r.bytes_kept as f64 / 1e6),
                r.est_tokens_kept.to_string(),
                format!("{:.0}", r.tokens_p10),
                format!("{:.0}", r.tokens_p50),
                format!("{:.0}", r.tokens_p90),
                r.docs_flagged.to_string(),
            ]
        })
        .collect();
    let widths: Vec<usize> = (0..header.len())
        .map(|c| body.iter().map(|row| row[c].len()).chain([header[c].len()]).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    let line = |cells: Vec<&str>, out: &mut String| {
        for (c, cell) in cells.iter().enumerate() {
            if c == 0 {
                out.push_str(&format!("{cell:<w$}", w = widths[c]));
            } else {
                out.push_str(&format!("  {cell:>w$}", w = widths[c]));
            }
        }
        out.push('\n');
    };
    line(header.to_vec(), &mut out);
    for row in &body {
        line(row.iter().map(String::as_str).collect(), &mut out);
    }
    out
}

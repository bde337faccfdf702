//! Proxy-run tables: import RegMix CSVs, pair mixtures with metrics, write and read our own CSV.

use std::collections::BTreeMap;
use std::path::Path;

use corpus::atomic::write_file;

use crate::error::{Error, Result};

/// RegMix rounds each of 17 weights to 3 decimals, so sums drift by up to 17 × 0.0005; 47 of
/// the 512 training rows are off by more than 1e-3 (max 0.004). 1e-2 still catches a missing
/// or swapped column.
pub const WEIGHT_SUM_TOLERANCE: f64 = 1e-2;

/// One proxy run: the mixture it trained on and the metrics it reached.
#[derive(Debug, Clone, PartialEq)]
pub struct Run {
    /// The run's id as written in the source files.
    pub index: String,
    /// Mixture weights, one per domain in [`RunsTable::domains`] order.
    pub weights: Vec<f64>,
    /// Scale values (parameters, tokens, …), one per name in [`RunsTable::scales`] order.
    pub scale: Vec<f64>,
    /// Metric values, one per name in [`RunsTable::metrics`] order.
    pub metrics: Vec<f64>,
}

/// A set of proxy runs sharing one domain list and one metric list.
#[derive(Debug, Clone, PartialEq)]
pub struct RunsTable {
    /// Domain names, e.g. `the_pile_pile_cc`.
    pub domains: Vec<String>,
    /// Scale column names, e.g. `params`, `tokens` (none for imported RegMix swarms).
    pub scales: Vec<String>,
    /// Metric names, e.g. `the_pile_pile_cc_val_loss`.
    pub metrics: Vec<String>,
    /// The runs, in mixture-file order.
    pub rows: Vec<Run>,
}

/// A parsed numeric CSV: header names after `index`, and per row its line, index and values.
struct NumericCsv {
    columns: Vec<String>,
    rows: Vec<(usize, String, Vec<f64>)>,
}

fn read_text(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(|source| Error::Io { path: path.to_path_buf(), cause: source })
}

/// Reads a CSV whose first column is `index` and the rest are numbers. Plain `split(',')`:
/// these files never quote, and a quoted cell would fail as a bad number naming its line.
fn read_numeric_csv(path: &Path) -> Result<NumericCsv> {
    let text = read_text(path)?;
    let mut lines = text.lines().enumerate().map(|(i, l)| (i + 1, l.trim_end_matches('\r')));
    let bad_header = |reason| Error::BadHeader { path: path.to_path_buf(), line: 1, reason };
    let (_, header) = lines.next().ok_or_else(|| bad_header("file is empty"))?;
    let mut names = header.split(',').map(|s| s.trim().to_string());
    if names.next().as_deref() != Some("index") {
        return Err(bad_header("first column must be `index`"));
    }
    let columns: Vec<String> = names.collect();
    let mut rows = Vec::new();
    let mut seen = BTreeMap::new();
    for (line, text) in lines {
        if text.trim().is_empty() {
            continue;
        }
        let cells: Vec<&str> = text.split(',').collect();
        if cells.len() != columns.len() + 1 {
            return Err(Error::ColumnCount {
                path: path.to_path_buf(),
                line,
                expected: columns.len() + 1,
                got: cells.len(),
            });
        }
        let index = cells[0].trim().to_string();
        if seen.insert(index.clone(), line).is_some() {
            return Err(Error::DuplicateIndex { path: path.to_path_buf(), line, index });
        }
        let values = cells[1..]
            .iter()
            .zip(&columns)
            .map(|(cell, column)| {
                let cell = cell.trim();
                cell.parse::<f64>().ok().filter(|v| v.is_finite()).ok_or_else(|| Error::BadNumber {
                    path: path.to_path_buf(),
                    line,
                    column: column.clone(),
                    got: cell.to_string(),
                })
            })
            .collect::<Result<Vec<f64>>>()?;
        rows.push((line, index, values));
    }
    Ok(NumericCsv { columns, rows })
}

fn check_weight_sum(path: &Path, line: usize, weights: &[f64]) -> Result<()> {
    let sum: f64 = weights.iter().sum();
    if (sum - 1.0).abs() > WEIGHT_SUM_TOLERANCE {
        return Err(Error::WeightSum { path: path.to_path_buf(), line, sum, tolerance: WEIGHT_SUM_TOLERANCE });
    }
    Ok(())
}

/// Mixtures to predict: run indices, domain names and one weight row per run.
pub type Mixtures = (Vec<String>, Vec<String>, Vec<Vec<f64>>);

/// Reads a RegMix-style mixture file (`index,train_<domain>...`); `train_` is stripped.
pub fn read_mixtures(path: &Path) -> Result<Mixtures> {
    let csv = read_numeric_csv(path)?;
    let domains = csv.columns.iter().map(|c| c.strip_prefix("train_").unwrap_or(c).to_string()).collect();
    let mut indices = Vec::with_capacity(csv.rows.len());
    let mut weights = Vec::with_capacity(csv.rows.len());
    for (line, index, values) in csv.rows {
        check_weight_sum(path, line, &values)?;
        indices.push(index);
        weights.push(values);
    }
    Ok((indices, domains, weights))
}

impl RunsTable {
    /// Joins a RegMix mixture file with its metrics file on `index`. Every run must be in both.
    pub fn import_regmix(mixtures: &Path, metrics: &Path) -> Result<RunsTable> {
        let (indices, domains, weights) = read_mixtures(mixtures)?;
        let metric_csv = read_numeric_csv(metrics)?;
        let metric_names =
            metric_csv.columns.iter().map(|c| c.strip_prefix("metric/").unwrap_or(c).to_string()).collect();
        let mut by_index: BTreeMap<String, (usize, Vec<f64>)> =
            metric_csv.rows.into_iter().map(|(line, index, values)| (index, (line, values))).collect();
        let mut rows = Vec::with_capacity(indices.len());
        for (row_idx, (index, weights)) in indices.into_iter().zip(weights).enumerate() {
            let Some((_, metric_values)) = by_index.remove(&index) else {
                // Mixture rows are numbered from line 2 after the header; blank lines are rare
                // enough that re-reading for the exact line is not worth it here.
                return Err(Error::MissingIndex {
                    path: mixtures.to_path_buf(),
                    line: line_of(mixtures, &index).unwrap_or(row_idx + 2),
                    index,
                    other: metrics.to_path_buf(),
                });
            };
            rows.push(Run { index, weights, scale: Vec::new(), metrics: metric_values });
        }
        if let Some((index, (line, _))) = by_index.into_iter().min_by_key(|(_, (line, _))| *line) {
            return Err(Error::MissingIndex {
                path: metrics.to_path_buf(),
                line,
                index,
                other: mixtures.to_path_buf(),
            });
        }
        Ok(RunsTable { domains, scales: Vec::new(), metrics: metric_names, rows })
    }

    /// Position of a metric by name.
    pub fn metric_position(&self, name: &str) -> Result<usize> {
        self.metrics
            .iter()
            .position(|m| m == name)
            .ok_or_else(|| Error::UnknownMetric { name: name.to_string(), known: self.metrics.clone() })
    }

    /// Weight rows and one metric's values, ready for a surrogate.
    pub fn xy(&self, metric: &str) -> Result<(Vec<Vec<f64>>, Vec<f64>)> {
        let m = self.metric_position(metric)?;
        Ok(self.rows.iter().map(|r| (r.weights.clone(), r.metrics[m])).unzip())
    }

    /// Writes `index,w:<domain>...,s:<scale>...,m:<metric>...`; floats use Rust's shortest
    /// round-trip form.
    pub fn write_csv(&self, path: &Path) -> Result<()> {
        let mut out = String::from("index");
        for d in &self.domains {
            out.push_str(&format!(",w:{d}"));
        }
        for s in &self.scales {
            out.push_str(&format!(",s:{s}"));
        }
        for m in &self.metrics {
            out.push_str(&format!(",m:{m}"));
        }
        out.push('\n');
        for run in &self.rows {
            out.push_str(&run.index);
            for v in run.weights.iter().chain(&run.scale).chain(&run.metrics) {
                out.push_str(&format!(",{v}"));
            }
            out.push('\n');
        }
        Ok(write_file(path, out.as_bytes())?)
    }

    /// Reads what [`RunsTable::write_csv`] wrote.
    pub fn read_csv(path: &Path) -> Result<RunsTable> {
        let csv = read_numeric_csv(path)?;
        let (mut domains, mut scales, mut metrics) = (Vec::new(), Vec::new(), Vec::new());
        for c in &csv.columns {
            let out_of_order = |reason| Error::BadHeader { path: path.to_path_buf(), line: 1, reason };
            if let Some(d) = c.strip_prefix("w:") {
                if !scales.is_empty() || !metrics.is_empty() {
                    return Err(out_of_order("`w:` columns must come before `s:` and `m:` columns"));
                }
                domains.push(d.to_string());
            } else if let Some(s) = c.strip_prefix("s:") {
                if !metrics.is_empty() {
                    return Err(out_of_order("`s:` columns must come before `m:` columns"));
                }
                scales.push(s.to_string());
            } else if let Some(m) = c.strip_prefix("m:") {
                metrics.push(m.to_string());
            } else {
                return Err(out_of_order("columns after `index` must start with `w:`, `s:` or `m:`"));
            }
        }
        let (n_domains, n_scales) = (domains.len(), scales.len());
        let mut rows = Vec::with_capacity(csv.rows.len());
        for (line, index, mut values) in csv.rows {
            let metric_values = values.split_off(n_domains + n_scales);
            let scale = values.split_off(n_domains);
            check_weight_sum(path, line, &values)?;
            rows.push(Run { index, weights: values, scale, metrics: metric_values });
        }
        Ok(RunsTable { domains, scales, metrics, rows })
    }
}

impl RunsTable {
    /// Writes the table as Parquet with the CSV's column names (`index` as text, the rest as
    /// float64), for polars, pandas or duckdb.
    pub fn write_parquet(&self, path: &Path) -> Result<()> {
        use std::sync::Arc;

        use arrow_array::{ArrayRef, Float64Array, RecordBatch, StringArray};
        use arrow_schema::{DataType, Field, Schema};

        let err = |e: &dyn std::fmt::Display| Error::Parquet { path: path.to_path_buf(), message: e.to_string() };
        let mut fields = vec![Field::new("index", DataType::Utf8, false)];
        let mut columns: Vec<ArrayRef> =
            vec![Arc::new(StringArray::from_iter_values(self.rows.iter().map(|r| r.index.as_str())))];
        type Column = fn(&Run) -> &[f64];
        let groups: [(&str, &[String], Column); 3] = [
            ("w:", &self.domains, |r| &r.weights),
            ("s:", &self.scales, |r| &r.scale),
            ("m:", &self.metrics, |r| &r.metrics),
        ];
        for (prefix, names, values) in groups {
            for (k, name) in names.iter().enumerate() {
                fields.push(Field::new(format!("{prefix}{name}"), DataType::Float64, false));
                columns.push(Arc::new(Float64Array::from_iter_values(self.rows.iter().map(|r| values(r)[k]))));
            }
        }
        let batch = RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).map_err(|e| err(&e))?;
        let mut bytes = Vec::new();
        let mut writer = parquet::arrow::ArrowWriter::try_new(&mut bytes, batch.schema(), None).map_err(|e| err(&e))?;
        writer.write(&batch).map_err(|e| err(&e))?;
        writer.close().map_err(|e| err(&e))?;
        Ok(write_file(path, &bytes)?)
    }
}

/// The 1-based line of the row whose first cell is `index`, for error messages only.
fn line_of(path: &Path, index: &str) -> Option<usize> {
    let text = std::fs::read_to_string(path).ok()?;
    text.lines().position(|l| l.split(',').next().map(str::trim) == Some(index)).map(|i| i + 1)
}

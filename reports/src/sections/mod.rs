//! The report's sections, one module each; each reads the run's artifacts and returns its
//! blocks, or `None` when the run has nothing for it.

pub mod card;
pub mod corpus;
pub mod instruct;
pub mod long_context;
pub mod merge;
pub mod quantization;
pub mod simulator;
pub mod summary;
pub mod training;

use crate::page::{Block, DataFile, Figure};

/// A figure block with its data file.
pub fn figure(id: &str, caption: impl Into<String>, svg: String, data: String) -> Block {
    let name = format!("{id}.csv");
    Block::Figure(Figure { id: id.to_string(), caption: caption.into(), svg, data: DataFile { name, contents: data } })
}

/// A measured number with `digits` decimals, always (so a value at a bound, 0 or 1, reads as
/// a measurement like its neighbours); "–" when not finite.
pub fn num(v: f64, digits: usize) -> String {
    if !v.is_finite() {
        return "–".to_string();
    }
    format!("{v:.digits$}")
}

/// Thousands separated by commas: 1,234,567.
pub fn count(v: u64) -> String {
    let digits = v.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// `part / whole` as a percentage with one decimal.
pub fn percent(part: u64, whole: u64) -> String {
    if whole == 0 { "–".into() } else { format!("{:.1}%", 100.0 * part as f64 / whole as f64) }
}

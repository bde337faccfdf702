//! The corpus: what came in, what each rule and dedup removed (with examples), the signals'
//! distributions, contamination, and what the tokenizer made of each domain.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::Path;

use arrow_array::{Array, Float32Array, StringArray, UInt64Array};
use corpus::accounting::{Accounting, Counts};
use corpus::dedup::DedupReport;
use corpus::pipeline::Example;
use corpus::shards::ShardManifest;
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use serde::Deserialize;

use crate::csv::{Cell, Csv};
use crate::error::{Error, Result};
use crate::page::{Block, DataFile, Section, Table};
use crate::plot::{self, Series};
use crate::sections::{count, figure, num, percent};
use crate::stages::read_json;
use crate::{Run, layout};

/// The parts of the corpus manifest the report shows.
#[derive(Debug, Deserialize)]
pub struct CorpusManifest {
    #[serde(flatten)]
    pub accounting: Accounting,
    pub dedup_report: Option<DedupReport>,
    #[serde(default)]
    pub eval_items: BTreeMap<String, u64>,
    pub dedup: DedupSettings,
}

/// Dedup settings the S-curve needs.
#[derive(Debug, Deserialize)]
pub struct DedupSettings {
    pub threshold: f64,
}

/// Signals whose distributions are drawn: (column, label, log scale).
const SIGNALS: [(&str, &str, bool); 3] = [
    ("est_tokens", "estimated tokens per document", true),
    ("alpha_frac", "fraction of alphabetic characters", false),
    ("dup_line_frac", "fraction of duplicated lines", false),
];

/// Percentiles marked on each distribution.
pub const PERCENTILES: [f64; 5] = [0.05, 0.25, 0.5, 0.75, 0.95];

pub fn section(run: &Run) -> Result<Option<Section>> {
    let dir = run.path(layout::CORPUS);
    let manifest_path = dir.join("manifest.json");
    if !manifest_path.exists() {
        return Ok(None);
    }
    let manifest: CorpusManifest = read_json(&manifest_path)?;
    let shards_path = run.path(layout::SHARDS).join("manifest.json");
    let shards: Option<ShardManifest> = if shards_path.exists() { Some(read_json(&shards_path)?) } else { None };
    let a = &manifest.accounting;
    let domains: Vec<String> = a.domains.keys().cloned().collect();
    let mut s = Section::new("corpus", "Corpus");
    let t = &a.totals;
    s.text(format!(
        "{} documents in ({} MB): {} kept ({}), {} dropped, {} malformed records rejected (listed with file and line in corpus/rejects.jsonl).",
        count(t.docs_in),
        num(t.bytes_in as f64 / 1e6, 1),
        count(t.docs_kept),
        percent(t.docs_kept, t.docs_in),
        count(t.dropped.values().sum()),
        count(t.rejected_total())
    ));
    s.blocks.push(domain_table(a, shards.as_ref()));
    s.blocks.push(funnel(a, &domains)?);
    s.blocks.push(rules_table(a, &domains));
    s.blocks.extend(signal_figures(&dir.join("profile.parquet"), &domains)?);
    s.blocks.extend(examples(&dir.join("examples.jsonl"))?);
    s.blocks.extend(dedup(run, &manifest, &domains)?);
    s.blocks.push(contamination(&manifest));
    if let Some(shards) = &shards {
        s.blocks.push(bytes_per_token(a, shards)?);
    }
    Ok(Some(s))
}

fn domain_table(a: &Accounting, shards: Option<&ShardManifest>) -> Block {
    let mut csv = Csv::new(&["domain", "docs_in", "docs_kept", "bytes_in", "bytes_kept", "shard_tokens"]);
    let mut rows = Vec::new();
    for (d, c) in &a.domains {
        let tokens = shards.and_then(|m| m.domains.get(d)).map(|x| x.train_tokens + x.val_tokens);
        csv.row(&[
            Cell::S(d),
            Cell::U(c.docs_in),
            Cell::U(c.docs_kept),
            Cell::U(c.bytes_in),
            Cell::U(c.bytes_kept),
            tokens.map_or(Cell::None, Cell::U),
        ]);
        rows.push(vec![
            d.clone(),
            count(c.docs_in),
            count(c.docs_kept),
            percent(c.docs_kept, c.docs_in),
            count(c.bytes_in),
            count(c.bytes_kept),
            tokens.map_or("–".into(), count),
        ]);
    }
    Block::Table(Table {
        caption: "Documents, bytes and tokens per domain".into(),
        header: ["domain", "docs in", "docs kept", "kept", "bytes in", "bytes kept", "tokens (shards)"]
            .map(String::from)
            .to_vec(),
        rows,
        data: Some(DataFile { name: "corpus-domains.csv".into(), contents: csv.finish() }),
    })
}

/// Documents dropped for reasons starting with `prefix`.
fn dropped(c: &Counts, prefix: &str) -> u64 {
    c.dropped.iter().filter(|(r, _)| r.starts_with(prefix)).map(|(_, n)| n).sum()
}

/// Documents remaining after each step, as a share of those read, in the order the pipeline
/// applies them: rules and decontamination in pass 1, then dedup among what is left.
fn funnel(a: &Accounting, domains: &[String]) -> Result<Block> {
    let steps = ["read", "after quality rules", "after decontamination", "kept (after dedup)"];
    let mut csv = Csv::new(&["domain", "step", "docs", "percent_of_read"]);
    let mut series: Vec<(String, Vec<f64>)> = steps.iter().map(|s| (s.to_string(), Vec::new())).collect();
    for d in domains {
        let c = &a.domains[d];
        let after_rules = c.docs_in - dropped(c, "filter:");
        let after_decontam = after_rules - dropped(c, "contaminated:");
        let kept = after_decontam - dropped(c, "exact_dup") - dropped(c, "near_dup");
        for (k, n) in [c.docs_in, after_rules, after_decontam, kept].into_iter().enumerate() {
            let pct = if c.docs_in == 0 { 0.0 } else { 100.0 * n as f64 / c.docs_in as f64 };
            csv.row(&[Cell::S(d), Cell::S(steps[k]), Cell::U(n), Cell::F(pct)]);
            series[k].1.push(pct);
        }
    }
    let svg = plot::bars("Filter funnel: documents left after each step", "% of documents read", domains, &series)?;
    Ok(figure(
        "corpus-funnel",
        "Share of each domain's documents left after the quality rules (those in drop mode), decontamination, and exact and near dedup.",
        svg,
        csv.finish(),
    ))
}

fn rules_table(a: &Accounting, domains: &[String]) -> Block {
    let rules: std::collections::BTreeSet<&String> = a.domains.values().flat_map(|c| c.filter_flagged.keys()).collect();
    let mut header = vec!["rule".to_string()];
    header.extend(domains.iter().cloned());
    let mut csv = Csv::new(&["rule", "domain", "flagged", "dropped"]);
    let mut rows = Vec::new();
    for rule in rules {
        let mut row = vec![rule.clone()];
        for d in domains {
            let c = &a.domains[d];
            let flagged = c.filter_flagged.get(rule).copied().unwrap_or(0);
            let dropped = c.dropped.get(&format!("filter:{rule}")).copied().unwrap_or(0);
            csv.row(&[Cell::S(rule), Cell::S(d), Cell::U(flagged), Cell::U(dropped)]);
            row.push(format!("{} ({})", count(flagged), percent(flagged, c.docs_in)));
        }
        rows.push(row);
    }
    Block::Table(Table {
        caption: "Quality rules: documents each rule flagged per domain (share of the domain); a source in annotate mode keeps them"
            .into(),
        header,
        rows,
        data: Some(DataFile { name: "corpus-rules.csv".into(), contents: csv.finish() }),
    })
}

/// Reads string and numeric columns of `profile.parquet`.
struct Profile {
    domain: Vec<String>,
    numbers: BTreeMap<String, Vec<Option<f64>>>,
    dup_cluster: Vec<Option<u64>>,
}

fn read_profile(path: &Path, numeric: &[&str]) -> Result<Profile> {
    let file = File::open(path).map_err(|e| Error::io(path, e))?;
    let builder = ParquetRecordBatchReaderBuilder::try_new(file).map_err(|e| Error::parse(path, e))?;
    let mut wanted = vec!["domain", "dup_cluster"];
    wanted.extend(numeric);
    let mask = ProjectionMask::columns(builder.parquet_schema(), wanted.iter().copied());
    let reader = builder.with_projection(mask).build().map_err(|e| Error::parse(path, e))?;
    let mut p = Profile { domain: Vec::new(), numbers: BTreeMap::new(), dup_cluster: Vec::new() };
    for batch in reader {
        let batch = batch.map_err(|e| Error::parse(path, e))?;
        let col =
            |name: &str| batch.column_by_name(name).ok_or_else(|| Error::parse(path, format!("no column `{name}`")));
        let domain = col("domain")?;
        let domain = domain
            .as_any()
            .downcast_ref::<StringArray>()
            .ok_or_else(|| Error::parse(path, "`domain` is not a string column"))?;
        p.domain.extend((0..domain.len()).map(|i| domain.value(i).to_string()));
        let cluster = col("dup_cluster")?;
        let cluster = cluster
            .as_any()
            .downcast_ref::<UInt64Array>()
            .ok_or_else(|| Error::parse(path, "`dup_cluster` is not u64"))?;
        p.dup_cluster.extend((0..cluster.len()).map(|i| cluster.is_valid(i).then(|| cluster.value(i))));
        for name in numeric {
            let array = col(name)?;
            let values = p.numbers.entry(name.to_string()).or_default();
            if let Some(a) = array.as_any().downcast_ref::<Float32Array>() {
                values.extend((0..a.len()).map(|i| a.is_valid(i).then(|| f64::from(a.value(i)))));
            } else if let Some(a) = array.as_any().downcast_ref::<UInt64Array>() {
                values.extend((0..a.len()).map(|i| a.is_valid(i).then(|| a.value(i) as f64)));
            } else {
                return Err(Error::parse(path, format!("`{name}` is neither f32 nor u64")));
            }
        }
    }
    Ok(p)
}

/// Nearest-rank percentile of sorted values: the value at index round(q · (n − 1)).
pub fn percentile(sorted: &[f64], q: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

fn signal_figures(path: &Path, domains: &[String]) -> Result<Vec<Block>> {
    if !path.exists() {
        return Ok(Vec::new());
    }
    let names: Vec<&str> = SIGNALS.iter().map(|s| s.0).collect();
    let profile = read_profile(path, &names)?;
    let mut csv = Csv::new(&["signal", "domain", "docs", "p5", "p25", "p50", "p75", "p95"]);
    let mut blocks = Vec::new();
    let mut svgs = Vec::new();
    for (signal, label, log) in SIGNALS {
        let Some(values) = profile.numbers.get(signal) else {
            continue;
        };
        let mut rows = Vec::new();
        for d in domains {
            let mut v: Vec<f64> =
                profile.domain.iter().zip(values).filter(|(dd, _)| *dd == d).filter_map(|(_, x)| *x).collect();
            if v.is_empty() {
                continue;
            }
            v.sort_by(f64::total_cmp);
            let p = PERCENTILES.map(|q| percentile(&v, q));
            csv.row(&[
                Cell::S(signal),
                Cell::S(d),
                Cell::U(v.len() as u64),
                Cell::F(p[0]),
                Cell::F(p[1]),
                Cell::F(p[2]),
                Cell::F(p[3]),
                Cell::F(p[4]),
            ]);
            rows.push((d.clone(), p));
        }
        if !rows.is_empty() {
            svgs.push(plot::ranges(&format!("{signal}: {label}"), signal, &rows, log)?);
        }
    }
    let data = csv.finish();
    for (k, svg) in svgs.into_iter().enumerate() {
        let id = format!("corpus-signal-{}", SIGNALS[k].0.replace('_', "-"));
        let mut block = figure(
            &id,
            format!("{} per domain, every document read: line p5–p95, box p25–p75, tick at the median.", SIGNALS[k].1),
            svg,
            String::new(),
        );
        // The three figures share one data file.
        if let Block::Figure(f) = &mut block {
            f.data = DataFile { name: "corpus-signals.csv".into(), contents: data.clone() };
        }
        blocks.push(block);
    }
    Ok(blocks)
}

fn examples(path: &Path) -> Result<Vec<Block>> {
    if !path.exists() {
        return Ok(Vec::new());
    }
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let mut examples = Vec::new();
    for (i, line) in text.lines().enumerate().filter(|(_, l)| !l.is_empty()) {
        let e: Example = serde_json::from_str(line).map_err(|e| Error::parse(path, format!("line {}: {e}", i + 1)))?;
        examples.push(e);
    }
    // Documents a run removed first, then those a rule only flagged; the data file in the same order.
    examples.sort_by(|a, b| {
        (a.reason.starts_with("flagged:"), &a.reason, &a.domain, &a.doc_id).cmp(&(
            b.reason.starts_with("flagged:"),
            &b.reason,
            &b.domain,
            &b.doc_id,
        ))
    });
    let mut rows = Vec::new();
    let mut csv = Csv::new(&["domain", "reason", "doc_id", "source_id", "excerpt"]);
    for e in &examples {
        // The page shows the start of the text on a line or two; the data file has the excerpt.
        let flat = e.excerpt.split_whitespace().collect::<Vec<_>>().join(" ");
        let short: String =
            if flat.chars().count() > 160 { flat.chars().take(157).chain("…".chars()).collect() } else { flat };
        csv.row(&[
            Cell::S(&e.domain),
            Cell::S(&e.reason),
            Cell::S(&e.doc_id),
            e.source_id.as_deref().map_or(Cell::None, Cell::S),
            Cell::S(&e.excerpt),
        ]);
        rows.push(vec![e.reason.clone(), e.domain.clone(), e.doc_id.clone(), short]);
    }
    if rows.is_empty() {
        return Ok(vec![Block::Text("No document was removed or flagged.".into())]);
    }
    Ok(vec![Block::Table(Table {
        caption: format!(
            "Removed and flagged documents: up to {} per reason and domain (lowest ids), with their ids (`mixforge corpus decode` or profile.parquet find them)",
            corpus::pipeline::EXAMPLES_PER_REASON
        ),
        header: ["reason", "domain", "doc id", "text (start)"].map(String::from).to_vec(),
        rows,
        data: Some(DataFile { name: "corpus-examples.csv".into(), contents: csv.finish() }),
    })])
}

fn dedup(run: &Run, manifest: &CorpusManifest, domains: &[String]) -> Result<Vec<Block>> {
    let Some(report) = &manifest.dedup_report else {
        return Ok(vec![Block::Text("Dedup did not run.".into())]);
    };
    let a = &manifest.accounting;
    let mut blocks = vec![Block::Text(format!(
        "Dedup removed {} exact and {} near duplicates; {} clusters of two or more documents (largest {}); {} candidate pairs, {} verified, {} rejected by exact Jaccard.",
        count(report.exact_removed),
        count(report.near_removed),
        count(report.clusters),
        count(report.largest_cluster),
        count(report.candidate_pairs),
        count(report.verified_pairs),
        count(report.rejected_pairs)
    ))];
    let mut csv = Csv::new(&["domain", "exact_dup", "near_dup"]);
    let (mut exact, mut near) = (Vec::new(), Vec::new());
    for d in domains {
        let c = &a.domains[d];
        let (e, n) = (dropped(c, "exact_dup"), dropped(c, "near_dup"));
        csv.row(&[Cell::S(d), Cell::U(e), Cell::U(n)]);
        exact.push(e as f64);
        near.push(n as f64);
    }
    let svg = plot::bars(
        "Duplicates removed per domain",
        "documents",
        domains,
        &[("exact".into(), exact), ("near".into(), near)],
    )?;
    blocks.push(figure(
        "dedup-removed",
        "Documents removed as exact and as near duplicates, per domain.",
        svg,
        csv.finish(),
    ));

    // Cluster sizes from the profile's dup_cluster column (the keeper's id, on every member).
    let profile_path = run.path(layout::CORPUS).join("profile.parquet");
    if profile_path.exists() {
        let profile = read_profile(&profile_path, &[])?;
        let mut members: BTreeMap<u64, u64> = BTreeMap::new();
        for c in profile.dup_cluster.iter().flatten() {
            *members.entry(*c).or_default() += 1;
        }
        let mut sizes: BTreeMap<u64, u64> = BTreeMap::new();
        for n in members.values().filter(|n| **n >= 2) {
            *sizes.entry(*n).or_default() += 1;
        }
        if !sizes.is_empty() {
            let mut csv = Csv::new(&["cluster_size", "clusters"]);
            for (size, n) in &sizes {
                csv.row(&[Cell::U(*size), Cell::U(*n)]);
            }
            let names: Vec<String> = sizes.keys().map(|k| k.to_string()).collect();
            let values: Vec<f64> = sizes.values().map(|v| *v as f64).collect();
            let svg = plot::bars("Duplicate cluster sizes", "clusters", &names, &[("clusters".into(), values)])?;
            blocks.push(figure(
                "dedup-clusters",
                "How many clusters have each size (documents per cluster, keeper included).",
                svg,
                csv.finish(),
            ));
        }
    }
    if let Some(lsh) = report.lsh {
        let mut csv = Csv::new(&["jaccard", "candidate_probability"]);
        let points: Vec<(f64, f64)> =
            (0..=100).map(|k| k as f64 / 100.0).map(|s| (s, lsh.candidate_probability(s))).collect();
        for (s, p) in &points {
            csv.row(&[Cell::F(*s), Cell::F(*p)]);
        }
        let threshold = manifest.dedup.threshold;
        let series = [
            Series { name: format!("{} bands × {} rows", lsh.bands, lsh.rows), points },
            Series { name: format!("threshold {threshold}"), points: vec![(threshold, 0.0), (threshold, 1.0)] },
        ];
        let svg =
            plot::lines("MinHash LSH S-curve", "Jaccard similarity of a pair", "P(pair becomes a candidate)", &series)?;
        blocks.push(figure("dedup-s-curve", "Probability that a pair of documents with a given Jaccard similarity is compared, for the banding used; pairs are then verified by exact Jaccard.", svg, csv.finish()));
    }
    Ok(blocks)
}

fn contamination(manifest: &CorpusManifest) -> Block {
    if manifest.eval_items.is_empty() {
        return Block::Text("Decontamination did not run (no evaluation sets given).".into());
    }
    let t = &manifest.accounting.totals;
    let mut csv = Csv::new(&["benchmark", "items", "documents_contaminated", "documents_dropped"]);
    let mut rows = Vec::new();
    for (b, items) in &manifest.eval_items {
        let hit = t.contaminated.get(b).copied().unwrap_or(0);
        let gone = t.dropped.get(&format!("contaminated:{b}")).copied().unwrap_or(0);
        csv.row(&[Cell::S(b), Cell::U(*items), Cell::U(hit), Cell::U(gone)]);
        rows.push(vec![b.clone(), count(*items), count(hit), count(gone)]);
    }
    Block::Table(Table {
        caption: "Contamination per benchmark (documents sharing an n-gram with a benchmark item)".into(),
        header: ["benchmark", "items indexed", "documents contaminated", "dropped"].map(String::from).to_vec(),
        rows,
        data: Some(DataFile { name: "corpus-contamination.csv".into(), contents: csv.finish() }),
    })
}

fn bytes_per_token(a: &Accounting, shards: &ShardManifest) -> Result<Block> {
    let mut csv = Csv::new(&["domain", "bytes_kept", "tokens", "bytes_per_token"]);
    let (mut names, mut values) = (Vec::new(), Vec::new());
    for (d, s) in &shards.domains {
        let tokens = s.train_tokens + s.val_tokens;
        let bytes = a.domains.get(d).map_or(0, |c| c.bytes_kept);
        let ratio = if tokens == 0 { f64::NAN } else { bytes as f64 / tokens as f64 };
        csv.row(&[Cell::S(d), Cell::U(bytes), Cell::U(tokens), Cell::F(ratio)]);
        names.push(d.clone());
        values.push(ratio);
    }
    let svg = plot::bars(
        &format!("Tokenizer: bytes per token ({} vocabulary)", shards.vocab_size),
        "bytes / token",
        &names,
        &[("bytes per token".into(), values)],
    )?;
    Ok(figure(
        "tokenizer-bytes-per-token",
        "Kept bytes per shard token per domain: lower means the tokenizer compresses the domain less well.",
        svg,
        csv.finish(),
    ))
}

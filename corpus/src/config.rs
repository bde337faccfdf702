//! What users write: sources and stage settings, with serde defaults and validation.
//!
//! Every struct here is `deny_unknown_fields`, so a typo fails naming the key. Defaults are
//! listed in `docs/formats.md`.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// One `[[sources]]` entry: files of one domain and how to read a document from them.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceConfig {
    /// Name used in accounting; defaults to the domain.
    #[serde(default)]
    pub name: Option<String>,
    /// Domain the documents belong to (`web`, `code`, ...).
    pub domain: String,
    /// Paths or glob patterns; each must match at least one file.
    pub paths: Vec<String>,
    /// Container format; inferred from the extension when absent (`.jsonl`, `.json`, `.ndjson`,
    /// `.parquet`, `.txt`, `.md`, each optionally `.gz`/`.zst`).
    #[serde(default)]
    pub format: Option<Format>,
    /// Field holding the text (JSONL, Parquet).
    #[serde(default = "default_text_field")]
    pub text_field: String,
    /// Template building the text from several fields, e.g. `"{question}\n{answer}"`; replaces
    /// `text_field`. `{{` and `}}` are literal braces.
    #[serde(default)]
    pub template: Option<String>,
    /// Field holding the record's own id, copied to the profile's `source_id` when present.
    #[serde(default = "default_id_field")]
    pub id_field: String,
    /// Plain text only: a regex matched against each line; a matching line starts a new
    /// document. Without it a text file is one document.
    #[serde(default)]
    pub separator: Option<String>,
    /// Plain text only: whether the separator line belongs to the document it starts.
    #[serde(default = "default_true")]
    pub keep_separator: bool,
    /// Records larger than this many bytes are rejected (`too_large`), bounding memory.
    #[serde(default = "default_max_doc_bytes")]
    pub max_doc_bytes: usize,
    /// Overrides `filter.mode` for this source (code and math fail prose rules by design).
    #[serde(default)]
    pub filter_mode: Option<FilterMode>,
}

fn default_text_field() -> String {
    "text".into()
}
fn default_id_field() -> String {
    "id".into()
}
fn default_true() -> bool {
    true
}
fn default_max_doc_bytes() -> usize {
    64 << 20
}

impl SourceConfig {
    /// A source with every optional setting at its default.
    pub fn new(domain: &str, paths: Vec<String>) -> SourceConfig {
        SourceConfig {
            name: None,
            domain: domain.to_string(),
            paths,
            format: None,
            text_field: default_text_field(),
            template: None,
            id_field: default_id_field(),
            separator: None,
            keep_separator: true,
            max_doc_bytes: default_max_doc_bytes(),
            filter_mode: None,
        }
    }

    /// The name accounting uses.
    pub fn display_name(&self) -> &str {
        self.name.as_deref().unwrap_or(&self.domain)
    }
}

/// Container format of an input file. Compression (`.gz`, `.zst`) is read from the extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// One JSON object per line.
    Jsonl,
    /// Apache Parquet, streamed by row group.
    Parquet,
    /// Plain UTF-8 text: a file is a document, or documents split by a separator regex.
    Text,
}

/// What the quality filters do with a document that fails a rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum FilterMode {
    /// Rules are not evaluated.
    Off,
    /// Failed rules are recorded in the profile (`filter_flags`); the document is kept.
    #[default]
    Annotate,
    /// Documents failing any rule are dropped with reason `filter:<rule>`.
    Drop,
}

/// Thresholds of the heuristic quality rules (Gopher quality and repetition, C4, FineWeb).
/// A rule whose threshold is absent (`None`) is disabled.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FilterConfig {
    /// Annotate (default), drop, or off.
    pub mode: FilterMode,
    /// Gopher: fewest whitespace-separated words.
    pub min_words: Option<u64>,
    /// Gopher: most words.
    pub max_words: Option<u64>,
    /// Gopher: shortest mean word length (characters).
    pub min_mean_word_len: Option<f64>,
    /// Gopher: longest mean word length.
    pub max_mean_word_len: Option<f64>,
    /// Gopher: most `#` and `...` per word.
    pub max_symbol_word_ratio: Option<f64>,
    /// Gopher: largest fraction of lines starting with a bullet.
    pub max_bullet_lines: Option<f64>,
    /// Gopher: largest fraction of lines ending with an ellipsis.
    pub max_ellipsis_lines: Option<f64>,
    /// Gopher: smallest fraction of words with at least one letter.
    pub min_alpha_words: Option<f64>,
    /// Gopher: fewest English stop words (`the`, `be`, `to`, `of`, `and`, `that`, `have`, `with`).
    pub min_stop_words: Option<u64>,
    /// Gopher repetition: largest fraction of lines that repeat an earlier line.
    pub max_dup_line_frac: Option<f64>,
    /// Gopher repetition: largest fraction of paragraphs that repeat an earlier paragraph.
    pub max_dup_para_frac: Option<f64>,
    /// Gopher repetition: largest fraction of characters in repeated lines.
    pub max_dup_line_char_frac: Option<f64>,
    /// Gopher repetition: largest fraction of characters in repeated paragraphs.
    pub max_dup_para_char_frac: Option<f64>,
    /// Gopher repetition: largest character fraction of the most frequent 2-, 3- and 4-gram.
    pub max_top_ngram_frac: Option<[f64; 3]>,
    /// Gopher repetition: largest character fraction covered by repeated 5- to 10-grams.
    pub max_dup_ngram_frac: Option<[f64; 6]>,
    /// C4: drop documents containing "lorem ipsum".
    pub lorem_ipsum: bool,
    /// C4: drop documents containing a curly brace (off by default: it drops all code).
    pub curly_brace: bool,
    /// FineWeb: smallest fraction of lines ending in terminal punctuation.
    pub min_terminal_punct_lines: Option<f64>,
    /// FineWeb: largest fraction of lines shorter than 30 characters.
    pub max_short_lines: Option<f64>,
}

impl Default for FilterConfig {
    /// The published defaults of Gopher (Rae et al. 2021), C4 and FineWeb.
    fn default() -> Self {
        FilterConfig {
            mode: FilterMode::Annotate,
            min_words: Some(50),
            max_words: Some(100_000),
            min_mean_word_len: Some(3.0),
            max_mean_word_len: Some(10.0),
            max_symbol_word_ratio: Some(0.1),
            max_bullet_lines: Some(0.9),
            max_ellipsis_lines: Some(0.3),
            min_alpha_words: Some(0.8),
            min_stop_words: Some(2),
            max_dup_line_frac: Some(0.3),
            max_dup_para_frac: Some(0.3),
            max_dup_line_char_frac: Some(0.2),
            max_dup_para_char_frac: Some(0.2),
            max_top_ngram_frac: Some([0.20, 0.18, 0.16]),
            max_dup_ngram_frac: Some([0.15, 0.14, 0.13, 0.12, 0.11, 0.10]),
            lorem_ipsum: true,
            curly_brace: false,
            min_terminal_punct_lines: Some(0.12),
            max_short_lines: Some(0.67),
        }
    }
}

/// Whether duplicates are looked for across the whole corpus or within each domain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum DedupScope {
    /// Any two documents may be duplicates.
    #[default]
    Global,
    /// Only documents of the same domain.
    PerDomain,
}

/// What to do with a near-duplicate cluster larger than `max_cluster_size`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum OversizePolicy {
    /// Keep every member (the cluster is likely a chain of false positives) and report it.
    #[default]
    KeepAll,
    /// Deduplicate it like any other cluster.
    Dedup,
}

/// Exact and MinHash-LSH near-duplicate detection.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DedupConfig {
    /// Exact duplicates by xxh3-128 of the normalized text.
    pub exact: bool,
    /// Near duplicates by MinHash-LSH.
    pub minhash: bool,
    /// Words per shingle.
    pub ngram: usize,
    /// MinHash permutations.
    pub num_perm: usize,
    /// Target Jaccard similarity; bands × rows are chosen for it unless both are given.
    pub threshold: f64,
    /// LSH bands (with `rows`, overrides the choice from `threshold`).
    pub bands: Option<usize>,
    /// Rows per band.
    pub rows: Option<usize>,
    /// Check candidate pairs by exact shingle Jaccard before merging them.
    pub verify: bool,
    /// Global or per domain.
    pub scope: DedupScope,
    /// Clusters above this size get `oversize` treatment.
    pub max_cluster_size: usize,
    /// What happens to oversized clusters.
    pub oversize: OversizePolicy,
    /// Seed of the permutations.
    pub seed: u64,
}

impl Default for DedupConfig {
    fn default() -> Self {
        DedupConfig {
            exact: true,
            minhash: true,
            ngram: 5,
            num_perm: 128,
            threshold: 0.8,
            bands: None,
            rows: None,
            verify: true,
            scope: DedupScope::Global,
            max_cluster_size: 10_000,
            oversize: OversizePolicy::KeepAll,
            seed: 42,
        }
    }
}

impl DedupConfig {
    /// Checks ranges and the band/row combination.
    pub fn validate(&self) -> Result<()> {
        let bad = |field: &str, reason: String| Err(Error::Config { field: format!("dedup.{field}"), reason });
        if self.ngram == 0 {
            return bad("ngram", "must be at least 1".into());
        }
        if self.num_perm == 0 || self.num_perm > 4096 {
            return bad("num_perm", format!("must be in 1..=4096, got {}", self.num_perm));
        }
        if !(self.threshold > 0.0 && self.threshold <= 1.0) {
            return bad("threshold", format!("must be in (0, 1], got {}", self.threshold));
        }
        match (self.bands, self.rows) {
            (Some(b), Some(r)) if b == 0 || r == 0 || b * r > self.num_perm => {
                bad("bands", format!("bands × rows = {b} × {r} must be ≥ 1 and ≤ num_perm ({})", self.num_perm))
            }
            (Some(_), None) | (None, Some(_)) => bad("bands", "give both `bands` and `rows`, or neither".into()),
            _ => Ok(()),
        }?;
        if self.max_cluster_size < 2 {
            return bad("max_cluster_size", "must be at least 2".into());
        }
        Ok(())
    }
}

/// Which stages a pipeline run performs (ingest always runs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stages {
    /// Compute the per-document signals of the profile table.
    pub profile: bool,
    /// Evaluate the quality rules.
    pub filter: bool,
    /// Exact and near-duplicate detection (as configured in [`DedupConfig`]).
    pub dedup: bool,
}

impl Stages {
    /// Every stage.
    pub const ALL: Stages = Stages { profile: true, filter: true, dedup: true };
}

/// A whole corpus run: sources, stage settings, and where outputs go.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PipelineConfig {
    /// The inputs.
    pub sources: Vec<SourceConfig>,
    /// Quality rules.
    pub filter: FilterConfig,
    /// Duplicate detection.
    pub dedup: DedupConfig,
    /// Decontamination against evaluation sets (off when absent).
    pub decontam: Option<crate::decontam::DecontamConfig>,
    /// Stages to run.
    pub stages: Stages,
    /// Fail on the first malformed record instead of counting it.
    pub strict: bool,
    /// Output directory (not part of a sharded run's recorded settings: each task names it).
    #[serde(skip)]
    pub out: PathBuf,
    /// Documents per parallel batch (a batch also ends at 64 MiB of records); bounds memory
    /// held for text.
    pub batch_docs: usize,
}

impl PipelineConfig {
    /// Checks everything that can be checked before reading data.
    pub fn validate(&self) -> Result<()> {
        if self.sources.is_empty() {
            return Err(Error::Config {
                field: "sources".into(),
                reason: "no source given: add [[sources]] to the recipe or pass --source DOMAIN=PATH".into(),
            });
        }
        for (i, source) in self.sources.iter().enumerate() {
            let field = |name: &str| format!("sources[{i}].{name}");
            if let Err(reason) = check_domain_name(&source.domain) {
                return Err(Error::Config { field: field("domain"), reason });
            }
            if source.paths.is_empty() {
                return Err(Error::Config {
                    field: field("paths"),
                    reason: "must name at least one path or glob".into(),
                });
            }
            if let Some(pattern) = &source.separator {
                regex::Regex::new(pattern)
                    .map_err(|e| Error::Config { field: field("separator"), reason: format!("invalid regex: {e}") })?;
            }
            if let Some(template) = &source.template {
                crate::ingest::template::Template::parse(template)
                    .map_err(|reason| Error::Config { field: field("template"), reason })?;
            }
        }
        if self.sources.len() > usize::from(u16::MAX) {
            return Err(Error::Config { field: "sources".into(), reason: "at most 65535 sources".into() });
        }
        if self.batch_docs == 0 {
            return Err(Error::Config { field: "batch_docs".into(), reason: "must be at least 1".into() });
        }
        self.dedup.validate()
    }
}

/// A domain name is used as a file and directory name in every artifact (`kept/<domain>.parquet`,
/// `shards/<domain>/`), so it must be one unchanged: letters, digits, `-`, `_`, `.`, not
/// starting with `.`; and not `all`, `stream` or `*.json`, names the artifacts already use.
pub fn check_domain_name(name: &str) -> std::result::Result<(), String> {
    if name.is_empty() {
        return Err("a domain name must not be empty".into());
    }
    if name.starts_with('.') || !name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')) {
        return Err(format!(
            "domain `{name}` is not a file-safe name (letters, digits, `-`, `_`, `.`; not starting with `.`)"
        ));
    }
    if name == "all" || name == "stream" || name.ends_with(".json") {
        return Err(format!(
            "`{name}` is reserved (`all`: the summary's total row; `stream` and `*.json`: files beside the \
             domains in shard directories); choose another domain name"
        ));
    }
    Ok(())
}

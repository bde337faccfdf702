//! The recipe (TOML) naming sources and stage settings, and its conversion into library
//! configs. Unknown keys are errors that name the key.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use corpus::config::{DedupConfig, FilterConfig, SourceConfig};
use corpus::decontam::DecontamConfig;
use serde::Deserialize;

/// A recipe file. Each section is optional; absent settings take their defaults.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Recipe {
    /// Inputs, one table per source.
    #[serde(default)]
    pub sources: Vec<SourceConfig>,
    /// Quality rules.
    #[serde(default)]
    pub filter: FilterConfig,
    /// Duplicate detection.
    #[serde(default)]
    pub dedup: DedupConfig,
    /// Decontamination against evaluation sets.
    #[serde(default)]
    pub decontam: Option<DecontamConfig>,
    /// Documents per parallel batch.
    #[serde(default)]
    pub batch_docs: Option<usize>,
    /// Tokenize the kept documents into shards after the corpus stages.
    #[serde(default)]
    pub shards: Option<ShardsSection>,
    /// Build a search index of the kept documents after the corpus stages.
    #[serde(default)]
    pub search: Option<SearchSection>,
}

/// `[shards]`: tokenizer and split settings; shards go to `<out>/shards`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShardsSection {
    /// A tokenizer.json to use; relative to the recipe.
    #[serde(default)]
    pub tokenizer: Option<PathBuf>,
    /// Or train a byte-level BPE of this size.
    #[serde(default)]
    pub vocab_size: Option<usize>,
    /// Documents per domain sampled to train the tokenizer.
    #[serde(default = "default_sample_docs")]
    pub sample_docs: usize,
    /// Fraction held out for validation.
    #[serde(default = "default_val_fraction")]
    pub val_fraction: f64,
    /// Seed of the split hash.
    #[serde(default)]
    pub split_seed: u64,
    /// Documents per chunk.
    #[serde(default = "default_chunk_docs")]
    pub chunk_docs: usize,
}

fn default_sample_docs() -> usize {
    2000
}
fn default_val_fraction() -> f64 {
    0.05
}
fn default_chunk_docs() -> usize {
    8192
}

/// `[search]`: the index goes to `<out>/index`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SearchSection {
    /// Build the index.
    #[serde(default = "default_true")]
    pub index: bool,
}

fn default_true() -> bool {
    true
}

/// Stages the recipe asks for after the corpus pipeline.
#[derive(Debug, Default)]
pub struct LaterStages {
    /// Shards, when asked for.
    pub shards: Option<ShardsSection>,
    /// Search index, when asked for.
    pub search: Option<SearchSection>,
}

impl Recipe {
    /// Reads a recipe; relative source paths are taken from the recipe's own directory.
    pub fn load(path: &Path) -> Result<Recipe> {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading recipe {}", path.display()))?;
        let mut recipe: Recipe = toml::from_str(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        let base = path.parent().unwrap_or(Path::new("."));
        if let Some(tokenizer) = recipe.shards.as_mut().and_then(|s| s.tokenizer.as_mut())
            && tokenizer.is_relative()
        {
            *tokenizer = base.join(&*tokenizer);
        }
        if let Some(decontam) = &mut recipe.decontam {
            for eval in &mut decontam.evals {
                if eval.is_relative() {
                    *eval = base.join(&*eval);
                }
            }
        }
        for source in &mut recipe.sources {
            for p in &mut source.paths {
                if Path::new(p.as_str()).is_relative() {
                    *p = base.join(&*p).to_string_lossy().into_owned();
                }
            }
        }
        Ok(recipe)
    }
}

/// Parses `DOMAIN=PATH_OR_GLOB` from the command line into a source with default settings.
pub fn parse_source_flag(flag: &str) -> Result<SourceConfig> {
    let Some((domain, path)) = flag.split_once('=') else {
        bail!("--source {flag:?}: expected DOMAIN=PATH_OR_GLOB, e.g. --source web=data/web/*.jsonl.zst");
    };
    if domain.trim().is_empty() || path.trim().is_empty() {
        bail!("--source {flag:?}: both DOMAIN and PATH must be non-empty");
    }
    Ok(SourceConfig::new(domain.trim(), vec![path.to_string()]))
}

/// The default output directory for a run with no `--out`.
pub fn default_out() -> PathBuf {
    PathBuf::from("runs/corpus")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_keys_are_named() {
        let err = toml::from_str::<Recipe>("[dedup]\nthreshhold = 0.7\n").unwrap_err().to_string();
        assert!(err.contains("threshhold"), "{err}");
        let err = toml::from_str::<Recipe>("[[sources]]\ndomain = \"web\"\npaths = [\"x\"]\ntext_feild = \"t\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("text_feild"), "{err}");
    }

    #[test]
    fn bad_values_are_named() {
        let err = toml::from_str::<Recipe>("[filter]\nmode = \"sometimes\"\n").unwrap_err().to_string();
        assert!(err.contains("sometimes") && err.contains("mode"), "{err}");
    }

    #[test]
    fn source_flags_parse() {
        let source = parse_source_flag("web=data/*.jsonl").unwrap();
        assert_eq!((source.domain.as_str(), source.paths[0].as_str()), ("web", "data/*.jsonl"));
        assert!(parse_source_flag("nodomain").is_err());
    }
}

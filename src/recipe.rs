//! The recipe (TOML) naming sources and stage settings, and its conversion into library
//! configs. Unknown keys are errors that name the key.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use corpus::config::{DedupConfig, FilterConfig, SourceConfig};
use corpus::decontam::DecontamConfig;
use serde::{Deserialize, Serialize};

/// A recipe file. Each section is optional; absent settings take their defaults.
#[derive(Debug, Default, Serialize, Deserialize)]
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
    /// Documents per parallel batch (a batch also ends at 64 MiB of records).
    #[serde(default)]
    pub batch_docs: Option<usize>,
    /// Tokenize the kept documents into shards after the corpus stages.
    #[serde(default)]
    pub shards: Option<ShardsSection>,
    /// Build a search index of the kept documents after the corpus stages.
    #[serde(default)]
    pub search: Option<SearchSection>,
    /// `mixforge run`: the proxy swarm (`corpus run` ignores the sections below).
    #[serde(default)]
    pub swarm: SwarmSection,
    /// `mixforge run`: the mix proposal.
    #[serde(default)]
    pub propose: ProposeSection,
    /// `mixforge run`: training on the proposal.
    #[serde(default)]
    pub train: TrainSection,
    /// `mixforge run`: a long-context phase distilled from a teacher (absent: no such phase).
    #[serde(default)]
    pub long_context: Option<LongContextSection>,
    /// `mixforge run`: specialists annealed from the trained model (absent: no such phase).
    #[serde(default)]
    pub specialists: Option<SpecialistsSection>,
    /// `mixforge run`: how the specialists are merged.
    #[serde(default)]
    pub merge: MergeSection,
    /// `mixforge run`: evaluation of the trained model.
    #[serde(default)]
    pub eval: EvalSection,
    /// `mixforge run`: int4 quantization-aware training of the final model and its exports
    /// (absent: no such phase).
    #[serde(default)]
    pub qat: Option<QatSection>,
    /// `mixforge run`: instruction tuning of the final model, its domain weights optionally from
    /// leave-one-out fine-tunes (absent: no such phase).
    #[serde(default)]
    pub sft: Option<SftSection>,
    /// `mixforge run`: the report.
    #[serde(default)]
    pub report: ReportSection,
}

/// `[swarm]`: the proxies whose losses the surrogates learn from, and the budget's caps.
/// Defaults are the demo's, sized for a 2-core machine.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SwarmSection {
    /// Proxies, the anchor mixtures included.
    pub runs: usize,
    /// Runs of each anchor mixture in all, one seed each (the spread is the seed noise).
    pub replicates: usize,
    /// Training tokens per proxy.
    pub proxy_tokens: u64,
    /// Proxy model preset or config TOML.
    pub model: String,
    pub seq_len: usize,
    pub batch_size: usize,
    pub lr: f64,
    /// Validation sequences per domain.
    pub eval_sequences: usize,
    /// Dirichlet concentration multipliers cycled over the draws.
    pub concentrations: Vec<f64>,
    /// Most epochs any domain may be read at the training budget (0: uncapped).
    pub max_epochs: f64,
    /// Smallest weight every domain keeps.
    pub min_weight: f64,
    /// Centre of the draws and of the KL term: natural, uniform or a TOML file.
    pub prior: String,
    pub seed: u64,
}

impl Default for SwarmSection {
    fn default() -> Self {
        SwarmSection {
            runs: 24,
            replicates: 3,
            proxy_tokens: 100_000,
            model: "tiny".into(),
            seq_len: 128,
            batch_size: 16,
            lr: 1e-2,
            eval_sequences: 32,
            concentrations: vec![0.25, 0.5, 1.0, 2.0, 4.0],
            max_epochs: 4.0,
            min_weight: 0.0,
            prior: "natural".into(),
            seed: 0,
        }
    }
}

/// `[propose]`: surrogates and the search.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProposeSection {
    /// auto, gbdt, mixing-law, linear or ensemble.
    pub surrogate: String,
    /// Bootstrap members per metric (prediction intervals).
    pub bootstrap: usize,
    pub kl_weight: f64,
    /// Minimise mean + risk × bootstrap std.
    pub risk: f64,
    /// argmin or bagged: how the surrogates' view becomes one mixture.
    pub aggregate: String,
    /// `METRIC[=WEIGHT]` terms; empty: the mean of the per-domain validation losses.
    pub objective: Vec<String>,
    pub seed: u64,
}

impl Default for ProposeSection {
    fn default() -> Self {
        ProposeSection {
            surrogate: "auto".into(),
            bootstrap: 16,
            kl_weight: 0.0,
            risk: 1.0,
            aggregate: "argmin".into(),
            objective: Vec::new(),
            seed: 0,
        }
    }
}

/// `[train]`: the model trained on the proposal. Give `steps` or `tokens`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrainSection {
    /// Model preset or config TOML.
    pub model: String,
    /// `proposal` (the stage's proposal), `natural` or `uniform`.
    pub mix: String,
    pub steps: Option<u64>,
    pub tokens: Option<u64>,
    pub seq_len: usize,
    pub batch_size: usize,
    pub grad_accum: u64,
    pub lr: f64,
    pub warmup: u64,
    pub min_lr_ratio: f64,
    pub weight_decay: f64,
    pub grad_clip: f64,
    pub seed: u64,
    /// Validate every N steps (0: at the end only).
    pub eval_every: u64,
    pub eval_sequences: usize,
    /// Checkpoint every N steps, so a killed run resumes (0: at the end only).
    pub checkpoint_every: u64,
    pub keep_checkpoints: usize,
    pub doc_mask: bool,
    pub reset_positions: bool,
    /// auto, cpu, cuda, cuda:N.
    pub device: String,
}

impl Default for TrainSection {
    fn default() -> Self {
        TrainSection {
            model: "tiny".into(),
            mix: "proposal".into(),
            steps: Some(600),
            tokens: None,
            seq_len: 128,
            batch_size: 16,
            grad_accum: 1,
            lr: 1e-2,
            warmup: 30,
            min_lr_ratio: 0.1,
            weight_decay: 0.1,
            grad_clip: 1.0,
            seed: 0,
            eval_every: 50,
            eval_sequences: 32,
            checkpoint_every: 100,
            keep_checkpoints: 2,
            doc_mask: false,
            reset_positions: false,
            device: "auto".into(),
        }
    }
}

impl TrainSection {
    /// Training tokens: `tokens`, or `steps` × tokens per step.
    pub fn target_tokens(&self) -> u64 {
        let per_step = (self.seq_len * self.batch_size) as u64 * self.grad_accum.max(1);
        match (self.tokens, self.steps) {
            (Some(t), _) => t.div_ceil(per_step).max(1) * per_step,
            (None, Some(s)) => s * per_step,
            (None, None) => 0,
        }
    }
}

/// `[long_context]`: implicit positional distillation. The trained model continues on the same
/// documents packed into longer windows, learning the teacher's logits over the whole window;
/// needle-in-a-haystack items from held-out text score it before and after.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LongContextSection {
    /// The phase's window in tokens.
    pub seq_len: usize,
    pub steps: u64,
    pub lr: f64,
    pub batch_size: usize,
    /// RoPE base for the phase (absent: the model's).
    pub rope_theta: Option<f64>,
    /// A teacher that reads long windows (checkpoint or Hugging Face directory with the same
    /// tokenizer; relative to the recipe). Absent: the stage trains one (`teacher_*`).
    pub teacher: Option<PathBuf>,
    pub teacher_model: String,
    pub teacher_steps: u64,
    pub teacher_lr: f64,
    /// What the teacher sees: same (the student's window) or per-doc.
    pub packing: String,
    /// Needle item lengths in tokens (empty: a quarter, a half and all of `seq_len`).
    pub niah_lengths: Vec<usize>,
    /// Needle items per (length, depth).
    pub niah_per_cell: usize,
    /// The domain whose held-out documents are the needle's filler (absent: all).
    pub niah_domain: Option<String>,
    pub seed: u64,
}

impl Default for LongContextSection {
    fn default() -> Self {
        LongContextSection {
            seq_len: 512,
            steps: 100,
            lr: 1e-3,
            batch_size: 8,
            rope_theta: None,
            teacher: None,
            teacher_model: "tiny".into(),
            teacher_steps: 300,
            teacher_lr: 3e-3,
            packing: "same".into(),
            niah_lengths: Vec::new(),
            niah_per_cell: 4,
            niah_domain: None,
            seed: 0,
        }
    }
}

/// `[qat]`: the final model fake-quantized to int4 and trained on (QAT), against the same
/// quantizer with no training (PTQ); then exported as packed int4 and GGUF.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QatSection {
    /// cpu (int4 groups of 32 + int8 dynamic activations) or accel (int4 per channel, learnable scales).
    pub scheme: String,
    pub steps: u64,
    pub lr: f64,
    pub batch_size: usize,
    /// self: distil from the full-precision model (self-distillation); labels: cross-entropy.
    pub teacher: String,
    /// accel only: train the per-channel scales (false: fixed at their absmax start).
    pub learnable_scales: bool,
    /// Quantize the embedding and LM head too.
    pub embeddings: bool,
    pub seed: u64,
}

impl Default for QatSection {
    fn default() -> Self {
        QatSection {
            scheme: "cpu".into(),
            steps: 100,
            lr: 1e-3,
            batch_size: 8,
            teacher: "self".into(),
            learnable_scales: true,
            embeddings: true,
            seed: 0,
        }
    }
}

/// `[sft]`: instruction tuning of the final full-precision model through the chat template.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SftSection {
    /// The instruction sources: `domain`, `paths` (relative to the recipe), and optional
    /// `prompt`/`response` templates and `system` turn.
    pub data: Vec<corpus::instruct::InstructSource>,
    /// natural, uniform, or loo (weights from the leave-one-out stage).
    pub mix: String,
    pub steps: u64,
    pub seq_len: usize,
    pub batch_size: usize,
    pub lr: f64,
    pub warmup: u64,
    /// Fraction of each domain held out for validation and exact match.
    pub val_fraction: f64,
    /// Held-out examples per domain scored.
    pub eval_examples: usize,
    /// mix = "loo": steps of each of the D + 1 ablation fine-tunes.
    pub loo_steps: u64,
    /// mix = "loo": the weights the ablations start from and the rule moves (natural or uniform).
    pub loo_base: String,
    /// mix = "loo": the rule's step size η.
    pub eta: f64,
    /// mix = "loo": no domain's weight above this.
    pub max_weight: f64,
    pub seed: u64,
}

impl Default for SftSection {
    fn default() -> Self {
        SftSection {
            data: Vec::new(),
            mix: "loo".into(),
            steps: 200,
            seq_len: 256,
            batch_size: 8,
            lr: 1e-3,
            warmup: 10,
            val_fraction: 0.1,
            eval_examples: 64,
            loo_steps: 60,
            loo_base: "natural".into(),
            eta: 0.5,
            max_weight: 0.6,
            seed: 0,
        }
    }
}

/// `[specialists]`: one specialist per domain annealed from the trained model on the proposal
/// tilted toward its domain, learning rate to 0.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SpecialistsSection {
    /// Optimizer steps per specialist.
    pub steps: u64,
    /// Peak learning rate (reached at once, decayed to 0).
    pub lr: f64,
    /// How far each mixture moves toward its domain.
    pub tilt: f64,
    pub seq_len: usize,
    pub batch_size: usize,
    pub seed: u64,
}

impl Default for SpecialistsSection {
    fn default() -> Self {
        SpecialistsSection { steps: 100, lr: 1e-3, tilt: 0.5, seq_len: 128, batch_size: 16, seed: 0 }
    }
}

/// `[merge]`: how the specialists become one model.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MergeSection {
    /// linear, task-arithmetic or ties (the last two around the trained model).
    pub method: String,
    /// surrogate, grid, greedy-soup, or none (equal weights).
    pub search: String,
    /// TIES: share of each task vector kept.
    pub density: f64,
    /// Probe sequences per domain (after those evaluation scores).
    pub probe_sequences: usize,
    pub seed: u64,
}

impl Default for MergeSection {
    fn default() -> Self {
        MergeSection { method: "linear".into(), search: "surrogate".into(), density: 0.5, probe_sequences: 16, seed: 0 }
    }
}

/// `[eval]`: what the trained model is scored on besides per-domain validation loss.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EvalSection {
    /// Task files (JSONL, lm-eval shapes); relative to the recipe.
    pub tasks: Vec<PathBuf>,
    /// Items per task (all when absent).
    pub limit: Option<usize>,
    /// Validation sequences per domain.
    pub eval_sequences: usize,
}

impl Default for EvalSection {
    fn default() -> Self {
        EvalSection { tasks: Vec::new(), limit: None, eval_sequences: 32 }
    }
}

/// `[report]`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReportSection {
    /// The page's title (default: from the run directory's name).
    pub title: Option<String>,
}

/// `[shards]`: tokenizer and split settings; shards go to `<out>/shards`.
#[derive(Debug, Clone, Serialize, Deserialize)]
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
#[derive(Debug, Clone, Serialize, Deserialize)]
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
        let recipe: Recipe = toml::from_str(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        Ok(recipe.with_paths_from(path.parent().unwrap_or(Path::new("."))))
    }

    /// For `mixforge run`: the recipe's settings over the preset's (`preset`, a TOML table),
    /// over the defaults. Returns the recipe and its text (empty without a recipe).
    pub fn load_layered(path: Option<&Path>, preset: &str) -> Result<(Recipe, String)> {
        let mut layered: toml::Table = toml::from_str(preset).context("the preset does not parse (a mixforge bug)")?;
        let text = match path {
            Some(p) => std::fs::read_to_string(p).with_context(|| format!("reading recipe {}", p.display()))?,
            None => String::new(),
        };
        // The recipe alone first, so an unknown key or bad value is reported against its file.
        let name = path.map_or("the command line".to_string(), |p| p.display().to_string());
        toml::from_str::<Recipe>(&text).map_err(|e| anyhow::anyhow!("{name}: {e}"))?;
        let own: toml::Table = toml::from_str(&text).map_err(|e| anyhow::anyhow!("{name}: {e}"))?;
        merge(&mut layered, own);
        let mut recipe = Recipe::deserialize(layered).map_err(|e| anyhow::anyhow!("{name} over the preset: {e}"))?;
        // A token budget replaces the default step count.
        if recipe.train.tokens.is_some() {
            recipe.train.steps = None;
        }
        // Paths are made absolute, so the same recipe named another way (`./r.toml`, a full
        // path) keys its stages the same.
        let base = path.and_then(Path::parent).filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
        let base = base.canonicalize().with_context(|| format!("finding the recipe's folder {}", base.display()))?;
        Ok((recipe.with_paths_from(&base), text))
    }

    /// Relative paths (sources, tokenizer, evaluation sets, tasks) taken from `base`.
    fn with_paths_from(mut self, base: &Path) -> Recipe {
        let rebase = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        if let Some(tokenizer) = self.shards.as_mut().and_then(|s| s.tokenizer.as_mut()) {
            rebase(tokenizer);
        }
        if let Some(decontam) = &mut self.decontam {
            decontam.evals.iter_mut().for_each(rebase);
        }
        self.eval.tasks.iter_mut().for_each(rebase);
        if let Some(teacher) = self.long_context.as_mut().and_then(|l| l.teacher.as_mut()) {
            rebase(teacher);
        }
        // Model configs and a prior given as files, not preset names.
        for name in [&mut self.swarm.model, &mut self.train.model] {
            if name.ends_with(".toml") && Path::new(name.as_str()).is_relative() {
                *name = base.join(&*name).to_string_lossy().into_owned();
            }
        }
        if self.swarm.prior.ends_with(".toml") && Path::new(&self.swarm.prior).is_relative() {
            self.swarm.prior = base.join(&self.swarm.prior).to_string_lossy().into_owned();
        }
        let instruct = self.sft.iter_mut().flat_map(|s| s.data.iter_mut());
        for p in instruct.flat_map(|d| d.paths.iter_mut()) {
            if Path::new(p.as_str()).is_relative() {
                *p = base.join(&*p).to_string_lossy().into_owned();
            }
        }
        for source in &mut self.sources {
            for p in &mut source.paths {
                if Path::new(p.as_str()).is_relative() {
                    *p = base.join(&*p).to_string_lossy().into_owned();
                }
            }
        }
        self
    }
}

/// Lays `top` over `base`: tables merge key by key, anything else replaces. Giving `tokens`
/// in `[train]` replaces the layer below's `steps`, and the other way round.
fn merge(base: &mut toml::Table, top: toml::Table) {
    for (key, value) in top {
        match (base.get_mut(&key), value) {
            (Some(toml::Value::Table(below)), toml::Value::Table(above)) => {
                if key == "train" {
                    for (this, other) in [("tokens", "steps"), ("steps", "tokens")] {
                        if above.contains_key(this) {
                            below.remove(other);
                        }
                    }
                }
                merge(below, above);
            }
            (_, value) => {
                base.insert(key, value);
            }
        }
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
    fn run_sections_layer_recipe_over_preset_over_defaults() {
        let dir = std::env::temp_dir().join(format!("mixforge-recipe-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("r.toml");
        std::fs::write(&path, "[train]\ntokens = 20000\nlr = 0.02\n[eval]\ntasks = [\"t.jsonl\"]\n").unwrap();
        let preset = "[train]\nsteps = 16\nseq_len = 64\n[swarm]\nruns = 5\n";
        let (recipe, text) = Recipe::load_layered(Some(&path), preset).unwrap();
        assert!(text.contains("tokens = 20000"));
        // The recipe's tokens replace the preset's steps; the preset's other values stay.
        assert_eq!((recipe.train.tokens, recipe.train.steps, recipe.train.seq_len), (Some(20000), None, 64));
        assert_eq!((recipe.train.lr, recipe.swarm.runs, recipe.swarm.proxy_tokens), (0.02, 5, 100_000));
        assert_eq!(
            recipe.eval.tasks,
            [dir.canonicalize().unwrap().join("t.jsonl")],
            "task paths are taken from the recipe's folder"
        );
        assert_eq!(recipe.train.target_tokens(), 20000usize.div_ceil(64 * 16) as u64 * 64 * 16);
        std::fs::write(&path, "[train]\nlearning_rate = 0.02\n").unwrap();
        let err = format!("{:#}", Recipe::load_layered(Some(&path), preset).unwrap_err());
        assert!(err.contains("learning_rate") && err.contains("r.toml"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn source_flags_parse() {
        let source = parse_source_flag("web=data/*.jsonl").unwrap();
        assert_eq!((source.domain.as_str(), source.paths[0].as_str()), ("web", "data/*.jsonl"));
        assert!(parse_source_flag("nodomain").is_err());
    }
}

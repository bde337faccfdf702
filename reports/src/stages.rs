//! The records `mixforge run` keeps in `RUN/stages/`: one per stage (`<stage>.json`) and the
//! run card (`run.json`). The runner writes them; the report reads them. The format lives
//! here, with its reader.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Layout version of `stages/*.json`.
pub const STAGE_FORMAT_VERSION: u32 = 1;

/// Where a stage stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Started and not finished: killed, or still going.
    Running,
    /// Finished; its outputs are listed.
    Done,
    /// Failed with `error`.
    Failed,
}

/// A number a stage reports for the summary table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StageMetric {
    /// e.g. `kept documents`, `mean val loss`.
    pub name: String,
    pub value: f64,
    /// Some(true) when higher is better, Some(false) when lower is, None when neither.
    pub higher_is_better: Option<bool>,
}

/// `RUN/stages/<stage>.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StageRecord {
    pub format_version: u32,
    /// The stage's name (`corpus`, `shards`, …).
    pub stage: String,
    pub status: Status,
    /// Seconds since the Unix epoch when this attempt started.
    pub started_unix: u64,
    /// Wall time of the last attempt, seconds.
    pub wall_s: f64,
    /// xxh3-128 of the stage's recipe section as resolved (preset and defaults filled in).
    pub section_hash: String,
    /// What the stage read: an upstream stage (`stage:<name>` → its outputs' digest) or an
    /// input file (path → xxh3-128 of its bytes).
    pub inputs: BTreeMap<String, String>,
    /// xxh3-128 over the section hash and the inputs: the stage reruns when it changes.
    pub input_key: String,
    /// Files written, relative to the run directory → xxh3-128 of their bytes.
    pub outputs: BTreeMap<String, String>,
    /// xxh3-128 over `outputs`: what downstream stages record as their input.
    pub outputs_digest: String,
    /// Whether this attempt continued a killed one (swarm, training).
    #[serde(default)]
    pub resumed: bool,
    /// The cause, when it failed.
    #[serde(default)]
    pub error: Option<String>,
    /// Headline numbers for the summary table.
    #[serde(default)]
    pub metrics: Vec<StageMetric>,
}

/// `RUN/stages/run.json`: what a reader needs to reproduce or trust the run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunCard {
    pub format_version: u32,
    /// mixforge's version.
    pub version: String,
    /// The git commit of the source the binary was built from, when known.
    pub commit: Option<String>,
    /// Whether that checkout had uncommitted changes.
    pub dirty: Option<bool>,
    /// libtorch's version.
    pub libtorch: String,
    /// CPU model, cores, memory.
    pub hardware: BTreeMap<String, String>,
    /// Worker threads (0: one per core).
    pub threads: usize,
    /// The preset the recipe was layered on.
    pub preset: String,
    /// The recipe as written (empty when the run had none), and the resolved one.
    pub recipe_text: String,
    pub resolved_recipe: String,
    /// xxh3-128 of the resolved recipe.
    pub recipe_hash: String,
    /// Seeds by what they seed.
    pub seeds: BTreeMap<String, u64>,
    /// The stages in order.
    pub stages: Vec<String>,
}

/// Reads a JSON artifact, naming the file on failure.
pub fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    serde_json::from_slice(&bytes).map_err(|e| Error::parse(path, e))
}

/// `RUN/stages/`.
pub fn dir(run: &Path) -> PathBuf {
    run.join("stages")
}

/// A stage's record, when there is one.
pub fn read_record(run: &Path, stage: &str) -> Result<Option<StageRecord>> {
    let path = dir(run).join(format!("{stage}.json"));
    if !path.exists() {
        return Ok(None);
    }
    let record: StageRecord = read_json(&path)?;
    if record.format_version > STAGE_FORMAT_VERSION {
        return Err(Error::parse(
            &path,
            format!(
                "format_version {} is newer than this mixforge reads ({STAGE_FORMAT_VERSION})",
                record.format_version
            ),
        ));
    }
    Ok(Some(record))
}

/// The run card, when there is one.
pub fn read_card(run: &Path) -> Result<Option<RunCard>> {
    let path = dir(run).join("run.json");
    if !path.exists() {
        return Ok(None);
    }
    read_json(&path).map(Some)
}

/// Layout version of [`EvalFile`].
pub const EVAL_FORMAT_VERSION: u32 = 1;

/// Version of [`QatFile`] and [`ExportsFile`].
pub const QAT_FORMAT_VERSION: u32 = 1;

/// `RUN/qat/scores.json`: the full-precision model, its PTQ and its QAT on the same validation
/// windows and tasks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QatFile {
    pub format_version: u32,
    /// cpu or accel.
    pub scheme: String,
    /// self (self-distillation) or labels.
    pub teacher: String,
    /// Tokens the QAT run trained on.
    pub tokens: u64,
    /// Validation window in tokens.
    pub seq_len: usize,
    /// `fp`, `ptq`, `qat`.
    pub models: BTreeMap<String, QuantScores>,
}

/// The version of [`InstructFile`].
pub const INSTRUCT_FORMAT_VERSION: u32 = 1;

/// `RUN/sft/scores.json`: instruction tuning of the final model, before and after, with the
/// leave-one-out Δ matrix when the weights came from it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InstructFile {
    pub format_version: u32,
    /// natural, uniform or loo.
    pub mix: String,
    /// The weights the fine-tune trained on.
    pub weights: BTreeMap<String, f64>,
    /// The natural (token-proportional) weights, for comparison.
    pub natural: BTreeMap<String, f64>,
    /// Tokens the fine-tune trained on.
    pub tokens: u64,
    /// Held-out examples per domain.
    pub held_out: BTreeMap<String, usize>,
    /// Held-out short answers per domain (exact match's denominator).
    pub short_answers: BTreeMap<String, usize>,
    /// Malformed records per domain.
    pub malformed: BTreeMap<String, usize>,
    /// The final model and the fine-tuned one, on the held-out instructions.
    pub before: InstructScores,
    pub after: InstructScores,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loo: Option<LooSummary>,
}

/// Held-out scores of one model in [`InstructFile`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InstructScores {
    /// Cross-entropy per assistant token.
    pub val_loss: BTreeMap<String, f64>,
    /// Greedy exact match over short answers.
    pub exact_match: BTreeMap<String, f64>,
}

/// The leave-one-out ablations behind the weights.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LooSummary {
    /// Rows (the removed domain) and columns (the metric).
    pub domains: Vec<String>,
    pub metrics: Vec<String>,
    /// Positive: removing the domain made the metric worse (the domain helps).
    pub delta: Vec<Vec<f64>>,
    pub scores: BTreeMap<String, f64>,
    pub base: BTreeMap<String, f64>,
    pub eta: f64,
    pub max_weight: f64,
    /// Steps of each ablation fine-tune.
    pub steps: u64,
}

/// One model's scores in [`QatFile`] and [`ExportsFile`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuantScores {
    pub val_loss: BTreeMap<String, f64>,
    /// Accuracy per task file.
    pub tasks: BTreeMap<String, f64>,
}

/// `RUN/export/exports.json`: the deployable files and what they cost and do on this CPU.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExportsFile {
    pub format_version: u32,
    pub files: Vec<ExportedFile>,
    /// The real int4 model (libtorch's int4 kernels) on the QAT scores' windows and tasks.
    pub int4_scores: QuantScores,
    /// Threads the speed was measured with.
    pub threads: usize,
}

/// One exported model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExportedFile {
    /// What it is: `fp32 checkpoint`, `int4 (mixforge)`, `GGUF Q4_0`, `HF (dequantized)`.
    pub format: String,
    /// Relative to the run.
    pub path: String,
    pub bytes: u64,
    /// Forward tokens per second on the CPU (absent where mixforge does not run the format).
    pub tokens_per_s: Option<f64>,
}

/// Version of [`LongContextFile`].
pub const LONG_CONTEXT_FORMAT_VERSION: u32 = 1;

/// `RUN/long_context/scores.json`: the models of the long-context phase (before it, after it,
/// its teacher) on needle items and on validation windows of the phase's length.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LongContextFile {
    pub format_version: u32,
    /// The phase's window in tokens.
    pub seq_len: usize,
    /// Rank accuracy by chance: 1 / (distractors + 1).
    pub chance: f64,
    /// `before`, `after`, `teacher`.
    pub models: BTreeMap<String, LongContextScores>,
}

/// One model's long-context scores.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LongContextScores {
    /// Mean validation loss per domain over windows of `seq_len`.
    pub val_loss: BTreeMap<String, f64>,
    /// Per domain, the loss in equal buckets of window positions.
    pub by_position: BTreeMap<String, Vec<f64>>,
    /// Share of needle items whose key greedy decoding reproduces.
    pub needle_exact: f64,
    /// Share whose key outscores every distractor.
    pub needle_rank_acc: f64,
    pub grid: Vec<NeedleCell>,
}

/// Needle scores of one (length, depth).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NeedleCell {
    pub length: usize,
    pub depth: f64,
    pub items: usize,
    pub exact: f64,
    pub rank_acc: f64,
}

/// `RUN/eval/eval.json`: the evaluation stage's results in lm-evaluation-harness's shape.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvalFile {
    pub format_version: u32,
    /// The checkpoint evaluated, relative to the run directory.
    pub checkpoint: String,
    pub rows: Vec<EvalRow>,
    /// Validation loss per domain of every model of the run (base, specialists, merge) when
    /// it has more than one, for comparing them.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub models: BTreeMap<String, BTreeMap<String, f64>>,
}

/// One (task, metric) result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvalRow {
    /// `val/<domain>` for validation loss, else the task file's stem.
    pub task: String,
    /// `loss`, `perplexity`, `acc`, `acc_norm`.
    pub metric: String,
    pub value: f64,
    /// Standard error of the mean over items; absent where it is not known (never a fake 0).
    pub stderr: Option<f64>,
    /// Items (or validation sequences) scored.
    pub n: u64,
    pub higher_is_better: bool,
}

//! The proxy API the mix simulator calls: train a small model on a mixture for a token
//! budget and return per-domain validation losses (and task scores).
//!
//! Cheap to start (no files written, model built in memory) and safe to run several at
//! once from one process: each call owns its model, optimizer and loader. libtorch's
//! intra-op thread count is process-wide; callers running proxies in parallel set it (e.g.
//! to 1) once with `tch::set_num_threads` instead of per call.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;

use serde::{Deserialize, Serialize};
use tch::Device;

use crate::config::ModelConfig;
use crate::data::{CapPolicy, LoaderConfig, Mixture};
use crate::eval;
use crate::loss::KdConfig;
use crate::optim::AdamWConfig;
use crate::trainer::{TrainConfig, Trainer};
use crate::{Error, Result};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProxySpec {
    pub shards: PathBuf,
    /// The proxy's shape; its vocabulary is replaced by the shards' tokenizer size.
    pub model: ModelConfig,
    pub weights: BTreeMap<String, f64>,
    /// Training tokens (rounded up to whole steps).
    pub tokens: u64,
    pub seq_len: usize,
    pub batch_size: usize,
    pub lr: f64,
    pub seed: u64,
    /// Fraction of each domain's training tokens the proxy may read (see
    /// [`LoaderConfig::data_fraction`]): proxy tokens / target tokens for repetition matching.
    #[serde(default = "one")]
    pub data_fraction: f64,
    /// Validation sequences per domain.
    pub eval_sequences: usize,
    /// Task files scored at the end (log-likelihood tasks; keep them small).
    #[serde(default)]
    pub tasks: Vec<PathBuf>,
    #[serde(default)]
    pub task_limit: Option<usize>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProxyResult {
    pub val_loss: BTreeMap<String, f64>,
    pub train_loss: f64,
    pub tokens: u64,
    pub seconds: f64,
    /// Task name → accuracy.
    pub tasks: BTreeMap<String, f64>,
}

fn one() -> f64 {
    1.0
}

/// Trains one proxy on the CPU and evaluates it.
pub fn run(spec: &ProxySpec) -> Result<ProxyResult> {
    let start = Instant::now();
    let shards = corpus::shards::Shards::open(&spec.shards)?;
    let tokenizer = corpus::tokenize::load(&shards.tokenizer_path())?;
    let mut model = spec.model.clone();
    model.vocab_size = shards.manifest().vocab_size as usize;
    let tokens_per_step = (spec.seq_len * spec.batch_size) as u64;
    let steps = spec.tokens.div_ceil(tokens_per_step).max(1);
    let config = TrainConfig {
        model,
        shards: spec.shards.clone(),
        mixture: Mixture { weights: spec.weights.clone(), max_epochs: BTreeMap::new() },
        loader: LoaderConfig {
            seq_len: spec.seq_len,
            batch_size: spec.batch_size,
            seed: spec.seed,
            doc_mask: false,
            reset_positions: false,
            cap_policy: CapPolicy::Warn,
            eos_id: crate::data::eos_id(&tokenizer)?,
            data_fraction: spec.data_fraction,
        },
        optim: AdamWConfig { lr: spec.lr, warmup_steps: (steps / 10).clamp(1, 100), ..AdamWConfig::default() },
        steps,
        grad_accum: 1,
        eval_every: 0,
        eval_sequences: spec.eval_sequences,
        checkpoint_every: 0,
        keep_checkpoints: 1,
        teacher: None,
        kd: KdConfig::default(),
        seed: spec.seed,
        shards_ref: Default::default(),
        teacher_ref: Default::default(),
        phase: "proxy".into(),
        init: None,
        teacher_packing: Default::default(),
        teacher_cache: None,
        sft: None,
    };
    let mut trainer = Trainer::new(config, None, Device::Cpu)?;
    let outcome = trainer.train(false)?;
    let mut tasks = BTreeMap::new();
    for path in &spec.tasks {
        let items = eval::read_task(path, spec.task_limit)?;
        let name = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
        let score = eval::evaluate(&trainer.model, &tokenizer, &name, &items)?;
        tasks.insert(name, score.acc);
    }
    if outcome.val_loss.is_empty() {
        return Err(Error::Data("no domain has validation tokens; the proxy has nothing to report".into()));
    }
    Ok(ProxyResult {
        val_loss: outcome.val_loss,
        train_loss: outcome.final_train_loss,
        tokens: outcome.tokens,
        seconds: start.elapsed().as_secs_f64(),
        tasks,
    })
}

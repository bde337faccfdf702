//! The training loop: batches from the mixture loader, cross-entropy or distillation from a
//! teacher's logits, gradient accumulation, AdamW with warm-up + cosine, periodic per-domain
//! validation, metrics as JSONL, and checkpoints that resume bit-exactly.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use corpus::shards::Shards;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::{Deserialize, Serialize};
use tch::{Device, Tensor};

use crate::checkpoint::{self, InputRef, Lineage, State};
use crate::config::ModelConfig;
use crate::data::{Batch, Loader, LoaderConfig, LoaderState, Mixture};
use crate::hf;
use crate::loss::{self, KdConfig};
use crate::model::{Inputs, Llama};
use crate::optim::{AdamW, AdamWConfig};
use crate::sft::{Dataset, Masked, SftData, SftLoader};
use crate::teacher_cache::{CachedBatch, TeacherCache};
use crate::{Error, Result};

/// Everything that defines a run; stored in every checkpoint.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TrainConfig {
    pub model: ModelConfig,
    pub shards: PathBuf,
    pub mixture: Mixture,
    pub loader: LoaderConfig,
    pub optim: AdamWConfig,
    /// Optimizer steps.
    pub steps: u64,
    /// Micro-batches per step.
    pub grad_accum: u64,
    /// Validate every this many steps (0 = only at the end).
    pub eval_every: u64,
    /// Validation sequences per domain.
    pub eval_sequences: usize,
    /// Checkpoint every this many steps (0 = only at the end).
    pub checkpoint_every: u64,
    pub keep_checkpoints: usize,
    /// A mixforge checkpoint or Hugging Face directory whose logits the student learns from.
    pub teacher: Option<PathBuf>,
    pub kd: KdConfig,
    /// Seeds the initial weights (the loader has its own seed).
    pub seed: u64,
    /// How a moved run finds its shards again (absent in checkpoints of older builds).
    #[serde(default)]
    pub shards_ref: InputRef,
    /// How a moved run finds its teacher again.
    #[serde(default)]
    pub teacher_ref: InputRef,
    /// What the run is (`pretrain`, `anneal`, `merge`, …): recorded for lineage.
    #[serde(default = "default_phase")]
    pub phase: String,
    /// The checkpoint(s) the first weights came from (`train --init`); absent: random weights
    /// from `seed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub init: Option<Lineage>,
    /// What the teacher sees of a packed window.
    #[serde(default)]
    pub teacher_packing: TeacherPacking,
    /// A teacher's cached top-k (`teacher cache`) to distil from instead of a live teacher.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub teacher_cache: Option<PathBuf>,
    /// Instruction tuning: conversations instead of shards, loss on assistant tokens only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sft: Option<SftData>,
}

/// Where a run's batches come from.
pub enum Source {
    Shards(Loader),
    Sft(SftLoader),
}

impl Source {
    fn next_batch(&mut self, device: Device) -> Result<Batch> {
        match self {
            Source::Shards(l) => l.next_batch(device),
            Source::Sft(l) => l.next_batch(device),
        }
    }

    pub fn state(&self) -> &LoaderState {
        match self {
            Source::Shards(l) => l.state(),
            Source::Sft(l) => l.state(),
        }
    }

    fn restore(&mut self, state: LoaderState) -> Result<()> {
        match self {
            Source::Shards(l) => l.restore(state),
            Source::Sft(l) => l.restore(state),
        }
    }
}

/// Held-out data scored at each validation: plain windows, or instruction rows with their loss
/// mask.
enum Validation {
    Plain(BTreeMap<String, Tensor>),
    Masked(BTreeMap<String, Masked>),
}

/// The teacher's view of a packed training window.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TeacherPacking {
    /// Exactly the student's tokens, positions and mask: the teacher's logits are those of the
    /// window the student is scored on (implicit positional distillation).
    #[default]
    Same,
    /// Each document on its own: masked from its neighbours, positions from 0.
    PerDoc,
}

/// The inputs the teacher sees for `batch`.
pub fn teacher_inputs(batch: &Batch, packing: TeacherPacking) -> Inputs {
    match packing {
        TeacherPacking::Same => batch.inputs.shallow_clone(),
        TeacherPacking::PerDoc => Inputs {
            tokens: batch.inputs.tokens.shallow_clone(),
            positions: Some(batch.document_positions.shallow_clone()),
            doc_ids: Some(batch.documents.shallow_clone()),
        },
    }
}

fn default_phase() -> String {
    "pretrain".to_string()
}

impl TrainConfig {
    pub fn tokens_per_step(&self) -> u64 {
        (self.loader.batch_size * self.loader.seq_len) as u64 * self.grad_accum
    }
}

/// What a finished (or resumed-and-finished) run reports.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Outcome {
    pub steps: u64,
    pub tokens: u64,
    pub final_train_loss: f64,
    /// Mean validation cross-entropy per domain (nats/token).
    pub val_loss: BTreeMap<String, f64>,
    /// Training throughput over the steps this process ran (evaluation excluded).
    pub tokens_per_s: f64,
}

pub struct Trainer {
    pub config: TrainConfig,
    pub model: Llama,
    pub optim: AdamW,
    pub loader: Source,
    teacher: Option<Llama>,
    cache: Option<TeacherCache>,
    tokenizer: PathBuf,
    run: Option<PathBuf>,
    pub step: u64,
    tokens_seen: u64,
    validation: Validation,
}

impl Trainer {
    /// A fresh run. With `run`, metrics and checkpoints go there. With `config.init`, the
    /// weights start from its (single) parent, with a fresh optimizer and schedule.
    pub fn new(config: TrainConfig, run: Option<&Path>, device: Device) -> Result<Trainer> {
        Trainer::with_data(config, None, run, device)
    }

    /// [`Trainer::new`] for an instruction run whose data the caller already loaded (from
    /// `config.sft`, with the run's window), so it is not read and tokenized twice.
    pub fn with_data(
        config: TrainConfig,
        data: Option<Dataset>,
        run: Option<&Path>,
        device: Device,
    ) -> Result<Trainer> {
        if config.model.quant.is_some() && config.init.is_none() {
            return Err(Error::Config(
                "a quantized model starts from a checkpoint (its scales come from the weights): pass --init".into(),
            ));
        }
        let trainer = Trainer::build(config, data, run, device)?;
        if let Some(init) = &trainer.config.init {
            let [parent] = init.parents.as_slice() else {
                return Err(Error::Config("a run starts from one checkpoint (merge several first)".into()));
            };
            let loaded = hf::load_any(&parent.path, device, false)?;
            // A phase may lengthen the window and change RoPE's base; the weights don't depend on them.
            let mut parent_config = loaded.model.config.clone();
            parent_config.max_seq_len = trainer.config.model.max_seq_len;
            parent_config.rope_theta = trainer.config.model.rope_theta;
            // QAT starts from a full-precision parent; a quantized one keeps its scheme.
            match (&parent_config.quant, &trainer.config.model.quant) {
                (None, Some(q)) => parent_config = q.apply(&parent_config),
                (Some(p), Some(q)) if p.scheme == q.scheme => parent_config.quant = Some(q.clone()),
                _ => {}
            }
            if parent_config != trainer.config.model {
                return Err(Error::Config(format!(
                    "{}: its model config differs from the run's ({})",
                    parent.path.display(),
                    crate::config::first_difference(&loaded.model.config, &trainer.config.model)
                )));
            }
            let tensors: BTreeMap<String, Tensor> =
                loaded.model.params.named().iter().map(|(n, t)| (n.clone(), t.shallow_clone())).collect();
            let tensors = crate::quant::prepare(tensors, &loaded.model.config, &trainer.config.model)?;
            trainer.model.params.load(&tensors, &parent.path.display().to_string())?;
        }
        Ok(trainer)
    }

    /// The model (random from `seed`), optimizer, loader and teacher of a run.
    fn build(mut config: TrainConfig, data: Option<Dataset>, run: Option<&Path>, device: Device) -> Result<Trainer> {
        if let Some(run) = run {
            refuse_used_run(run)?;
            config.shards_ref = InputRef::of(&config.shards, run);
            config.teacher_ref = config.teacher.as_deref().map(|t| InputRef::of(t, run)).unwrap_or_default();
        }
        if config.steps == 0 || config.grad_accum == 0 {
            return Err(Error::Config("steps and grad_accum must be positive".into()));
        }
        let (loader, tokenizer) = match &mut config.sft {
            None => {
                let shards = Shards::open(&config.shards)?;
                check_vocab(shards.manifest().vocab_size as usize, &config.model)?;
                (Source::Shards(Loader::new(&shards, &config.mixture, config.loader.clone())?), shards.tokenizer_path())
            }
            Some(sft) => {
                if config.teacher.is_some() || config.teacher_cache.is_some() {
                    return Err(Error::Config(
                        "instruction tuning learns from the responses; it takes no teacher".into(),
                    ));
                }
                let data = match data {
                    Some(data) => data,
                    None => Dataset::load(&sft.sources, &sft.tokenizer, sft.val_fraction, config.loader.seq_len + 1)?,
                };
                if sft.fingerprint.is_empty() {
                    sft.fingerprint = data.fingerprint.clone();
                } else if sft.fingerprint != data.fingerprint {
                    return Err(Error::Data(
                        "the instruction data (or its sources) changed since this run started; start a new run with \
                         --out instead of resuming"
                            .into(),
                    ));
                }
                let vocab = corpus::tokenize::load(&sft.tokenizer)?.get_vocab_size(true);
                check_vocab(vocab, &config.model)?;
                (Source::Sft(SftLoader::new(data, &config.mixture, config.loader.clone())?), sft.tokenizer.clone())
            }
        };
        let model = Llama::new(config.model.clone(), device, config.seed, true)?;
        let optim = AdamW::new(config.optim, &model.params);
        let teacher = match &config.teacher {
            Some(path) => Some(load_teacher(path, config.model.vocab_size, config.loader.seq_len, device)?),
            None => None,
        };
        let cache = match &config.teacher_cache {
            Some(dir) => {
                let cache = TeacherCache::open(dir)?;
                cache.check(&config)?;
                eprintln!(
                    "distilling from the top-{} cache {}: it drops {:.4} of the teacher's probability mass per token",
                    cache.meta.top_k,
                    dir.display(),
                    cache.meta.dropped_mass
                );
                Some(cache)
            }
            None => None,
        };
        if cache.is_some() && teacher.is_some() {
            return Err(Error::Config("give a teacher or a teacher cache, not both".into()));
        }
        let validation = match &loader {
            Source::Shards(l) => Validation::Plain(validation_tensors(l, config.eval_sequences, device)),
            Source::Sft(l) => Validation::Masked(l.validation(config.eval_sequences, device)),
        };
        if let Some(run) = run {
            std::fs::create_dir_all(run).map_err(|e| Error::io(run, e))?;
            let metrics = run.join("metrics.jsonl");
            std::fs::write(&metrics, b"").map_err(|e| Error::io(&metrics, e))?;
        }
        Ok(Trainer {
            config,
            model,
            optim,
            loader,
            teacher,
            cache,
            tokenizer,
            run: run.map(Path::to_path_buf),
            step: 0,
            tokens_seen: 0,
            validation,
        })
    }

    /// Continues a run from its latest checkpoint, exactly where it stood.
    pub fn resume(run: &Path, device: Device) -> Result<Trainer> {
        Trainer::resume_with(run, device, |_, _| Ok(()))
    }

    /// Like [`Trainer::resume`]; `adjust` sees the stored config and the step reached, and may
    /// change what is safe to change (more steps, validation and checkpoint cadence, where the
    /// inputs are now). The shards and teacher found must be the ones the run started with.
    pub fn resume_with(
        run: &Path,
        device: Device,
        adjust: impl FnOnce(&mut TrainConfig, u64) -> Result<()>,
    ) -> Result<Trainer> {
        let dir = checkpoint::resolve(run)?;
        let mut state = checkpoint::read_state(&dir)?;
        adjust(&mut state.config, state.step)?;
        let c = &mut state.config;
        match &mut c.sft {
            // The examples are encoded with the tokenizer the run's checkpoints carry, copied
            // beside them once (pruning removes old checkpoints, and this one with them).
            Some(sft) => {
                let stable = run.join("tokenizer.json");
                if !stable.exists() {
                    let from = dir.join("tokenizer.json");
                    let bytes = std::fs::read(&from).map_err(|e| Error::io(&from, e))?;
                    corpus::atomic::write_file(&stable, &bytes)?;
                }
                sft.tokenizer = stable;
            }
            None => {
                c.shards = checkpoint::locate(run, &c.shards, &c.shards_ref, "shards")?;
                c.shards_ref.relative = checkpoint::relative_to(&c.shards, run);
            }
        }
        if let Some(teacher) = &c.teacher {
            let found = checkpoint::locate(run, teacher, &c.teacher_ref, "teacher")?;
            c.teacher_ref.relative = checkpoint::relative_to(&found, run);
            c.teacher = Some(found);
        }
        let mut trainer = Trainer::new_without_metrics(state.config.clone(), run, device)?;
        let weights = dir.join("model.safetensors");
        trainer.model.params.load(&checkpoint::read_tensors(&weights)?, &weights.display().to_string())?;
        checkpoint::load_optimizer(&dir, &mut trainer.optim)?;
        trainer.loader.restore(state.loader)?;
        trainer.step = state.step;
        trainer.tokens_seen = state.tokens_seen;
        truncate_metrics(&run.join("metrics.jsonl"), state.step)?;
        Ok(trainer)
    }

    fn new_without_metrics(config: TrainConfig, run: &Path, device: Device) -> Result<Trainer> {
        // The weights come from the run's own checkpoint, not from its parent.
        let mut t = Trainer::build(config, None, None, device)?;
        t.run = Some(run.to_path_buf());
        Ok(t)
    }

    /// Trains to `config.steps`, validating and checkpointing on schedule.
    pub fn train(&mut self, show_progress: bool) -> Result<Outcome> {
        let total = self.config.steps;
        let bar = progress_bar(show_progress, total, self.step);
        let mut metrics = self.metrics_writer()?;
        let (mut train_time, mut trained_tokens, mut last_loss) = (0.0f64, 0u64, f64::NAN);
        let mut val_loss = BTreeMap::new();
        while self.step < total {
            let start = Instant::now();
            let lr = self.config.optim.lr_at(self.step, total);
            let loss = self.train_step()?;
            let grad_norm = self.optim.step(&mut self.model.params, lr);
            let elapsed = start.elapsed().as_secs_f64();
            self.step += 1;
            let tokens = self.config.tokens_per_step();
            self.tokens_seen += tokens;
            train_time += elapsed;
            trained_tokens += tokens;
            last_loss = loss;
            if !loss.is_finite() {
                return Err(Error::Data(format!("loss became {loss} at step {}; lower the learning rate", self.step)));
            }
            let tps = tokens as f64 / elapsed.max(1e-9);
            // A step's lines reach the file in one append, so a killed run leaves no torn line.
            let mut lines = format!(
                "{}\n",
                serde_json::json!({"step": self.step, "lr": lr, "loss": loss, "grad_norm": grad_norm,
                    "tokens": self.tokens_seen, "tokens_per_s": tps})
            );
            bar.set_position(self.step);
            bar.set_message(format!("loss {loss:.3} · {tps:.0} tok/s"));
            let last = self.step == total;
            let every = |n: u64| n > 0 && self.step.is_multiple_of(n);
            if last || every(self.config.eval_every) {
                val_loss = self.validate();
                lines.push_str(&format!("{}\n", serde_json::json!({"step": self.step, "val_loss": val_loss})));
            }
            if let Some((path, file)) = metrics.as_mut() {
                file.write_all(lines.as_bytes()).map_err(|e| Error::io(path, e))?;
            }
            if self.run.is_some() && (last || every(self.config.checkpoint_every)) {
                self.save()?;
            }
        }
        bar.finish_and_clear();
        if val_loss.is_empty() {
            val_loss = self.validate();
        }
        let tokens_per_s = if train_time > 0.0 { trained_tokens as f64 / train_time } else { 0.0 };
        Ok(Outcome { steps: self.step, tokens: self.tokens_seen, final_train_loss: last_loss, val_loss, tokens_per_s })
    }

    /// Forward and backward over `grad_accum` micro-batches; returns the mean loss.
    fn train_step(&mut self) -> Result<f64> {
        let accum = self.config.grad_accum;
        let device = self.model.device;
        let batches = (0..accum).map(|_| self.loader.next_batch(device)).collect::<Result<Vec<Batch>>>()?;
        // Each micro-batch's mean loss weighs by its share of the step's learned targets (all
        // equal in pre-training; instruction windows learn different numbers of tokens), so
        // accumulation equals one batch k times larger.
        let learned: Vec<f64> =
            batches.iter().map(|b| b.targets.ne(-100).sum(tch::Kind::Int64).int64_value(&[]) as f64).collect();
        let all: f64 = learned.iter().sum::<f64>().max(1.0);
        let mut total = 0.0;
        for (micro, batch) in batches.iter().enumerate() {
            let cached = match &self.cache {
                Some(c) => Some(c.batch(self.step * accum + micro as u64, &batch.inputs.tokens)?),
                None => None,
            };
            let share = learned[micro] / all;
            total += share * tch::autocast(device.is_cuda(), || self.batch_loss(batch, cached.as_ref(), share));
        }
        Ok(total)
    }

    /// The loss of one micro-batch, back-propagated times `scale`.
    fn batch_loss(&self, batch: &Batch, cached: Option<&CachedBatch>, scale: f64) -> f64 {
        let inputs = self.teacher.as_ref().map(|_| teacher_inputs(batch, self.config.teacher_packing));
        let teacher = match (&self.teacher, &inputs, cached) {
            (Some(t), Some(i), _) => Some(loss::Teacher::Online(t, i)),
            (_, _, Some(c)) => Some(loss::Teacher::Cached(c)),
            _ => None,
        };
        loss::window_loss(
            &self.model,
            &batch.inputs,
            &batch.targets,
            teacher,
            &self.config.kd,
            loss::DEFAULT_CHUNK,
            scale,
        )
    }

    /// Mean validation cross-entropy per domain.
    pub fn validate(&self) -> BTreeMap<String, f64> {
        match &self.validation {
            Validation::Plain(v) => validation_loss(&self.model, v, self.config.loader.batch_size),
            Validation::Masked(v) => crate::sft::validation_loss(&self.model, v, self.config.loader.batch_size),
        }
    }

    /// Instruction runs: greedy exact match per domain over the held-out examples with short
    /// answers, and how many there were (empty for pre-training runs).
    pub fn exact_match(&self) -> BTreeMap<String, (f64, usize)> {
        match &self.validation {
            Validation::Masked(v) => crate::sft::exact_match(&self.model, v, self.config.loader.batch_size),
            Validation::Plain(_) => BTreeMap::new(),
        }
    }

    /// Writes a checkpoint now.
    pub fn save(&self) -> Result<PathBuf> {
        let run = self.run.as_ref().ok_or_else(|| Error::Config("no run directory to checkpoint into".into()))?;
        let state = State {
            format_version: checkpoint::FORMAT_VERSION,
            step: self.step,
            tokens_seen: self.tokens_seen,
            config: self.config.clone(),
            loader: self.loader.state().clone(),
        };
        let dir = checkpoint::save(run, &state, &self.model, Some(&self.optim), &self.tokenizer)?;
        checkpoint::prune(run, self.config.keep_checkpoints)?;
        Ok(dir)
    }

    fn metrics_writer(&self) -> Result<Option<(PathBuf, std::fs::File)>> {
        let Some(run) = &self.run else { return Ok(None) };
        let path = run.join("metrics.jsonl");
        let file =
            std::fs::OpenOptions::new().create(true).append(true).open(&path).map_err(|e| Error::io(&path, e))?;
        Ok(Some((path, file)))
    }
}

fn check_vocab(tokenizer_vocab: usize, model: &ModelConfig) -> Result<()> {
    if tokenizer_vocab > model.vocab_size {
        return Err(Error::Config(format!(
            "the tokenizer has {tokenizer_vocab} tokens but the model's vocab_size is {}",
            model.vocab_size
        )));
    }
    Ok(())
}

/// A fresh run must not write into another run's directory: its metrics and checkpoints would
/// mix with the old ones.
fn refuse_used_run(run: &Path) -> Result<()> {
    // A `checkpoints/` holding only a killed save's temporary directory is not a run yet.
    let used = ["metrics.jsonl", "checkpoints/latest"].iter().find(|name| run.join(name).exists());
    match used {
        Some(name) => Err(Error::Config(format!(
            "{} already holds a training run ({name}); pass --resume to continue it, or choose a new --out",
            run.display()
        ))),
        None => Ok(()),
    }
}

/// Loads a teacher and checks that it speaks the student's vocabulary and reads `window`
/// tokens (past its own window its logits would be meaningless targets).
pub fn load_teacher(path: &Path, vocab_size: usize, window: usize, device: Device) -> Result<Llama> {
    if path.join(crate::int4::META).exists() {
        return Err(Error::Config(format!(
            "{} is an int4 export (inference only): distil from the checkpoint it was exported from",
            path.display()
        )));
    }
    let teacher = full_precision(hf::load_any(path, device, false)?.model)?;
    if teacher.config.vocab_size != vocab_size {
        return Err(Error::Config(format!(
            "the teacher {} has a vocabulary of {} tokens, the student {vocab_size}; distillation over the full \
             vocabulary needs the same tokenizer",
            path.display(),
            teacher.config.vocab_size,
        )));
    }
    if teacher.config.max_seq_len < window {
        return Err(Error::Config(format!(
            "the teacher {} reads at most {} tokens but the windows are {window}: give a teacher with a longer \
             window, or lower --seq-len",
            path.display(),
            teacher.config.max_seq_len
        )));
    }
    Ok(teacher)
}

/// A quantized model's full-precision weights as a model (a teacher for QAT's self-distillation).
pub fn full_precision(model: Llama) -> Result<Llama> {
    if model.config.quant.is_none() {
        return Ok(model);
    }
    let mut config = model.config.clone();
    config.quant = None;
    let fp = Llama::new(config, model.device, 0, false)?;
    let tensors: BTreeMap<String, Tensor> =
        model.params.named().iter().map(|(n, t)| (n.clone(), t.shallow_clone())).collect();
    fp.params.load(&tensors, "the quantized teacher")?;
    Ok(fp)
}

pub fn validation_tensors(loader: &Loader, max_sequences: usize, device: Device) -> BTreeMap<String, Tensor> {
    window_tensors(loader, 0, max_sequences, device)
}

/// Validation sequences past the first `skip` of each domain, as tensors (a probe set).
pub fn window_tensors(loader: &Loader, skip: usize, max_sequences: usize, device: Device) -> BTreeMap<String, Tensor> {
    loader
        .validation_window(skip, max_sequences)
        .into_iter()
        .map(|(domain, seqs)| {
            let n = seqs.len() as i64;
            let flat: Vec<i64> = seqs.into_iter().flatten().collect();
            (domain, Tensor::from_slice(&flat).view([n, -1]).to_device(device))
        })
        .collect()
}

/// Mean next-token cross-entropy of `model` over each domain's validation sequences.
pub fn validation_loss(model: &Llama, validation: &BTreeMap<String, Tensor>, batch: usize) -> BTreeMap<String, f64> {
    validation
        .iter()
        .map(|(domain, seqs)| {
            let by_position = position_loss(model, seqs, batch);
            (domain.clone(), by_position.iter().sum::<f64>() / by_position.len().max(1) as f64)
        })
        .collect()
}

/// Mean next-token cross-entropy at each position of the window over `seqs` `[n, seq + 1]`
/// (position `i` predicts token `i + 1` having seen `i + 1` tokens).
pub fn position_loss(model: &Llama, seqs: &Tensor, batch: usize) -> Vec<f64> {
    let (n, len) = seqs.size2().expect("[n, seq + 1]");
    let d = model.config.d_model as i64;
    let mut sum = Tensor::zeros([len - 1], (tch::Kind::Double, tch::Device::Cpu));
    tch::no_grad(|| {
        let mut i = 0;
        while i < n {
            let b = (batch as i64).min(n - i);
            let chunk = seqs.narrow(0, i, b);
            let hidden =
                tch::autocast(model.device.is_cuda(), || model.hidden(&Inputs::tokens(chunk.narrow(1, 0, len - 1))));
            let (hidden, targets) = (hidden.reshape([-1, d]), chunk.narrow(1, 1, len - 1).reshape([-1]));
            let rows = hidden.size()[0];
            let per_token: Vec<Tensor> = (0..rows)
                .step_by(loss::DEFAULT_CHUNK as usize)
                .map(|start| {
                    let len = loss::DEFAULT_CHUNK.min(rows - start);
                    let logits = model.logits(&hidden.narrow(0, start, len));
                    let nll = logits.cross_entropy_loss::<Tensor>(
                        &targets.narrow(0, start, len),
                        None,
                        tch::Reduction::None,
                        -100,
                        0.0,
                    );
                    nll.to_kind(tch::Kind::Double).to_device(tch::Device::Cpu)
                })
                .collect();
            sum += Tensor::cat(&per_token, 0).view([b, len - 1]).sum_dim_intlist(0, false, tch::Kind::Double);
            i += b;
        }
    });
    Vec::<f64>::try_from(sum / n.max(1) as f64).expect("a 1-d double tensor")
}

/// Keeps the metric lines up to `step` (a resumed run rewrites what came after).
fn truncate_metrics(path: &Path, step: u64) -> Result<()> {
    let Ok(text) = std::fs::read_to_string(path) else { return Ok(()) };
    let kept: String = text
        .lines()
        .filter(|l| {
            serde_json::from_str::<serde_json::Value>(l)
                .ok()
                .and_then(|v| v["step"].as_u64())
                .is_some_and(|s| s <= step)
        })
        .map(|l| format!("{l}\n"))
        .collect();
    corpus::atomic::write_file(path, kept.as_bytes())?;
    Ok(())
}

fn progress_bar(show: bool, total: u64, start: u64) -> ProgressBar {
    if !show {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr())
        .with_style(
            ProgressStyle::with_template("{prefix:>8} [{bar:30}] {pos}/{len} steps {msg} eta {eta}")
                .expect("valid template")
                .progress_chars("=> "),
        )
        .with_prefix("train");
    bar.set_position(start);
    bar
}

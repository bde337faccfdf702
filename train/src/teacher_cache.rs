//! A teacher's top-k log-probabilities over the batches a training run will read, written once
//! and read back instead of running the teacher at every step (the teacher may be far larger
//! than the student, or not loadable at training time).
//!
//! Layout (version 1): `cache.json` ([`CacheMeta`]) and one `batch-NNNNNNNN.safetensors` per
//! micro-batch with `tokens` `[B, T]` int64 (checked against the run's own batch), `indices`
//! `[B, T, K]` int64 and `logprobs` `[B, T, K]` fp32: the teacher's log-probabilities at the
//! cache's temperature, normalised over the whole vocabulary, largest first.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

use crate::data::{Loader, LoaderConfig, Mixture};
use crate::model::Llama;
use crate::trainer::{TeacherPacking, teacher_inputs};
use crate::{Error, Result};

pub const FORMAT_VERSION: u32 = 1;

/// What a cache holds and how its batches were drawn.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CacheMeta {
    pub format_version: u32,
    pub loader: LoaderConfig,
    pub mixture: Mixture,
    pub teacher_packing: TeacherPacking,
    /// Micro-batches written, in the loader's order.
    pub batches: u64,
    pub top_k: usize,
    pub temperature: f64,
    pub vocab_size: usize,
    /// Mean over positions of the teacher's probability mass outside the top k.
    pub dropped_mass: f64,
}

/// What to cache.
#[derive(Debug, Clone, Copy)]
pub struct CacheSpec {
    pub packing: TeacherPacking,
    /// Micro-batches (steps × gradient accumulation).
    pub batches: u64,
    pub top_k: usize,
    pub temperature: f64,
}

/// Writes `spec.batches` micro-batches of `loader` with `teacher`'s top-k into `out`
/// (atomically: a killed run leaves no cache); returns the meta written.
pub fn write(
    teacher: &Llama,
    mut loader: Loader,
    mixture: &Mixture,
    spec: CacheSpec,
    out: &Path,
    progress: &dyn Fn(u64),
) -> Result<CacheMeta> {
    let CacheSpec { packing, batches, top_k, temperature } = spec;
    let vocab = teacher.config.vocab_size;
    if top_k == 0 || top_k > vocab {
        return Err(Error::Config(format!("--top-k {top_k} must be between 1 and the vocabulary ({vocab})")));
    }
    if !(temperature > 0.0 && temperature.is_finite()) {
        return Err(Error::Config(format!("temperature {temperature} must be positive")));
    }
    // Only a cache replaces a cache: never a directory a user pointed at by mistake.
    corpus::atomic::check_replaceable(out, "teacher cache (it has cache.json)", |d| d.join("cache.json").exists())?;
    let dir = corpus::atomic::AtomicDir::create(out)?;
    let tmp = dir.path().to_path_buf();
    let (mut dropped, mut positions) = (0.0, 0i64);
    for i in 0..batches {
        let batch = loader.next_batch(teacher.device)?;
        let (b, t) = batch.inputs.tokens.size2().expect("[B, T]");
        let (indices, logprobs) = tch::no_grad(|| {
            let hidden = teacher.hidden(&teacher_inputs(&batch, packing)).reshape([b * t, -1]);
            let mut idx = Vec::new();
            let mut lp = Vec::new();
            let mut start = 0;
            while start < b * t {
                let len = crate::loss::DEFAULT_CHUNK.min(b * t - start);
                let logp = (teacher.logits(&hidden.narrow(0, start, len)) / temperature).log_softmax(-1, Kind::Float);
                let (values, index) = logp.topk(top_k as i64, -1, true, true);
                lp.push(values);
                idx.push(index);
                start += len;
            }
            (Tensor::cat(&idx, 0).view([b, t, -1]), Tensor::cat(&lp, 0).view([b, t, -1]))
        });
        let kept = logprobs.exp().sum_dim_intlist(-1, false, Kind::Double);
        dropped += (kept.neg() + 1.0).sum(Kind::Double).double_value(&[]);
        positions += b * t;
        let cpu = |x: &Tensor| x.to_device(tch::Device::Cpu).contiguous();
        let tensors = [("tokens", cpu(&batch.inputs.tokens)), ("indices", cpu(&indices)), ("logprobs", cpu(&logprobs))];
        Tensor::write_safetensors(&tensors, batch_path(&tmp, i))?;
        progress(i + 1);
    }
    let meta = CacheMeta {
        format_version: FORMAT_VERSION,
        loader: loader.config().clone(),
        mixture: mixture.clone(),
        teacher_packing: packing,
        batches,
        top_k,
        temperature,
        vocab_size: vocab,
        // Rounding can sum the kept probabilities past 1.
        dropped_mass: (dropped / positions.max(1) as f64).max(0.0),
    };
    corpus::atomic::write_json(&tmp.join("cache.json"), &meta)?;
    dir.commit()?;
    Ok(meta)
}

fn batch_path(dir: &Path, i: u64) -> PathBuf {
    dir.join(format!("batch-{i:08}.safetensors"))
}

/// A cache opened for training.
pub struct TeacherCache {
    pub dir: PathBuf,
    pub meta: CacheMeta,
}

/// One micro-batch of a cache, on the student's device, flattened to `[B·T, K]`.
pub struct CachedBatch {
    pub indices: Tensor,
    pub logprobs: Tensor,
}

impl TeacherCache {
    pub fn open(dir: &Path) -> Result<TeacherCache> {
        let path = dir.join("cache.json");
        let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
        let meta: CacheMeta = serde_json::from_str(&text).map_err(|e| Error::format(&path, e.to_string()))?;
        if meta.format_version != FORMAT_VERSION {
            return Err(Error::format(
                &path,
                format!("cache format {} (this build reads {FORMAT_VERSION})", meta.format_version),
            ));
        }
        Ok(TeacherCache { dir: dir.to_path_buf(), meta })
    }

    /// Refuses a run whose batches would not be the cached ones, naming what differs.
    pub fn check(&self, run: &crate::trainer::TrainConfig) -> Result<()> {
        let (loader, mixture, temperature) = (&run.loader, &run.mixture, run.kd.temperature);
        let (batches, vocab) = (run.steps * run.grad_accum, run.model.vocab_size);
        let differs = |what: &str, ours: String, theirs: String| {
            Err(Error::Config(format!(
                "the teacher cache {} was written for another run: {what} is {theirs} there, {ours} here",
                self.dir.display()
            )))
        };
        let (a, b) = (
            serde_json::to_value(loader).unwrap_or_default(),
            serde_json::to_value(&self.meta.loader).unwrap_or_default(),
        );
        if a != b {
            return differs("the loader (seq_len, batch_size, seed, masks)", a.to_string(), b.to_string());
        }
        if *mixture != self.meta.mixture {
            return differs(
                "the mixture",
                format!("{:?}", mixture.weights),
                format!("{:?}", self.meta.mixture.weights),
            );
        }
        if batches > self.meta.batches {
            return differs("the number of micro-batches", batches.to_string(), self.meta.batches.to_string());
        }
        if run.teacher_packing != self.meta.teacher_packing {
            return differs(
                "the teacher's packing",
                format!("{:?}", run.teacher_packing),
                format!("{:?}", self.meta.teacher_packing),
            );
        }
        if temperature != self.meta.temperature {
            return differs("the temperature", temperature.to_string(), self.meta.temperature.to_string());
        }
        if vocab != self.meta.vocab_size {
            return differs("the vocabulary", vocab.to_string(), self.meta.vocab_size.to_string());
        }
        Ok(())
    }

    /// Micro-batch `i`, checked against the tokens the run is about to train on.
    pub fn batch(&self, i: u64, tokens: &Tensor) -> Result<CachedBatch> {
        let path = batch_path(&self.dir, i);
        let tensors = Tensor::read_safetensors(&path)?;
        let get = |name: &str| {
            tensors
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, t)| t.shallow_clone())
                .ok_or_else(|| Error::format(&path, format!("no tensor {name}")))
        };
        let cached_tokens = get("tokens")?;
        if !cached_tokens.to_device(tokens.device()).equal(tokens) {
            return Err(Error::format(&path, "its tokens are not the run's batch: the cache belongs to other data"));
        }
        let k = self.meta.top_k as i64;
        Ok(CachedBatch {
            indices: get("indices")?.view([-1, k]).to_device(tokens.device()),
            logprobs: get("logprobs")?.view([-1, k]).to_device(tokens.device()),
        })
    }
}

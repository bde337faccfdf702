//! Weight merging of checkpoints of one model: a weighted linear average, task arithmetic
//! (a base plus weighted task vectors) and TIES (task vectors trimmed by magnitude, a sign
//! elected per parameter, the agreeing entries averaged). Sums run in float64 and are cast back
//! to each tensor's kind. Tied embeddings are one tensor, so they merge once.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use tch::{Kind, Tensor};

use crate::checkpoint::{self, Lineage, Parent, State};
use crate::model::Llama;
use crate::{Error, Result};

/// How checkpoints are combined.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Method {
    /// Σ wᵢ θᵢ.
    Linear,
    /// θ_base + Σ wᵢ (θᵢ − θ_base).
    TaskArithmetic,
    /// TIES with `density`, the share of each task vector's entries (per tensor, by magnitude,
    /// ties at the threshold kept) kept: the merged task vector is, per entry, Σ wᵢ τ̂ᵢ / Σ wᵢ over the tasks whose trimmed
    /// entry τ̂ᵢ is non-zero and has the elected sign, sign(Σ wᵢ τ̂ᵢ) (mergekit's convention).
    Ties { density: f64 },
}

impl Method {
    /// The name recorded in the lineage.
    pub fn name(self) -> &'static str {
        match self {
            Method::Linear => "linear",
            Method::TaskArithmetic => "task-arithmetic",
            Method::Ties { .. } => "ties",
        }
    }
}

/// One checkpoint read for merging.
struct Input {
    dir: PathBuf,
    state: State,
    tensors: BTreeMap<String, Tensor>,
    tokenizer: Vec<u8>,
}

fn read(path: &Path) -> Result<Input> {
    let dir = checkpoint::resolve(path)?;
    let state = checkpoint::read_state(&dir)?;
    let tensors = checkpoint::read_tensors(&dir.join("model.safetensors"))?;
    let tokenizer_path = dir.join("tokenizer.json");
    let tokenizer = std::fs::read(&tokenizer_path).map_err(|e| Error::io(&tokenizer_path, e))?;
    Ok(Input { dir, state, tensors, tokenizer })
}

/// Checks that `other` can merge with `first`: same model config, tokenizer, tensor names and
/// shapes; the error names the field or tensor.
fn check_compatible(first: &Input, other: &Input) -> Result<()> {
    let (a, b) = (&first.state.config.model, &other.state.config.model);
    if a != b {
        return Err(Error::Config(format!(
            "{} and {} are different models ({})",
            first.dir.display(),
            other.dir.display(),
            crate::config::first_difference(a, b)
        )));
    }
    if first.tokenizer != other.tokenizer {
        return Err(Error::Config(format!(
            "{} and {} have different tokenizers (tokenizer.json differs)",
            first.dir.display(),
            other.dir.display()
        )));
    }
    for (name, t) in &first.tensors {
        match other.tensors.get(name) {
            None => return Err(Error::Config(format!("{}: tensor {name} is missing", other.dir.display()))),
            Some(u) if u.size() != t.size() => {
                return Err(Error::Config(format!(
                    "{}: tensor {name} has shape {:?}, {} has {:?}",
                    other.dir.display(),
                    u.size(),
                    first.dir.display(),
                    t.size()
                )));
            }
            Some(_) => {}
        }
    }
    if let Some(extra) = other.tensors.keys().find(|n| !first.tensors.contains_key(*n)) {
        return Err(Error::Config(format!(
            "{}: tensor {extra} is not in {}",
            other.dir.display(),
            first.dir.display()
        )));
    }
    Ok(())
}

/// Keeps the entries of `t` whose magnitude reaches the k-th largest, k = ⌈density · n⌉: all
/// entries tied at the threshold are kept, so the result does not depend on an arbitrary order
/// (Adam's first updates make many task-vector entries exactly equal in size).
fn trim(t: &Tensor, density: f64) -> Tensor {
    let n = t.numel() as i64;
    let k = ((density * n as f64).ceil() as i64).clamp(1, n.max(1));
    if k >= n {
        return t.shallow_clone();
    }
    let magnitude = t.abs();
    let (top, _) = magnitude.flatten(0, -1).topk(k, 0, true, true);
    let threshold = top.double_value(&[k - 1]);
    t * magnitude.ge(threshold).to_kind(t.kind())
}

/// Merges one tensor; `tensors` are float64.
fn merge_tensor(method: Method, tensors: &[Tensor], weights: &[f64], base: Option<&Tensor>) -> Tensor {
    match (method, base) {
        (Method::Linear, _) | (_, None) => {
            let mut acc = Tensor::zeros_like(&tensors[0]);
            for (t, w) in tensors.iter().zip(weights) {
                acc += t * *w;
            }
            acc
        }
        (Method::TaskArithmetic, Some(base)) => {
            let mut acc = base.copy();
            for (t, w) in tensors.iter().zip(weights) {
                acc += (t - base) * *w;
            }
            acc
        }
        (Method::Ties { density }, Some(base)) => {
            let weighted: Vec<Tensor> =
                tensors.iter().zip(weights).map(|(t, w)| trim(&(t - base), density) * *w).collect();
            let mut total = Tensor::zeros_like(base);
            for w in &weighted {
                total += w;
            }
            let sign = total.sign();
            let (mut num, mut den) = (Tensor::zeros_like(base), Tensor::zeros_like(base));
            for (wt, w) in weighted.iter().zip(weights) {
                let agree = wt.sign().eq_tensor(&sign).logical_and(&wt.ne(0.0)).to_kind(Kind::Double);
                num += wt * &agree;
                den += agree * *w;
            }
            let merged = num / den.where_scalarother(&den.ne(0.0), 1.0);
            base + merged
        }
    }
}

/// Checkpoints read once and checked, to be merged with any weights (a weight search merges
/// many times).
pub struct Merger {
    inputs: Vec<Input>,
    base: Option<Input>,
    method: Method,
}

impl Merger {
    /// Reads and checks the checkpoints (and the base the method needs).
    pub fn open(checkpoints: &[PathBuf], method: Method, base: Option<&Path>) -> Result<Merger> {
        if checkpoints.is_empty() {
            return Err(Error::Config("nothing to merge: give at least one checkpoint".into()));
        }
        if let Method::Ties { density } = method
            && !(density > 0.0 && density <= 1.0)
        {
            return Err(Error::Config(format!("TIES density {density} must be in (0, 1]")));
        }
        let base = match (base, matches!(method, Method::Linear)) {
            (Some(b), false) => Some(read(b)?),
            (None, false) => {
                return Err(Error::Config(format!("{} needs --base CKPT (the common ancestor)", method.name())));
            }
            (_, true) => None,
        };
        let inputs: Vec<Input> = checkpoints.iter().map(|p| read(p)).collect::<Result<_>>()?;
        for other in inputs.iter().skip(1).chain(base.as_ref()) {
            check_compatible(&inputs[0], other)?;
        }
        Ok(Merger { inputs, base, method })
    }

    /// How many checkpoints are merged.
    pub fn len(&self) -> usize {
        self.inputs.len()
    }

    /// Whether there is nothing to merge (never, once opened).
    pub fn is_empty(&self) -> bool {
        self.inputs.is_empty()
    }

    /// The merged weights, each tensor cast back to its kind.
    pub fn tensors(&self, weights: &[f64]) -> Result<BTreeMap<String, Tensor>> {
        if weights.len() != self.inputs.len() {
            return Err(Error::Config(format!(
                "{} checkpoints need as many weights, got {}",
                self.inputs.len(),
                weights.len()
            )));
        }
        if let Some(w) = weights.iter().find(|w| !w.is_finite()) {
            return Err(Error::Config(format!("merge weight {w} is not a number")));
        }
        let mut merged = BTreeMap::new();
        tch::no_grad(|| {
            for (name, first) in &self.inputs[0].tensors {
                let tensors: Vec<Tensor> = self.inputs.iter().map(|i| i.tensors[name].to_kind(Kind::Double)).collect();
                let b = self.base.as_ref().map(|b| b.tensors[name].to_kind(Kind::Double));
                merged.insert(
                    name.clone(),
                    merge_tensor(self.method, &tensors, weights, b.as_ref()).to_kind(first.kind()),
                );
            }
        });
        Ok(merged)
    }

    /// The merged model, ready to evaluate.
    pub fn model(&self, weights: &[f64], device: tch::Device) -> Result<Llama> {
        let model = Llama::new(self.inputs[0].state.config.model.clone(), device, 0, false)?;
        model.params.load(&self.tensors(weights)?, "the merged weights")?;
        Ok(model)
    }

    /// The shards the first checkpoint was trained on, as recorded.
    pub fn shards(&self) -> &Path {
        &self.inputs[0].state.config.shards
    }

    /// Writes the merge as an ordinary checkpoint run in `out` (`out/checkpoints/
    /// step-00000000`, `latest`): eval, export and `train --init` read it. Returns its step
    /// directory.
    pub fn write(&self, weights: &[f64], out: &Path) -> Result<PathBuf> {
        let model = self.model(weights, tch::Device::Cpu)?;
        let mut state = self.inputs[0].state.clone();
        state.step = 0;
        state.tokens_seen = 0;
        state.config.phase = "merge".into();
        let mut parents: Vec<Parent> =
            self.inputs.iter().zip(weights).map(|(i, w)| Parent::of(&i.dir, Some(*w))).collect::<Result<_>>()?;
        if let Some(b) = &self.base {
            parents.push(Parent::of(&b.dir, None)?);
        }
        state.config.init = Some(Lineage { parents, method: Some(self.method.name().to_string()) });
        let tokenizer = self.inputs[0].dir.join("tokenizer.json");
        std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
        checkpoint::save(out, &state, &model, None, &tokenizer)
    }
}

//! Checkpoints: a directory per step holding the weights (`model.safetensors`, HF names),
//! the optimizer moments (`optimizer.safetensors`), `state.json` (configs, step, loader
//! position) and the tokenizer. A checkpoint is written under a temporary name and renamed
//! into place, then `latest` is updated atomically, so a killed run always finds a whole one.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tch::Tensor;

use crate::data::LoaderState;
use crate::model::Llama;
use crate::optim::AdamW;
use crate::trainer::TrainConfig;
use crate::{Error, Result};

pub const FORMAT_VERSION: u32 = 1;

/// `state.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct State {
    pub format_version: u32,
    pub step: u64,
    pub tokens_seen: u64,
    pub config: TrainConfig,
    pub loader: LoaderState,
}

pub fn step_dir(run: &Path, step: u64) -> PathBuf {
    run.join("checkpoints").join(format!("step-{step:08}"))
}

/// Writes a checkpoint of `model` (and `optim`, when training) and points `latest` at it.
pub fn save(run: &Path, state: &State, model: &Llama, optim: Option<&AdamW>, tokenizer: &Path) -> Result<PathBuf> {
    let dir = step_dir(run, state.step);
    let parent = dir.parent().expect("a step dir has a parent");
    std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
    let tmp = parent.join(format!(".tmp-step-{:08}", state.step));
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).map_err(|e| Error::io(&tmp, e))?;
    }
    std::fs::create_dir_all(&tmp).map_err(|e| Error::io(&tmp, e))?;
    save_weights(model, &tmp.join("model.safetensors"))?;
    if let Some(optim) = optim {
        let mut named: Vec<(String, Tensor)> = Vec::new();
        for (i, (m, v)) in optim.m.iter().zip(&optim.v).enumerate() {
            named.push((format!("m.{i}"), m.shallow_clone()));
            named.push((format!("v.{i}"), v.shallow_clone()));
        }
        named.push(("step".into(), Tensor::from_slice(&[optim.step as i64])));
        Tensor::write_safetensors(&named, tmp.join("optimizer.safetensors"))?;
    }
    let json = serde_json::to_vec_pretty(state).map_err(|e| Error::Data(format!("serializing state: {e}")))?;
    std::fs::write(tmp.join("state.json"), json).map_err(|e| Error::io(&tmp, e))?;
    std::fs::copy(tokenizer, tmp.join("tokenizer.json")).map_err(|e| Error::io(tokenizer, e))?;
    if dir.exists() {
        std::fs::remove_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
    }
    std::fs::rename(&tmp, &dir).map_err(|e| Error::io(&dir, e))?;
    let name = dir.file_name().expect("named").to_string_lossy().into_owned();
    corpus::atomic::write_file(&parent.join("latest"), name.as_bytes())?;
    Ok(dir)
}

/// Writes the model's weights under their HF names.
pub fn save_weights(model: &Llama, path: &Path) -> Result<()> {
    let named: Vec<(String, Tensor)> =
        model.params.named().iter().map(|(n, t)| (n.clone(), t.detach().to_device(tch::Device::Cpu))).collect();
    Tensor::write_safetensors(&named, path)?;
    Ok(())
}

/// The checkpoint directory a path names: a step directory itself, or a run directory
/// (its `checkpoints/latest`).
pub fn resolve(path: &Path) -> Result<PathBuf> {
    if path.join("state.json").exists() {
        return Ok(path.to_path_buf());
    }
    let latest = path.join("checkpoints").join("latest");
    match std::fs::read_to_string(&latest) {
        Ok(name) => Ok(path.join("checkpoints").join(name.trim())),
        Err(_) => Err(Error::Data(format!(
            "{} is not a checkpoint: it has no state.json and no checkpoints/latest",
            path.display()
        ))),
    }
}

pub fn read_state(dir: &Path) -> Result<State> {
    let path = dir.join("state.json");
    let bytes = std::fs::read(&path).map_err(|e| Error::io(&path, e))?;
    let state: State = serde_json::from_slice(&bytes).map_err(|e| Error::format(&path, e.to_string()))?;
    if state.format_version != FORMAT_VERSION {
        return Err(Error::format(
            &path,
            format!("format version {} (this build reads {FORMAT_VERSION})", state.format_version),
        ));
    }
    Ok(state)
}

/// Named tensors of a safetensors file.
pub fn read_tensors(path: &Path) -> Result<BTreeMap<String, Tensor>> {
    if !path.exists() {
        return Err(Error::Data(format!("{} does not exist", path.display())));
    }
    Ok(Tensor::read_safetensors(path)?.into_iter().collect())
}

/// Loads the optimizer moments saved with a checkpoint into `optim`.
pub fn load_optimizer(dir: &Path, optim: &mut AdamW) -> Result<()> {
    let path = dir.join("optimizer.safetensors");
    let tensors = read_tensors(&path)?;
    let get = |name: &str| tensors.get(name).ok_or_else(|| Error::format(&path, format!("{name} is missing")));
    tch::no_grad(|| -> Result<()> {
        for i in 0..optim.m.len() {
            optim.m[i].copy_(get(&format!("m.{i}"))?);
            optim.v[i].copy_(get(&format!("v.{i}"))?);
        }
        Ok(())
    })?;
    optim.step = get("step")?.int64_value(&[0]) as u64;
    Ok(())
}

/// Deletes all but the newest `keep` step directories.
pub fn prune(run: &Path, keep: usize) -> Result<()> {
    let dir = run.join("checkpoints");
    let mut steps: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map_err(|e| Error::io(&dir, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("step-")))
        .collect();
    steps.sort();
    for old in steps.iter().rev().skip(keep.max(1)) {
        std::fs::remove_dir_all(old).map_err(|e| Error::io(old, e))?;
    }
    Ok(())
}

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
    // Built beside its final name, every file synced, then renamed into place.
    let building = corpus::atomic::AtomicDir::create(&dir)?;
    let tmp = building.path();
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
    std::fs::write(tmp.join("state.json"), json).map_err(|e| Error::io(tmp, e))?;
    std::fs::copy(tokenizer, tmp.join("tokenizer.json")).map_err(|e| Error::io(tokenizer, e))?;
    building.commit()?;
    let parent = dir.parent().expect("a step dir has a parent");
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
    // The version first: a newer layout is refused by its version, not by a missing field.
    #[derive(Deserialize)]
    struct Version {
        format_version: u32,
    }
    let version: Version = serde_json::from_slice(&bytes).map_err(|e| Error::format(&path, e.to_string()))?;
    if version.format_version != FORMAT_VERSION {
        return Err(Error::format(
            &path,
            format!("format version {} (this build reads {FORMAT_VERSION})", version.format_version),
        ));
    }
    serde_json::from_slice(&bytes).map_err(|e| Error::format(&path, e.to_string()))
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
    let check = |name: String, into: &Tensor| -> Result<Tensor> {
        let t = get(&name)?;
        if t.size() != into.size() {
            return Err(Error::format(
                &path,
                format!("{name} has shape {:?}, the model's optimizer state needs {:?}", t.size(), into.size()),
            ));
        }
        Ok(t.shallow_clone())
    };
    tch::no_grad(|| -> Result<()> {
        for i in 0..optim.m.len() {
            let (m, v) = (check(format!("m.{i}"), &optim.m[i])?, check(format!("v.{i}"), &optim.v[i])?);
            optim.m[i].copy_(&m);
            optim.v[i].copy_(&v);
        }
        Ok(())
    })?;
    let step = get("step")?;
    if step.numel() != 1 {
        return Err(Error::format(&path, format!("step has {} values, not 1", step.numel())));
    }
    optim.step = step.int64_value(&[0]) as u64;
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

/// Where a run's first weights came from (`train --init`, `merge`): the parent checkpoints
/// with their fingerprints, and how they were combined.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Lineage {
    /// The checkpoints (step or Hugging Face directories) the weights came from.
    pub parents: Vec<Parent>,
    /// How several parents were combined (`linear`, `task-arithmetic`, `ties`); absent for one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
}

/// One parent of a run's weights.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Parent {
    /// The step directory (or HF directory) as it was when the run started.
    pub path: PathBuf,
    /// xxh3-64 (hex) of its weights file.
    pub weights_xxh3: String,
    /// The phase that produced it, when it is a mixforge checkpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
    /// Its weight in a merge.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<f64>,
}

impl Parent {
    /// Describes the checkpoint at `path` (a run, step or HF directory).
    pub fn of(path: &Path, weight: Option<f64>) -> Result<Parent> {
        let dir = if path.join("config.json").exists() && !path.join("state.json").exists() {
            path.to_path_buf()
        } else {
            resolve(path)?
        };
        let weights = dir.join("model.safetensors");
        // Streamed: a 1B model's weights are gigabytes.
        let mut file = std::fs::File::open(&weights).map_err(|e| Error::io(&weights, e))?;
        let mut hasher = xxhash_rust::xxh3::Xxh3::new();
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = std::io::Read::read(&mut file, &mut buf).map_err(|e| Error::io(&weights, e))?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
        }
        let phase = read_state(&dir).ok().map(|s| s.config.phase);
        let dir = std::path::absolute(&dir).unwrap_or(dir);
        Ok(Parent { path: dir, weights_xxh3: format!("{:016x}", hasher.digest()), phase, weight })
    }
}

/// How a run finds an input (its shards, its teacher) again after the run or the input moved:
/// the path relative to the run directory, and a fingerprint to check that what is found
/// there is what the run started with.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct InputRef {
    /// The input's path relative to the run directory, when one exists.
    #[serde(default)]
    pub relative: Option<PathBuf>,
    /// xxh3-64 (hex) of the input's description file (`manifest.json`, `state.json` or `config.json`).
    #[serde(default)]
    pub xxh3: Option<String>,
}

impl InputRef {
    /// The reference of `input` as seen from `run`.
    pub fn of(input: &Path, run: &Path) -> InputRef {
        InputRef { relative: relative_to(input, run), xxh3: fingerprint(input) }
    }
}

/// The fingerprint of an input directory: xxh3-64 of the file that describes it (a shard
/// manifest, a checkpoint's state, a Hugging Face config).
pub fn fingerprint(input: &Path) -> Option<String> {
    let dir = resolve(input).unwrap_or_else(|_| input.to_path_buf());
    ["manifest.json", "state.json", "config.json"]
        .iter()
        .find_map(|name| std::fs::read(dir.join(name)).ok())
        .map(|bytes| format!("{:016x}", xxhash_rust::xxh3::xxh3_64(&bytes)))
}

/// `path` relative to `base` (both made absolute), e.g. `../data/shards`.
pub fn relative_to(path: &Path, base: &Path) -> Option<PathBuf> {
    let (path, base) = (std::path::absolute(path).ok()?, std::path::absolute(base).ok()?);
    let (p, b): (Vec<_>, Vec<_>) = (path.components().collect(), base.components().collect());
    let common = p.iter().zip(&b).take_while(|(x, y)| x == y).count();
    if common == 0 {
        return None;
    }
    let mut rel = PathBuf::new();
    b[common..].iter().for_each(|_| rel.push(".."));
    p[common..].iter().for_each(|c| rel.push(c));
    Some(rel)
}

/// Where an input of the run in `run` is now: at `recorded`, or at its path relative to the
/// run (a run moved together with its data); what is found must have the recorded
/// fingerprint. Says so when the input moved; an error names both places and what to pass.
pub fn locate(run: &Path, recorded: &Path, reference: &InputRef, flag: &str) -> Result<PathBuf> {
    let mut candidates = vec![recorded.to_path_buf()];
    candidates.extend(reference.relative.as_ref().map(|r| run.join(r)));
    let mut changed = None;
    for candidate in &candidates {
        if !candidate.exists() {
            continue;
        }
        if reference.xxh3.is_some() && fingerprint(candidate) != reference.xxh3 {
            changed = Some(candidate.clone());
            continue;
        }
        if candidate != recorded {
            eprintln!("note: {flag} moved: using {} (recorded at {})", candidate.display(), recorded.display());
        }
        return Ok(candidate.clone());
    }
    Err(Error::Data(match changed {
        Some(c) => format!(
            "the {flag} at {} are not the ones this run was trained on (their fingerprint changed); pass --{flag} \
             with the original data",
            c.display()
        ),
        None => format!(
            "the run's {flag} are gone: not at {}{}; if they moved, pass --{flag} PATH",
            recorded.display(),
            reference.relative.as_ref().map(|r| format!(" nor at {} from the run", r.display())).unwrap_or_default()
        ),
    }))
}

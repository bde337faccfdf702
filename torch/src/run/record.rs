//! Stage records: hashing what a stage read and wrote, saving the record, and the run card's
//! facts about the machine and the source.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;

use anyhow::{Context, Result, bail};
use reports::stages::{StageRecord, Status};
use xxhash_rust::xxh3::Xxh3;

use super::{STAGES, Stage, stages};
use crate::recipe::Recipe;

/// xxh3-128 as 32 hex digits.
pub struct Hasher;

impl Hasher {
    /// Of bytes.
    pub fn bytes(bytes: &[u8]) -> String {
        format!("{:032x}", xxhash_rust::xxh3::xxh3_128(bytes))
    }

    /// Of a value's JSON (struct fields in declaration order, maps sorted): a recipe section.
    pub fn json<T: serde::Serialize>(value: &T) -> String {
        Self::bytes(&serde_json::to_vec(value).expect("recipe sections serialize"))
    }

    /// Of a file's bytes, streamed.
    pub fn file(path: &Path) -> Result<String> {
        let mut file = std::fs::File::open(path).with_context(|| format!("reading {}", path.display()))?;
        let mut hasher = Xxh3::new();
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = file.read(&mut buf).with_context(|| format!("reading {}", path.display()))?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
        }
        Ok(format!("{:032x}", hasher.digest128()))
    }
}

/// What `stage` reads now: each upstream stage's outputs digest, and the bytes of each input
/// file outside the run (corpus sources, evaluation sets, task files, a given tokenizer).
pub fn inputs(run: &Path, stage: &Stage, recipe: &Recipe) -> Result<BTreeMap<String, String>> {
    let mut inputs = BTreeMap::new();
    for dep in stage.reads {
        if !stages::enabled(dep, recipe) {
            continue;
        }
        let upstream = STAGES.iter().find(|s| s.name == *dep).expect("a known stage");
        match reports::stages::read_record(run, upstream.name)? {
            // The report shows the records themselves (wall times, metrics): any new record
            // is new input to it.
            Some(r) if r.status == Status::Done && stage.name == "report" => {
                let path = reports::stages::dir(run).join(format!("{dep}.json"));
                inputs.insert(format!("stage:{dep}"), Hasher::file(&path)?);
            }
            Some(r) if r.status == Status::Done => {
                inputs.insert(format!("stage:{dep}"), r.outputs_digest);
            }
            _ => bail!("stage {} reads stage {dep}, which has not finished", stage.name),
        }
    }
    // The report shows the run card too.
    if stage.name == "report" {
        let card = reports::stages::dir(run).join("run.json");
        inputs.insert("stages/run.json".to_string(), Hasher::file(&card)?);
    }
    for path in stages::external_inputs(stage.name, recipe)? {
        inputs.insert(path.display().to_string(), Hasher::file(&path)?);
    }
    Ok(inputs)
}

/// The key a finished stage must match to be skipped.
pub fn input_key(section_hash: &str, inputs: &BTreeMap<String, String>) -> String {
    Hasher::json(&(section_hash, inputs))
}

/// Every file under `run/owns` (a directory or one file), relative to the run, with its hash.
pub fn hash_outputs(run: &Path, owns: &str) -> Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![run.join(owns)];
    while let Some(path) = stack.pop() {
        if path.is_dir() {
            for entry in std::fs::read_dir(&path).with_context(|| format!("listing {}", path.display()))? {
                stack.push(entry?.path());
            }
        } else if path.is_file() {
            let rel = path.strip_prefix(run).unwrap_or(&path).to_string_lossy().replace('\\', "/");
            out.insert(rel, Hasher::file(&path)?);
        }
    }
    Ok(out)
}

/// One hash over a stage's outputs.
pub fn digest(outputs: &BTreeMap<String, String>) -> String {
    Hasher::json(outputs)
}

/// Whether every file a finished stage wrote is still there with the bytes it wrote (files
/// added beside them are not its outputs and do not count).
pub fn outputs_intact(run: &Path, record: &StageRecord) -> Result<bool> {
    for (rel, hash) in &record.outputs {
        let path = run.join(rel);
        if !path.is_file() || Hasher::file(&path)? != *hash {
            return Ok(false);
        }
    }
    Ok(!record.outputs.is_empty())
}

/// Writes `RUN/stages/<stage>.json` atomically.
pub fn save(run: &Path, record: &StageRecord) -> Result<()> {
    let path = reports::stages::dir(run).join(format!("{}.json", record.stage));
    corpus::atomic::write_json(&path, record).with_context(|| format!("writing {}", path.display()))
}

/// The commit of the checkout this binary was built from, and whether it has uncommitted
/// changes; `None` when that checkout or git is not there.
pub fn git_state() -> (Option<String>, Option<bool>) {
    let source = env!("CARGO_MANIFEST_DIR");
    let git = |args: &[&str]| {
        std::process::Command::new("git")
            .arg("-C")
            .arg(source)
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    let commit = git(&["rev-parse", "HEAD"]);
    let dirty = commit.as_ref().and(git(&["status", "--porcelain", "--untracked-files=no"])).map(|s| !s.is_empty());
    (commit, dirty)
}

/// CPU model, cores and memory, from /proc where it exists.
pub fn hardware() -> BTreeMap<String, String> {
    let mut hw = BTreeMap::new();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    hw.insert("cores".to_string(), cores.to_string());
    hw.insert("os".to_string(), format!("{} {}", std::env::consts::OS, std::env::consts::ARCH));
    if let Ok(cpu) = std::fs::read_to_string("/proc/cpuinfo")
        && let Some(model) = cpu.lines().find_map(|l| {
            l.strip_prefix("model name").and_then(|r| r.split_once(':')).map(|(_, m)| m.trim().to_string())
        })
    {
        hw.insert("cpu".to_string(), model);
    }
    if let Ok(mem) = std::fs::read_to_string("/proc/meminfo")
        && let Some(kb) = mem
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|r| r.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
    {
        hw.insert("memory".to_string(), format!("{:.1} GiB", kb as f64 / (1 << 20) as f64));
    }
    hw
}

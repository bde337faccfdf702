//! The per-shard finish of a sharded run. `corpus reduce --finish-by-shard` decides every
//! document's fate and plans the kept files; then task I of N (`corpus finish --out DIR --shard
//! I/N`) reads its own input files again and writes its slice of every kept file, compressed,
//! and its examples; `corpus finish --out DIR` merges the slices into `kept/`, `examples.jsonl`
//! and `manifest.json`: the single-process run's bytes, as the plain reduce writes them. The
//! kept-writing pass (a second read of the corpus and its compression) is spread over the
//! tasks as the first pass is; the merge copies encoded row groups and compresses only the row
//! groups two tasks share.
//!
//! Under the run directory:
//! - `parts/finish.bin`: the plan — every kept file's cut into row groups and each task's
//!   slice of it ([`Slices`]), the manifest without its kept files, and the plan's id (a hash
//!   of the versions, the settings and every task's verdicts). Written last by the reduce; every
//!   reduce first removes an earlier one's plan, verdicts and `kept-parts/`.
//! - `parts/verdicts-IIIII-of-NNNNN.bin`: task I's input stamps (as the reduce saw them), kept
//!   document ids and examples to capture.
//! - `kept-parts/IIIII-of-NNNNN/`: task I's `<domain>.groups.parquet` and
//!   `<domain>.edges.parquet` (see [`crate::kept::split`]) and `done.json`, its completion
//!   record, naming the plan it was made for and the files with their sizes. The merge removes
//!   `kept-parts/`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::{Deserialize, Serialize};

use super::parts::{self, Shard};
use super::{Example, Manifest, Progress, Run, RunReport, Unit, first_pass_kept, remove_stale_kept, write_examples};
use crate::atomic;
use crate::config::PipelineConfig;
use crate::error::{Error, IoContext, Result};
use crate::ids::DocId;
use crate::ingest::{InputFile, Item};
use crate::kept::split::{self, SliceWriter, Slices};
use crate::profile::DocRecord;

/// Version of the plan, verdict and done files.
const FINISH_FORMAT_VERSION: u32 = 1;

/// `parts/finish.bin`.
#[derive(Serialize, Deserialize)]
struct Plan {
    format_version: u32,
    shards: u32,
    id: u64,
    /// Every domain with kept documents, and how its file is cut and split.
    domains: BTreeMap<String, Slices>,
    /// `manifest.json` but for the kept files and their timing, as JSON.
    manifest: String,
}

/// `parts/verdicts-IIIII-of-NNNNN.bin`: what one task needs of the reduce's verdicts.
#[derive(Default, Serialize, Deserialize)]
struct Verdicts {
    plan: u64,
    /// The task's input files as the reduce saw them: a task refuses to read changed ones.
    inputs: Vec<parts::Stamp>,
    /// Kept documents of the task's files, ascending.
    kept: Vec<DocId>,
    /// Documents of its files shown in `examples.jsonl`: id, domain, reason.
    picked: Vec<(DocId, String, String)>,
}

/// `kept-parts/IIIII-of-NNNNN/done.json`.
#[derive(Serialize, Deserialize)]
struct Done {
    plan: u64,
    /// The files the task wrote beside it, with their sizes.
    files: Vec<(String, u64)>,
    kept: u64,
    seconds: f64,
    examples: Vec<Example>,
}

fn plan_path(out: &Path) -> PathBuf {
    out.join("parts").join("finish.bin")
}

fn verdicts_path(out: &Path, shard: Shard) -> PathBuf {
    out.join("parts").join(format!("verdicts-{:05}-of-{:05}.bin", shard.index, shard.count))
}

fn task_dir(out: &Path, shard: Shard) -> PathBuf {
    out.join("kept-parts").join(format!("{:05}-of-{:05}", shard.index, shard.count))
}

/// Removes what a finish of an earlier reduce left (its plan, verdicts and task outputs); with
/// `by_shard`, also the outputs the merge will write, so nothing stale stands in for them.
pub(super) fn clear(out: &Path, by_shard: bool) -> Result<()> {
    let parts_dir = out.join("parts");
    for entry in std::fs::read_dir(&parts_dir).at(&parts_dir)? {
        let path = entry.at(&parts_dir)?.path();
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        if name == "finish.bin" || name.starts_with("verdicts-") {
            atomic::remove_if_present(&path)?;
        }
    }
    let task_dirs = out.join("kept-parts");
    if task_dirs.is_dir() {
        std::fs::remove_dir_all(&task_dirs).at(&task_dirs)?;
    }
    if by_shard {
        // Until the merge writes them, no manifest says this directory is a finished run, and
        // no earlier run's kept files stand in for this one's.
        atomic::remove_if_present(&out.join("manifest.json"))?;
        atomic::remove_if_present(&out.join("examples.jsonl"))?;
        let kept = out.join("kept");
        if kept.is_dir() {
            remove_stale_kept(&kept, &BTreeMap::new())?;
        }
    }
    Ok(())
}

fn encode<T: Serialize>(value: &T, path: &Path) -> Result<Vec<u8>> {
    postcard::to_stdvec(value)
        .map_err(|e| Error::Corrupt { path: path.to_path_buf(), reason: format!("encoding: {e}") })
}

/// A plan whose verdict files are written; [`PendingPlan::write`] completes it with the manifest.
pub(super) struct PendingPlan {
    shards: u32,
    id: u64,
    domains: BTreeMap<String, Slices>,
}

/// Splits the verdicts of `records` (every document, in id order) by task and plans the kept
/// files; writes each task's verdicts.
pub(super) fn plan(
    run: &Run,
    records: &[DocRecord],
    picked: &BTreeMap<DocId, (String, String)>,
    shards: u32,
) -> Result<PendingPlan> {
    let out = &run.config.out;
    let stamps = parts::stamps(&run.files)?;
    let mut shard_of_file = vec![0; run.files.len()];
    let mut verdicts: Vec<Verdicts> = (0..shards).map(|_| Verdicts::default()).collect();
    for index in 0..shards {
        for file in (Shard { index, count: shards }).files(run.files.len()) {
            shard_of_file[file as usize] = index as usize;
            verdicts[index as usize].inputs.push(stamps[file as usize].clone());
        }
    }
    let mut lens: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    let mut rows: BTreeMap<&str, Vec<u64>> = BTreeMap::new();
    for r in records {
        let task = shard_of_file[r.id.file().0 as usize];
        if let Some((domain, reason)) = picked.get(&r.id) {
            verdicts[task].picked.push((r.id, domain.clone(), reason.clone()));
        }
        if r.drop.is_none() {
            let domain = run.domain_of(r.source);
            lens.entry(domain).or_default().push(r.bytes as usize);
            rows.entry(domain).or_insert_with(|| vec![0; shards as usize])[task] += 1;
            verdicts[task].kept.push(r.id);
        }
    }
    let domains: BTreeMap<String, Slices> = lens
        .into_iter()
        .map(|(domain, lens)| {
            let mut start = 0;
            let slices = rows[domain]
                .iter()
                .map(|&n| {
                    start += n;
                    (start - n, n)
                })
                .collect();
            (domain.to_string(), Slices { pieces: crate::kept::layout(lens), slices })
        })
        .collect();
    // The id changes with anything a task's output depends on: the writer's version, settings,
    // inputs (in the verdicts), verdicts.
    let mut hasher = xxhash_rust::xxh3::Xxh3::new();
    let versions =
        format!("{} {FINISH_FORMAT_VERSION} {}", env!("CARGO_PKG_VERSION"), crate::kept::KEPT_FORMAT_VERSION);
    hasher.update(versions.as_bytes());
    let settings_path = out.join("parts").join("config.json");
    hasher.update(&std::fs::read(&settings_path).at(&settings_path)?);
    hasher.update(&encode(&domains, out)?);
    for v in &verdicts {
        hasher.update(&encode(v, out)?);
    }
    let id = hasher.digest();
    for (index, mut v) in verdicts.into_iter().enumerate() {
        v.plan = id;
        let path = verdicts_path(out, Shard { index: index as u32, count: shards });
        atomic::write_file(&path, &encode(&v, &path)?)?;
    }
    Ok(PendingPlan { shards, id, domains })
}

impl PendingPlan {
    /// Writes `parts/finish.bin`, the reduce's last output.
    pub(super) fn write(self, out: &Path, manifest: &Manifest) -> Result<()> {
        let plan = Plan {
            format_version: FINISH_FORMAT_VERSION,
            shards: self.shards,
            id: self.id,
            domains: self.domains,
            manifest: serde_json::to_string(manifest).expect("a manifest serializes"),
        };
        let path = plan_path(out);
        atomic::write_file(&path, &encode(&plan, &path)?)
    }
}

fn read_plan(out: &Path, shards: u32) -> Result<Plan> {
    let path = plan_path(out);
    let bytes = std::fs::read(&path).map_err(|_| Error::Config {
        field: "out".into(),
        reason: format!(
            "{} has no finish plan: run `mixforge corpus reduce --out {} --finish-by-shard` first",
            out.display(),
            out.display()
        ),
    })?;
    let plan: Plan = postcard::from_bytes(&bytes)
        .map_err(|e| Error::Corrupt { path: path.clone(), reason: format!("{e}; rerun the reduce") })?;
    if plan.format_version != FINISH_FORMAT_VERSION || plan.shards != shards {
        return Err(Error::Corrupt {
            path,
            reason: format!("plan format {} for {} shards; rerun the reduce", plan.format_version, plan.shards),
        });
    }
    Ok(plan)
}

fn read_done(out: &Path, shard: Shard) -> Option<Done> {
    serde_json::from_slice(&std::fs::read(task_dir(out, shard).join("done.json")).ok()?).ok()
}

/// What one finish task did.
#[derive(Debug, Clone)]
pub struct TaskReport {
    /// Which task.
    pub shard: Shard,
    /// Whether its output for this plan was already there.
    pub already_done: bool,
    /// Kept documents it wrote.
    pub kept: u64,
    /// Row groups it encodes (those wholly in its slices).
    pub groups: usize,
    /// Rows it leaves to the merge (of row groups it shares with a neighbour).
    pub edge_rows: usize,
    /// Where.
    pub dir: PathBuf,
}

/// `corpus finish --out DIR --shard I/N`: task I's slice of every kept file and its examples.
/// A task whose output for the current plan is all there does nothing.
pub fn run_task(out: &Path, shard: Shard, progress: &dyn Progress) -> Result<TaskReport> {
    let (mut config, count, _) = parts::load_settings(out)?;
    if shard.count != count {
        return Err(Error::Config {
            field: "shard".into(),
            reason: format!("{} was set up for {count} shards (parts/config.json), not {}", out.display(), shard.count),
        });
    }
    let plan = read_plan(out, count)?;
    let dir = task_dir(out, shard);
    let (groups, edge_rows) = split::planned(&plan.domains, shard.index as usize);
    if let Some(done) = read_done(out, shard).filter(|d| d.plan == plan.id && files_intact(&dir, &d.files)) {
        return Ok(TaskReport { shard, already_done: true, kept: done.kept, groups, edge_rows, dir });
    }
    let path = verdicts_path(out, shard);
    let verdicts: Verdicts = postcard::from_bytes(&std::fs::read(&path).at(&path)?)
        .ok()
        .filter(|v: &Verdicts| v.plan == plan.id)
        .ok_or_else(|| Error::Corrupt {
            path: path.clone(),
            reason: "not the plan's verdicts; rerun the reduce".into(),
        })?;
    // The task reads its files again: they must be the ones the reduce decided on.
    config.decontam = None;
    let run = Run::new(&config, progress)?;
    let files: Vec<&InputFile> = run.files.iter().filter(|f| shard.takes(f, run.files.len())).collect();
    if let Some(what) = parts::first_change(&parts::stamps(files.iter().copied())?, &verdicts.inputs) {
        return Err(Error::Corrupt {
            path: path.clone(),
            reason: format!("{what} since the reduce; rerun part {shard}, the reduce, then this task"),
        });
    }
    let started = Instant::now();
    // A task rerun starts from nothing.
    if dir.is_dir() {
        std::fs::remove_dir_all(&dir).at(&dir)?;
    }
    let mut writer = SliceWriter::new(&dir, run.source_names.clone(), &plan.domains, shard.index as usize)?;
    let picked: BTreeMap<DocId, (String, String)> =
        verdicts.picked.into_iter().map(|(id, domain, reason)| (id, (domain, reason))).collect();
    // Only the files with a kept or shown document are read.
    let wanted: std::collections::BTreeSet<_> = verdicts.kept.iter().chain(picked.keys()).map(|id| id.file()).collect();
    let files: Vec<&InputFile> = files.into_iter().filter(|f| wanted.contains(&f.file)).collect();
    let mut examples = Vec::with_capacity(picked.len());
    let mut kept = 0u64;
    run.stream("write kept", &files, |file, items| {
        let domain = run.domain_of(file.source);
        for item in items {
            if let Item::Doc(doc) = item {
                if let Some((example_domain, reason)) = picked.get(&doc.id) {
                    examples.push(first_pass_kept::example(example_domain, reason.clone(), &doc));
                }
                if verdicts.kept.binary_search(&doc.id).is_ok() {
                    writer.push(domain, doc)?;
                    kept += 1;
                }
            }
        }
        Ok(())
    })?;
    if kept != verdicts.kept.len() as u64 {
        return Err(Error::Corrupt {
            path: dir,
            reason: format!(
                "read {kept} of the {} kept documents planned: the inputs changed; rerun the run from part {shard}",
                verdicts.kept.len()
            ),
        });
    }
    writer.finish()?;
    let mut written = Vec::new();
    for entry in std::fs::read_dir(&dir).at(&dir)? {
        let entry = entry.at(&dir)?;
        let bytes = entry.metadata().at(&entry.path())?.len();
        written.push((entry.file_name().to_string_lossy().into_owned(), bytes));
    }
    written.sort();
    let done = Done { plan: plan.id, files: written, kept, seconds: started.elapsed().as_secs_f64(), examples };
    atomic::write_json(&dir.join("done.json"), &done)?;
    Ok(TaskReport { shard, already_done: false, kept, groups, edge_rows, dir })
}

/// Whether every file a task wrote is still in `dir`, with its size.
fn files_intact(dir: &Path, files: &[(String, u64)]) -> bool {
    files.iter().all(|(name, bytes)| std::fs::metadata(dir.join(name)).is_ok_and(|m| m.len() == *bytes))
}

/// `corpus finish --out DIR`: every task's slices into `kept/`, their examples into
/// `examples.jsonl`, and `manifest.json`; then removes `kept-parts/`. Returns the settings
/// and the report the reduce would have returned.
pub fn merge(out: &Path, progress: &dyn Progress) -> Result<(PipelineConfig, RunReport)> {
    let (config, count, _) = parts::load_settings(out)?;
    if out.join("manifest.json").is_file() && !out.join("kept-parts").exists() {
        return Err(Error::Config {
            field: "out".into(),
            reason: format!("{} is already merged (its manifest.json is written): nothing to do", out.display()),
        });
    }
    let plan = read_plan(out, count)?;
    let shards: Vec<Shard> = (0..count).map(|index| Shard { index, count }).collect();
    let mut dones = Vec::new();
    let mut missing = Vec::new();
    for &shard in &shards {
        let dir = task_dir(out, shard);
        match read_done(out, shard).filter(|d| d.plan == plan.id && files_intact(&dir, &d.files)) {
            Some(done) => dones.push(done),
            None => missing.push(shard.index.to_string()),
        }
    }
    if !missing.is_empty() {
        return Err(Error::Config {
            field: "out".into(),
            reason: format!(
                "{} of {count} finish tasks are missing, incomplete or were made for another reduce (shards {}): run \
                 `mixforge corpus finish --out {} --shard I/{count}` for each",
                missing.len(),
                missing.join(", "),
                out.display()
            ),
        });
    }
    let started = Instant::now();
    let task_dirs: Vec<PathBuf> = shards.iter().map(|&s| task_dir(out, s)).collect();
    let kept_dir = out.join("kept");
    std::fs::create_dir_all(&kept_dir).at(&kept_dir)?;
    let total_rows: u64 = plan.domains.values().map(|s| s.slices.iter().map(|(_, n)| n).sum::<u64>()).sum();
    progress.begin("merge kept", total_rows, Unit::Docs);
    let mut written = BTreeMap::new();
    let mut rows = 0;
    for (domain, slices) in &plan.domains {
        let path = split::merge(&kept_dir.join(format!("{domain}.parquet")), domain, slices, &task_dirs)?;
        written.insert(domain.clone(), path);
        rows += slices.slices.iter().map(|(_, n)| n).sum::<u64>();
        progress.set(rows);
    }
    progress.end();
    remove_stale_kept(&kept_dir, &written)?;
    let examples: Vec<Example> = dones.iter_mut().flat_map(|d| std::mem::take(&mut d.examples)).collect();
    write_examples(&out.join("examples.jsonl"), &examples)?;
    let mut manifest: Manifest = serde_json::from_str(&plan.manifest)
        .map_err(|e| Error::Corrupt { path: plan_path(out), reason: format!("its manifest: {e}; rerun the reduce") })?;
    manifest.outputs.insert("examples".into(), "examples.jsonl".into());
    for domain in written.keys() {
        manifest.outputs.insert(format!("kept/{domain}"), format!("kept/{domain}.parquet"));
    }
    // As for the first pass: the tasks' seconds summed, and the merge's.
    let seconds = dones.iter().map(|d| d.seconds).sum::<f64>() + started.elapsed().as_secs_f64();
    manifest.timings.insert("write_kept".into(), seconds);
    manifest.timings.remove("total");
    let total: f64 = manifest.timings.values().sum();
    manifest.timings.insert("total".into(), total);
    atomic::write_json(&out.join("manifest.json"), &manifest)?;
    let summary_path = out.join("summary.json");
    let summary = serde_json::from_slice(&std::fs::read(&summary_path).at(&summary_path)?)
        .map_err(|e| Error::Corrupt { path: summary_path, reason: e.to_string() })?;
    let parts_dir = out.join("kept-parts");
    std::fs::remove_dir_all(&parts_dir).at(&parts_dir)?;
    Ok((config, RunReport { manifest, summary }))
}

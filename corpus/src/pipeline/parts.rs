//! Sharded corpus runs: pass 1 split by input file across tasks (`corpus run --shard I/N`),
//! then one reduce (`corpus reduce`) that finds exact and near duplicates across every part
//! (candidates by band, verified by exact Jaccard reading only the documents involved, the same
//! keeper) and writes the outputs of a single-process run, byte for byte but for timings.
//!
//! Under the run directory:
//! - `parts/config.json`: the settings and shard count every part was made with. The first
//!   task writes it; a task that finds other settings there stops.
//! - `parts/part-IIIII-of-NNNNN.bin`: one task's pass 1 — a head (version, shard, settings, the
//!   stamps (size, mtime) of its input files and of the evaluation sets) and a body (every
//!   document's record and dedup keys, its malformed records), each postcard, the head's length
//!   first so a scheduler can check a part without reading it all. Written atomically when the
//!   task ends, so its presence is the task's completion record.
//!
//! Shard I takes a contiguous run of the input files (numbered as in the run's document ids):
//! files ⌊I·F/N⌋ up to ⌊(I+1)·F/N⌋ of F. The unit of work is a file, as in datatrove's tasks,
//! so a corpus should come as ≥ N files; contiguous runs make each task's kept documents one
//! slice of each kept file, which the per-shard finish ([`super::finish`]) relies on.
//! The reduce holds every part's records and keys (the single-process run's pass-1 memory) and
//! does the verify pass itself; it writes the kept documents too, or leaves them to the
//! finish tasks (`corpus reduce --finish-by-shard`).

use std::path::{Path, PathBuf};
use std::time::{Instant, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use super::{KeptOutput, Keys, Progress, RejectEntry, Run, RunReport, check_run_dir};
use crate::atomic::{self, AtomicFile};
use crate::config::PipelineConfig;
use crate::error::{Error, IoContext, Result};
use crate::ingest::InputFile;
use crate::profile::DocRecord;

/// Version of `parts/config.json` and of the part files.
pub const PARTS_FORMAT_VERSION: u32 = 2;

/// The part of a sharded run one task does: `index` of `count` (`--shard I/N`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shard {
    /// 0-based task index.
    pub index: u32,
    /// Number of tasks.
    pub count: u32,
}

impl Shard {
    /// Parses `I/N`, 0 ≤ I < N.
    pub fn parse(text: &str) -> Result<Shard> {
        let bad = |reason: &str| Error::Config { field: "shard".into(), reason: format!("`{text}`: {reason}") };
        let (i, n) = text.split_once('/').ok_or_else(|| bad("expected I/N, e.g. 0/4"))?;
        let index: u32 = i.trim().parse().map_err(|_| bad("I is not a whole number"))?;
        let count: u32 = n.trim().parse().map_err(|_| bad("N is not a whole number"))?;
        if count == 0 || index >= count {
            return Err(bad("I must be at least 0 and below N"));
        }
        Ok(Shard { index, count })
    }

    /// The input files (by number) this shard takes of a run over `files` of them.
    pub(super) fn files(self, files: usize) -> std::ops::Range<u32> {
        let first = |index: u32| (u64::from(index) * files as u64 / u64::from(self.count)) as u32;
        first(self.index)..first(self.index + 1)
    }

    /// Whether this shard takes `file` of a run over `files` input files.
    pub(super) fn takes(self, file: &InputFile, files: usize) -> bool {
        self.files(files).contains(&file.file.0)
    }
}

impl std::fmt::Display for Shard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

/// `parts/config.json`.
#[derive(Serialize, Deserialize)]
struct PartsConfig {
    format_version: u32,
    shards: u32,
    config: PipelineConfig,
}

/// An input file as a part read it: the reduce refuses parts whose inputs changed since.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(super) struct Stamp {
    path: PathBuf,
    bytes: u64,
    modified_ns: u128,
}

impl Stamp {
    fn of(path: &Path) -> Result<Stamp> {
        let meta = std::fs::metadata(path).at(path)?;
        let modified = meta.modified().at(path)?;
        Ok(Stamp {
            path: path.to_path_buf(),
            bytes: meta.len(),
            modified_ns: modified.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos()),
        })
    }

    /// The stamps of a shard's input files and of the evaluation sets (whose item numbers the
    /// records' contamination hits refer to).
    fn now(config: &PipelineConfig, files: &[InputFile], shard: Shard) -> Result<(Vec<Stamp>, Vec<Stamp>)> {
        let inputs =
            files.iter().filter(|f| shard.takes(f, files.len())).map(|f| Stamp::of(&f.path)).collect::<Result<_>>()?;
        let evals = config.decontam.iter().flat_map(|d| &d.evals).map(|p| Stamp::of(p)).collect::<Result<_>>()?;
        Ok((inputs, evals))
    }
}

/// What differs between two stamp lists of the same files in the same order, if anything.
pub(super) fn first_change(now: &[Stamp], then: &[Stamp]) -> Option<String> {
    if let Some((changed, _)) = now.iter().zip(then).find(|(a, b)| a != b) {
        return Some(format!("{} changed (size or modification time)", changed.path.display()));
    }
    (now.len() != then.len()).then(|| format!("the list of files changed ({} then, {} now)", then.len(), now.len()))
}

/// The stamps of `files`.
pub(super) fn stamps<'a>(files: impl IntoIterator<Item = &'a InputFile>) -> Result<Vec<Stamp>> {
    files.into_iter().map(|f| Stamp::of(&f.path)).collect()
}

/// What a part file starts with (after its length, a little-endian u64): enough to tell whether
/// the part is still valid, read without the rest.
#[derive(Serialize, Deserialize)]
struct Head {
    format_version: u32,
    /// The corpus crate version that wrote it: parts of two builds are never mixed.
    version: String,
    shard: Shard,
    /// `parts/config.json` as the task found or wrote it.
    settings: String,
    inputs: Vec<Stamp>,
    evals: Vec<Stamp>,
}

/// The rest of a part: one task's pass 1.
#[derive(Serialize, Deserialize)]
struct Body {
    records: Vec<DocRecord>,
    keys: Vec<Keys>,
    rejects: Vec<RejectEntry>,
    seconds: f64,
}

/// What one task did.
#[derive(Debug, Clone)]
pub struct PartReport {
    /// Which part.
    pub shard: Shard,
    /// Input files it read.
    pub files: usize,
    /// Documents it analysed.
    pub docs: usize,
    /// Malformed records it met.
    pub rejected: usize,
    /// The part file written.
    pub path: PathBuf,
}

fn part_path(dir: &Path, shard: Shard) -> PathBuf {
    dir.join(format!("part-{:05}-of-{:05}.bin", shard.index, shard.count))
}

/// `parts/config.json` for `config` split into `shards` parts.
pub fn settings_json(config: &PipelineConfig, shards: u32) -> String {
    let settings = PartsConfig { format_version: PARTS_FORMAT_VERSION, shards, config: config.clone() };
    serde_json::to_string_pretty(&settings).expect("settings serialize") + "\n"
}

/// `corpus run --shard I/N`: pass 1 over this shard's input files, written as its part.
/// Always recomputes: the part file is the task's record of completion, and a scheduler
/// resubmits only the tasks whose part is missing.
pub fn run_part(config: &PipelineConfig, shard: Shard, progress: &dyn Progress) -> Result<PartReport> {
    config.validate()?;
    check_run_dir(&config.out)?;
    let dir = config.out.join("parts");
    std::fs::create_dir_all(&dir).at(&dir)?;
    let settings = settings_json(config, shard.count);
    let settings_path = dir.join("config.json");
    match std::fs::read_to_string(&settings_path) {
        Ok(found) if found != settings => return Err(other_settings(&config.out)),
        Ok(_) => {}
        Err(_) => atomic::write_file(&settings_path, settings.as_bytes())?,
    }
    let run = Run::new(config, progress)?;
    let files: Vec<&InputFile> = run.files.iter().filter(|f| shard.takes(f, run.files.len())).collect();
    let (inputs, evals) = Stamp::now(config, &run.files, shard)?;
    let head = Head {
        format_version: PARTS_FORMAT_VERSION,
        version: env!("CARGO_PKG_VERSION").to_string(),
        shard,
        settings,
        inputs,
        evals,
    };
    let started = Instant::now();
    let mut rejects = Vec::new();
    let (records, keys) = run.analyze(&files, None, &mut |reject| {
        rejects.push(reject);
        Ok(())
    })?;
    let body = Body { records, keys, rejects, seconds: started.elapsed().as_secs_f64() };
    let path = part_path(&dir, shard);
    let encode = |e: postcard::Error| Error::Corrupt { path: path.clone(), reason: format!("encoding the part: {e}") };
    let head_bytes = postcard::to_stdvec(&head).map_err(encode)?;
    let mut bytes = (head_bytes.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(&head_bytes);
    bytes.extend_from_slice(&postcard::to_stdvec(&body).map_err(encode)?);
    atomic::write_file(&path, &bytes)?;
    Ok(PartReport { shard, files: files.len(), docs: body.records.len(), rejected: body.rejects.len(), path })
}

/// `corpus reduce --out DIR`: every part's records and keys in document order, then the rest of
/// a single-process run (dedup across all parts, verdicts, kept documents, profile, summary,
/// manifest). With `by_shard`, the kept documents, examples and manifest are left to the
/// finish tasks and their merge ([`super::finish`]). Returns the settings the parts were made
/// with, too.
pub fn reduce(out: &Path, by_shard: bool, progress: &dyn Progress) -> Result<(PipelineConfig, RunReport)> {
    let dir = out.join("parts");
    let (config, count, settings) = load_settings(out)?;
    let run = Run::new(&config, progress)?;
    let missing: Vec<u32> = (0..count).filter(|&i| !part_path(&dir, Shard { index: i, count }).is_file()).collect();
    if !missing.is_empty() {
        return Err(Error::Config {
            field: "out".into(),
            reason: format!(
                "{} of {count} parts are missing in {} (shards {}): run `mixforge corpus run … --shard I/{count}` for each",
                missing.len(),
                dir.display(),
                missing.iter().map(|i| i.to_string()).collect::<Vec<_>>().join(", ")
            ),
        });
    }
    let mut docs: Vec<(DocRecord, Keys)> = Vec::new();
    let mut rejects: Vec<RejectEntry> = Vec::new();
    let mut seconds = 0.0;
    for index in 0..count {
        let shard = Shard { index, count };
        let part = read_part(&part_path(&dir, shard), shard, &settings, &config, &run.files)?;
        docs.extend(part.records.into_iter().zip(part.keys));
        rejects.extend(part.rejects);
        seconds += part.seconds;
    }
    // Ids order documents by input file, then row: the single-process order. A file's
    // malformed records stay in the order its part met them.
    docs.sort_unstable_by_key(|(record, _)| record.id);
    rejects.sort_by_key(|r| r.file);
    let (records, keys): (Vec<DocRecord>, Vec<Keys>) = docs.into_iter().unzip();
    // Every part is read: now the outputs of an earlier reduce go.
    super::finish::clear(out, by_shard)?;
    let mut accounting = run.accounting();
    let rejects_path = out.join("rejects.jsonl");
    let mut file = AtomicFile::create(&rejects_path)?;
    for reject in rejects {
        reject.record(&mut file, &rejects_path, &mut accounting)?;
    }
    file.commit()?;
    let kept = if by_shard { KeptOutput::ByShard(count) } else { KeptOutput::Write(None) };
    let report = run.finish(records, keys, accounting, seconds, kept)?;
    Ok((config, report))
}

/// Reads one part and checks it belongs: same settings, the right shard, inputs unchanged.
fn read_part(path: &Path, shard: Shard, settings: &str, config: &PipelineConfig, files: &[InputFile]) -> Result<Body> {
    let bytes = std::fs::read(path).at(path)?;
    let corrupt =
        |reason: String| Error::Corrupt { path: path.to_path_buf(), reason: format!("{reason}; rerun shard {shard}") };
    let (head, body) = split(&bytes).ok_or_else(|| corrupt("not a readable part (cut short?)".into()))?;
    let head: Head = postcard::from_bytes(head).map_err(|e| corrupt(format!("not a readable part ({e})")))?;
    if let Some(reason) = head.mismatch(shard, settings, config, files)? {
        return Err(corrupt(reason));
    }
    postcard::from_bytes(body).map_err(|e| corrupt(format!("not a readable part ({e})")))
}

/// A part file's head and body.
fn split(bytes: &[u8]) -> Option<(&[u8], &[u8])> {
    let len = u64::from_le_bytes(bytes.get(..8)?.try_into().ok()?);
    let end = 8usize.checked_add(usize::try_from(len).ok()?)?;
    Some((bytes.get(8..end)?, bytes.get(end..)?))
}

/// Reads just the head of a part file.
fn read_head(path: &Path) -> Option<Head> {
    use std::io::Read;
    let mut file = std::fs::File::open(path).ok()?;
    let mut len = [0u8; 8];
    file.read_exact(&mut len).ok()?;
    let mut head = vec![0u8; usize::try_from(u64::from_le_bytes(len)).ok()?.min(1 << 30)];
    file.read_exact(&mut head).ok()?;
    postcard::from_bytes(&head).ok()
}

impl Head {
    /// Why this part cannot serve as `shard` of a run with `settings` over `files` now.
    fn mismatch(
        &self,
        shard: Shard,
        settings: &str,
        config: &PipelineConfig,
        files: &[InputFile],
    ) -> Result<Option<String>> {
        if self.format_version != PARTS_FORMAT_VERSION || self.version != env!("CARGO_PKG_VERSION") {
            return Ok(Some(format!(
                "written by mixforge {} (part format {}); this is {} (format {PARTS_FORMAT_VERSION})",
                self.version,
                self.format_version,
                env!("CARGO_PKG_VERSION")
            )));
        }
        if self.shard != shard || self.settings != settings {
            return Ok(Some(format!("made as shard {} with other settings than parts/config.json", self.shard)));
        }
        let (inputs, evals) = Stamp::now(config, files, shard)?;
        let changed = first_change(&inputs, &self.inputs).or_else(|| first_change(&evals, &self.evals));
        Ok(changed.map(|what| format!("{what} since this part was made")))
    }
}

/// The shards of a sharded run of `config` in `shards` parts whose part is missing or no longer
/// valid (settings, inputs): what a scheduler still has to run. Fails when `config.out` holds
/// parts of other settings.
pub fn pending(config: &PipelineConfig, shards: u32) -> Result<Vec<u32>> {
    let dir = config.out.join("parts");
    let settings = settings_json(config, shards);
    match std::fs::read_to_string(dir.join("config.json")) {
        Ok(found) if found != settings => return Err(other_settings(&config.out)),
        Ok(_) => {}
        Err(_) => return Ok((0..shards).collect()),
    }
    let files = crate::ingest::expand_sources(&config.sources)?;
    let mut todo = Vec::new();
    for index in 0..shards {
        let shard = Shard { index, count: shards };
        let valid = match read_head(&part_path(&dir, shard)) {
            Some(head) => head.mismatch(shard, &settings, config, &files)?.is_none(),
            None => false,
        };
        if !valid {
            todo.push(index);
        }
    }
    Ok(todo)
}

fn other_settings(out: &Path) -> Error {
    Error::Config {
        field: "out".into(),
        reason: format!(
            "{} holds parts made with other settings or another shard count; use a new --out, or remove {} to \
             start over",
            out.display(),
            out.join("parts").display()
        ),
    }
}

/// The settings a sharded run's parts are made with (`DIR/parts/config.json`): the corpus
/// config (its `out` set to `out`), the shard count, and the file's text.
pub fn load_settings(out: &Path) -> Result<(PipelineConfig, u32, String)> {
    let settings_path = out.join("parts").join("config.json");
    let settings = std::fs::read_to_string(&settings_path).map_err(|_| Error::Config {
        field: "out".into(),
        reason: format!(
            "{} has no parts/config.json: run `mixforge corpus run RECIPE --out {} --shard I/N` for every I first",
            out.display(),
            out.display()
        ),
    })?;
    let parsed: PartsConfig = serde_json::from_str(&settings)
        .map_err(|e| Error::Corrupt { path: settings_path.clone(), reason: e.to_string() })?;
    if parsed.format_version != PARTS_FORMAT_VERSION {
        return Err(Error::Corrupt {
            path: settings_path,
            reason: format!(
                "parts format {} (this mixforge reads {PARTS_FORMAT_VERSION}); use a new --out, or remove {} to start \
                 over",
                parsed.format_version,
                out.join("parts").display()
            ),
        });
    }
    let mut config = parsed.config;
    config.out = out.to_path_buf();
    Ok((config, parsed.shards, settings))
}

//! A corpus run: ingest → profile → filter → dedup → kept documents, profile, summary,
//! accounting and rejects in the output directory.
//!
//! Text is never held for the whole corpus. Pass 1 streams every file once and keeps a compact
//! [`DocRecord`] plus dedup keys per document; pass 2 (only with verification) re-reads the
//! documents that landed in an LSH bucket to get their shingle sets; pass 3 streams again to
//! write the kept documents. Memory is bounded by the index, not the corpus.
//!
//! A sharded run ([`parts`]) splits pass 1 by input file across tasks and machines, then
//! reduces: the same dedup, verdicts and outputs over every part, so the results equal a
//! single-process run's.

pub mod finish;
mod first_pass_kept;
pub mod parts;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use rayon::prelude::*;
use serde::Serialize;

use crate::accounting::{Accounting, SourceCounts};
use crate::atomic::{self, AtomicFile};
use crate::config::{DedupConfig, FilterConfig, FilterMode, PipelineConfig, Stages};
use crate::decontam::{DecontamConfig, EvalIndex};
use crate::dedup::{self, DedupReport, Engine, Entry, LshParams, MinHasher, Verdict, shingles};
use crate::error::{Error, IoContext, Result};
use crate::filters;
use crate::ids::DocId;
use crate::ingest::{self, Document, InputFile, Item};
use crate::kept::KeptWriter;
use crate::profile::{self, DocRecord, DropReason};
use crate::signals::{self, Scratch};
use crate::summary::{self, DomainSummary};
use first_pass_kept::{ExamplePicker, FirstPassKept};

/// Version of `manifest.json`.
pub const MANIFEST_FORMAT_VERSION: u32 = 1;

/// Units a progress bar counts in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    /// Bytes of input read from disk.
    Bytes,
    /// Documents.
    Docs,
}

/// Receives progress of long stages; the CLI draws bars, tests use [`Silent`].
pub trait Progress: Sync {
    /// A stage starts with `total` units of work.
    fn begin(&self, stage: &str, total: u64, unit: Unit);
    /// `done` units are finished so far.
    fn set(&self, done: u64);
    /// The stage ended.
    fn end(&self);
}

/// No progress output.
pub struct Silent;

impl Progress for Silent {
    fn begin(&self, _: &str, _: u64, _: Unit) {}
    fn set(&self, _: u64) {}
    fn end(&self) {}
}

/// `manifest.json`: what ran, on what, where every document went, and how long it took.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct Manifest {
    /// Layout version of this file.
    pub format_version: u32,
    /// The mixforge corpus crate version that wrote it.
    pub corpus_version: String,
    /// Stages that ran.
    pub stages: Stages,
    /// Accounting per source, per domain and in total.
    #[serde(flatten)]
    pub accounting: Accounting,
    /// Filter settings used.
    pub filter: FilterConfig,
    /// Dedup settings used.
    pub dedup: DedupConfig,
    /// What dedup found (absent when it did not run).
    pub dedup_report: Option<DedupReport>,
    /// Decontamination settings (absent when it did not run).
    pub decontam: Option<DecontamConfig>,
    /// Items indexed per benchmark.
    pub eval_items: BTreeMap<String, u64>,
    /// Wall time per stage, seconds.
    pub timings: BTreeMap<String, f64>,
    /// Output files, relative to the run directory.
    pub outputs: BTreeMap<String, String>,
}

/// What a run returns to its caller.
#[derive(Debug, Clone)]
pub struct RunReport {
    /// The manifest as written.
    pub manifest: Manifest,
    /// The per-domain summary.
    pub summary: Vec<DomainSummary>,
}

/// Per-document results of pass 1 beyond the record: dedup keys.
#[derive(Serialize, serde::Deserialize)]
struct Keys {
    exact: u128,
    bands: Vec<u64>,
}

/// A malformed record met in pass 1: counted in the accounting, listed in `rejects.jsonl`.
#[derive(Serialize, serde::Deserialize)]
struct RejectEntry {
    source: usize,
    file: crate::ids::FileIdx,
    line: u64,
    code: String,
    bytes: u64,
    /// Its `rejects.jsonl` line.
    json: String,
}

impl RejectEntry {
    /// Writes its line and counts it.
    fn record(&self, rejects: &mut AtomicFile, path: &std::path::Path, accounting: &mut Accounting) -> Result<()> {
        writeln!(rejects, "{}", self.json).at(path)?;
        accounting.update(self.source, |c| c.add_reject(&self.code, self.bytes));
        Ok(())
    }
}

/// How a run writes its kept documents.
// One value per run, moved once: the size difference costs nothing.
#[allow(clippy::large_enum_variant)]
enum KeptOutput {
    /// From pass 1 when that writer's documents are the kept ones, else from a read after dedup.
    Write(Option<FirstPassKept>),
    /// Left to the finish tasks of a sharded run of this many shards ([`finish`]).
    ByShard(u32),
}

/// Everything shared by the passes over the input.
struct Run<'a> {
    config: &'a PipelineConfig,
    files: Vec<InputFile>,
    /// Domain index of each source.
    source_domain: Vec<u32>,
    domains: Vec<String>,
    source_names: Vec<String>,
    evals: Option<EvalIndex>,
    progress: &'a dyn Progress,
}

/// Whether `dir` holds nothing but the temporary files of a killed run (names starting with `.`)
/// and perhaps a `parts/` another task of a sharded run just created.
fn only_temporary_files(dir: &std::path::Path) -> bool {
    std::fs::read_dir(dir).is_ok_and(|entries| {
        entries.flatten().all(|e| {
            let name = e.file_name();
            let name = name.to_string_lossy();
            name.starts_with('.') || name == "parts"
        })
    })
}

/// A run rewrites its outputs (and cleans `kept/`): only in a directory of its own (a corpus
/// run's, a sharded run's, or new), which this creates.
pub fn check_run_dir(out: &std::path::Path) -> Result<()> {
    atomic::check_replaceable(out, "corpus run directory (no manifest.json, kept/ or parts/config.json)", |d| {
        d.join("manifest.json").is_file()
            || d.join("kept").is_dir()
            || d.join("parts/config.json").is_file()
            || only_temporary_files(d)
    })?;
    std::fs::create_dir_all(out).at(out)
}

/// Runs the configured stages and writes every output into `config.out`.
pub fn run(config: &PipelineConfig, progress: &dyn Progress) -> Result<RunReport> {
    config.validate()?;
    check_run_dir(&config.out)?;
    let run = Run::new(config, progress)?;
    let mut accounting = run.accounting();
    let started = Instant::now();
    let rejects_path = config.out.join("rejects.jsonl");
    let mut rejects = AtomicFile::create(&rejects_path)?;
    let files: Vec<&InputFile> = run.files.iter().collect();
    // Without a near-duplicate pass, pass 1 writes the kept documents as it reads them.
    let mut first_pass = if config.stages.dedup && config.dedup.minhash {
        None
    } else {
        let writer = KeptWriter::new(&config.out.join("kept"), run.source_names.clone())?;
        let exact = config.stages.dedup && config.dedup.exact;
        Some(FirstPassKept::new(writer, exact, run.benchmarks()))
    };
    let (records, keys) = run.analyze(&files, first_pass.as_mut(), &mut |reject: RejectEntry| {
        reject.record(&mut rejects, &rejects_path, &mut accounting)
    })?;
    rejects.commit()?;
    run.finish(records, keys, accounting, started.elapsed().as_secs_f64(), KeptOutput::Write(first_pass))
}

impl<'a> Run<'a> {
    fn new(config: &'a PipelineConfig, progress: &'a dyn Progress) -> Result<Run<'a>> {
        let mut domains: Vec<String> = Vec::new();
        let source_domain = config
            .sources
            .iter()
            .map(|s| match domains.iter().position(|d| *d == s.domain) {
                Some(i) => i as u32,
                None => {
                    domains.push(s.domain.clone());
                    (domains.len() - 1) as u32
                }
            })
            .collect();
        Ok(Run {
            config,
            files: ingest::expand_sources(&config.sources)?,
            source_domain,
            domains,
            source_names: config.sources.iter().map(|s| s.display_name().to_string()).collect(),
            evals: config.decontam.as_ref().map(EvalIndex::build).transpose()?,
            progress,
        })
    }

    /// Empty counts for every source, naming its files.
    fn accounting(&self) -> Accounting {
        Accounting {
            sources: self
                .config
                .sources
                .iter()
                .enumerate()
                .map(|(i, s)| SourceCounts {
                    name: s.display_name().to_string(),
                    domain: s.domain.clone(),
                    files: self
                        .files
                        .iter()
                        .filter(|f| usize::from(f.source.0) == i)
                        .map(|f| f.path.display().to_string())
                        .collect(),
                    counts: Default::default(),
                })
                .collect(),
            ..Accounting::default()
        }
    }

    /// Everything after pass 1, given every document's record and keys in id order and the
    /// rejects already counted: dedup, verdicts, kept documents, profile, summary, manifest.
    fn finish(
        &self,
        mut records: Vec<DocRecord>,
        keys: Vec<Keys>,
        mut accounting: Accounting,
        analysis_seconds: f64,
        kept: KeptOutput,
    ) -> Result<RunReport> {
        let (config, run) = (self.config, self);
        let mut timings = BTreeMap::new();
        let mut outputs = BTreeMap::new();
        outputs.insert("rejects".into(), "rejects.jsonl".into());
        timings.insert("ingest_profile_filter".into(), analysis_seconds);

        let dedup_report = if config.stages.dedup && (config.dedup.exact || config.dedup.minhash) {
            let started = Instant::now();
            let report = run.deduplicate(&mut records, keys)?;
            timings.insert("dedup".into(), started.elapsed().as_secs_f64());
            Some(report)
        } else {
            None
        };

        let benchmarks = run.benchmarks();
        for r in &records {
            let reason = r.drop.map(|d| d.name(&benchmarks));
            let contaminated_by = r.contamination.map(|hit| benchmarks[usize::from(hit.benchmark)].as_str());
            accounting.update(usize::from(r.source.0), |c| {
                c.add_doc(r.bytes, reason.as_deref());
                r.rules.iter().for_each(|rule| c.add_flag(rule.name()));
                if let Some(benchmark) = contaminated_by {
                    c.add_contaminated(benchmark);
                }
            });
        }
        assert!(accounting.balances(), "every document is kept or dropped with a reason");

        let started = Instant::now();
        let picked = run.pick_examples(&records, &benchmarks);
        let mut finish_plan = None;
        match kept {
            KeptOutput::ByShard(shards) => finish_plan = Some(finish::plan(run, &records, &picked, shards)?),
            KeptOutput::Write(first_pass) => {
                let (kept_files, examples) = match first_pass.map(|f| (f.matches(&records, &picked), f)) {
                    Some((true, first_pass)) => {
                        tracing::info!("kept documents written in pass 1");
                        first_pass.finish()?
                    }
                    Some((false, first_pass)) => {
                        tracing::info!(
                            "a later, longer exact copy was kept: writing kept documents from a second read"
                        );
                        // Dropped first: its temporary files go, and the second writer reuses their names.
                        drop(first_pass);
                        run.write_kept(&records, &picked)?
                    }
                    None => run.write_kept(&records, &picked)?,
                };
                remove_stale_kept(&config.out.join("kept"), &kept_files)?;
                write_examples(&config.out.join("examples.jsonl"), &examples)?;
                outputs.insert("examples".into(), "examples.jsonl".into());
                for (domain, path) in kept_files {
                    let rel = path.strip_prefix(&config.out).unwrap_or(&path).display().to_string();
                    outputs.insert(format!("kept/{domain}"), rel);
                }
                timings.insert("write_kept".into(), started.elapsed().as_secs_f64());
            }
        }

        // The profile is written whatever the stages: its verdict columns say what happened to
        // each document; its signal columns are null when signals were not computed.
        let summary_rows;
        {
            let started = Instant::now();
            // Both tables name rows by source; several sources may share one domain.
            let source_domains: Vec<String> = config.sources.iter().map(|s| s.domain.clone()).collect();
            profile::write(
                &config.out.join("profile.parquet"),
                &records,
                &run.source_names,
                &source_domains,
                &benchmarks,
            )?;
            let (mut table, rows) = summary::summarize(&records, &source_domains)?;
            summary::write_parquet(&config.out.join("summary.parquet"), &mut table)?;
            atomic::write_json(&config.out.join("summary.json"), &rows)?;
            outputs.insert("profile".into(), "profile.parquet".into());
            outputs.insert("summary".into(), "summary.parquet".into());
            outputs.insert("summary_json".into(), "summary.json".into());
            summary_rows = rows;
            timings.insert("write_profile".into(), started.elapsed().as_secs_f64());
        }
        timings.insert("total".into(), timings.values().sum());

        let manifest = Manifest {
            format_version: MANIFEST_FORMAT_VERSION,
            corpus_version: env!("CARGO_PKG_VERSION").to_string(),
            stages: config.stages,
            accounting,
            filter: config.filter.clone(),
            dedup: config.dedup.clone(),
            dedup_report,
            decontam: config.decontam.clone(),
            eval_items: run
                .evals
                .as_ref()
                .map(|e| e.benchmarks().iter().cloned().zip(e.item_counts().iter().copied()).collect())
                .unwrap_or_default(),
            timings,
            outputs,
        };
        match finish_plan {
            Some(plan) => plan.write(&config.out, &manifest)?,
            None => atomic::write_json(&config.out.join("manifest.json"), &manifest)?,
        }
        Ok(RunReport { manifest, summary: summary_rows })
    }

    fn filter_mode(&self, source: usize) -> FilterMode {
        if !self.config.stages.filter {
            return FilterMode::Off;
        }
        self.config.sources[source].filter_mode.unwrap_or(self.config.filter.mode)
    }

    /// Streams `files` through `on_batch`, reporting bytes read.
    fn stream(
        &self,
        stage: &str,
        files: &[&InputFile],
        mut on_batch: impl FnMut(&InputFile, Vec<Item>) -> Result<()>,
    ) -> Result<()> {
        let total = files.iter().map(|f| std::fs::metadata(&f.path).map(|m| m.len()).unwrap_or(0)).sum();
        self.progress.begin(stage, total, Unit::Bytes);
        let bytes_read = AtomicU64::new(0);
        for &file in files {
            let source = &self.config.sources[usize::from(file.source.0)];
            ingest::read_file(file, source, self.config.batch_docs, &bytes_read, |items| {
                on_batch(file, items)?;
                self.progress.set(bytes_read.load(Ordering::Relaxed));
                Ok(())
            })?;
            self.progress.set(bytes_read.load(Ordering::Relaxed));
        }
        self.progress.end();
        Ok(())
    }

    /// Pass 1 over `files`: read, compute signals, rules and dedup keys; hand each malformed
    /// record to `on_reject` (in file and line order).
    fn analyze(
        &self,
        files: &[&InputFile],
        mut first_pass: Option<&mut FirstPassKept>,
        on_reject: &mut dyn FnMut(RejectEntry) -> Result<()>,
    ) -> Result<(Vec<DocRecord>, Vec<Keys>)> {
        let stages = self.config.stages;
        let dedup = &self.config.dedup;
        let analyzer = Analyzer {
            stages,
            filter: &self.config.filter,
            dedup,
            hasher: (stages.dedup && dedup.minhash).then(|| MinHasher::new(dedup.num_perm, dedup.seed)),
            lsh: Engine::new(dedup).lsh(),
            evals: self.evals.as_ref(),
            drop_contaminated: self.config.decontam.as_ref().is_some_and(|d| d.drop),
        };
        let mut records = Vec::new();
        let mut keys = Vec::new();
        self.stream("read + profile", files, |file, items| {
            let source = usize::from(file.source.0);
            let mode = self.filter_mode(source);
            let mut docs = Vec::with_capacity(items.len());
            for item in items {
                match item {
                    Item::Doc(doc) => docs.push(doc),
                    Item::Reject(reject) => {
                        if self.config.strict {
                            return Err(Error::Strict {
                                path: reject.path,
                                line: reject.line,
                                reason: reject.reason.to_string(),
                            });
                        }
                        let json = serde_json::json!({
                            "file": reject.path.display().to_string(),
                            "line": reject.line,
                            "code": reject.reason.code(),
                            "message": reject.reason.to_string(),
                        });
                        on_reject(RejectEntry {
                            source,
                            file: file.file,
                            line: reject.line,
                            code: reject.reason.code().to_string(),
                            bytes: reject.bytes,
                            json: json.to_string(),
                        })?;
                    }
                }
            }
            let analyzed: Vec<(DocRecord, Keys)> = docs
                .par_iter()
                .map_init(
                    || (Scratch::default(), Buffers::default()),
                    |(scratch, buffers), doc| analyzer.analyze(doc, mode, scratch, buffers),
                )
                .collect();
            if let Some(first_pass) = first_pass.as_deref_mut() {
                let domain_idx = self.source_domain[source];
                let scope = dedup::scope_key(dedup.scope, domain_idx);
                for ((record, key), doc) in analyzed.iter().zip(docs) {
                    first_pass.push(&self.domains[domain_idx as usize], record, key.exact, scope, doc)?;
                }
            }
            for (record, key) in analyzed {
                records.push(record);
                keys.push(key);
            }
            Ok(())
        })?;
        Ok((records, keys))
    }

    /// Exact and near-duplicate detection; sets `drop` and `dup_cluster` on `records`.
    fn deduplicate(&self, records: &mut [DocRecord], keys: Vec<Keys>) -> Result<DedupReport> {
        let config = &self.config.dedup;
        let mut engine = Engine::new(config);
        for (record, key) in records.iter().zip(keys) {
            let domain = self.source_domain[usize::from(record.source.0)];
            let entry = Entry {
                id: record.id,
                bytes: record.bytes,
                scope: dedup::scope_key(config.scope, domain),
                exact: key.exact,
                eligible: record.drop.is_none(),
            };
            engine.push(entry, &key.bands);
        }
        let candidates = engine.candidates();
        let needed = if config.verify { candidates.needed() } else { Vec::new() };
        let mut sets: Vec<Option<Vec<u64>>> = vec![None; records.len()];
        if !needed.is_empty() {
            let needed_ids: Vec<DocId> = needed.iter().map(|&i| records[i as usize].id).collect();
            let files: Vec<&InputFile> = self
                .files
                .iter()
                .filter(|f| needed_ids.binary_search_by(|id| id.file().cmp(&f.file)).is_ok())
                .collect();
            self.stream("verify candidates", &files, |_, items| {
                let wanted: Vec<(u32, Document)> = items
                    .into_iter()
                    .filter_map(|item| match item {
                        Item::Doc(doc) => needed_ids.binary_search(&doc.id).ok().map(|k| (needed[k], doc)),
                        Item::Reject(_) => None,
                    })
                    .collect();
                let computed: Vec<(u32, Vec<u64>)> = wanted
                    .into_par_iter()
                    .map(|(i, doc)| (i, shingles::shingle_set(&doc.text, config.ngram)))
                    .collect();
                for (i, set) in computed {
                    sets[i as usize] = Some(set);
                }
                Ok(())
            })?;
            if let Some(&missing) = needed.iter().find(|&&i| sets[i as usize].is_none()) {
                return Err(Error::Corrupt {
                    path: self.files[records[missing as usize].id.file().0 as usize].path.clone(),
                    reason: format!("document {} changed or vanished between passes", records[missing as usize].id),
                });
            }
        }
        let (verdicts, clusters, report) =
            engine.resolve(candidates, |i| sets[i as usize].as_deref().expect("loaded above"));
        for ((record, verdict), cluster) in records.iter_mut().zip(verdicts).zip(clusters) {
            record.dup_cluster = cluster;
            match verdict {
                Verdict::Kept => {}
                Verdict::ExactDup => record.drop = Some(DropReason::ExactDup),
                Verdict::NearDup => record.drop = Some(DropReason::NearDup),
            }
        }
        Ok(report)
    }

    /// The lowest ids per (domain, reason), for drop reasons and for rules that flagged kept
    /// documents: a deterministic choice, whatever the thread count.
    fn pick_examples(&self, records: &[DocRecord], benchmarks: &[String]) -> BTreeMap<DocId, (String, String)> {
        let mut picker = ExamplePicker::default();
        let mut picked = BTreeMap::new();
        for r in records {
            let domain = self.domain_of(r.source);
            if let Some(reason) = picker.offer(domain, r.drop, r.rules, benchmarks) {
                picked.insert(r.id, (domain.to_string(), reason));
            }
        }
        picked
    }

    fn domain_of(&self, source: crate::ids::SourceIdx) -> &str {
        &self.domains[self.source_domain[usize::from(source.0)] as usize]
    }

    /// Names of the evaluation sets, as drop reasons and contamination counts use them.
    fn benchmarks(&self) -> Vec<String> {
        self.evals.as_ref().map(|e| e.benchmarks().to_vec()).unwrap_or_default()
    }

    /// Pass 3: writes kept documents to `kept/<domain>.parquet`, and captures the picked
    /// examples' text on the way.
    fn write_kept(
        &self,
        records: &[DocRecord],
        picked: &BTreeMap<DocId, (String, String)>,
    ) -> Result<(BTreeMap<String, PathBuf>, Vec<Example>)> {
        let mut writer = KeptWriter::new(&self.config.out.join("kept"), self.source_names.clone())?;
        let mut examples = Vec::with_capacity(picked.len());
        // One pass over the records, not one per file: runs may have many thousands of files.
        let with_kept: std::collections::BTreeSet<_> = records
            .iter()
            .filter(|r| r.drop.is_none())
            .map(|r| r.id.file())
            .chain(picked.keys().map(|id| id.file()))
            .collect();
        let kept_files: Vec<&InputFile> = self.files.iter().filter(|f| with_kept.contains(&f.file)).collect();
        let ids: Vec<DocId> = records.iter().map(|r| r.id).collect();
        self.stream("write kept", &kept_files, |file, items| {
            let domain = self.domain_of(file.source);
            for item in items {
                if let Item::Doc(doc) = item {
                    let k = ids.binary_search(&doc.id).map_err(|_| Error::Corrupt {
                        path: file.path.clone(),
                        reason: format!("document {} appeared between passes", doc.id),
                    })?;
                    if let Some((example_domain, reason)) = picked.get(&doc.id) {
                        examples.push(first_pass_kept::example(example_domain, reason.clone(), &doc));
                    }
                    if records[k].drop.is_none() {
                        writer.push(domain, doc)?;
                    }
                }
            }
            Ok(())
        })?;
        Ok((writer.finish()?, examples))
    }
}

/// Removes the kept files in `dir` of domains an earlier run into this directory kept and this
/// one did not: they must not reach the shards.
fn remove_stale_kept(dir: &std::path::Path, written: &BTreeMap<String, PathBuf>) -> Result<()> {
    for entry in std::fs::read_dir(dir).at(dir)? {
        let path = entry.at(dir)?.path();
        if path.extension().is_some_and(|e| e == "parquet") && !written.values().any(|w| *w == path) {
            std::fs::remove_file(&path).at(&path)?;
        }
    }
    Ok(())
}

/// Per-thread buffers reused across documents.
#[derive(Default)]
struct Buffers {
    normalized: Vec<u8>,
    words: Vec<u64>,
    shingles: Vec<u64>,
    signature: Vec<u64>,
}

/// What pass 1 computes for every document, shared read-only by the worker threads.
struct Analyzer<'a> {
    stages: Stages,
    filter: &'a FilterConfig,
    dedup: &'a DedupConfig,
    hasher: Option<MinHasher>,
    lsh: LshParams,
    evals: Option<&'a EvalIndex>,
    drop_contaminated: bool,
}

impl Analyzer<'_> {
    fn analyze(
        &self,
        doc: &Document,
        mode: FilterMode,
        scratch: &mut Scratch,
        buffers: &mut Buffers,
    ) -> (DocRecord, Keys) {
        let stages = self.stages;
        let signals = (stages.profile || mode != FilterMode::Off).then(|| signals::compute(&doc.text, scratch));
        let rules = match (&signals, mode) {
            (Some(s), FilterMode::Annotate | FilterMode::Drop) => filters::evaluate(self.filter, s),
            _ => Default::default(),
        };
        let contamination = self.evals.and_then(|index| index.find(&doc.text, &mut buffers.words));
        let drop = (mode == FilterMode::Drop).then(|| rules.first()).flatten().map(DropReason::Filter).or_else(|| {
            contamination.filter(|_| self.drop_contaminated).map(|hit| DropReason::Contaminated(hit.benchmark))
        });
        let exact =
            if stages.dedup && self.dedup.exact { shingles::exact_key(&doc.text, &mut buffers.normalized) } else { 0 };
        let mut bands = Vec::new();
        if let Some(hasher) = &self.hasher {
            shingles::word_hashes(&doc.text, &mut buffers.words);
            shingles::shingles(&buffers.words, self.dedup.ngram, &mut buffers.shingles);
            hasher.signature(&buffers.shingles, &mut buffers.signature);
            self.lsh.band_keys(&buffers.signature, &mut bands);
        }
        let record = DocRecord {
            id: doc.id,
            source: doc.source,
            source_id: doc.source_id.clone(),
            bytes: doc.text.len() as u64,
            signals,
            rules,
            contamination,
            drop,
            dup_cluster: None,
        };
        (record, Keys { exact, bands })
    }
}

/// Documents shown per (domain, reason) in `examples.jsonl`: enough to see what a rule catches.
pub const EXAMPLES_PER_REASON: usize = 3;
/// Characters of each example's text kept.
const EXAMPLE_CHARS: usize = 400;

/// A removed or flagged document shown to the user (`examples.jsonl`, one per line).
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct Example {
    /// The domain of its source.
    pub domain: String,
    /// `drop_reason` (as in profile.parquet) when removed, `flagged:<rule>` when a rule flagged
    /// a document the run kept (annotate mode).
    pub reason: String,
    /// The document id (`FILE:ROW`).
    pub doc_id: String,
    /// Its own id field, when it has one.
    pub source_id: Option<String>,
    /// The start of its text.
    pub excerpt: String,
}

fn write_examples(path: &std::path::Path, examples: &[Example]) -> Result<()> {
    let mut text = String::new();
    for e in examples {
        text.push_str(&serde_json::to_string(e).expect("an example serializes"));
        text.push('\n');
    }
    atomic::write_file(path, text.as_bytes())
}

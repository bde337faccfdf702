//! Run reports: reads the artifacts of a `mixforge run` directory (never training code, never
//! libtorch), draws SVG plots and writes `report/index.html` (one self-contained page) and
//! `report/report.md`, with every plotted number in a file under `report/data/`.
//!
//! A section is a function from the run to an optional [`page::Section`]; a later phase adds
//! its section to [`SECTIONS`].

pub mod error;
pub mod page;
pub mod plot;
pub mod stages;

mod csv;
mod sections;

use std::path::{Path, PathBuf};

pub use error::{Error, Result};
pub use page::{Block, DataFile, Figure, Report, Section, Table};

/// Where each stage of `mixforge run` writes, relative to the run directory. The runner and
/// the report both name paths through these.
pub mod layout {
    /// Corpus stage output (kept/, profile.parquet, manifest.json, …).
    pub const CORPUS: &str = "corpus";
    /// Token shards.
    pub const SHARDS: &str = "shards";
    /// Search index.
    pub const INDEX: &str = "index";
    /// Proxy swarm (plan.json, runs.csv).
    pub const SWARM: &str = "swarm";
    /// The proposal and its tables.
    pub const PROPOSE: &str = "propose";
    /// The mix proposal inside [`PROPOSE`].
    pub const PROPOSAL: &str = "propose/proposal.toml";
    /// Cross-validation of the proposal's surrogates.
    pub const PROPOSAL_CV: &str = "propose/proposal.cv.json";
    /// The training run.
    pub const TRAIN: &str = "train";
    /// The long-context phase (teacher/, model/, niah.jsonl).
    pub const LONG_CONTEXT: &str = "long_context";
    /// Its scores, before and after.
    pub const LONG_CONTEXT_SCORES: &str = "long_context/scores.json";
    /// Specialists annealed from it (one training run each, anneal.json).
    pub const SPECIALISTS: &str = "specialists";
    /// Their merge (a checkpoint run, search.json).
    pub const MERGE: &str = "merge";
    /// Evaluation results.
    pub const EVAL: &str = "eval/eval.json";
    /// Quantization: the PTQ checkpoint (ptq/) and the QAT run (model/).
    pub const QAT: &str = "qat";
    /// Full precision, PTQ and QAT on the same windows and tasks.
    pub const QAT_SCORES: &str = "qat/scores.json";
    /// The deployable files (int4/, model.gguf, hf/).
    pub const EXPORT: &str = "export";
    /// Their sizes, CPU speed and the int4 model's scores.
    pub const EXPORTS: &str = "export/exports.json";
    /// Leave-one-out instruction fine-tunes (runs/, runs.csv, deltas.csv, loo.json, loo.toml).
    pub const LOO: &str = "loo";
    /// The instruction-tuned model (model/).
    pub const SFT: &str = "sft";
    /// Its scores before and after, the weights, the Δ matrix.
    pub const SFT_SCORES: &str = "sft/scores.json";
    /// The report.
    pub const REPORT: &str = "report";
}

/// Everything a section reads: the run directory and its stage records.
pub struct Run {
    /// The run directory.
    pub dir: PathBuf,
    /// The run card, when the run was made by `mixforge run`.
    pub card: Option<stages::RunCard>,
    /// Records of the stages that have one, in run order.
    pub records: Vec<stages::StageRecord>,
}

impl Run {
    /// Reads the run card and every stage record it lists.
    pub fn open(dir: &Path) -> Result<Run> {
        if !dir.is_dir() {
            return Err(Error::Missing(format!("{} is not a directory", dir.display())));
        }
        let card = stages::read_card(dir)?;
        let mut records = Vec::new();
        if let Some(card) = &card {
            // The report's own record is in progress while the report is built.
            for stage in card.stages.iter().filter(|s| *s != "report") {
                if let Some(r) = stages::read_record(dir, stage)? {
                    records.push(r);
                }
            }
        }
        Ok(Run { dir: dir.to_path_buf(), card, records })
    }

    /// A path inside the run.
    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.join(rel)
    }
}

/// A report section: `None` when the run has nothing for it yet.
type SectionFn = fn(&Run) -> Result<Option<Section>>;

/// The sections, in page order.
const SECTIONS: [SectionFn; 9] = [
    sections::card::section,
    sections::summary::section,
    sections::corpus::section,
    sections::simulator::section,
    sections::training::section,
    sections::long_context::section,
    sections::merge::section,
    sections::quantization::section,
    sections::instruct::section,
];

/// Builds the report of a run from its artifacts.
/// Builds the report of a run from its artifacts; `title` defaults to one naming the run.
pub fn build(run: &Run, title: Option<&str>) -> Result<Report> {
    let mut out = Vec::new();
    for section in SECTIONS {
        out.extend(section(run)?);
    }
    if out.is_empty() {
        return Err(Error::Missing(format!(
            "{} holds no artifact of a `mixforge run` (stages/run.json, corpus/, swarm/, train/); give the run directory",
            run.dir.display()
        )));
    }
    let name = run.dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let title = title.map_or_else(|| format!("mixforge run report: {name}"), str::to_string);
    Ok(Report { title, sections: out })
}

/// What [`write`] wrote.
pub struct Written {
    /// `report/index.html`.
    pub html: PathBuf,
    /// `report/report.md`.
    pub markdown: PathBuf,
    /// The report as built.
    pub report: Report,
}

/// Builds the report and writes `RUN/report/` whole (HTML, Markdown, `data/`, `figures/`),
/// through a temporary directory: a reader never sees half a report.
pub fn write(run_dir: &Path, title: Option<&str>) -> Result<Written> {
    let run = Run::open(run_dir)?;
    let report = build(&run, title)?;
    let target = run_dir.join(layout::REPORT);
    corpus::atomic::check_replaceable(&target, "report directory (no index.html)", |d| d.join("index.html").is_file())?;
    let dir = corpus::atomic::AtomicDir::create(&target)?;
    let put = |rel: &str, bytes: &[u8]| -> Result<()> {
        let path = dir.path().join(rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
        }
        std::fs::write(&path, bytes).map_err(|e| Error::io(&path, e))
    };
    put("index.html", page::html(&report).as_bytes())?;
    put("report.md", page::markdown(&report).as_bytes())?;
    for data in report.data_files() {
        put(&format!("data/{}", data.name), data.contents.as_bytes())?;
    }
    for figure in report.figures() {
        put(&format!("figures/{}.svg", figure.id), figure.svg.as_bytes())?;
    }
    dir.commit()?;
    Ok(Written { html: target.join("index.html"), markdown: target.join("report.md"), report })
}

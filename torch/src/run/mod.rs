//! `mixforge run`: corpus → shards → (index) → swarm → proposal → training → evaluation →
//! report, in one run directory. Each stage records `RUN/stages/<stage>.json`; a rerun skips a
//! finished stage whose recipe section and inputs are unchanged (and whose outputs are still
//! the bytes it wrote), reruns a changed one (and so everything that reads it), and lets a
//! killed stage continue where the stage itself can (shards, swarm, training).

mod record;
mod stages;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use reports::stages::{RunCard, StageRecord, Status};

use crate::cli::{PipelineArgs, PresetArg};
use crate::recipe::{self, Recipe};

use record::Hasher;

/// The stages in order: name, stages it reads, what it owns in the run directory.
pub struct Stage {
    pub name: &'static str,
    pub reads: &'static [&'static str],
    pub owns: &'static str,
}

/// Every stage of a run, in order. The index, long-context, specialists, merge, qat, export, loo
/// and sft stages run only when the recipe asks for them.
pub const STAGES: [Stage; 15] = [
    Stage { name: "corpus", reads: &[], owns: reports::layout::CORPUS },
    Stage { name: "shards", reads: &["corpus"], owns: reports::layout::SHARDS },
    Stage { name: "index", reads: &["corpus"], owns: reports::layout::INDEX },
    Stage { name: "swarm", reads: &["shards"], owns: reports::layout::SWARM },
    Stage { name: "propose", reads: &["shards", "swarm"], owns: reports::layout::PROPOSE },
    Stage { name: "train", reads: &["shards", "propose"], owns: reports::layout::TRAIN },
    Stage { name: "long_context", reads: &["shards", "propose", "train"], owns: reports::layout::LONG_CONTEXT },
    Stage {
        name: "specialists",
        reads: &["shards", "propose", "train", "long_context"],
        owns: reports::layout::SPECIALISTS,
    },
    Stage { name: "merge", reads: &["shards", "train", "long_context", "specialists"], owns: reports::layout::MERGE },
    Stage { name: "eval", reads: &["shards", "train", "long_context", "specialists", "merge"], owns: "eval" },
    Stage {
        name: "qat",
        reads: &["shards", "train", "long_context", "specialists", "merge"],
        owns: reports::layout::QAT,
    },
    Stage {
        name: "export",
        reads: &["shards", "train", "long_context", "specialists", "merge", "qat"],
        owns: reports::layout::EXPORT,
    },
    Stage { name: "loo", reads: &["train", "long_context", "specialists", "merge"], owns: reports::layout::LOO },
    Stage { name: "sft", reads: &["train", "long_context", "specialists", "merge", "loo"], owns: reports::layout::SFT },
    Stage {
        name: "report",
        reads: &[
            "corpus",
            "shards",
            "index",
            "swarm",
            "propose",
            "train",
            "long_context",
            "specialists",
            "merge",
            "eval",
            "qat",
            "export",
            "loo",
            "sft",
        ],
        owns: reports::layout::REPORT,
    },
];

/// The quick preset (a minute or two on 2 cores: tests, first looks at a new corpus). The
/// demo preset is the recipe defaults.
const QUICK: &str = include_str!("../../../recipes/presets/quick.toml");

/// What a stage does with its existing outputs this time.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Mode {
    /// Finished with the same inputs and outputs intact: nothing to do.
    Skip,
    /// Interrupted with the same inputs: continue over what is there.
    Continue,
    /// New inputs, changed outputs or `--from`: remove the stage's outputs and start over.
    Fresh,
}

/// Everything a stage needs.
pub struct Ctx<'a> {
    pub run: &'a Path,
    pub recipe: &'a Recipe,
    pub threads: usize,
    /// Whether this attempt continues an interrupted one.
    pub resume: bool,
}

impl Ctx<'_> {
    /// A path in the run directory.
    pub fn path(&self, rel: &str) -> PathBuf {
        self.run.join(rel)
    }
}

/// `mixforge run`.
pub fn run(args: &PipelineArgs, threads: usize) -> Result<()> {
    let preset = match args.preset {
        PresetArg::Quick => QUICK,
        PresetArg::Demo => "",
    };
    let (mut recipe, recipe_text) = Recipe::load_layered(args.recipe.as_deref(), preset)?;
    if !args.sources.is_empty() {
        recipe.sources = args.sources.iter().map(|s| recipe::parse_source_flag(s)).collect::<Result<_>>()?;
    }
    if recipe.sources.is_empty() {
        bail!("no sources: pass a recipe (e.g. recipes/demo.toml) or --source DOMAIN=PATH_OR_GLOB");
    }
    if recipe.shards.is_none() {
        bail!("the run needs [shards] (a tokenizer or a vocab_size); the presets give one, so this is a mixforge bug");
    }
    let active: Vec<&Stage> = STAGES.iter().filter(|s| stages::enabled(s.name, &recipe)).collect();
    if let Some(from) = &args.from
        && !active.iter().any(|s| s.name == from)
    {
        bail!(
            "--from {from}: not a stage of this run; its stages are {}",
            active.iter().map(|s| s.name).collect::<Vec<_>>().join(", ")
        );
    }
    let run = &args.out;
    // Stages remove and rewrite their own folders: only in a directory that is a run.
    corpus::atomic::check_replaceable(run, "mixforge run directory (no stages/run.json)", |d| {
        reports::stages::read_card(d).is_ok_and(|card| card.is_some())
    })?;
    std::fs::create_dir_all(reports::stages::dir(run)).with_context(|| format!("creating {}", run.display()))?;
    let card = run_card(&recipe, &recipe_text, args, threads)?;
    corpus::atomic::write_json(&reports::stages::dir(run).join("run.json"), &card)?;

    let total = active.len();
    let started = Instant::now();
    let mut forced = false;
    for (k, stage) in active.iter().enumerate() {
        forced |= args.from.as_deref() == Some(stage.name);
        let label = format!("stage {}/{total} {}", k + 1, stage.name);
        let section_hash = Hasher::json(&stages::section(stage.name, &recipe)?);
        let inputs = record::inputs(run, stage, &recipe)?;
        let input_key = record::input_key(&section_hash, &inputs);
        let previous = reports::stages::read_record(run, stage.name)?;
        let mode = match &previous {
            _ if forced => Mode::Fresh,
            Some(r) if r.input_key != input_key => Mode::Fresh,
            Some(r) if r.status == Status::Done => {
                if record::outputs_intact(run, r)? {
                    Mode::Skip
                } else {
                    eprintln!("{label}: its outputs changed since it finished; running it again");
                    Mode::Fresh
                }
            }
            // Killed or failed with the same inputs: the stages that can pick up where they
            // stopped do; the others start again.
            Some(_) if stages::resumable(stage.name) => Mode::Continue,
            Some(_) => Mode::Fresh,
            None => Mode::Fresh,
        };
        if mode == Mode::Skip {
            eprintln!("{label}: unchanged, skipped");
            continue;
        }
        if mode == Mode::Fresh {
            let owned = run.join(stage.owns);
            if owned.exists() {
                std::fs::remove_dir_all(&owned)
                    .with_context(|| format!("removing {} to rerun {}", owned.display(), stage.name))?;
            }
        }
        eprintln!("{label}{}", if mode == Mode::Continue { ": continuing an interrupted attempt" } else { "" });
        let mut record = StageRecord {
            format_version: reports::stages::STAGE_FORMAT_VERSION,
            stage: stage.name.to_string(),
            status: Status::Running,
            started_unix: std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs()),
            wall_s: 0.0,
            section_hash,
            inputs,
            input_key,
            outputs: Default::default(),
            outputs_digest: String::new(),
            resumed: mode == Mode::Continue,
            error: None,
            metrics: Vec::new(),
        };
        record::save(run, &record)?;
        let ctx = Ctx { run, recipe: &recipe, threads, resume: mode == Mode::Continue };
        let clock = Instant::now();
        let mut log = Vec::new();
        let result = stages::execute(stage.name, &ctx, &mut log);
        record.wall_s = clock.elapsed().as_secs_f64();
        let log_path = reports::stages::dir(run).join(format!("{}.log", stage.name));
        corpus::atomic::write_file(&log_path, &log)?;
        match result {
            Ok(metrics) => {
                // A number that is not finite (no step ran, an overflow) is left out: JSON has
                // no NaN, and the summary shows "–" where a stage has no value.
                record.metrics = metrics.into_iter().filter(|m| m.value.is_finite()).collect();
                record.outputs = record::hash_outputs(run, stage.owns)?;
                record.outputs_digest = record::digest(&record.outputs);
                record.status = Status::Done;
                record::save(run, &record)?;
                eprintln!("{label}: done in {:.1} s", record.wall_s);
            }
            Err(e) => {
                record.status = Status::Failed;
                record.error = Some(format!("{e:#}"));
                record::save(run, &record)?;
                return Err(e.context(format!(
                    "stage `{}` ({}/{total}) failed after {:.1} s; the outputs of earlier stages are intact, its log is {}",
                    stage.name,
                    k + 1,
                    record.wall_s,
                    log_path.display()
                )));
            }
        }
    }
    let report =
        reports::Run::open(run).and_then(|r| reports::build(&r, None)).context("reading the run for its summary")?;
    let mut stdout = std::io::stdout().lock();
    if let Some(summary) = report.sections.iter().find(|s| s.id == "summary") {
        let one = reports::Report { title: String::new(), sections: vec![summary.clone()] };
        let text = reports::page::markdown(&one);
        writeln!(stdout, "{}", text.trim_start_matches("# \n").trim())?;
    }
    writeln!(stdout, "\nrun finished in {:.1} s: {}", started.elapsed().as_secs_f64(), run.display())?;
    writeln!(stdout, "report: {}", run.join(reports::layout::REPORT).join("index.html").display())?;
    Ok(())
}

fn run_card(recipe: &Recipe, text: &str, args: &PipelineArgs, threads: usize) -> Result<RunCard> {
    let resolved = toml::to_string(recipe).context("writing the resolved recipe")?;
    let (commit, dirty) = record::git_state();
    let mut seeds = std::collections::BTreeMap::new();
    seeds.insert("dedup (MinHash)".to_string(), recipe.dedup.seed);
    seeds.insert("swarm".to_string(), recipe.swarm.seed);
    seeds.insert("proposal search".to_string(), recipe.propose.seed);
    seeds.insert("training".to_string(), recipe.train.seed);
    if let Some(s) = &recipe.shards {
        seeds.insert("validation split".to_string(), s.split_seed);
    }
    Ok(RunCard {
        format_version: reports::stages::STAGE_FORMAT_VERSION,
        version: env!("CARGO_PKG_VERSION").to_string(),
        commit,
        dirty,
        libtorch: train::device::report()
            .into_iter()
            .find(|(k, _)| k.contains("libtorch"))
            .map_or("unknown".into(), |(_, v)| v),
        hardware: record::hardware(),
        threads,
        preset: format!("{:?}", args.preset).to_lowercase(),
        recipe_text: text.to_string(),
        resolved_recipe: resolved.clone(),
        recipe_hash: Hasher::bytes(resolved.as_bytes()),
        seeds,
        stages: STAGES.iter().filter(|s| stages::enabled(s.name, recipe)).map(|s| s.name.to_string()).collect(),
    })
}

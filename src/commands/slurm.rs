//! `mixforge corpus slurm`: a sharded corpus run as Slurm jobs. A job array does the first pass
//! (`corpus run --shard ${SLURM_ARRAY_TASK_ID}/N`, settings from OUT/parts/config.json), the
//! reduce runs after it (`--dependency=afterok`), as datatrove's `SlurmPipelineExecutor` chains
//! its stages, then a kept array writes each task's share of the kept files (`corpus finish
//! --shard I/N`) and a merge job joins them (`corpus finish`); a recipe's [shards] add a tokens
//! array (`corpus shard --shard I/N`) and a finish job (the shards' manifest, the [search]
//! index). A task's part file is its completion record: rerunning this command resubmits only
//! the map tasks whose part is missing or stale (kept and tokens tasks skip their finished work
//! themselves).
//!
//! The array index is I and N is written into the script, not read from
//! `SLURM_ARRAY_TASK_COUNT`: a resubmitted array (`--array=3,5`) has fewer tasks than parts.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail, ensure};
use corpus::config::Stages;
use corpus::pipeline::parts;

use crate::cli::SlurmArgs;
use crate::recipe::LaterStages;
use corpus::shards::TokenizerChoice;

/// How the jobs are asked for.
struct Job {
    tasks: u32,
    partition: Option<String>,
    cpus_per_task: u32,
    reduce_cpus: u32,
    reduce_mem: Option<String>,
    time: String,
}

/// A run's batch scripts, in the order they run, each after the one before (`afterok`).
struct Scripts {
    /// `(name, text)`: `map`, `reduce`, `kept` and `merge`, then `tokens` and `finish` when the
    /// recipe asks for shards (`finish` alone when it asks only for a search index).
    stages: Vec<(&'static str, String)>,
}

/// The recipe's later stages as jobs: the `corpus shard` flags (without --shard) and whether
/// to build the search index.
struct Later {
    shard_args: Option<String>,
    index: bool,
}

fn later_jobs(later: &LaterStages, out: &Path) -> Result<Later> {
    let shard_args = match &later.shards {
        None => None,
        Some(s) => {
            // A [shards] without a tokenizer is refused now rather than in the last job.
            let tokenizer = match super::shards::tokenizer_choice(s.tokenizer.as_deref(), s.vocab_size, s.sample_docs)?
            {
                TokenizerChoice::File(path) => format!("--tokenizer {}", quoted(&absolute(&path)?)),
                TokenizerChoice::Train { vocab_size, .. } => format!("--vocab-size {vocab_size}"),
            };
            Some(format!(
                "--in {out} --out {shards} {tokenizer} --sample-docs {} --val-fraction {} --split-seed {} --chunk-docs {}",
                s.sample_docs,
                s.val_fraction,
                s.split_seed,
                s.chunk_docs,
                out = quoted(out),
                shards = quoted(&out.join("shards")),
            ))
        }
    };
    Ok(Later { shard_args, index: later.search.as_ref().is_some_and(|s| s.index) })
}

fn scripts(exe: &Path, out: &Path, cwd: &Path, args: &Job, later: &Later) -> Scripts {
    let logs = out.join("slurm").join("logs");
    let partition = args.partition.as_ref().map(|p| format!("#SBATCH --partition={p}\n")).unwrap_or_default();
    // `extra`: further #SBATCH lines (the array, the reduce's memory and dependency rule).
    let header = |name: &str, log: &str, cpus: u32, extra: &str| {
        format!(
            "#!/bin/bash\n\
             # Written by `mixforge corpus slurm`; submitted with sbatch (see README, \"On a Slurm cluster\").\n\
             #SBATCH --job-name=mixforge-{name}\n\
             {extra}\
             #SBATCH --cpus-per-task={cpus}\n\
             #SBATCH --time={time}\n\
             #SBATCH --chdir=\"{cwd}\"\n\
             #SBATCH --output=\"{logs}/{log}\"\n\
             {partition}\
             set -euo pipefail\n",
            time = args.time,
            cwd = cwd.display(),
            // `%` starts a file-name pattern (as `%a`, the task) in --output; `%%` is a `%`.
            logs = logs.display().to_string().replace('%', "%%"),
        )
    };
    let threads = "--threads \"${SLURM_CPUS_PER_TASK}\"";
    let (exe, quoted_out) = (quoted(exe), quoted(out));
    let array = format!("#SBATCH --array=0-{}\n", args.tasks - 1);
    // Every job after the first is cancelled if one it waits for fails, instead of staying
    // pending forever.
    let after = "#SBATCH --kill-on-invalid-dep=yes\n";
    let map = format!(
        "{}# Task I reads the I-th of {n} runs of the input files and writes OUT/parts/part-I-of-{n}.bin.\n\
         exec {exe} {threads} corpus run --out {out} --shard \"${{SLURM_ARRAY_TASK_ID}}/{n}\"\n",
        header("map", "map-%a.log", args.cpus_per_task, &array),
        n = args.tasks,
        out = quoted_out,
    );
    // The one-node jobs: the reduce holds every part's records and does the verify pass; the
    // merge joins the kept tasks' shares; the finish checks every chunk and builds the index.
    let mem = args.reduce_mem.as_ref().map(|m| format!("#SBATCH --mem={m}\n")).unwrap_or_default();
    let one_node = format!("{mem}{after}");
    let reduce = format!(
        "{}# Duplicates across every part, then profile and summary in OUT, and the kept tasks' plan.\n\
         exec {exe} {threads} corpus reduce --out {quoted_out} --finish-by-shard\n",
        header("reduce", "reduce.log", args.reduce_cpus, &one_node),
    );
    let kept = format!(
        "{}# Task I writes its files' share of the kept documents into OUT/kept-parts.\n\
         exec {exe} {threads} corpus finish --out {quoted_out} --shard \"${{SLURM_ARRAY_TASK_ID}}/{n}\"\n",
        header("kept", "kept-%a.log", args.cpus_per_task, &format!("{array}{after}")),
        n = args.tasks,
    );
    let mut merge = format!(
        "{}# Every task's share into OUT/kept, then examples.jsonl and manifest.json.\n\
         {exe} {threads} corpus finish --out {quoted_out}\n",
        header("merge", "merge.log", args.reduce_cpus, &one_node),
    );
    if let Some(shard_args) = &later.shard_args {
        merge.push_str(&format!(
            "# The tokenizer (trained on the kept documents' sample, or copied) before the tokens tasks start.\n\
             {exe} {threads} corpus shard {shard_args} --tokenizer-only\n"
        ));
    }
    let mut stages = vec![("map", map), ("reduce", reduce), ("kept", kept), ("merge", merge)];
    let mut finish = String::new();
    if let Some(shard_args) = &later.shard_args {
        stages.push((
            "tokens",
            format!(
                "{}# Task I tokenizes chunks I, I+{n}, … of the kept documents into OUT/shards (no manifest).\n\
                 exec {exe} {threads} corpus shard {shard_args} --shard \"${{SLURM_ARRAY_TASK_ID}}/{n}\"\n",
                header("tokens", "tokens-%a.log", args.cpus_per_task, &format!("{array}{after}")),
                n = args.tasks,
            ),
        ));
        finish.push_str(&format!(
            "# Checks every task's chunks and writes OUT/shards/manifest.json.\n\
             {exe} {threads} corpus shard {shard_args}\n"
        ));
    }
    if later.index {
        finish.push_str(&format!(
            "{exe} {threads} corpus index --in {quoted_out} --out {}\n",
            quoted(&out.join("index"))
        ));
    }
    if !finish.is_empty() {
        stages.push(("finish", format!("{}{finish}", header("finish", "finish.log", args.reduce_cpus, &one_node))));
    }
    Scripts { stages }
}

/// #SBATCH values are double-quoted (spaces are fine); a path with a quote or a line break
/// cannot be written there.
fn check_sbatch_path(path: &Path, what: &str) -> Result<()> {
    let text = path.to_str().with_context(|| format!("{what} {} is not UTF-8", path.display()))?;
    ensure!(
        !text.contains(['"', '\n', '\r']),
        "{what} {text:?} has a double quote or a line break, which an #SBATCH line cannot hold; use another folder"
    );
    Ok(())
}

/// A path as one shell word.
fn quoted(path: &Path) -> String {
    format!("'{}'", path.display().to_string().replace('\'', r"'\''"))
}

/// Runs `sbatch --parsable ARGS`, returning the job id.
fn sbatch(args: &[String]) -> Result<String> {
    let out = Command::new("sbatch")
        .arg("--parsable")
        .args(args)
        .output()
        .context("running sbatch (is Slurm installed and on PATH? `--dry-run` prints the scripts without it)")?;
    if !out.status.success() {
        bail!("sbatch {} failed: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim());
    }
    // `--parsable` prints `jobid[;cluster]`.
    let text = String::from_utf8_lossy(&out.stdout);
    Ok(text.trim().split(';').next().unwrap_or_default().to_string())
}

fn absolute(path: &Path) -> Result<PathBuf> {
    Ok(if path.is_absolute() { path.to_path_buf() } else { std::env::current_dir()?.join(path) })
}

/// Fails when jobs of the last submission into this run (their ids in `submitted`) are still
/// queued or running: submitting again would run the same tasks twice, into the same parts.
fn refuse_while_queued(submitted: &Path) -> Result<()> {
    let Ok(jobs) = std::fs::read_to_string(submitted) else { return Ok(()) };
    let jobs = jobs.trim();
    if jobs.is_empty() {
        return Ok(());
    }
    let out = Command::new("squeue")
        .args(["--noheader", "--format=%i %T", "--states=all"])
        .arg(format!("--jobs={jobs}"))
        .output()
        .context("running squeue (is Slurm installed and on PATH?)")?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    // Jobs the controller has forgotten (long finished) are not queued.
    if !out.status.success() && !stderr.contains("Invalid job id") {
        bail!("squeue --jobs={jobs} failed: {}", stderr.trim());
    }
    // Ended jobs stay listed for a while; every other state (pending, held, running, suspended,
    // requeued, …) may still run a task.
    const ENDED: [&str; 10] = [
        "COMPLETED",
        "CANCELLED",
        "FAILED",
        "TIMEOUT",
        "NODE_FAIL",
        "PREEMPTED",
        "BOOT_FAIL",
        "DEADLINE",
        "OUT_OF_MEMORY",
        "REVOKED",
    ];
    let queued = String::from_utf8_lossy(&out.stdout);
    let queued: Vec<&str> = queued
        .lines()
        .map(str::trim)
        .filter(|l| l.split_whitespace().nth(1).is_some_and(|state| !ENDED.contains(&state)))
        .collect();
    ensure!(
        queued.is_empty(),
        "jobs {jobs} of the last submission into this run are still queued or running ({}): wait for them \
         (squeue --jobs={jobs}) or cancel them (scancel {}), then rerun",
        queued.join(", "),
        jobs.replace(',', " ")
    );
    Ok(())
}

/// `mixforge corpus slurm`.
pub fn submit(args: SlurmArgs) -> Result<()> {
    let SlurmArgs { run, tasks, partition, cpus_per_task, reduce_cpus, reduce_mem, time, sbatch_args, dry_run } = args;
    let reduce_cpus = reduce_cpus.unwrap_or(cpus_per_task);
    let job = Job { tasks, partition, cpus_per_task, reduce_cpus, reduce_mem, time };
    ensure!(run.shard.is_none(), "corpus slurm gives every task its --shard; drop --shard");
    ensure!(tasks > 0, "--tasks must be at least 1");
    // The reduce's afterok dependency and the queued-jobs check both assume this cluster.
    ensure!(
        !sbatch_args.iter().any(|a| a.starts_with("--clusters") || a.starts_with("-M")),
        "--sbatch-arg cannot send the jobs to another cluster (--clusters/-M); run corpus slurm on that cluster"
    );
    let (mut config, later) = super::corpus::pipeline_config(run, Stages::ALL)?;
    config.out = absolute(&config.out)?;
    config.validate()?;
    let out = config.out.clone();
    let exe = std::env::current_exe().context("finding the mixforge executable")?;
    let cwd = std::env::current_dir()?;
    check_sbatch_path(&out, "--out")?;
    check_sbatch_path(&cwd, "the current folder")?;
    let later = later_jobs(&later, &out)?;
    let scripts = scripts(&exe, &out, &cwd, &job, &later);
    let pending = parts::pending(&config, tasks)?;
    let slurm_dir = out.join("slurm");
    let script_path = |name: &str| slurm_dir.join(format!("{name}.sbatch"));
    let array = pending.iter().map(|i| i.to_string()).collect::<Vec<_>>().join(",");
    // sbatch's arguments per stage, given the job the stage waits for; the map array takes
    // only the pending tasks (a finished part is its task's completion record; the tokens
    // tasks reuse their finished chunks themselves).
    let submission = |name: &str, after: Option<&str>| {
        let mut a = sbatch_args.clone();
        if name == "map" {
            a.push(format!("--array={array}"));
        }
        a.extend(after.map(|j| format!("--dependency=afterok:{j}")));
        a.push(script_path(name).display().to_string());
        a
    };
    let stages: Vec<&(&str, String)> =
        scripts.stages.iter().filter(|(name, _)| *name != "map" || !pending.is_empty()).collect();
    let mut stdout = std::io::stdout().lock();
    if dry_run {
        for (name, text) in &scripts.stages {
            writeln!(stdout, "# {}\n{text}", script_path(name).display())?;
        }
        if !out.join("parts/config.json").is_file() {
            writeln!(stdout, "# would write {}", out.join("parts/config.json").display())?;
        }
        writeln!(stdout, "# would submit:")?;
        let mut previous: Option<String> = None;
        for (name, _) in &stages {
            let args = submission(name, previous.as_deref()).join(" ");
            let var = name.to_uppercase();
            writeln!(stdout, "{var}=$(sbatch --parsable {args})")?;
            previous = Some(format!("${var}"));
        }
        return Ok(());
    }
    corpus::pipeline::check_run_dir(&out)?;
    let submitted_path = slurm_dir.join("submitted");
    refuse_while_queued(&submitted_path)?;
    std::fs::create_dir_all(slurm_dir.join("logs")).with_context(|| format!("creating {}", slurm_dir.display()))?;
    std::fs::create_dir_all(out.join("parts"))?;
    let settings_path = out.join("parts/config.json");
    if !settings_path.is_file() {
        corpus::atomic::write_file(&settings_path, parts::settings_json(&config, tasks).as_bytes())?;
    }
    for (name, text) in &scripts.stages {
        corpus::atomic::write_file(&script_path(name), text.as_bytes())?;
    }
    // Each id is recorded as soon as it exists: if a later sbatch fails, a rerun still sees
    // the jobs already queued.
    let mut jobs: Vec<(&str, String)> = Vec::new();
    for (name, _) in &stages {
        let job = sbatch(&submission(name, jobs.last().map(|(_, j)| j.as_str())))?;
        jobs.push((name, job));
        let ids = jobs.iter().map(|(_, j)| j.as_str()).collect::<Vec<_>>().join(",");
        corpus::atomic::write_file(&submitted_path, format!("{ids}\n").as_bytes())?;
    }
    let job_of = |stage: &str| jobs.iter().find(|(n, _)| *n == stage).map(|(_, j)| j.clone());
    let reduce_job = job_of("reduce").expect("the reduce is always submitted");
    match job_of("map") {
        Some(job) => writeln!(
            stdout,
            "submitted map array {job} ({} of {} tasks: {array}) and reduce {reduce_job} after it",
            pending.len(),
            tasks
        )?,
        None => writeln!(stdout, "every part is done; submitted reduce {reduce_job}")?,
    }
    let (kept_job, merge_job) = (job_of("kept").unwrap_or_default(), job_of("merge").unwrap_or_default());
    writeln!(
        stdout,
        "then kept array {kept_job} ({tasks} tasks: kept documents) and merge {merge_job} (kept/, manifest)"
    )?;
    if let Some(job) = job_of("tokens") {
        writeln!(stdout, "then tokens array {job} ({tasks} tasks: shards in {})", out.join("shards").display())?;
    }
    let last = jobs.last().map(|(_, j)| j.clone()).unwrap_or_default();
    if let Some(job) = job_of("finish") {
        let what = match (later.shard_args.is_some(), later.index) {
            (true, true) => "the shards' manifest and the search index",
            (true, false) => "the shards' manifest",
            _ => "the search index",
        };
        writeln!(stdout, "then finish {job} writes {what}")?;
    }
    let ids = jobs.iter().map(|(_, j)| j.as_str()).collect::<Vec<_>>().join(",");
    writeln!(stdout, "logs: {}", slurm_dir.join("logs").display())?;
    writeln!(stdout, "watch: squeue -j {ids}; when a task fails, fix the cause and rerun this command")?;
    writeln!(stdout, "result: {} once job {last} ends", out.display())?;
    Ok(())
}

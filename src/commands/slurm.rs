//! `mixforge corpus slurm`: a sharded corpus run as Slurm jobs. A job array does the first pass
//! (`corpus run --shard ${SLURM_ARRAY_TASK_ID}/N`, settings from OUT/parts/config.json) and the
//! reduce runs after it (`--dependency=afterok`), as datatrove's `SlurmPipelineExecutor` chains
//! its stages. A task's part file is its completion record: rerunning this command resubmits
//! only the tasks whose part is missing or stale.
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

/// How the jobs are asked for.
struct Job {
    tasks: u32,
    partition: Option<String>,
    cpus_per_task: u32,
    reduce_cpus: u32,
    reduce_mem: Option<String>,
    time: String,
}

/// The two batch scripts of a run.
struct Scripts {
    map: String,
    reduce: String,
}

fn scripts(exe: &Path, out: &Path, cwd: &Path, args: &Job) -> Scripts {
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
    let map = format!(
        "{}# Task I reads input files I, I+{n}, I+2×{n}, … and writes OUT/parts/part-I-of-{n}.bin.\n\
         exec {exe} {threads} corpus run --out {out} --shard \"${{SLURM_ARRAY_TASK_ID}}/{n}\"\n",
        header("map", "map-%a.log", args.cpus_per_task, &format!("#SBATCH --array=0-{}\n", args.tasks - 1)),
        n = args.tasks,
        exe = quoted(exe),
        out = quoted(out),
    );
    // The reduce holds every part's records and does the verify and kept-writing passes; if a
    // map task fails, Slurm cancels it instead of leaving it pending forever.
    let mem = args.reduce_mem.as_ref().map(|m| format!("#SBATCH --mem={m}\n")).unwrap_or_default();
    let reduce_extra = format!("{mem}#SBATCH --kill-on-invalid-dep=yes\n");
    let reduce = format!(
        "{}# Duplicates across every part, then kept/, profile, summary and manifest in OUT.\n\
         exec {exe} {threads} corpus reduce --out {out}\n",
        header("reduce", "reduce.log", args.reduce_cpus, &reduce_extra),
        exe = quoted(exe),
        out = quoted(out),
    );
    Scripts { map, reduce }
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
    let scripts = scripts(&exe, &out, &cwd, &job);
    let pending = parts::pending(&config, tasks)?;
    let slurm_dir = out.join("slurm");
    let (map_path, reduce_path) = (slurm_dir.join("map.sbatch"), slurm_dir.join("reduce.sbatch"));
    let array = pending.iter().map(|i| i.to_string()).collect::<Vec<_>>().join(",");
    let mut map_args = sbatch_args.clone();
    map_args.extend([format!("--array={array}"), map_path.display().to_string()]);
    let reduce_args = |after: Option<&str>| {
        let mut a = sbatch_args.clone();
        a.extend(after.map(|j| format!("--dependency=afterok:{j}")));
        a.push(reduce_path.display().to_string());
        a
    };
    let mut stdout = std::io::stdout().lock();
    if dry_run {
        writeln!(stdout, "# {}\n{}", map_path.display(), scripts.map)?;
        writeln!(stdout, "# {}\n{}", reduce_path.display(), scripts.reduce)?;
        if !out.join("parts/config.json").is_file() {
            writeln!(stdout, "# would write {}", out.join("parts/config.json").display())?;
        }
        writeln!(stdout, "# would submit:")?;
        if pending.is_empty() {
            writeln!(stdout, "sbatch --parsable {}", reduce_args(None).join(" "))?;
        } else {
            writeln!(stdout, "MAP=$(sbatch --parsable {})", map_args.join(" "))?;
            writeln!(stdout, "sbatch --parsable {}", reduce_args(Some("$MAP")).join(" "))?;
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
    corpus::atomic::write_file(&map_path, scripts.map.as_bytes())?;
    corpus::atomic::write_file(&reduce_path, scripts.reduce.as_bytes())?;
    let map_job = if pending.is_empty() { None } else { Some(sbatch(&map_args)?) };
    // Recorded before the reduce is submitted: if that fails, a rerun still sees the array.
    if let Some(job) = &map_job {
        corpus::atomic::write_file(&submitted_path, format!("{job}\n").as_bytes())?;
    }
    let reduce_job = sbatch(&reduce_args(map_job.as_deref()))?;
    let jobs = map_job.iter().chain([&reduce_job]).cloned().collect::<Vec<_>>().join(",");
    corpus::atomic::write_file(&submitted_path, format!("{jobs}\n").as_bytes())?;
    match &map_job {
        Some(job) => writeln!(
            stdout,
            "submitted map array {job} ({} of {} tasks: {array}) and reduce {reduce_job} after it",
            pending.len(),
            tasks
        )?,
        None => writeln!(stdout, "every part is done; submitted reduce {reduce_job}")?,
    }
    writeln!(stdout, "logs: {}", slurm_dir.join("logs").display())?;
    writeln!(stdout, "watch: squeue -j {jobs}; when a task fails, fix the cause and rerun this command")?;
    writeln!(stdout, "result: {} once reduce {reduce_job} ends", out.join("manifest.json").display())?;
    if later.shards.is_some() || later.search.is_some() {
        writeln!(
            stdout,
            "note: the recipe's [shards]/[search] are not part of these jobs; after the reduce run \
             `mixforge corpus shard --in {0} …` / `mixforge corpus index --in {0} …`",
            out.display()
        )?;
    }
    Ok(())
}

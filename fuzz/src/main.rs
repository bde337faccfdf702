// A command-line tool: it reports on stdout.
#![allow(clippy::print_stdout)]
//! `mixforge-fuzz`: byte-mutation fuzzing of every reader of user input, on stable Rust.
//!
//! `cargo fuzz` needs nightly, which these machines cannot fetch, so this is the AFL "havoc"
//! idea without coverage instrumentation: real files as seeds, stacked byte mutations and
//! dictionary tokens, and a pool that keeps each input whose outcome (ok, or the shape of the
//! error message) is new. Errors are expected; a panic is a finding, saved under `--crashes`
//! for a regression test. `replay` runs saved findings (`fuzz/regressions/<target>/*`).
//!
//! ```text
//! mixforge-fuzz run jsonl --cpu-seconds 1800      # until the process has used 30 CPU-minutes
//! mixforge-fuzz replay fuzz/regressions           # every saved input, must not panic
//! ```

mod mutate;
mod targets;

use std::collections::BTreeSet;
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};

use crate::mutate::Mutator;
use crate::targets::{Ctx, TARGETS};

/// Pool size cap: enough variety, bounded memory.
const MAX_POOL: usize = 4096;

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let flag = |name: &str| args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned();
    match args.first().map(String::as_str) {
        Some("run") => {
            let target = args.get(1).context("usage: mixforge-fuzz run TARGET [--cpu-seconds N] [--seed S]")?;
            let cpu_seconds: f64 = flag("--cpu-seconds").map_or(Ok(60.0), |s| s.parse())?;
            let seed: u64 = flag("--seed").map_or(Ok(0), |s| s.parse())?;
            let crashes = PathBuf::from(flag("--crashes").unwrap_or_else(|| "fuzz/crashes".into()));
            single_threaded()?;
            let report = fuzz(target, cpu_seconds, seed, &crashes)?;
            println!("{report}");
            if report.crashes > 0 {
                bail!("{} panicking inputs saved under {}", report.crashes, crashes.join(target).display());
            }
            Ok(())
        }
        Some("replay") => {
            let dir = PathBuf::from(args.get(1).context("usage: mixforge-fuzz replay DIR")?);
            single_threaded()?;
            replay(&dir)
        }
        Some("list") => {
            for (name, about) in TARGETS {
                println!("{name:<8} {about}");
            }
            Ok(())
        }
        _ => bail!("usage: mixforge-fuzz run TARGET [--cpu-seconds N] [--seed S] [--crashes DIR] | replay DIR | list"),
    }
}

/// One core per fuzzer: two fuzzers use both cores of a small machine.
fn single_threaded() -> Result<()> {
    rayon::ThreadPoolBuilder::new().num_threads(1).build_global()?;
    Ok(())
}

/// What a fuzzing session did.
struct Report {
    target: String,
    execs: u64,
    cpu_seconds: f64,
    wall_seconds: f64,
    pool: usize,
    outcomes: usize,
    crashes: u64,
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: {} inputs in {:.0} CPU-s ({:.0} s wall, {:.0}/CPU-s), {} distinct outcomes, pool {}, {} panics",
            self.target,
            self.execs,
            self.cpu_seconds,
            self.wall_seconds,
            self.execs as f64 / self.cpu_seconds.max(1e-9),
            self.outcomes,
            self.pool,
            self.crashes
        )
    }
}

fn context(target: &str) -> Result<Ctx> {
    if !TARGETS.iter().any(|(name, _)| *name == target) {
        let names: Vec<&str> = TARGETS.iter().map(|(n, _)| *n).collect();
        bail!("no target `{target}` (have: {})", names.join(", "));
    }
    let checkout = std::env::var_os("CARGO_MANIFEST_DIR")
        .map(|d| PathBuf::from(d).join(".."))
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".."));
    let dir = std::env::temp_dir().join(format!("mixforge-fuzz-{}-{target}", std::process::id()));
    Ctx::new(dir, checkout)
}

fn fuzz(target: &str, cpu_seconds: f64, seed: u64, crashes: &Path) -> Result<Report> {
    let ctx = context(target)?;
    let mut pool = targets::seeds(target, &ctx)?;
    let mut mutator = Mutator::new(seed, targets::dictionary(target));
    let mut outcomes = BTreeSet::new();
    for input in &pool {
        if let Ok(outcome) = catch(target, &ctx, input) {
            outcomes.insert(outcome);
        }
    }
    // Panics are caught and counted; the default hook would print each one.
    std::panic::set_hook(Box::new(|_| {}));
    let (start, cpu_start) = (Instant::now(), cpu_time());
    let (mut execs, mut found) = (0u64, 0u64);
    while cpu_time() - cpu_start < cpu_seconds {
        let (a, b) = (mutator.below(pool.len()), mutator.below(pool.len()));
        let input = mutator.mutate(&pool[a], &pool[b]);
        execs += 1;
        match catch(target, &ctx, &input) {
            Ok(outcome) => {
                if outcomes.insert(outcome) && pool.len() < MAX_POOL {
                    pool.push(input);
                }
            }
            Err(message) => {
                found += 1;
                save_crash(crashes, target, &input, &message)?;
            }
        }
    }
    let _ = std::panic::take_hook();
    let _ = std::fs::remove_dir_all(&ctx.dir);
    Ok(Report {
        target: target.to_string(),
        execs,
        cpu_seconds: cpu_time() - cpu_start,
        wall_seconds: start.elapsed().as_secs_f64(),
        pool: pool.len(),
        outcomes: outcomes.len(),
        crashes: found,
    })
}

/// Runs one input: `Ok(outcome)` for any result of the reader, `Err(panic message)` for a panic.
fn catch(target: &str, ctx: &Ctx, input: &[u8]) -> std::result::Result<String, String> {
    match std::panic::catch_unwind(AssertUnwindSafe(|| targets::run(target, ctx, input))) {
        Ok(Ok(outcome)) => Ok(outcome),
        Ok(Err(e)) => Ok(format!("harness: {e}")),
        Err(panic) => Err(panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "panic".into())),
    }
}

fn save_crash(dir: &Path, target: &str, input: &[u8], message: &str) -> Result<()> {
    let dir = dir.join(target);
    std::fs::create_dir_all(&dir)?;
    let name = format!("{:016x}", xxhash_rust::xxh3::xxh3_64(input));
    std::fs::write(dir.join(format!("{name}.bin")), input)?;
    std::fs::write(dir.join(format!("{name}.txt")), message)?;
    eprintln!("{target}: panic saved as {}: {message}", dir.join(format!("{name}.bin")).display());
    Ok(())
}

/// Runs every `DIR/<target>/*.bin`; fails naming each input that still panics.
fn replay(dir: &Path) -> Result<()> {
    let mut failures = Vec::new();
    let mut n = 0;
    for (target, _) in TARGETS {
        let Ok(entries) = std::fs::read_dir(dir.join(target)) else { continue };
        let ctx = context(target)?;
        let mut files: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
        files.retain(|p| p.extension().is_some_and(|e| e == "bin"));
        files.sort();
        for file in files {
            n += 1;
            if let Err(message) = catch(target, &ctx, &std::fs::read(&file)?) {
                failures.push(format!("{}: {message}", file.display()));
            }
        }
        let _ = std::fs::remove_dir_all(&ctx.dir);
    }
    println!("replayed {n} inputs, {} panics", failures.len());
    if !failures.is_empty() {
        bail!("still panicking:\n{}", failures.join("\n"));
    }
    Ok(())
}

/// CPU time of the whole process (every thread), in seconds.
fn cpu_time() -> f64 {
    // SAFETY: getrusage only writes the struct it is given.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut usage);
        usage
    };
    let seconds = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 * 1e-6;
    seconds(usage.ru_utime) + seconds(usage.ru_stime)
}

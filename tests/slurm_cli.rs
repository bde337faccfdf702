//! `corpus slurm` through a real Slurm: the one-node cluster scripts/setup-slurm starts (the
//! test command runs it). The demo corpus as 4-task arrays (first pass, kept documents, tokens)
//! with a reduce and a merge between them equals the single-process run; a lost part is resubmitted alone; a rerun while the last submission is
//! queued is refused; `--dry-run` shows the scripts.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::common::{mixforge, s, scratch};
use crate::sharded_cli::{assert_same_files, assert_same_run, ok};

/// Job ids named in `corpus slurm`'s output ("map array J", "reduce K", "kept array L",
/// "merge M", "tokens array N", "finish O").
fn job_ids(stdout: &str) -> Vec<String> {
    let words: Vec<&str> = stdout.split_whitespace().collect();
    let mut ids: Vec<String> = words
        .windows(2)
        .filter(|w| ["array", "reduce", "merge", "finish"].contains(&w[0]))
        .filter_map(|w| w[1].parse::<u64>().ok().map(|j| j.to_string()))
        .collect();
    ids.dedup();
    ids
}

/// Waits until none of `jobs` is queued or running (at most 5 minutes).
fn wait_for(jobs: &[String], run: &Path) {
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let out = Command::new("squeue").args(["-h", "-o", "%i %T %r", "-j", &jobs.join(",")]).output().unwrap();
        let queued = String::from_utf8_lossy(&out.stdout).trim().to_string();
        if queued.is_empty() {
            return;
        }
        if Instant::now() > deadline || queued.contains("DependencyNeverSatisfied") {
            let _ = Command::new("scancel").args(jobs).status();
            let logs: String = std::fs::read_dir(run.join("slurm/logs"))
                .map(|d| {
                    d.flatten()
                        .map(|e| {
                            format!(
                                "{}:\n{}\n",
                                e.path().display(),
                                std::fs::read_to_string(e.path()).unwrap_or_default()
                            )
                        })
                        .collect()
                })
                .unwrap_or_default();
            panic!("Slurm jobs did not finish: {queued}\n{logs}");
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

#[test]
fn the_demo_corpus_through_sbatch_equals_the_single_process_run() {
    let sinfo = Command::new("sinfo").args(["-h", "-o", "%t"]).output();
    let up = sinfo.as_ref().map(|o| String::from_utf8_lossy(&o.stdout).to_string()).unwrap_or_default();
    assert!(
        ["idle", "mix", "alloc"].iter().any(|state| up.contains(state)),
        "no Slurm cluster here: scripts/setup-slurm starts a one-node one (scripts/test runs it). sinfo: {sinfo:?}"
    );
    let root = scratch("slurm");
    let single = root.join("single");
    ok(mixforge(&["corpus", "run", "recipes/demo.toml", "--out", s(&single)]), "single run");
    // A space and a `%` in the path: #SBATCH lines quote it, and --output escapes the `%`.
    let run = root.join("sharded 100%a");
    let args = ["corpus", "slurm", "recipes/demo.toml", "--tasks", "4", "--cpus-per-task", "1", "--out", s(&run)];
    let stdout = ok(mixforge(&args), "corpus slurm");
    assert!(stdout.contains("(4 of 4 tasks: 0,1,2,3)"), "{stdout}");
    let jobs = job_ids(&stdout);
    assert_eq!(jobs.len(), 6, "map, kept and tokens arrays, a reduce, a merge and a finish: {stdout}");
    wait_for(&jobs, &run);
    assert_same_run(&single, &run, "sbatch, 4 tasks");
    // The recipe's [shards] as a tokens array and a finish job: the single run's shards.
    assert_same_files(&single.join("shards"), &run.join("shards"), "shards by 4 tokens tasks");
    assert!(run.join("index/meta.json").is_file(), "the finish job builds the [search] index");
    assert!(!run.join("kept-parts").exists(), "the merge removes the kept tasks' shares");
    for task in 0..4 {
        let log = std::fs::read_to_string(run.join(format!("slurm/logs/map-{task}.log"))).unwrap();
        assert!(log.starts_with(&format!("part {task}/4: ")), "task {task}'s log: {log}");
        let log = std::fs::read_to_string(run.join(format!("slurm/logs/kept-{task}.log"))).unwrap();
        assert!(log.starts_with(&format!("finish {task}/4: ")), "kept task {task}'s log: {log}");
        let log = std::fs::read_to_string(run.join(format!("slurm/logs/tokens-{task}.log"))).unwrap();
        assert!(log.starts_with(&format!("shard task {task}/4: ")), "tokens task {task}'s log: {log}");
    }

    // A task's part lost: the rerun resubmits that task alone, and the reduce after it.
    std::fs::remove_file(run.join("parts/part-00002-of-00004.bin")).unwrap();
    std::fs::remove_file(run.join("manifest.json")).unwrap();
    let stdout = ok(mixforge(&args), "corpus slurm again");
    assert!(stdout.contains("(1 of 4 tasks: 2)"), "{stdout}");
    wait_for(&job_ids(&stdout), &run);
    assert_same_run(&single, &run, "sbatch, task 2 resubmitted");
    assert_same_files(&single.join("shards"), &run.join("shards"), "shards after the resubmission");
    std::fs::remove_dir_all(&root).unwrap();
}

#[test]
fn dry_run_prints_the_scripts_and_submits_nothing() {
    let root = scratch("slurm-dry");
    let run = root.join("run");
    let stdout = ok(
        mixforge(&[
            "corpus",
            "slurm",
            "recipes/demo.toml",
            "--tasks",
            "7",
            "--partition",
            "cpu",
            "--sbatch-arg=--account=lab",
            "--out",
            s(&run),
            "--dry-run",
        ]),
        "dry run",
    );
    for needle in [
        "#SBATCH --array=0-6",
        "#SBATCH --partition=cpu",
        "map-%a.log",
        "corpus run --out",
        "--shard \"${SLURM_ARRAY_TASK_ID}/7\"",
        "--finish-by-shard\n",
        "kept-%a.log",
        "corpus finish --out",
        "--vocab-size 8192 --sample-docs 2000 --val-fraction 0.05 --split-seed 0 --chunk-docs 8192 --tokenizer-only",
        "tokens-%a.log",
        "--shard \"${SLURM_ARRAY_TASK_ID}/7\"",
        "corpus index --in",
        "MAP=$(sbatch --parsable --account=lab --array=0,1,2,3,4,5,6",
        "REDUCE=$(sbatch --parsable --account=lab --dependency=afterok:$MAP",
        "KEPT=$(sbatch --parsable --account=lab --dependency=afterok:$REDUCE",
        "MERGE=$(sbatch --parsable --account=lab --dependency=afterok:$KEPT",
        "TOKENS=$(sbatch --parsable --account=lab --dependency=afterok:$MERGE",
        "FINISH=$(sbatch --parsable --account=lab --dependency=afterok:$TOKENS",
    ] {
        assert!(stdout.contains(needle), "`{needle}` in:\n{stdout}");
    }
    assert!(!run.exists(), "a dry run writes nothing");
    std::fs::remove_dir_all(&root).unwrap();
}

#[test]
fn a_rerun_while_the_last_submission_is_queued_is_refused() {
    let root = scratch("slurm-queued");
    let run = root.join("run");
    let args = ["corpus", "slurm", "recipes/demo.toml", "--tasks", "2", "--out", s(&run)];
    // Held jobs stay queued until released.
    let held: Vec<&str> = args.iter().copied().chain(["--sbatch-arg=--hold"]).collect();
    let jobs = job_ids(&ok(mixforge(&held), "a held submission"));
    assert_eq!(jobs.len(), 6, "map, kept and tokens arrays, a reduce, a merge and a finish");
    let again = mixforge(&args);
    let stderr = String::from_utf8_lossy(&again.stderr);
    assert!(!again.status.success(), "a second submission of queued tasks must be refused");
    assert!(
        stderr.contains("still queued or running") && stderr.contains(&format!("scancel {}", jobs.join(" "))),
        "{stderr}"
    );

    // Released, they run; once they ended, a rerun submits again (only the reduce: every part is done).
    let released = Command::new("scontrol").args(["release", &jobs.join(",")]).status().unwrap();
    assert!(released.success());
    wait_for(&jobs, &run);
    assert!(run.join("manifest.json").is_file(), "the released jobs finished the run");
    let stdout = ok(mixforge(&args), "a rerun after the jobs ended");
    assert!(stdout.contains("every part is done"), "{stdout}");
    wait_for(&job_ids(&stdout), &run);
    std::fs::remove_dir_all(&root).unwrap();
}

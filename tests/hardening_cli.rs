//! The CLI where it once lost or mixed data silently: a resumed `train` that dropped its
//! flags, `train --out` into another run, runs that could not resume once moved, `corpus
//! index --out` that deleted whatever it was pointed at.

use std::path::Path;
use std::process::Output;

use crate::common::{demo_shards, mixforge, s, scratch};

fn ok(args: &[&str]) -> Output {
    let out = mixforge(args);
    assert!(out.status.success(), "mixforge {args:?} failed:\n{}", String::from_utf8_lossy(&out.stderr));
    out
}

/// Runs and expects a failure whose message contains every needle.
fn refused(args: &[&str], needles: &[&str]) {
    let out = mixforge(args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "mixforge {args:?} should fail");
    for needle in needles {
        assert!(stderr.contains(needle), "mixforge {args:?}: error should mention {needle:?}:\n{stderr}");
    }
}

fn refs(args: &[String]) -> Vec<&str> {
    args.iter().map(String::as_str).collect()
}

fn train(shards: &Path, out: &Path, extra: &[&str]) -> Vec<String> {
    let mut args: Vec<String> = ["--threads", "1", "train", "--model", "tiny", "--shards", s(shards), "--out", s(out)]
        .iter()
        .map(|a| a.to_string())
        .collect();
    args.extend(["--seq-len", "32", "--batch-size", "2", "--warmup", "2"].iter().map(|a| a.to_string()));
    args.extend(extra.iter().map(|a| a.to_string()));
    args
}

fn steps_logged(run: &Path) -> Vec<u64> {
    std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("whole JSON lines"))
        .filter(|v| v.get("loss").is_some())
        .map(|v| v["step"].as_u64().unwrap())
        .collect()
}

#[test]
fn resumed_training_refuses_changed_flags_and_extends_with_the_schedule_stated() {
    let run = scratch("resume-flags").join("run");
    let shards = demo_shards();
    let args = |extra: &[&str]| train(shards, &run, extra);
    ok(&refs(&args(&["--steps", "6", "--checkpoint-every", "3"])));

    // Training afresh into a used run directory would mix two runs.
    refused(&refs(&args(&["--steps", "6"])), &["already holds a training run", "--resume"]);
    // A flag that changes the run is refused, naming it.
    refused(&refs(&args(&["--steps", "6", "--resume", "--lr", "0.05"])), &["--lr 0.05", "0.003"]);
    refused(&refs(&args(&["--resume", "--batch-size", "4"])), &["--batch-size"]);
    refused(&refs(&args(&["--resume", "--steps", "4"])), &["fewer than the run's 6"]);
    // The same value as the run's is fine; more steps extend it and say how the schedule moves.
    let out = ok(&refs(&args(&["--resume", "--steps", "10", "--lr", "3e-3", "--checkpoint-every", "5"])));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("extending the run from 6 to 10 steps"), "{stderr}");
    assert!(run.join("checkpoints/step-00000010").is_dir());
    assert_eq!(steps_logged(&run), (1..=10).collect::<Vec<_>>(), "one metrics line per step, continued");
    let state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(run.join("checkpoints/step-00000010/state.json")).unwrap()).unwrap();
    assert_eq!(state["config"]["steps"], 10);
    assert_eq!(state["config"]["checkpoint_every"], 5);
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let path = entry.unwrap().path();
        let target = to.join(path.file_name().unwrap());
        if path.is_dir() {
            copy_dir(&path, &target);
        } else {
            std::fs::copy(&path, &target).unwrap();
        }
    }
}

#[test]
fn a_run_moved_with_its_data_evaluates_and_resumes() {
    let dir = scratch("moved-run");
    let (before, after) = (dir.join("before"), dir.join("after"));
    copy_dir(demo_shards(), &before.join("data/shards"));
    let run = before.join("runs/a");
    let args = train(&before.join("data/shards"), &run, &["--steps", "4"]);
    ok(&args.iter().map(String::as_str).collect::<Vec<_>>());
    std::fs::rename(&before, &after).unwrap();

    // eval finds the shards relative to the run and says they moved.
    let moved = after.join("runs/a");
    let out = ok(&["eval", "--checkpoint", s(&moved), "--eval-sequences", "2"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("shards moved"), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("math"), "{}", String::from_utf8_lossy(&out.stdout));
    // Resuming takes the new place of the same shards.
    let args = train(&after.join("data/shards"), &moved, &["--resume", "--steps", "6"]);
    ok(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(moved.join("checkpoints/step-00000006").is_dir());

    // Other data at the recorded place is not taken for the run's.
    std::fs::remove_dir_all(after.join("data/shards/math")).unwrap();
    let manifest = after.join("data/shards/manifest.json");
    let mut m: serde_json::Value = serde_json::from_slice(&std::fs::read(&manifest).unwrap()).unwrap();
    m["domains"].as_object_mut().unwrap().remove("math");
    std::fs::write(&manifest, serde_json::to_vec_pretty(&m).unwrap()).unwrap();
    refused(&["eval", "--checkpoint", s(&moved), "--shards", s(&after.join("nowhere"))], &["nowhere"]);
    let args = train(&after.join("data/shards"), &moved, &["--resume", "--steps", "8"]);
    refused(&args.iter().map(String::as_str).collect::<Vec<_>>(), &["--shards", "not the data this run started with"]);
    let out = mixforge(&["eval", "--checkpoint", s(&moved), "--eval-sequences", "2"]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not the ones this run was trained on"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn corpus_index_never_deletes_a_run() {
    let run = demo_shards().parent().unwrap();
    refused(&["corpus", "index", "--in", s(run), "--out", s(run)], &["refusing to replace"]);
    assert!(run.join("manifest.json").is_file() && run.join("kept").is_dir() && run.join("shards").is_dir());
}

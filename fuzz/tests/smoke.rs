//! Every fuzz target runs (seeds found, inputs mutated and read) without a panic for a few
//! CPU-seconds, and every saved finding in `fuzz/regressions` no longer panics. The long runs
//! are `just fuzz`.

use std::process::Command;

fn fuzz(args: &[&str]) -> std::process::Output {
    let root = std::path::PathBuf::from(
        std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_else(|| env!("CARGO_MANIFEST_DIR").into()),
    )
    .join("..");
    Command::new(env!("CARGO_BIN_EXE_mixforge-fuzz")).args(args).current_dir(root).output().unwrap()
}

#[test]
fn every_target_runs_briefly_without_a_panic() {
    let crashes = std::env::temp_dir().join(format!("mixforge-fuzz-smoke-{}", std::process::id()));
    for target in ["jsonl", "text", "parquet", "shards", "toml", "json"] {
        let out = fuzz(&["run", target, "--cpu-seconds", "2", "--seed", "7", "--crashes", crashes.to_str().unwrap()]);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{target}:\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
        let execs: u64 = stdout.split_whitespace().nth(1).and_then(|n| n.parse().ok()).unwrap_or(0);
        assert!(execs > 10, "{target} ran too few inputs: {stdout}");
        assert!(stdout.contains(", 0 panics"), "{stdout}");
    }
}

#[test]
fn saved_findings_no_longer_panic() {
    let out = fuzz(&["replay", "fuzz/regressions"]);
    assert!(out.status.success(), "{}\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
}

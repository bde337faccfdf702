//! `mixforge corpus shard` killed mid-write (abort, as kill -9) leaves no partial shard
//! visible, and a rerun completes it to the same result as an uninterrupted run.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common::{manifest_dir, scratch};

fn mixforge(args: &[&str], failpoint: Option<&str>) -> std::process::Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_mixforge"));
    command.args(args).current_dir(manifest_dir());
    match failpoint {
        Some(spec) => command.env("MIXFORGE_FAILPOINT", spec),
        None => command.env_remove("MIXFORGE_FAILPOINT"),
    };
    command.output().expect("run mixforge")
}

fn shard(run: &Path, out: &Path, failpoint: Option<&str>) -> std::process::Output {
    let (run, out) = (run.to_str().unwrap(), out.to_str().unwrap());
    mixforge(&["corpus", "shard", "--in", run, "--out", out, "--vocab-size", "600", "--chunk-docs", "40"], failpoint)
}

fn visible_shard_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| !p.file_name().unwrap().to_string_lossy().starts_with('.'))
        .filter(|p| p.extension().is_some_and(|e| e == "bin" || e == "idx"))
        .collect();
    files.sort();
    files
}

#[test]
fn killed_shard_write_resumes_to_the_same_result() {
    let dir = scratch("shard-kill");
    let run = dir.join("run");
    let corpus = mixforge(
        &["corpus", "ingest", "--source", "code=data/demo/code/*.jsonl.zst", "--out", run.to_str().unwrap()],
        None,
    );
    assert!(corpus.status.success(), "{}", String::from_utf8_lossy(&corpus.stderr));

    let clean = dir.join("clean");
    assert!(shard(&run, &clean, None).status.success());

    let resumed = dir.join("resumed");
    // Abort while writing the 7th tokens file (chunk 3's train shard), before its rename.
    let killed = shard(&run, &resumed, Some("shards:before-rename:7"));
    assert!(!killed.status.success(), "the failpoint aborts the process");
    assert!(!resumed.join("manifest.json").exists(), "no manifest for an unfinished run");
    let code = resumed.join("code");
    let temp_files = std::fs::read_dir(&code)
        .unwrap()
        .filter(|e| e.as_ref().unwrap().file_name().to_string_lossy().contains(".tmp-"))
        .count();
    assert!(temp_files >= 1, "the interrupted write is only a temporary file");
    // Every visible shard file is a finished chunk's: chunks 0-2 (train + val, .bin + .idx).
    let visible = visible_shard_files(&code);
    assert_eq!(visible.len(), 12, "{visible:?}");
    assert!(visible.iter().all(|p| p.file_name().unwrap().to_string_lossy().contains("-0000")));
    assert!(!code.join("chunk-00003.json").exists());

    let rerun = shard(&run, &resumed, None);
    assert!(rerun.status.success(), "{}", String::from_utf8_lossy(&rerun.stderr));
    let read = |p: &Path| std::fs::read_to_string(p.join("manifest.json")).unwrap();
    assert_eq!(read(&resumed), read(&clean), "resumed run equals an uninterrupted one");
    assert_eq!(
        visible_shard_files(&code),
        visible_shard_files(&clean.join("code")).iter().map(|p| code.join(p.file_name().unwrap())).collect::<Vec<_>>()
    );

    // And decode prints a document's text back from its tokens.
    let decoded = mixforge(&["corpus", "decode", "--shards", resumed.to_str().unwrap(), "--doc", "0:0"], None);
    assert!(decoded.status.success(), "{}", String::from_utf8_lossy(&decoded.stderr));
    assert!(String::from_utf8_lossy(&decoded.stdout).starts_with("// Licensed to the Apache Software Foundation"));
}

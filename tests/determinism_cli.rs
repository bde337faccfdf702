//! The invariant "outputs never depend on the thread count", checked on real data: a whole
//! corpus run with shards, and a swarm of real proxies, give the same bytes with `--threads 1`
//! and `--threads 2`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common::{demo_shards, manifest_dir, scratch};

fn ok(args: &[&str]) {
    let out = Command::new(env!("CARGO_BIN_EXE_mixforge")).args(args).current_dir(manifest_dir()).output().unwrap();
    assert!(out.status.success(), "mixforge {args:?} failed:\n{}", String::from_utf8_lossy(&out.stderr));
}

/// Every file under `dir` by relative path, except those `skip` names (a prefix).
fn files(dir: &Path, skip: &[&str]) -> BTreeMap<PathBuf, Vec<u8>> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<PathBuf, Vec<u8>>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(root, &path, out);
            } else {
                out.insert(path.strip_prefix(root).unwrap().to_path_buf(), std::fs::read(&path).unwrap());
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out);
    out.retain(|p, _| !skip.iter().any(|s| p.starts_with(s)));
    out
}

/// The run manifest without its wall-clock timings.
fn without_timings(bytes: &[u8]) -> serde_json::Value {
    let mut v: serde_json::Value = serde_json::from_slice(bytes).unwrap();
    v.as_object_mut().unwrap().remove("timings");
    v
}

#[test]
fn corpus_run_and_shards_are_identical_with_one_or_two_threads() {
    let dir = scratch("threads-corpus");
    for threads in ["1", "2"] {
        let out = dir.join(threads);
        ok(&["--threads", threads, "corpus", "run", "recipes/demo.toml", "--out", out.to_str().unwrap()]);
    }
    // The search index is excluded: tantivy names its segments with random ids.
    let (one, two) = (files(&dir.join("1"), &["index"]), files(&dir.join("2"), &["index"]));
    assert_eq!(one.keys().collect::<Vec<_>>(), two.keys().collect::<Vec<_>>());
    assert!(one.keys().any(|p| p.starts_with("shards/math")) && one.contains_key(Path::new("profile.parquet")));
    for (path, bytes) in &one {
        if path == Path::new("manifest.json") {
            assert_eq!(without_timings(bytes), without_timings(&two[path]), "manifest.json");
        } else {
            assert!(*bytes == two[path], "{} differs between --threads 1 and 2", path.display());
        }
    }
}

#[test]
fn swarm_is_identical_with_one_or_two_threads() {
    let dir = scratch("threads-swarm");
    let shards = demo_shards().to_str().unwrap().to_string();
    for (threads, jobs) in [("1", "1"), ("2", "2"), ("2", "1")] {
        let out = dir.join(format!("t{threads}-j{jobs}"));
        ok(&[
            "--threads",
            threads,
            "mix",
            "swarm",
            "--shards",
            &shards,
            "--out",
            out.to_str().unwrap(),
            "--runs",
            "3",
            "--proxy-tokens",
            "8000",
            "--target-tokens",
            "32000",
            "--jobs",
            jobs,
            "--seq-len",
            "64",
            "--batch-size",
            "8",
            "--eval-sequences",
            "4",
        ]);
    }
    let reference = files(&dir.join("t1-j1"), &[]);
    assert!(reference.contains_key(Path::new("runs.parquet")));
    for other in ["t2-j2", "t2-j1"] {
        let got = files(&dir.join(other), &[]);
        assert_eq!(reference.keys().collect::<Vec<_>>(), got.keys().collect::<Vec<_>>());
        for (path, bytes) in &reference {
            assert!(*bytes == got[path], "{other}: {} differs from --threads 1", path.display());
        }
    }
}

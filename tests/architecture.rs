//! The dependency rules of ARCHITECTURE.md, checked on the manifests and sources: libraries
//! never see clap or anyhow, `corpus`, `mixsim`, `reports` and the `mixforge` executable never
//! link libtorch, `mixsim` and `reports` never reach `train`, and shard files are only opened by
//! `corpus::shards`.

use std::path::Path;

use crate::common::manifest_dir;

fn dependencies(package: &str) -> Vec<String> {
    let text = std::fs::read_to_string(manifest_dir().join(package).join("Cargo.toml")).unwrap();
    let manifest: toml::Table = toml::from_str(&text).unwrap();
    manifest.get("dependencies").and_then(|d| d.as_table()).map(|d| d.keys().cloned().collect()).unwrap_or_default()
}

#[test]
fn crates_depend_only_as_the_plan_allows() {
    let forbidden: [(&str, &[&str]); 5] = [
        // `mixforge` itself starts without libtorch; `mixforge-torch` (torch/) links it.
        (".", &["tch", "torch-sys", "train"]),
        ("corpus", &["tch", "torch-sys", "train", "mixsim", "anyhow", "clap"]),
        ("mixsim", &["tch", "torch-sys", "train", "anyhow", "clap"]),
        ("train", &["mixsim", "anyhow", "clap"]),
        // The report reads artifacts only: no training code, no libtorch.
        ("reports", &["tch", "torch-sys", "train", "anyhow", "clap"]),
    ];
    for (package, banned) in forbidden {
        let deps = dependencies(package);
        assert!(deps.contains(&"serde".to_string()), "read {package}'s dependencies: {deps:?}");
        for dep in banned {
            assert!(!deps.iter().any(|d| d == dep), "{package} must not depend on {dep}");
        }
    }
}

fn rust_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn shard_files_are_read_only_through_corpus_shards() {
    let root = manifest_dir();
    let mut files = Vec::new();
    for dir in ["src", "torch/src", "corpus/src", "mixsim/src", "train/src", "reports/src"] {
        rust_files(&root.join(dir), &mut files);
    }
    assert!(files.len() > 50);
    let shards_module = root.join("corpus/src/shards");
    for file in files.iter().filter(|f| !f.starts_with(&shards_module)) {
        let text = std::fs::read_to_string(file).unwrap();
        for needle in ["\".idx\"", ".idx\"", "Mmap::map"] {
            assert!(!text.contains(needle), "{} handles shard files itself ({needle})", file.display());
        }
    }
}

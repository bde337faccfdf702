//! Version fixtures: a copy of every artifact as format version 1 writes it
//! (`tests/fixtures/v1`, made by `tests/fixtures/make-v1.sh`) must stay readable by later
//! builds, and a newer version must be refused with a message naming it.

use std::path::{Path, PathBuf};

use crate::common::{manifest_dir, mixforge, s, scratch};

fn ok(args: &[&str]) -> String {
    let out = mixforge(args);
    assert!(out.status.success(), "mixforge {args:?} failed:\n{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A private copy of the fixtures: tests that resume or write must not touch the checkout.
fn fixtures(name: &str) -> PathBuf {
    fn copy(from: &Path, to: &Path) {
        std::fs::create_dir_all(to).unwrap();
        for entry in std::fs::read_dir(from).unwrap() {
            let path = entry.unwrap().path();
            let target = to.join(path.file_name().unwrap());
            if path.is_dir() { copy(&path, &target) } else { std::fs::copy(&path, &target).map(|_| ()).unwrap() }
        }
    }
    let dir = scratch(name).join("v1");
    copy(&manifest_dir().join("tests/fixtures/v1"), &dir);
    dir
}

fn json(path: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

#[test]
fn version_1_corpus_artifacts_are_read() {
    let v1 = fixtures("fixtures-corpus");
    let run = v1.join("corpus-run");
    let manifest = json(&run.join("manifest.json"));
    assert_eq!(manifest["format_version"], 1);
    assert_eq!(manifest["totals"]["docs_in"], 32);
    // The profile: one row per document, versioned in its metadata.
    let file = std::fs::File::open(run.join("profile.parquet")).unwrap();
    let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file).unwrap();
    let meta = reader.metadata().file_metadata();
    let version = meta.key_value_metadata().unwrap().iter().find(|kv| kv.key == "mixforge.format_version").cloned();
    assert_eq!(version.and_then(|kv| kv.value).as_deref(), Some("1"));
    assert_eq!(meta.num_rows(), 32);
    // Shards: the reader opens them and every document reads back.
    let shards = corpus::shards::Shards::open(&run.join("shards")).unwrap();
    let mut docs = 0;
    for domain in ["code", "math"] {
        for split in [corpus::shards::Split::Train, corpus::shards::Split::Val] {
            docs += shards.docs(domain, split).unwrap().count() as u64;
        }
    }
    assert_eq!(docs, shards.manifest().total_docs);
    // Kept files: sharding them again gives the same shards (same tokenizer, same split).
    let again = v1.join("reshard");
    ok(&[
        "corpus",
        "shard",
        "--in",
        s(&run),
        "--out",
        s(&again),
        "--vocab-size",
        "300",
        "--val-fraction",
        "0.2",
        "--chunk-docs",
        "10",
    ]);
    assert_eq!(json(&again.join("manifest.json"))["domains"], json(&run.join("shards/manifest.json"))["domains"]);
}

/// Resumes the fixture's training run up to `steps`.
fn resume(v1: &Path, steps: &str) {
    let (model, shards, run) = (v1.join("micro.toml"), v1.join("corpus-run/shards"), v1.join("train-run"));
    let args = ["--threads", "1", "train", "--model", s(&model), "--shards", s(&shards), "--out", s(&run)];
    ok(&[&args[..], &["--resume", "--steps", steps]].concat());
}

#[test]
fn version_1_training_and_simulator_artifacts_are_read() {
    let v1 = fixtures("fixtures-train");
    // A checkpoint evaluates (its shards found relative to the run) and resumes.
    let eval = ok(&["eval", "--checkpoint", s(&v1.join("train-run")), "--eval-sequences", "2", "--json"]);
    let eval: serde_json::Value = serde_json::from_str(&eval).unwrap();
    assert!(eval["val_loss"]["math"].as_f64().is_some(), "{eval}");
    resume(&v1, "3");
    assert!(v1.join("train-run/checkpoints/step-00000003").is_dir());
    // A checkpoint from before inputs were fingerprinted (no shards_ref) resumes on the shards
    // the user names.
    let state = v1.join("train-run/checkpoints/step-00000003/state.json");
    let mut old = json(&state);
    old["config"].as_object_mut().unwrap().remove("shards_ref");
    old["config"].as_object_mut().unwrap().remove("teacher_ref");
    std::fs::write(&state, serde_json::to_vec_pretty(&old).unwrap()).unwrap();
    resume(&v1, "4");
    assert!(v1.join("train-run/checkpoints/step-00000004").is_dir());
    // The export loads as a Hugging Face directory.
    let hf = train::hf::load_any(&v1.join("hf"), tch::Device::Cpu, false).unwrap();
    assert_eq!(hf.model.config.vocab_size, 300);
    // The runs table fits, the fitted model predicts, the proposal is a mixture, the
    // materialized shards carry their realised mixture.
    ok(&[
        "mix",
        "fit",
        "--runs",
        s(&v1.join("swarm/runs.csv")),
        "--target",
        "avg_val_loss",
        "--out",
        s(&v1.join("refit.json")),
    ]);
    let predicted = v1.join("predicted.csv");
    ok(&[
        "mix",
        "predict",
        "--model",
        s(&v1.join("model.json")),
        "--mixtures",
        s(&v1.join("swarm/design.csv")),
        "--out",
        s(&predicted),
    ]);
    assert_eq!(std::fs::read_to_string(&predicted).unwrap().lines().count(), 4, "a header and 3 mixtures");
    let proposal = mixsim::Proposal::load(&v1.join("proposal.toml")).unwrap();
    let mixture = train::data::Mixture::from_toml_file(&v1.join("proposal.toml")).unwrap();
    assert_eq!(proposal.weights, mixture.weights);
    let mixed = corpus::shards::Shards::open(&v1.join("mixed")).unwrap();
    assert_eq!(mixed.manifest().mixture.as_ref().unwrap().tokens, 800);
}

/// Each versioned artifact with `format_version` 99 is refused, naming the version.
#[test]
fn newer_format_versions_are_refused_by_name() {
    let v1 = fixtures("fixtures-newer");
    let bump_json = |path: &Path| {
        let mut v = json(path);
        v["format_version"] = 99.into();
        std::fs::write(path, serde_json::to_vec_pretty(&v).unwrap()).unwrap();
    };
    bump_json(&v1.join("corpus-run/shards/manifest.json"));
    let err = corpus::shards::Shards::open(&v1.join("corpus-run/shards")).err().unwrap().to_string();
    assert!(err.contains("format_version 99"), "{err}");

    let state = v1.join("train-run/checkpoints/step-00000002/state.json");
    bump_json(&state);
    let err = train::checkpoint::read_state(state.parent().unwrap()).unwrap_err().to_string();
    assert!(err.contains("format version 99"), "{err}");

    bump_json(&v1.join("model.json"));
    let err = mixsim::FittedModel::load(&v1.join("model.json")).unwrap_err().to_string();
    assert!(err.contains("format_version 99"), "{err}");

    let proposal = v1.join("proposal.toml");
    let text = std::fs::read_to_string(&proposal).unwrap().replace("format_version = 1", "format_version = 99");
    std::fs::write(&proposal, text).unwrap();
    let err = mixsim::Proposal::load(&proposal).unwrap_err().to_string();
    assert!(err.contains("format_version 99"), "{err}");
}

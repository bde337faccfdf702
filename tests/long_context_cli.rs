//! The long-context phase from the command line: `train --init` with a longer window and
//! another RoPE θ, the teacher's view of a packed window, and needle items made from the demo
//! shards and scored by `eval`.

use std::path::Path;
use std::process::Output;

use tch::Device;
use train::data::{CapPolicy, Loader, LoaderConfig, Mixture};
use train::model::Inputs;
use train::trainer::{TeacherPacking, teacher_inputs};

use crate::common::{demo_shards, mixforge, s, scratch};

fn ok(out: Output) -> String {
    assert!(out.status.success(), "mixforge failed:\n{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn state(run: &Path) -> serde_json::Value {
    let latest = std::fs::read_to_string(run.join("checkpoints/latest")).unwrap();
    let dir = run.join("checkpoints").join(latest.trim());
    serde_json::from_slice(&std::fs::read(dir.join("state.json")).unwrap()).unwrap()
}

#[test]
fn a_long_context_phase_starts_fresh_from_its_parent_with_a_longer_window() {
    let dir = scratch("long-context");
    let base = dir.join("base");
    let common = ["--shards", s(demo_shards()), "--batch-size", "2", "--eval-sequences", "2"];
    let mut args = vec!["train", "--model", "tiny", "--steps", "3", "--seq-len", "32", "--out", s(&base)];
    args.extend(common);
    ok(mixforge(&args));
    let long = dir.join("long");
    let mut args = vec![
        "train",
        "--init",
        s(&base),
        "--phase",
        "long-context",
        "--teacher",
        s(&base),
        "--seq-len",
        "640",
        "--rope-theta",
        "40000",
        "--teacher-packing",
        "per-doc",
        "--steps",
        "2",
        "--out",
        s(&long),
    ];
    args.extend(common);
    // A teacher whose window is shorter than the phase's is refused: its logits past it would
    // be meaningless targets.
    let refused = mixforge(&args);
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success() && stderr.contains("reads at most 512 tokens"), "{stderr}");
    let at = args.iter().position(|a| *a == "--teacher").unwrap();
    args.drain(at..at + 2);
    ok(mixforge(&args));
    let st = state(&long);
    let c = &st["config"];
    assert_eq!(c["phase"], "long-context");
    assert_eq!(c["model"]["max_seq_len"], 640, "the window grew to --seq-len");
    assert_eq!(c["model"]["rope_theta"], 40000.0);
    assert_eq!(c["teacher_packing"], "per-doc");
    assert_eq!(c["loader"]["seq_len"], 640);
    assert!(c["init"]["parents"][0]["path"].as_str().unwrap().contains("long-context/base"));
    assert_eq!(c["init"]["parents"][0]["phase"], "pretrain");
    assert_eq!(st["step"], 2);
    // A fresh optimizer: its step counts this phase only.
    let latest = std::fs::read_to_string(long.join("checkpoints/latest")).unwrap();
    let optim =
        tch::Tensor::read_safetensors(long.join("checkpoints").join(latest.trim()).join("optimizer.safetensors"))
            .unwrap();
    let step = optim.iter().find(|(n, _)| n == "step").unwrap().1.int64_value(&[0]);
    assert_eq!(step, 2);
    // Evaluation at the longer window reports loss by position.
    let json = ok(mixforge(&[
        "eval",
        "--checkpoint",
        s(&long),
        "--seq-len",
        "640",
        "--eval-sequences",
        "2",
        "--by-position",
        "4",
        "--json",
    ]));
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    let buckets = v["val_loss_by_position"]["books"].as_array().unwrap();
    assert_eq!(buckets.len(), 4);
    let mean = buckets.iter().map(|b| b.as_f64().unwrap()).sum::<f64>() / 4.0;
    assert!((mean - v["val_loss"]["books"].as_f64().unwrap()).abs() < 1e-6);
    // A window longer than the model's is refused.
    let refused = mixforge(&["eval", "--checkpoint", s(&base), "--seq-len", "4096"]);
    assert!(String::from_utf8_lossy(&refused.stderr).contains("longer than the model's window"));
}

#[test]
fn the_teacher_sees_the_students_window_or_each_document() {
    let shards = corpus::shards::Shards::open(demo_shards()).unwrap();
    let tokenizer = corpus::tokenize::load(&shards.tokenizer_path()).unwrap();
    let eos = train::data::eos_id(&tokenizer).unwrap();
    let pos = |i: &Inputs| i.positions.as_ref().map(|p| Vec::<i64>::try_from(p.view(-1)).unwrap());
    let docs = |i: &Inputs| i.doc_ids.as_ref().map(|p| Vec::<i64>::try_from(p.view(-1)).unwrap());
    for (doc_mask, reset_positions) in [(false, false), (true, true), (true, false)] {
        let config = LoaderConfig {
            doc_mask,
            reset_positions,
            batch_size: 4,
            cap_policy: CapPolicy::Warn,
            ..LoaderConfig::evaluation(512, eos)
        };
        let mut loader = Loader::new(&shards, &Mixture::natural(&shards), config).unwrap();
        let batch = loader.next_batch(Device::Cpu).unwrap();
        let same = teacher_inputs(&batch, TeacherPacking::Same);
        assert!(same.tokens.equal(&batch.inputs.tokens));
        assert_eq!(pos(&same), pos(&batch.inputs));
        assert_eq!(docs(&same), docs(&batch.inputs));
        assert_eq!(batch.inputs.positions.is_some(), reset_positions);
        assert_eq!(batch.inputs.doc_ids.is_some(), doc_mask);
        let per_doc = teacher_inputs(&batch, TeacherPacking::PerDoc);
        assert!(per_doc.tokens.equal(&batch.inputs.tokens));
        let (p, d) = (pos(&per_doc).unwrap(), docs(&per_doc).unwrap());
        // Positions restart exactly where a document (or a window) starts.
        for i in 1..p.len() {
            assert_eq!(p[i] == 0, i % 512 == 0 || d[i] != d[i - 1], "token {i}");
        }
        assert!(d.iter().any(|&x| x > 0), "512-token windows pack several documents");
    }
}

#[test]
fn needle_items_from_the_demo_shards_are_scored_per_cell() {
    let dir = scratch("niah");
    let items = dir.join("niah.jsonl");
    let made = ok(mixforge(&[
        "niah",
        "make",
        "--filler",
        s(demo_shards()),
        "--domain",
        "wiki",
        "--lengths",
        "96,160",
        "--depths",
        "0,1",
        "--per-cell",
        "2",
        "--distractors",
        "3",
        "--seed",
        "4",
        "--out",
        s(&items),
    ]));
    assert!(made.contains("wrote 8 items"), "{made}");
    let run = dir.join("base");
    ok(mixforge(&[
        "train",
        "--model",
        "tiny",
        "--shards",
        s(demo_shards()),
        "--steps",
        "1",
        "--seq-len",
        "32",
        "--batch-size",
        "2",
        "--eval-sequences",
        "1",
        "--out",
        s(&run),
    ]));
    let json = ok(mixforge(&["eval", "--checkpoint", s(&run), "--task", s(&items), "--json"]));
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    let task = &v["tasks"][0];
    assert_eq!(task["items"], 8);
    let grid = task["grid"].as_array().unwrap();
    assert_eq!(grid.len(), 4);
    assert_eq!((grid[0]["length"].as_u64(), grid[0]["depth"].as_f64()), (Some(96), Some(0.0)));
    assert!(task["rank_acc"].as_f64().is_some());
    // A filler that is not text or shards, and a text filler without a tokenizer, are named.
    let missing = mixforge(&["niah", "make", "--filler", s(&dir.join("nothing.txt")), "--out", s(&items)]);
    assert!(String::from_utf8_lossy(&missing.stderr).contains("nothing.txt"));
    std::fs::write(dir.join("filler.txt"), "some text").unwrap();
    let no_tok = mixforge(&["niah", "make", "--filler", s(&dir.join("filler.txt")), "--out", s(&items)]);
    assert!(String::from_utf8_lossy(&no_tok.stderr).contains("--tokenizer"));
}

#[test]
fn training_from_a_full_teacher_cache_follows_the_online_teacher() {
    let dir = scratch("teacher-cache");
    let teacher = dir.join("teacher");
    let data = ["--shards", s(demo_shards()), "--batch-size", "2", "--seq-len", "48", "--seed", "3"];
    let mut args = vec!["train", "--model", "tiny", "--steps", "2", "--eval-sequences", "1", "--out", s(&teacher)];
    args.extend(data);
    ok(mixforge(&args));
    let vocab = corpus::shards::Shards::open(demo_shards()).unwrap().manifest().vocab_size.to_string();
    let cache = dir.join("cache");
    let mut args =
        vec!["teacher", "cache", "--teacher", s(&teacher), "--steps", "3", "--top-k", &vocab, "--out", s(&cache)];
    args.extend(data);
    let made = ok(mixforge(&args));
    assert!(made.contains("drops 0.0000"), "{made}");
    let losses = |run: &Path| -> Vec<f64> {
        std::fs::read_to_string(run.join("metrics.jsonl"))
            .unwrap()
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["loss"].as_f64())
            .collect()
    };
    let (online, cached) = (dir.join("online"), dir.join("cached"));
    for (run, flag, path) in [(&online, "--teacher", &teacher), (&cached, "--teacher-cache", &cache)] {
        let mut args =
            vec!["train", "--model", "tiny", "--steps", "3", "--eval-sequences", "1", flag, s(path), "--out", s(run)];
        args.extend(data);
        ok(mixforge(&args));
    }
    let (a, b) = (losses(&online), losses(&cached));
    assert_eq!(a.len(), 3);
    for (x, y) in a.iter().zip(&b) {
        assert!((x - y).abs() < 1e-4, "online {a:?} vs cached {b:?}");
    }
    // Other data than the cache's is refused, naming what differs.
    let mut args = vec!["train", "--model", "tiny", "--steps", "3", "--teacher-cache", s(&cache), "--out"];
    let other = dir.join("other");
    args.push(s(&other));
    args.extend(["--shards", s(demo_shards()), "--batch-size", "2", "--seq-len", "64", "--seed", "3"]);
    let refused = mixforge(&args);
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success() && stderr.contains("written for another run"), "{stderr}");
}

#[test]
fn the_ipd_experiment_runs_end_to_end_at_a_tiny_size() {
    let dir = scratch("ipd-experiment");
    let out = std::process::Command::new("bash")
        .arg(crate::common::manifest_dir().join("scripts/ipd-experiment"))
        .envs([
            ("MIXFORGE_BIN", env!("CARGO_BIN_EXE_mixforge")),
            ("OUT", s(&dir)),
            ("SEEDS", "0 1"),
            ("SHORT", "32"),
            ("LONG", "128"),
            ("TEACHER_STEPS", "3"),
            ("STUDENT_STEPS", "3"),
            ("PHASE_STEPS", "2"),
            ("PER_CELL", "1"),
            ("LIMIT", "10"),
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "ipd-experiment failed:\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("paired differences, same seed"), "{stdout}");
    let comparison: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("comparison.json")).unwrap()).unwrap();
    let arms: Vec<&String> = comparison.as_object().unwrap().keys().collect();
    assert_eq!(arms, ["ce-packed", "ipd", "ipd-per-doc", "long-docs", "none", "teacher"]);
    assert_eq!(comparison["ipd"].as_array().unwrap().len(), 2, "one row per seed");
}

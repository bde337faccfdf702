//! `mixforge merge` and `train --init` on tiny checkpoints trained on the demo shards: merges
//! against float64 references computed here, lineage, and refusals that name the tensor.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use tch::{Kind, Tensor};

use crate::common::{demo_shards, manifest_dir, mixforge, s, scratch};

fn ok(out: Output) -> String {
    assert!(out.status.success(), "mixforge failed:\n{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A tiny run of a few steps: `seed` sets its weights; `init` starts it from a checkpoint.
fn train(out: &Path, seed: u64, init: Option<&Path>) {
    let seed = seed.to_string();
    let mut args = vec![
        "train",
        "--shards",
        s(demo_shards()),
        "--steps",
        "3",
        "--seq-len",
        "32",
        "--batch-size",
        "2",
        "--eval-sequences",
        "2",
        "--seed",
        &seed,
        "--out",
        s(out),
    ];
    if let Some(init) = init {
        args.extend(["--init", s(init), "--phase", "anneal", "--lr", "1e-5"]);
    } else {
        args.extend(["--model", "tiny"]);
    }
    ok(mixforge(&args));
}

/// Three tiny checkpoints: a base and two runs from it (the "specialists").
fn runs() -> &'static (PathBuf, PathBuf, PathBuf) {
    static RUNS: OnceLock<(PathBuf, PathBuf, PathBuf)> = OnceLock::new();
    RUNS.get_or_init(|| {
        let dir = scratch("merge-runs");
        let (base, a, b) = (dir.join("base"), dir.join("a"), dir.join("b"));
        train(&base, 0, None);
        train(&a, 1, Some(&base));
        train(&b, 2, Some(&base));
        (base, a, b)
    })
}

fn weights(run: &Path) -> BTreeMap<String, Tensor> {
    let latest = std::fs::read_to_string(run.join("checkpoints/latest")).unwrap();
    let file = run.join("checkpoints").join(latest.trim()).join("model.safetensors");
    Tensor::read_safetensors(&file).unwrap().into_iter().collect()
}

fn merge(name: &str, args: &[&str]) -> BTreeMap<String, Tensor> {
    let out = scratch(&format!("merge-{name}")).join("m");
    let mut all = vec!["merge"];
    all.extend(args);
    all.extend(["--out", s(&out)]);
    ok(mixforge(&all));
    weights(&out)
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f64 {
    (a.to_kind(Kind::Double) - b.to_kind(Kind::Double)).abs().max().double_value(&[])
}

#[test]
fn one_hot_weights_and_identical_inputs_give_back_the_checkpoint_bit_for_bit() {
    let (_, a, b) = runs();
    let first = weights(a);
    for merged in [
        merge("one-hot", &["--checkpoint", s(a), "--checkpoint", s(b), "--weights", "1,0"]),
        merge("same", &["--checkpoint", s(a), "--checkpoint", s(a)]),
    ] {
        assert_eq!(merged.len(), first.len());
        for (name, t) in &first {
            assert!(merged[name].equal(t), "{name} changed");
        }
    }
}

#[test]
fn linear_and_task_arithmetic_equal_float64_references() {
    let (base, a, b) = runs();
    let (wb, wa, wbb) = (weights(base), weights(a), weights(b));
    let linear = merge("linear", &["--checkpoint", s(a), "--checkpoint", s(b), "--weights", "0.3,0.7"]);
    let arithmetic = merge(
        "arithmetic",
        &[
            "--checkpoint",
            s(a),
            "--checkpoint",
            s(b),
            "--weights",
            "0.3,0.7",
            "--method",
            "task-arithmetic",
            "--base",
            s(base),
        ],
    );
    for (name, ta) in &wa {
        let reference = (ta.to_kind(Kind::Double) * 0.3 + wbb[name].to_kind(Kind::Double) * 0.7).to_kind(Kind::Float);
        assert!(linear[name].equal(&reference), "linear {name}");
        // With weights summing to 1, base + Σ w (θ − base) is the linear merge (to rounding).
        assert!(max_abs_diff(&arithmetic[name], &reference) < 1e-6, "task arithmetic {name}");
        assert!(wb.contains_key(name));
    }
}

/// TIES on plain numbers: trim each task vector to its `density` largest magnitudes (ties at
/// the threshold kept), elect the
/// sign of the weighted sum, average the agreeing entries by weight.
fn ties_reference(base: &[f64], tasks: &[Vec<f64>], weights: &[f64], density: f64) -> Vec<f64> {
    let n = base.len();
    let k = ((density * n as f64).ceil() as usize).clamp(1, n);
    let trimmed: Vec<Vec<f64>> = tasks
        .iter()
        .map(|t| {
            let tau: Vec<f64> = t.iter().zip(base).map(|(x, b)| x - b).collect();
            let mut sizes: Vec<f64> = tau.iter().map(|x| x.abs()).collect();
            sizes.sort_by(|a, b| b.total_cmp(a));
            let threshold = sizes[k - 1];
            // Every entry tied at the threshold is kept.
            tau.iter().map(|x| if x.abs() >= threshold { *x } else { 0.0 }).collect()
        })
        .collect();
    (0..n)
        .map(|i| {
            let total: f64 = trimmed.iter().zip(weights).map(|(t, w)| t[i] * w).sum();
            let (mut num, mut den) = (0.0, 0.0);
            for (t, w) in trimmed.iter().zip(weights) {
                let v = t[i] * w;
                if v != 0.0 && v.signum() == total.signum() {
                    num += v;
                    den += w;
                }
            }
            base[i] + if den != 0.0 { num / den } else { 0.0 }
        })
        .collect()
}

#[test]
fn ties_equals_a_direct_reference() {
    let (base, a, b) = runs();
    let (wb, wa, wbb) = (weights(base), weights(a), weights(b));
    let merged = merge(
        "ties",
        &[
            "--checkpoint",
            s(a),
            "--checkpoint",
            s(b),
            "--weights",
            "0.6,0.4",
            "--method",
            "ties",
            "--base",
            s(base),
            "--density",
            "0.3",
        ],
    );
    let vec = |t: &Tensor| -> Vec<f64> { Vec::<f64>::try_from(t.to_kind(Kind::Double).flatten(0, -1)).unwrap() };
    // The small tensors (norms, and one projection) in full.
    let mut checked = 0;
    for (name, t) in wa.iter().filter(|(_, t)| t.numel() <= 70_000) {
        let want = ties_reference(&vec(&wb[name]), &[vec(t), vec(&wbb[name])], &[0.6, 0.4], 0.3);
        let got = vec(&merged[name]);
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            assert!((g - w).abs() <= 1e-6 * w.abs().max(1e-3), "{name}[{i}]: {g} vs {w}");
        }
        checked += 1;
    }
    assert!(checked >= 3, "checked {checked} tensors");
}

#[test]
fn init_records_lineage_and_merges_refuse_what_does_not_fit() {
    let (base, a, _) = runs();
    let latest = std::fs::read_to_string(a.join("checkpoints/latest")).unwrap();
    let state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(a.join("checkpoints").join(latest.trim()).join("state.json")).unwrap())
            .unwrap();
    assert_eq!(state["config"]["phase"], "anneal");
    let parent = &state["config"]["init"]["parents"][0];
    assert!(parent["path"].as_str().unwrap().contains("base"), "{parent}");
    assert_eq!(parent["phase"], "pretrain");
    assert_eq!(parent["weights_xxh3"].as_str().unwrap().len(), 16);
    // --init with --model: one or the other.
    let both = mixforge(&[
        "train",
        "--shards",
        s(demo_shards()),
        "--steps",
        "1",
        "--init",
        s(base),
        "--model",
        "tiny",
        "--out",
        "/tmp/never",
    ]);
    assert!(!both.status.success());
    // A model of another shape is refused, naming the field.
    let dir = scratch("merge-refuse");
    let config = manifest_dir().join("tests/fixtures/wide-tiny.toml");
    let other = dir.join("other");
    ok(mixforge(&[
        "train",
        "--shards",
        s(demo_shards()),
        "--steps",
        "1",
        "--seq-len",
        "32",
        "--batch-size",
        "2",
        "--eval-sequences",
        "2",
        "--model",
        s(&config),
        "--out",
        s(&other),
    ]));
    let refused = mixforge(&["merge", "--checkpoint", s(a), "--checkpoint", s(&other), "--out", s(&dir.join("m"))]);
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success() && stderr.contains("different models") && stderr.contains("d_model"), "{stderr}");
    // The same model whose weights file lacks a tensor: refused, naming the tensor.
    let broken = dir.join("broken");
    let step = std::fs::read_to_string(a.join("checkpoints/latest")).unwrap();
    let from = a.join("checkpoints").join(step.trim());
    let to = broken.join("checkpoints").join(step.trim());
    std::fs::create_dir_all(&to).unwrap();
    for file in ["state.json", "tokenizer.json"] {
        std::fs::copy(from.join(file), to.join(file)).unwrap();
    }
    std::fs::write(broken.join("checkpoints/latest"), step.trim()).unwrap();
    let mut tensors: Vec<(String, Tensor)> = Tensor::read_safetensors(from.join("model.safetensors")).unwrap();
    let dropped = tensors.remove(1).0;
    Tensor::write_safetensors(&tensors, to.join("model.safetensors")).unwrap();
    let refused = mixforge(&["merge", "--checkpoint", s(a), "--checkpoint", s(&broken), "--out", s(&dir.join("m3"))]);
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success() && stderr.contains(&format!("tensor {dropped} is missing")), "{stderr}");
    // Task arithmetic without its base says so.
    let no_base = mixforge(&["merge", "--checkpoint", s(a), "--method", "ties", "--out", s(&dir.join("m2"))]);
    assert!(String::from_utf8_lossy(&no_base.stderr).contains("needs --base"));
    // A training run is never overwritten by a merge.
    let refused = mixforge(&["merge", "--checkpoint", s(a), "--out", s(a)]);
    assert!(!refused.status.success());
}

fn anneal(out: &Path, extra: &[&str]) -> Command {
    let (base, _, _) = runs();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_mixforge"));
    cmd.args([
        "anneal",
        "--init",
        s(base),
        "--shards",
        s(demo_shards()),
        "--steps",
        "6",
        "--seq-len",
        "32",
        "--batch-size",
        "2",
        "--eval-sequences",
        "2",
        "--checkpoint-every",
        "2",
        "--lr",
        "1e-3",
        "--out",
        s(out),
    ])
    .args(extra)
    .current_dir(manifest_dir());
    cmd
}

#[test]
fn a_killed_anneal_keeps_its_finished_specialists_and_ends_as_an_uninterrupted_one() {
    let dir = scratch("anneal");
    let whole = dir.join("whole");
    ok(anneal(&whole, &["--jobs", "2"]).output().unwrap());
    let record: serde_json::Value = serde_json::from_slice(&std::fs::read(whole.join("anneal.json")).unwrap()).unwrap();
    let names: Vec<String> = record["specialists"].as_object().unwrap().keys().cloned().collect();
    assert_eq!(names, ["books", "code", "math", "web", "wiki"], "one specialist per domain by default");
    for name in &names {
        let s = &record["specialists"][name];
        assert_eq!(s["finished"], true);
        // Tilted toward its own domain: its weight is the largest it has had.
        let w = s["weights"].as_object().unwrap();
        let own = w[name].as_f64().unwrap();
        assert!(w.values().all(|x| x.as_f64().unwrap() <= own + 1e-12), "{name}: {w:?}");
    }
    // One at a time (libtorch then uses every core in each, so the sums are those of the
    // resumed run below): killed once two specialists are in, then resumed.
    let uninterrupted = dir.join("uninterrupted");
    ok(anneal(&uninterrupted, &["--jobs", "1"]).output().unwrap());
    let killed = dir.join("killed");
    let mut child = anneal(&killed, &["--jobs", "1"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(300);
    loop {
        let done = std::fs::read(killed.join("anneal.json"))
            .ok()
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
            .map_or(0, |r| r["specialists"].as_object().unwrap().values().filter(|s| s["finished"] == true).count());
        if done >= 2 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline && child.try_wait().unwrap().is_none(),
            "the anneal ended before it was killed"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let first = weights(&killed.join("books"));
    let out = anneal(&killed, &["--jobs", "1"]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("already finished") && !stderr.contains("(0 already finished)"), "{stderr}");
    for name in &names {
        let (a, b) = (weights(&uninterrupted.join(name)), weights(&killed.join(name)));
        for (t, x) in &a {
            assert!(b[t].equal(x), "{name}: {t} differs from the uninterrupted anneal");
        }
    }
    for (t, x) in &first {
        assert!(weights(&killed.join("books"))[t].equal(x), "a finished specialist is not retrained");
    }
}

#[test]
fn searched_merges_record_every_point_on_a_probe_that_evaluation_never_sees() {
    let (base, a, b) = runs();
    let dir = scratch("merge-search");
    for (method, expected_points) in [("grid", 5), ("greedy-soup", 2), ("surrogate", 6)] {
        let out = dir.join(method);
        ok(mixforge(&[
            "merge",
            "--checkpoint",
            s(a),
            "--checkpoint",
            s(b),
            "--method",
            "task-arithmetic",
            "--base",
            s(base),
            "--search",
            method,
            "--probe-after",
            "16",
            "--probe-sequences",
            "4",
            "--probe-seq-len",
            "32",
            "--out",
            s(&out),
        ]));
        let search: serde_json::Value =
            serde_json::from_slice(&std::fs::read(out.join("search.json")).unwrap()).unwrap();
        let points = search["evaluated"].as_array().unwrap();
        assert!(points.len() >= expected_points, "{method}: {} points", points.len());
        let best = points.iter().map(|p| p["probe_loss"].as_f64().unwrap()).fold(f64::INFINITY, f64::min);
        let chosen = search["chosen"]["probe_loss"].as_f64().unwrap();
        if method != "surrogate" {
            assert_eq!(chosen, best, "{method} keeps its best measured point");
        }
        let w: Vec<f64> = search["chosen"]["weights"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect();
        assert!((w.iter().sum::<f64>() - 1.0).abs() < 1e-9, "{method}: {w:?}");
        // The merge written is the one chosen.
        let state = std::fs::read_to_string(out.join("checkpoints/step-00000000/state.json")).unwrap();
        assert!(state.contains("\"phase\": \"merge\""), "{method}");
    }
    // The probe is past the sequences evaluation scores: none is shared.
    let shards = corpus::shards::Shards::open(demo_shards()).unwrap();
    let tokenizer = corpus::tokenize::load(&shards.tokenizer_path()).unwrap();
    let config = train::data::LoaderConfig::evaluation(32, train::data::eos_id(&tokenizer).unwrap());
    let loader = train::data::Loader::new(&shards, &train::data::Mixture::uniform(&shards), config).unwrap();
    let (eval, probe) = (loader.validation(16), loader.validation_window(16, 4));
    assert!(!probe.is_empty());
    for (domain, seqs) in &probe {
        let all = loader.validation(20);
        assert_eq!(&all[domain][16..], &seqs[..], "{domain}: the probe continues where evaluation stops");
        assert!(seqs.iter().all(|p| !eval[domain].contains(p)) || eval[domain].len() < 16, "{domain} overlaps");
    }
}

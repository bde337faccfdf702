//! The trainer end to end on shards of the bundled demo corpus: learning, kill -9 + resume,
//! Hugging Face export checked against transformers, distillation from an HF teacher.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use corpus::shards::{Shards, Split};
use train::model::Inputs;

use crate::common::{demo_shards, manifest_dir, s, scratch};

fn mixforge(args: &[&str]) -> Output {
    let out = Command::new(env!("CARGO_BIN_EXE_mixforge")).args(args).current_dir(manifest_dir()).output().unwrap();
    assert!(out.status.success(), "mixforge {args:?} failed:\n{}", String::from_utf8_lossy(&out.stderr));
    out
}

/// Trains the tiny preset with small batches; extra flags appended.
fn train_tiny(out: &Path, extra: &[&str]) -> Output {
    let mut args = vec!["--threads", "2", "train", "--model", "tiny", "--shards", s(demo_shards()), "--out", s(out)];
    args.extend_from_slice(extra);
    mixforge(&args)
}

/// Entropy (nats) of the unigram distribution of the training tokens of `domains`.
fn unigram_entropy(shards: &Shards, domains: &[&str]) -> f64 {
    let mut counts = vec![0u64; shards.manifest().vocab_size as usize];
    let mut total = 0u64;
    for domain in domains {
        for shard in shards.shards(domain, Split::Train).unwrap() {
            for d in 0..shard.len() {
                for t in shard.doc(d).to_vec() {
                    counts[t as usize] += 1;
                    total += 1;
                }
            }
        }
    }
    counts.iter().filter(|&&c| c > 0).map(|&c| c as f64 / total as f64).map(|p| -p * p.ln()).sum()
}

#[test]
fn tiny_model_learns_well_below_the_unigram_entropy() {
    let out = scratch("train-learns");
    train_tiny(&out, &["--steps", "300", "--seq-len", "128", "--batch-size", "16", "--lr", "1e-2", "--warmup", "10"]);
    let summary: serde_json::Value = serde_json::from_slice(&std::fs::read(out.join("summary.json")).unwrap()).unwrap();
    let shards = Shards::open(demo_shards()).unwrap();
    let domains: Vec<&str> = shards.manifest().domains.keys().map(String::as_str).collect();
    // The natural mixture's validation loss, weighted by training tokens, vs its unigram entropy:
    // a model that only learned token frequencies would sit at the entropy.
    let (mut weighted, mut total) = (0.0, 0.0);
    for (domain, info) in &shards.manifest().domains {
        weighted += summary["val_loss"][domain].as_f64().unwrap() * info.train_tokens as f64;
        total += info.train_tokens as f64;
    }
    let (val, entropy) = (weighted / total, unigram_entropy(&shards, &domains));
    assert!(val < entropy - 0.5, "validation loss {val:.3} vs unigram entropy {entropy:.3}");
    let (math, math_entropy) = (summary["val_loss"]["math"].as_f64().unwrap(), unigram_entropy(&shards, &["math"]));
    assert!(math < math_entropy - 0.5, "math: validation loss {math:.3} vs unigram entropy {math_entropy:.3}");
}

fn checkpoint_bytes(out: &Path, step: u64) -> (Vec<u8>, Vec<u8>) {
    let dir = out.join("checkpoints").join(format!("step-{step:08}"));
    (std::fs::read(dir.join("model.safetensors")).unwrap(), std::fs::read(dir.join("optimizer.safetensors")).unwrap())
}

fn losses(out: &Path) -> Vec<String> {
    std::fs::read_to_string(out.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            let mut v: serde_json::Value = serde_json::from_str(l).unwrap();
            v.as_object_mut().unwrap().remove("tokens_per_s");
            v.to_string()
        })
        .collect()
}

#[test]
fn killed_training_resumes_to_bit_identical_weights() {
    let flags = [
        "--steps",
        "40",
        "--seq-len",
        "64",
        "--batch-size",
        "4",
        "--checkpoint-every",
        "4",
        "--keep-checkpoints",
        "50",
        "--resume",
    ];
    let whole = scratch("train-whole");
    // One intra-op thread: CPU kernels are then deterministic run to run.
    let run = |out: &Path| {
        let mut args = vec!["--threads", "1"];
        args.extend(["train", "--model", "tiny", "--shards", s(demo_shards()), "--out", s(out)]);
        args.extend_from_slice(&flags);
        args.iter().map(|a| a.to_string()).collect::<Vec<_>>()
    };
    mixforge(&run(&whole).iter().map(String::as_str).collect::<Vec<_>>());

    let killed = scratch("train-killed");
    let mut child = Command::new(env!("CARGO_BIN_EXE_mixforge"))
        .args(run(&killed))
        .current_dir(manifest_dir())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let latest = killed.join("checkpoints/latest");
    let deadline = Instant::now() + Duration::from_secs(120);
    while std::fs::read_to_string(&latest).map_or(true, |n| n.trim() < "step-00000012") {
        assert!(Instant::now() < deadline, "no checkpoint appeared");
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let stopped_at = std::fs::read_to_string(&latest).unwrap();
    assert!(stopped_at.trim() < "step-00000040", "the run finished before it was killed ({stopped_at})");
    mixforge(&run(&killed).iter().map(String::as_str).collect::<Vec<_>>());
    assert!(checkpoint_bytes(&whole, 40) == checkpoint_bytes(&killed, 40), "weights differ after resume");
    assert_eq!(losses(&whole), losses(&killed));
}

pub fn python() -> String {
    std::env::var("MIXFORGE_PYTHON").unwrap_or_else(|_| {
        let home = std::env::var("HOME").unwrap_or_else(|_| "/tmp".into());
        format!("{home}/.cache/mixforge-venv/bin/python")
    })
}

fn shared_eval(name: &str) -> PathBuf {
    let path = manifest_dir().join("../shared/data/eval").join(name);
    assert!(path.exists(), "{} is missing: this test reads ../shared/data", path.display());
    path
}

#[test]
fn export_loads_in_transformers_with_matching_logits_and_task_scores() {
    let dir = scratch("train-export");
    let run = dir.join("run");
    // seq 128 > window 32: local layers really slide.
    train_tiny(&run, &["--steps", "40", "--seq-len", "128", "--batch-size", "8"]);
    let export = dir.join("hf");
    mixforge(&["export", "--checkpoint", s(&run), "--out", s(&export)]);

    let text = dir.join("text.txt");
    let wiki = std::fs::read_to_string(manifest_dir().join("../shared/data/corpus/wiki/wikitext-2-valid.txt"))
        .or_else(|_| std::fs::read_to_string(manifest_dir().join("../shared/data/corpus/wiki/wikitext-2-test.txt")))
        .unwrap_or_else(|_| "The Eiffel Tower is a wrought-iron lattice tower in Paris. ".repeat(30));
    std::fs::write(&text, wiki.chars().skip(2000).take(3000).collect::<String>()).unwrap();
    let mut tasks = Vec::new();
    for name in ["arc_easy.jsonl", "piqa.jsonl"] {
        let lines: Vec<String> =
            std::fs::read_to_string(shared_eval(name)).unwrap().lines().take(30).map(str::to_string).collect();
        let path = dir.join(name);
        std::fs::write(&path, lines.join("\n") + "\n").unwrap();
        tasks.push(path);
    }
    let script = manifest_dir().join("tests/python/hf_check.py");
    let mut args = vec![s(&script).to_string(), s(&export).into(), s(&text).into(), s(&dir).into()];
    args.extend(tasks.iter().map(|t| s(t).to_string()));
    let py = Command::new(python()).args(&args).output().expect("run the virtualenv's python (scripts/env.sh)");
    assert!(py.status.success(), "transformers check failed:\n{}", String::from_utf8_lossy(&py.stderr));

    // Logits: the exported directory read back by mixforge's HF loader vs transformers.
    let hf: std::collections::BTreeMap<String, tch::Tensor> =
        tch::Tensor::read_safetensors(dir.join("hf_logits.safetensors")).unwrap().into_iter().collect();
    let loaded = train::hf::load_any(&export, tch::Device::Cpu, false).unwrap();
    let ids = hf["ids"].view([1, -1]);
    assert!(ids.size()[1] > 64, "the text must be longer than the sliding window");
    let ours = tch::no_grad(|| loaded.model.forward(&Inputs::tokens(ids))).squeeze_dim(0);
    let diff = (&ours - &hf["logits"]).abs().max().double_value(&[]);
    assert!(diff < 1e-4, "max |logit difference| = {diff}");

    // Task scores: `mixforge eval` on the checkpoint vs the direct transformers computation.
    let want: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.join("hf_scores.json")).unwrap()).unwrap();
    assert_eq!(want["architectures"][0], "MinistralForCausalLM");
    let mut eval_args = vec!["eval", "--checkpoint", s(&run), "--json"];
    for t in &tasks {
        eval_args.extend(["--task", s(t)]);
    }
    let got: serde_json::Value = serde_json::from_slice(&mixforge(&eval_args).stdout).unwrap();
    let scores = got["tasks"].as_array().unwrap();
    assert_eq!(scores.len(), tasks.len(), "one score per task: {got}");
    for score in scores {
        let name = score["task"].as_str().unwrap();
        assert_eq!(score["items"], 30, "{name}");
        for metric in ["acc", "acc_norm"] {
            let ours = score[metric].as_f64().unwrap_or_else(|| panic!("{name}: no {metric} in {score}"));
            let theirs =
                want["tasks"][name][metric].as_f64().unwrap_or_else(|| panic!("{name}: no reference {metric}"));
            assert_eq!(ours, theirs, "{name} {metric}");
        }
    }
    // Validation loss of the checkpoint = the training run's own final validation, domain by
    // domain (same sequences, same weights).
    let trained: serde_json::Value = serde_json::from_slice(&std::fs::read(run.join("summary.json")).unwrap()).unwrap();
    let trained = trained["val_loss"].as_object().unwrap();
    assert_eq!(got["val_loss"].as_object().unwrap().len(), trained.len(), "{got}");
    for (domain, loss) in trained {
        let ours = got["val_loss"][domain].as_f64().unwrap();
        assert!((ours - loss.as_f64().unwrap()).abs() < 1e-4, "{domain}: eval {ours} vs training {loss}");
    }

    // The export also serves as a Hugging Face teacher: distillation runs and the KL falls.
    let student = dir.join("student");
    train_tiny(
        &student,
        &["--steps", "30", "--seq-len", "64", "--batch-size", "8", "--teacher", s(&export), "--seed", "3"],
    );
    let kl: Vec<f64> = std::fs::read_to_string(student.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["loss"].as_f64())
        .collect();
    assert!(kl[kl.len() - 1] < 0.8 * kl[0], "KL {:?} → {:?}", kl[0], kl[kl.len() - 1]);
}

#[test]
fn model_params_prints_the_exact_count() {
    let out = mixforge(&["model", "params", "--preset", "mobilellm-pro-1b"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("parameters: 1084453120"));
}

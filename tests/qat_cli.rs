//! Phase 4 end to end on the demo shards: `quantize` (PTQ), `train --qat` with self-distillation,
//! int4 and GGUF exports read back by mixforge and by the `gguf` package, and the refusals.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Output};

use tch::Tensor;

use crate::common::{demo_shards, manifest_dir, mixforge, s, scratch};

fn ok(out: Output) -> String {
    assert!(out.status.success(), "mixforge failed:\n{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn refused(out: Output, needle: &str) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains(needle), "expected an error mentioning {needle:?}, got:\n{err}");
}

fn tensors(checkpoint: &Path) -> BTreeMap<String, Tensor> {
    let latest = std::fs::read_to_string(checkpoint.join("checkpoints/latest")).unwrap();
    Tensor::read_safetensors(checkpoint.join("checkpoints").join(latest.trim()).join("model.safetensors"))
        .unwrap()
        .into_iter()
        .collect()
}

/// (domain, validation loss) rows of `eval`'s table.
fn val_losses(out: &str) -> Vec<(String, f64)> {
    out.lines()
        .filter_map(|l| {
            let mut cells = l.split_whitespace();
            Some((cells.next()?.to_string(), cells.next()?.parse().ok()?))
        })
        .collect()
}

fn python() -> String {
    std::env::var("MIXFORGE_PYTHON").unwrap_or_else(|_| {
        let home = std::env::var("HOME").unwrap_or_else(|_| "/tmp".into());
        format!("{home}/.cache/mixforge-venv/bin/python")
    })
}

#[test]
fn quantize_qat_and_int4_exports_round_trip() {
    let dir = scratch("qat");
    let shards = s(demo_shards());
    let (base, ptq_cpu, ptq_accel, qat) =
        (dir.join("base"), dir.join("ptq-cpu"), dir.join("ptq-accel"), dir.join("qat"));
    let data = ["--shards", shards, "--seq-len", "64", "--batch-size", "4", "--eval-sequences", "4"];
    let mut args = vec!["train", "--model", "tiny", "--steps", "30", "--lr", "1e-2", "--out", s(&base)];
    args.extend(data);
    ok(mixforge(&args));

    for (scheme, out) in [("cpu", &ptq_cpu), ("accel", &ptq_accel)] {
        let printed = ok(mixforge(&["quantize", "--checkpoint", s(&base), "--scheme", scheme, "--out", s(out)]));
        assert!(printed.contains(&format!("({scheme} scheme)")), "{printed}");
        let eval = ok(mixforge(&["eval", "--checkpoint", s(out), "--shards", shards, "--seq-len", "64"]));
        assert!(!val_losses(&eval).is_empty(), "{eval}");
    }
    ok(mixforge(&["generate", "--checkpoint", s(&ptq_cpu), "--max-new-tokens", "5", "The"]));

    // QAT, accel, distilling from the full-precision start: the learned scales move.
    let mut args = vec!["train", "--qat", "accel", "--init", s(&base), "--teacher", "self", "--steps", "6"];
    args.extend(["--lr", "1e-2", "--out", s(&qat)]);
    args.extend(data);
    ok(mixforge(&args));
    let (before, after) = (tensors(&ptq_accel), tensors(&qat));
    let name = "model.layers.0.self_attn.q_proj.weight_fake_quantizer.log_scale";
    assert!(after.contains_key(name) && !after.contains_key("nothing"));
    let moved = f64::try_from((&after[name] - &before[name]).abs().max()).unwrap();
    assert!(moved > 1e-4, "the learnable scales did not move ({moved})");
    assert!(after.contains_key("lm_head.weight"), "the accel model has its own LM head");

    // int4 export, run with bf16 activations: the fake-quantized checkpoint's validation loss
    // within 0.01 nats (exact in fp32: train/tests/quant.rs).
    let int4 = dir.join("qat-int4");
    let printed = ok(mixforge(&["export", "--checkpoint", s(&qat), "--int4", "--out", s(&int4)]));
    assert!(printed.contains("packed int4"), "{printed}");
    let eval = |m: &Path| ok(mixforge(&["eval", "--checkpoint", s(m), "--shards", shards, "--seq-len", "64"]));
    let (fake, real) = (val_losses(&eval(&qat)), val_losses(&eval(&int4)));
    assert_eq!(fake.len(), real.len());
    for ((domain, a), (_, b)) in fake.iter().zip(&real) {
        assert!((a - b).abs() < 0.01, "{domain}: fake-quantized {a}, int4 {b}");
    }
    ok(mixforge(&["generate", "--checkpoint", s(&int4), "--max-new-tokens", "5", "The"]));

    // GGUF: read back by llama.cpp's Python reader, bit for bit against the HF export.
    for model in [&qat, &ptq_cpu] {
        let (gguf, hf) = (model.with_extension("gguf"), model.with_extension("hf"));
        let printed = ok(mixforge(&["export", "--checkpoint", s(model), "--gguf", "--out", s(&gguf)]));
        assert!(printed.contains("GGUF Q4_0"), "{printed}");
        ok(mixforge(&["export", "--checkpoint", s(model), "--out", s(&hf)]));
        let script = manifest_dir().join("tests/python/gguf_check.py");
        let py =
            Command::new(python()).args([s(&script), s(&gguf), s(&hf)]).output().expect("run the virtualenv's python");
        assert!(
            py.status.success(),
            "gguf check failed for {}:\n{}{}",
            model.display(),
            String::from_utf8_lossy(&py.stdout),
            String::from_utf8_lossy(&py.stderr)
        );
    }

    refused(
        mixforge(&["export", "--checkpoint", s(&base), "--gguf", "--out", s(&dir.join("x.gguf"))]),
        "mixforge quantize",
    );
    refused(
        mixforge(&["quantize", "--checkpoint", s(&ptq_cpu), "--scheme", "cpu", "--out", s(&dir.join("again"))]),
        "already quantized",
    );
    let taught = dir.join("taught");
    let mut args = vec!["train", "--init", s(&base), "--teacher", s(&int4), "--steps", "1", "--out", s(&taught)];
    args.extend(data);
    refused(mixforge(&args), "int4 export (inference only)");
    let mixed = dir.join("mixed");
    let mut args = vec!["train", "--qat", "cpu", "--init", s(&ptq_accel), "--steps", "2", "--out", s(&mixed)];
    args.extend(data);
    refused(mixforge(&args), "accel scheme");
    refused(
        mixforge(&[
            "train",
            "--model",
            "tiny",
            "--shards",
            shards,
            "--steps",
            "1",
            "--teacher",
            "self",
            "--out",
            s(&dir.join("t")),
        ]),
        "--teacher self needs --init",
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_qat_experiment_runs_end_to_end_at_a_tiny_size() {
    let dir = scratch("qat-experiment");
    let out = Command::new("bash")
        .arg(manifest_dir().join("scripts/qat-experiment"))
        .envs([
            ("MIXFORGE_BIN", env!("CARGO_BIN_EXE_mixforge")),
            ("OUT", s(&dir)),
            ("SHARDS", s(demo_shards())),
            ("SEEDS", "0 1"),
            ("SEQ", "32"),
            ("BASE_STEPS", "4"),
            ("QAT_STEPS", "2"),
            ("LIMIT", "10"),
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "qat-experiment failed:\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        stdout.contains("share of the PTQ degradation recovered") && stdout.contains("paired differences"),
        "{stdout}"
    );
    let comparison: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("comparison.json")).unwrap()).unwrap();
    let arms: Vec<&String> = comparison["arms"].as_object().unwrap().keys().collect();
    assert_eq!(
        arms,
        [
            "fp",
            "fp-continued",
            "ptq-accel",
            "ptq-cpu",
            "qat-accel-fixed",
            "qat-accel-learn",
            "qat-cpu-ce",
            "qat-cpu-kd"
        ]
    );
    assert_eq!(comparison["arms"]["qat-cpu-kd"].as_array().unwrap().len(), 2, "one row per seed");
    // The real int4 accel model scores what its fake-quantized checkpoint does (bf16 activations).
    let (real, fake) =
        (&comparison["int4"]["qat-accel-learn"]["mean"], &comparison["arms"]["qat-accel-learn"][0]["mean"]);
    assert!((real.as_f64().unwrap() - fake.as_f64().unwrap()).abs() < 0.01, "{real} vs {fake}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// torchao's own QAT quantizer (`Int8DynActInt4WeightQATQuantizer`, group 32, fp16 scales) and
/// ours agree exactly: fake-quantized weights and activations, and the int codes and scales.
#[test]
fn the_cpu_scheme_equals_torchaos_quantizer_exactly() {
    use train::quant::{self, QuantConfig, Scheme};
    let dir = scratch("torchao");
    let script = manifest_dir().join("tests/python/torchao_check.py");
    let py = Command::new(python()).args([s(&script), s(&dir)]).output().expect("run the virtualenv's python");
    assert!(py.status.success(), "torchao reference failed:\n{}", String::from_utf8_lossy(&py.stderr));
    let t: BTreeMap<String, Tensor> =
        Tensor::read_safetensors(dir.join("torchao.safetensors")).unwrap().into_iter().collect();
    let cpu = QuantConfig::new(Scheme::Cpu);
    for case in 0..5 {
        let get = |name: &str| &t[&format!("{case}.{name}")];
        let ours = quant::quantize(&cpu, get("w"), None);
        assert!(ours.codes.equal(get("codes")), "case {case}: codes");
        assert!(ours.scales.equal(get("scales")), "case {case}: scales");
        assert!(
            quant::fake_weight(&cpu, get("w"), None).equal(get("weight_fq")),
            "case {case}: fake-quantized weights"
        );
        assert!(quant::fake_activations(get("x")).equal(get("act_fq")), "case {case}: fake-quantized activations");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

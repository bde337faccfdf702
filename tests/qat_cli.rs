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

fn val_lines(out: &str) -> Vec<String> {
    out.lines()
        .filter(|l| l.trim_start().starts_with(|c: char| c.is_ascii_lowercase()) && !l.contains("domain"))
        .map(String::from)
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
        assert!(!val_lines(&eval).is_empty(), "{eval}");
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

    // int4 export: the same validation loss as the fake-quantized checkpoint (weight-only kernel).
    let int4 = dir.join("qat-int4");
    let printed = ok(mixforge(&["export", "--checkpoint", s(&qat), "--int4", "--out", s(&int4)]));
    assert!(printed.contains("packed int4"), "{printed}");
    let eval = |m: &Path| ok(mixforge(&["eval", "--checkpoint", s(m), "--shards", shards, "--seq-len", "64"]));
    assert_eq!(val_lines(&eval(&qat)), val_lines(&eval(&int4)));
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

//! `mixforge` runs the corpus, simulator and report commands without loading libtorch and
//! hands the commands that train or run models to `mixforge-torch`, beside it.

use std::process::{Command, Output};

use crate::common::{manifest_dir, s, scratch};

/// Runs `mixforge args` with glibc's loader listing every shared library it loads.
fn traced(args: &[&str]) -> (Output, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_mixforge"))
        .args(args)
        .env("LD_DEBUG", "libs")
        .current_dir(manifest_dir())
        .output()
        .unwrap();
    let loads = String::from_utf8_lossy(&out.stderr).to_string();
    // The trace itself works: every process loads libc.
    assert!(loads.contains("libc.so"), "LD_DEBUG=libs listed nothing:\n{loads}");
    (out, loads)
}

#[test]
fn corpus_mix_and_report_commands_never_load_libtorch() {
    for args in [&["corpus", "--help"][..], &["mix", "propose", "--help"], &["report", "--help"], &["train", "--help"]]
    {
        let (out, loads) = traced(args);
        assert!(out.status.success(), "mixforge {args:?} failed");
        assert!(!loads.contains("libtorch"), "mixforge {args:?} loaded libtorch");
    }
    // A real corpus run on the demo recipe, start to finish.
    let out_dir = scratch("no-libtorch");
    let (out, loads) = traced(&["corpus", "run", "recipes/demo.toml", "--out", s(&out_dir)]);
    assert!(out.status.success(), "corpus run failed");
    assert!(!loads.contains("libtorch"), "corpus run loaded libtorch");
    assert!(out_dir.join("manifest.json").is_file());
    // The simulator's torch-free commands read shards and fit without it too.
    let (out, loads) = traced(&["mix", "materialize", "--help"]);
    assert!(out.status.success() && !loads.contains("libtorch"));
}

#[test]
fn model_commands_are_handed_to_mixforge_torch() {
    let (out, loads) = traced(&["doctor"]);
    assert!(out.status.success(), "doctor failed:\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(loads.contains("libtorch_cpu"), "doctor ran without libtorch");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("2.11"), "doctor names the libtorch it linked:\n{stdout}");
    // Errors and exit status pass through the hand-over, worded as `mixforge`.
    let out = Command::new(env!("CARGO_BIN_EXE_mixforge"))
        .args(["eval", "--checkpoint", "/nonexistent/ckpt"])
        .current_dir(manifest_dir())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("/nonexistent/ckpt"), "the checkpoint error names the path:\n{stderr}");
    let out = Command::new(env!("CARGO_BIN_EXE_mixforge")).args(["train", "--no-such-flag"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "clap's usage error status");
    assert!(String::from_utf8_lossy(&out.stderr).contains("mixforge train"));
}

#[test]
fn a_missing_mixforge_torch_is_a_clear_error() {
    // A copy of `mixforge` alone in a folder: corpus commands work, model commands say why not.
    let dir = scratch("front-alone");
    let front = dir.join("mixforge");
    // A hard link where it can (the executable is large), else a copy.
    if std::fs::hard_link(env!("CARGO_BIN_EXE_mixforge"), &front).is_err() {
        std::fs::copy(env!("CARGO_BIN_EXE_mixforge"), &front).unwrap();
    }
    let out = Command::new(&front).args(["corpus", "--help"]).output().unwrap();
    assert!(out.status.success());
    let out = Command::new(&front).args(["doctor"]).output().unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("mixforge-torch") && stderr.contains("cargo build --release"), "{stderr}");
    std::fs::remove_dir_all(&dir).unwrap();
}

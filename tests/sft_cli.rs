//! Instruction tuning end to end: `sft` on the bundled instruction sets (malformed records
//! named, kill -9 + resume bit-identical), the chat template against `transformers`, `generate
//! --chat`, and `mix loo` (D + 1 runs differing only in the removed domain, resumed after kill).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use corpus::instruct::Message;

use crate::common::{demo_shards, kill_when, manifest_dir, mixforge, s, scratch};

/// A tiny base model trained briefly on the demo shards, built once per test process.
fn base() -> &'static Path {
    static BASE: OnceLock<PathBuf> = OnceLock::new();
    BASE.get_or_init(|| {
        let run = scratch("sft-base");
        let out = mixforge(&[
            "--threads",
            "1",
            "train",
            "--model",
            "tiny",
            "--shards",
            s(demo_shards()),
            "--steps",
            "20",
            "--seq-len",
            "128",
            "--batch-size",
            "4",
            "--out",
            s(&run),
        ]);
        assert!(out.status.success(), "base training failed:\n{}", String::from_utf8_lossy(&out.stderr));
        run
    })
}

fn demo(path: &str) -> String {
    manifest_dir().join("data/demo").join(path).to_string_lossy().into_owned()
}

fn data_flags(extra: &Path) -> Vec<String> {
    [
        format!("ni-short={}", demo("instruct/ni-short")),
        format!("dolly={}", demo("instruct/dolly")),
        format!("chat={}", extra.display()),
    ]
    .into_iter()
    .flat_map(|d| ["--data".to_string(), d])
    .collect()
}

/// Multi-turn conversations in `messages` form, one malformed line among them.
fn chat_file(dir: &Path) -> PathBuf {
    let path = dir.join("chat.jsonl");
    let mut lines = Vec::new();
    for i in 0..30 {
        let messages = serde_json::json!([
            {"role": "system", "content": "You are terse."},
            {"role": "user", "content": format!("What is {i} plus one?")},
            {"role": "assistant", "content": format!("{}", i + 1)},
            {"role": "user", "content": "And times two?"},
            {"role": "assistant", "content": format!("{}.", 2 * (i + 1))},
        ]);
        lines.push(serde_json::json!({ "messages": messages }).to_string());
        if i == 7 {
            lines.push(r#"{"messages": [{"role": "narrator", "content": "x"}]}"#.to_string());
        }
    }
    std::fs::write(&path, lines.join("\n") + "\n").unwrap();
    path
}

fn sft_args(out: &Path, data: &[String], steps: &str) -> Vec<String> {
    let mut args: Vec<String> = ["--threads", "1", "sft", "--init", s(base()), "--out", s(out), "--steps", steps]
        .iter()
        .map(|a| a.to_string())
        .collect();
    args.extend(data.iter().cloned());
    args.extend(
        ["--seq-len", "128", "--batch-size", "4", "--checkpoint-every", "4", "--keep-checkpoints", "2", "--resume"]
            .map(String::from),
    );
    args
}

fn run_ok(args: &[String]) -> String {
    let out = mixforge(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(out.status.success(), "{args:?} failed:\n{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn sft_counts_malformed_records_and_a_killed_run_resumes_bit_identically() {
    let dir = scratch("sft-resume");
    let data = data_flags(&chat_file(&dir));
    let whole = dir.join("whole");
    let stdout = run_ok(&sft_args(&whole, &data, "40"));
    // The malformed record is counted and named with its file and line.
    assert!(stdout.contains("chat.jsonl:9: messages[0].role is \"narrator\""), "{stdout}");
    let summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(whole.join("summary.json")).unwrap()).unwrap();
    assert_eq!(summary["data"]["chat"]["malformed"], 1);
    assert_eq!(
        summary["data"]["chat"]["train_examples"].as_u64().unwrap()
            + summary["data"]["chat"]["val_examples"].as_u64().unwrap(),
        30
    );
    for d in ["ni-short", "dolly", "chat"] {
        assert!(summary["val_loss"][d].as_f64().unwrap().is_finite(), "{d}: {summary}");
    }

    let killed = dir.join("killed");
    let latest = killed.join("checkpoints/latest");
    kill_when(&sft_args(&killed, &data, "40"), 120, || {
        std::fs::read_to_string(&latest).is_ok_and(|n| n.trim() >= "step-00000008")
    });
    let stopped_at = std::fs::read_to_string(&latest).unwrap();
    assert!(stopped_at.trim() < "step-00000040", "the run finished before it was killed ({stopped_at})");
    run_ok(&sft_args(&killed, &data, "40"));
    let weights = |run: &Path| std::fs::read(run.join("checkpoints/step-00000040/model.safetensors")).unwrap();
    assert!(weights(&whole) == weights(&killed), "weights differ after resume");

    // Changed data is refused on resume, not silently mixed in.
    std::fs::write(dir.join("chat.jsonl"), std::fs::read_to_string(dir.join("chat.jsonl")).unwrap() + "\n").unwrap();
    let out = mixforge(&sft_args(&killed, &data, "44").iter().map(String::as_str).collect::<Vec<_>>());
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("changed since this run started"));
}

#[test]
fn the_chat_template_equals_transformers_and_the_export_chats() {
    let dir = scratch("sft-chat");
    let run = dir.join("run");
    run_ok(&sft_args(&run, &data_flags(&chat_file(&dir)), "4"));
    let export = dir.join("hf");
    run_ok(&["export", "--checkpoint", s(&run), "--out", s(&export)].map(String::from));
    let tokenizer = corpus::tokenize::load(&export.join("tokenizer.json")).unwrap();
    let conversations = [
        vec![Message::new("user", "What is the capital of France?"), Message::new("assistant", "Paris.")],
        vec![
            Message::new("system", "You are terse."),
            Message::new("user", "Name a prime.\nJust one."),
            Message::new("assistant", "7"),
            Message::new("user", "Another, please: ünïcode → ok?"),
            Message::new("assistant", "  11 (with spaces)  "),
        ],
    ];
    let cases: Vec<serde_json::Value> = conversations
        .iter()
        .map(|m| {
            let ids = corpus::chat::encode(&tokenizer, m).unwrap().ids;
            let prompt_ids = corpus::chat::encode_prompt(&tokenizer, &m[..m.len() - 1]).unwrap();
            serde_json::json!({"messages": m, "ids": ids, "prompt_ids": prompt_ids})
        })
        .collect();
    let cases_file = dir.join("cases.json");
    std::fs::write(&cases_file, serde_json::to_vec(&cases).unwrap()).unwrap();
    let script = manifest_dir().join("tests/python/chat_check.py");
    let py = Command::new(crate::train_cli::python()).args([s(&script), s(&export), s(&cases_file)]).output().unwrap();
    assert!(
        py.status.success(),
        "chat template check failed:\n{}{}",
        String::from_utf8_lossy(&py.stdout),
        String::from_utf8_lossy(&py.stderr)
    );
    // transformers' greedy reply = ours.
    let theirs: serde_json::Value = serde_json::from_slice(py.stdout.trim_ascii()).unwrap();
    let reply = run_ok(
        &["generate", "--checkpoint", s(&run), "--chat", "What is the capital of France?", "--max-new-tokens", "8"]
            .map(String::from),
    );
    let ids: Vec<u32> = theirs["reply_ids"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as u32).collect();
    let im_end = tokenizer.token_to_id("<|im_end|>").unwrap();
    let ids: Vec<u32> = ids.into_iter().take_while(|&i| i != im_end).collect();
    assert_eq!(reply.trim_end_matches('\n'), tokenizer.decode(&ids, true).unwrap());
}

fn loo_args(out: &Path, chat: &Path) -> Vec<String> {
    let mut args: Vec<String> =
        ["--threads", "1", "mix", "loo", "--init", s(base()), "--out", s(out), "--steps", "6", "--jobs", "1"]
            .iter()
            .map(|a| a.to_string())
            .collect();
    args.extend(data_flags(chat));
    args.extend(["--seq-len", "128", "--batch-size", "4"].map(String::from));
    args
}

#[test]
fn mix_loo_runs_each_domain_out_once_resumes_after_kill_and_feeds_sft() {
    let dir = scratch("loo");
    let chat = chat_file(&dir);
    let whole = dir.join("whole");
    let stdout = run_ok(&loo_args(&whole, &chat));
    assert!(stdout.contains("weights →"), "{stdout}");
    // D + 1 runs; each `no-<d>` run has d's weight 0 and the others' in the `all` run's ratios.
    let runs = std::fs::read_to_string(whole.join("runs.csv")).unwrap();
    let mut lines = runs.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    let rows: Vec<Vec<&str>> = lines.map(|l| l.split(',').collect()).collect();
    assert_eq!(rows.len(), 4, "{runs}");
    let weight = |row: &[&str], d: &str| -> f64 {
        row[header.iter().position(|h| *h == format!("w:{d}")).unwrap()].parse().unwrap()
    };
    let all = rows.iter().find(|r| r[0] == "all").unwrap();
    let domains = ["chat", "dolly", "ni-short"];
    for d in domains {
        let row = rows.iter().find(|r| r[0] == format!("no-{d}")).unwrap();
        assert_eq!(weight(row, d), 0.0);
        let others: Vec<&str> = domains.into_iter().filter(|o| *o != d).collect();
        let ratio = |r: &[&str]| weight(r, others[0]) / weight(r, others[1]);
        assert!((ratio(row) - ratio(all)).abs() < 1e-9, "{d}: {runs}");
    }
    let result: serde_json::Value = serde_json::from_slice(&std::fs::read(whole.join("loo.json")).unwrap()).unwrap();
    let total: f64 = domains.iter().map(|d| result["weights"][d].as_f64().unwrap()).sum();
    assert!((total - 1.0).abs() < 1e-9, "{result}");

    // Killed after its first run: the rerun trains only the rest and ends where the whole did.
    let killed = dir.join("killed");
    kill_when(&loo_args(&killed, &chat), 300, || {
        std::fs::read_to_string(killed.join("runs.csv")).is_ok_and(|t| t.lines().count() >= 2)
    });
    let first = std::fs::read_to_string(killed.join("runs.csv")).unwrap();
    assert!(first.lines().count() < 5, "the loo finished before it was killed");
    let finished = first.lines().nth(1).unwrap().split(',').next().unwrap().to_string();
    let stamp =
        |run: &str| std::fs::metadata(killed.join("runs").join(run).join("summary.json")).unwrap().modified().unwrap();
    let before = stamp(&finished);
    let stdout = run_ok(&loo_args(&killed, &chat));
    assert!(stdout.contains("already done"), "{stdout}");
    assert_eq!(stamp(&finished), before, "a finished run was trained again");
    assert_eq!(std::fs::read(killed.join("loo.json")).unwrap(), std::fs::read(whole.join("loo.json")).unwrap());

    // `sft --mix` takes the proposal.
    let tuned = dir.join("tuned");
    let mut args = sft_args(&tuned, &data_flags(&chat), "2");
    args.extend(["--mix".to_string(), s(&whole.join("loo.toml")).to_string()]);
    run_ok(&args);
    let summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(tuned.join("summary.json")).unwrap()).unwrap();
    for d in domains {
        let (got, want) = (summary["weights"][d].as_f64().unwrap(), result["weights"][d].as_f64().unwrap());
        assert!((got - want).abs() < 1e-12, "{d}: {got} vs {want}");
    }
}

#[test]
fn the_sft_experiment_runs_end_to_end_at_a_tiny_size() {
    let dir = scratch("sft-experiment");
    let out = Command::new("bash")
        .arg(manifest_dir().join("scripts/sft-experiment"))
        .envs([
            ("MIXFORGE_BIN", env!("CARGO_BIN_EXE_mixforge")),
            ("OUT", s(&dir)),
            ("BASE", s(base())),
            ("SEEDS", "0 1"),
            ("SEQ", "128"),
            ("LOO_STEPS", "2"),
            ("SFT_STEPS", "2"),
            ("GSM8K_ITEMS", "2"),
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "sft-experiment failed:\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("Δ matrix") && stdout.contains("loo − uniform"), "{stdout}");
    // GSM8K-test asked through the chat template, from the bundled compressed file.
    assert!(stdout.contains("GSM8K-test through the chat template (2 problems"), "{stdout}");
    let comparison: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("comparison.json")).unwrap()).unwrap();
    let arms: Vec<&String> = comparison["runs"].as_object().unwrap().keys().collect();
    assert_eq!(arms, ["loo", "natural", "uniform"]);
    assert_eq!(comparison["paired"]["loo-natural"]["diffs"].as_array().unwrap().len(), 2);
    // Equal tokens between arms.
    let tokens: Vec<u64> =
        ["loo", "natural", "uniform"].iter().map(|a| comparison["runs"][a][0]["tokens"].as_u64().unwrap()).collect();
    assert!(tokens.iter().all(|t| *t == tokens[0]), "{tokens:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

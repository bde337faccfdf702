//! `mixforge mix import → fit → predict` on RegMix's published swarm: the round trip works and
//! the predictions rank the held-out mixtures as their real losses do.

use std::path::Path;
use std::process::Command;

use crate::common::{manifest_dir, mixforge, scratch};

fn regmix(file: &str) -> String {
    manifest_dir().join("../shared/data/regmix").join(file).display().to_string()
}

#[test]
fn import_fit_predict_round_trip() {
    let dir = scratch("mix");
    let path = |name: &str| dir.join(name).display().to_string();
    let imported = mixforge(&[
        "mix",
        "import",
        "--mixtures",
        &regmix("train_mixture_1m.csv"),
        "--metrics",
        &regmix("train_pile_loss_1m.csv"),
        "--out",
        &path("runs.csv"),
    ]);
    assert!(imported.status.success(), "{}", String::from_utf8_lossy(&imported.stderr));
    assert!(String::from_utf8_lossy(&imported.stdout).contains("imported 512 runs: 17 domains, 13 metrics"));
    let target = "the_pile_pile_cc_val_loss";
    let fit = mixforge(&[
        "mix",
        "fit",
        "--runs",
        &path("runs.csv"),
        "--target",
        target,
        "--surrogate",
        "gbdt",
        "--out",
        &path("model.json"),
    ]);
    assert!(fit.status.success(), "{}", String::from_utf8_lossy(&fit.stderr));
    assert!(String::from_utf8_lossy(&fit.stdout).contains("chosen: gbdt"));
    let predicted = mixforge(&[
        "mix",
        "predict",
        "--model",
        &path("model.json"),
        "--mixtures",
        &regmix("test_mixture_1m.csv"),
        "--out",
        &path("pred.csv"),
    ]);
    assert!(predicted.status.success(), "{}", String::from_utf8_lossy(&predicted.stderr));
    // Predictions against the real held-out losses.
    let text = std::fs::read_to_string(path("pred.csv")).unwrap();
    assert!(text.starts_with("index,predicted,std\n"), "bootstrap members give a std column");
    let rows: Vec<Vec<&str>> = text.lines().skip(1).map(|l| l.split(',').collect()).collect();
    let pred: Vec<(String, f64)> = rows.iter().map(|c| (c[0].to_string(), c[1].parse().unwrap())).collect();
    let stds: Vec<f64> = rows.iter().map(|c| c[2].parse().unwrap()).collect();
    assert_eq!(pred.len(), 256);
    assert!(stds.iter().all(|s| *s >= 0.0) && stds.iter().any(|s| *s > 0.0), "bootstrap spread");
    let truth_table = mixforge(&[
        "mix",
        "import",
        "--mixtures",
        &regmix("test_mixture_1m.csv"),
        "--metrics",
        &regmix("test_pile_loss_1m.csv"),
        "--out",
        &path("test_runs.csv"),
    ]);
    assert!(truth_table.status.success());
    let table = mixsim::RunsTable::read_csv(&dir.join("test_runs.csv")).unwrap();
    let (_, truth) = table.xy(target).unwrap();
    let by_index: std::collections::BTreeMap<&str, f64> = pred.iter().map(|(i, p)| (i.as_str(), *p)).collect();
    let ordered: Vec<f64> = table.rows.iter().map(|r| by_index[r.index.as_str()]).collect();
    let rho = mixsim::spearman(&ordered, &truth);
    assert!(rho >= 0.98, "Spearman {rho}");
    // A mixture whose domains are in another order is refused, not silently mispredicted.
    let shuffled = dir.join("shuffled.csv");
    let text = std::fs::read_to_string(regmix("test_mixture_1m.csv")).unwrap();
    let swapped: String = text
        .lines()
        .map(|l| {
            let mut cells: Vec<&str> = l.split(',').collect();
            cells.swap(1, 2);
            cells.join(",") + "\n"
        })
        .collect();
    std::fs::write(&shuffled, swapped).unwrap();
    let refused = mixforge(&[
        "mix",
        "predict",
        "--model",
        &path("model.json"),
        "--mixtures",
        shuffled.to_str().unwrap(),
        "--out",
        &path("bad.csv"),
    ]);
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("domain mismatch"), "{stderr}");
    assert!(!Path::new(&path("bad.csv")).exists(), "nothing written for a refused prediction");
}

fn ok(args: &[&str]) -> String {
    let out = mixforge(args);
    assert!(out.status.success(), "mixforge {args:?} failed:\n{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `mix materialize` of a proposal onto shards, chunks of 100 documents.
fn mixforge_materialize(proposal: &Path, shards: &str, tokens: &str, out: &Path) -> std::process::Output {
    let (proposal, out) = (proposal.to_str().unwrap(), out.to_str().unwrap());
    mixforge(&[
        "mix",
        "materialize",
        "--proposal",
        proposal,
        "--shards",
        shards,
        "--tokens",
        tokens,
        "--out",
        out,
        "--chunk-docs",
        "100",
    ])
}

fn materialize(proposal: &Path, shards: &str, tokens: &str, out: &Path) {
    let done = mixforge_materialize(proposal, shards, tokens, out);
    assert!(done.status.success(), "materialize failed:\n{}", String::from_utf8_lossy(&done.stderr));
}

fn data_rows(path: &std::path::Path) -> Vec<String> {
    std::fs::read_to_string(path).map(|t| t.lines().skip(1).map(String::from).collect()).unwrap_or_default()
}

/// Two training steps of the tiny model on `shards`, by `mix` when given.
fn train_two_steps(shards: &str, mix: Option<&str>, out: &std::path::Path) {
    let mut args = vec!["--threads", "1", "train", "--model", "tiny", "--shards", shards, "--steps", "2"];
    args.extend(["--seq-len", "64", "--batch-size", "4", "--out", out.to_str().unwrap()]);
    if let Some(mix) = mix {
        args.extend(["--mix", mix]);
    }
    ok(&args);
}

/// The whole simulator on real shards: a swarm killed with SIGKILL resumes without redoing
/// finished proxies; the proposal is read by the trainer; materialized shards realise it
/// within its caps and train.
#[test]
fn swarm_resumes_after_kill_then_proposes_and_materializes() {
    let shards = crate::common::demo_shards().to_str().unwrap().to_string();
    let dir = scratch("mix-swarm");
    let swarm = dir.join("swarm");
    let args: Vec<String> = [
        "--threads",
        "1",
        "mix",
        "swarm",
        "--shards",
        &shards,
        "--out",
        swarm.to_str().unwrap(),
        "--runs",
        "6",
        "--replicates",
        "2",
        "--proxy-tokens",
        "16000",
        "--target-tokens",
        "64000",
        "--jobs",
        "1",
        "--seq-len",
        "64",
        "--batch-size",
        "8",
        "--eval-sequences",
        "8",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let mut child =
        Command::new(env!("CARGO_BIN_EXE_mixforge")).args(&args).current_dir(manifest_dir()).spawn().unwrap();
    let runs_csv = swarm.join("runs.csv");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(300);
    while data_rows(&runs_csv).len() < 2 {
        assert!(std::time::Instant::now() < deadline, "no proxy finished in 5 minutes");
        assert!(child.try_wait().unwrap().is_none(), "the swarm ended before it was killed");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let before = data_rows(&runs_csv);
    assert!(before.len() >= 2 && before.len() < 6, "{before:?}");

    let arg_refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let resumed = ok(&arg_refs);
    assert!(resumed.contains(&format!("{} already done", before.len())), "{resumed}");
    let after = data_rows(&runs_csv);
    // The 6 designed runs, then each distinct anchor again with seed 1 (uniform and UniMax may
    // coincide once the caps are applied).
    let plan: serde_json::Value = serde_json::from_slice(&std::fs::read(swarm.join("plan.json")).unwrap()).unwrap();
    let planned = plan["runs"].as_array().unwrap().len();
    assert!((8..=10).contains(&planned) && after.len() == planned, "{planned} planned, {} ran", after.len());
    assert!(after.iter().any(|r| r.starts_with("run000-seed1,")), "{after:?}");
    for row in &before {
        assert!(after.contains(row), "finished run changed on resume: {row}");
    }
    let table = mixsim::RunsTable::read_csv(&runs_csv).unwrap();
    assert!(
        table.metrics.contains(&"avg_val_loss".to_string()) && table.metrics.contains(&"math_val_loss".to_string())
    );

    // Propose: every cap holds, the trainer reads the file, utility is written beside the runs.
    let proposal = dir.join("proposal.toml");
    let printed = ok(&[
        "mix",
        "propose",
        "--runs",
        runs_csv.to_str().unwrap(),
        "--shards",
        &shards,
        "--target-tokens",
        "64000",
        "--max-epochs",
        "2",
        "--bootstrap",
        "4",
        "--out",
        proposal.to_str().unwrap(),
    ]);
    assert!(printed.contains("predicted objective") && printed.contains("uniform"), "{printed}");
    // The replicated anchors give the seed noise; every baseline gets a gain with intervals on
    // the proxies' stated scale.
    assert!(printed.contains("seed noise of the objective: std") && printed.contains("proxy scale"), "{printed}");
    let p = mixsim::Proposal::load(&proposal).unwrap();
    let noise = p.seed_noise.expect("measured on the replicates");
    assert!(noise.std > 0.0 && noise.dof == planned - 6, "{noise:?}");
    for name in ["natural", "uniform", "unimax"] {
        let gain = &p.gains[name];
        let ([lo, hi], [lo1, hi1]) = (gain.interval.unwrap(), gain.one_run_interval.unwrap());
        assert!(lo <= gain.mean && gain.mean <= hi && lo1 < lo && hi < hi1, "{name}: {gain:?}");
    }
    assert!((p.weights.values().sum::<f64>() - 1.0).abs() < 1e-9);
    for (d, e) in &p.epochs {
        assert!(*e <= 2.0 + 1e-12, "{d} read {e} epochs past the cap of 2");
    }
    // The utility table lies beside the proposal; nothing is written into the swarm.
    assert!(proposal.with_extension("utility.csv").exists());
    assert!(!swarm.join("utility.csv").exists(), "propose wrote outside --out");
    train_two_steps(&shards, Some(proposal.to_str().unwrap()), &dir.join("train"));

    // Materialize: realised shares within one token per domain, caps kept, and it trains.
    let mixed = dir.join("mixed");
    materialize(&proposal, &shards, "50000", &mixed);
    let opened = corpus::shards::Shards::open(&mixed).unwrap();
    let realised = opened.manifest().mixture.clone().expect("a realised mixture");
    assert_eq!(realised.tokens, 50_000);
    for (d, r) in &realised.domains {
        assert!((r.tokens as f64 - p.weights[d] * 50_000.0).abs() <= 1.0, "{d}: {r:?}");
        assert!(r.epochs <= 2.0 + 1e-9, "{d}: {r:?}");
    }
    let stream_tokens: u64 = realised.stream.iter().map(|e| e.tokens + e.docs).sum();
    assert_eq!(stream_tokens, 50_000, "the stream holds every training token once (EOS per document)");
    train_two_steps(mixed.to_str().unwrap(), None, &dir.join("train-mixed"));
    // Asking for more tokens than the caps allow is refused, naming the domain and the cap.
    let refused = mixforge_materialize(&proposal, &shards, "100000000", &dir.join("too-big"));
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("past its cap"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    // --out naming something that is not materialized shards (here the corpus shards) is
    // refused and left as it was, never deleted.
    let before = std::fs::read(Path::new(&shards).join("manifest.json")).unwrap();
    let refused = mixforge_materialize(&proposal, &shards, "50000", Path::new(&shards));
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success() && stderr.contains("refusing to replace"), "{stderr}");
    assert_eq!(std::fs::read(Path::new(&shards).join("manifest.json")).unwrap(), before);
    // Materializing again into its own output replaces it whole.
    materialize(&proposal, &shards, "40000", &mixed);
    let again = corpus::shards::Shards::open(&mixed).unwrap();
    assert_eq!(again.manifest().mixture.as_ref().unwrap().tokens, 40_000);
}

/// Runs one of the simulator's experiment scripts at a tiny size on the demo shards.
fn tiny_script(script: &str, dir: &std::path::Path, env: &[(&str, &str)]) -> String {
    let out = Command::new("bash")
        .arg(manifest_dir().join("scripts").join(script))
        .envs([
            ("MIXFORGE_BIN", env!("CARGO_BIN_EXE_mixforge")),
            ("OUT", dir.to_str().unwrap()),
            ("SHARDS", crate::common::demo_shards().to_str().unwrap()),
            ("RUNS", "4"),
            ("REPLICATES", "2"),
            ("PROXY_TOKENS", "4096"),
        ])
        .envs(env.iter().copied())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "{script} failed:\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    stdout
}

#[test]
fn the_mix_experiment_and_stability_scripts_run_at_a_tiny_size() {
    let dir = scratch("mix-experiment");
    let stdout =
        tiny_script("mix-experiment", &dir, &[("TARGET_TOKENS", "8192"), ("SEEDS", "0 1"), ("ARMS", "uniform")]);
    assert!(stdout.contains("paired difference proposal − baseline over 2 seeds"), "{stdout}");
    let comparison: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("comparison.json")).unwrap()).unwrap();
    let paired = &comparison["paired"]["uniform"];
    assert_eq!(paired["differences"].as_object().unwrap().len(), 2);
    let [lo, hi] = [0, 1].map(|k| paired["interval"][k].as_f64().unwrap());
    let mean = paired["mean"].as_f64().unwrap();
    assert!(lo <= mean && mean <= hi, "{paired}");
    // Equal tokens between the paired arms.
    let tokens = |arm: &str| {
        let summary: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.join(format!("train-{arm}-seed0/summary.json"))).unwrap())
                .unwrap();
        summary["tokens"].as_u64().unwrap()
    };
    assert_eq!(tokens("proposal"), tokens("uniform"));

    let stability = scratch("mix-stability");
    let stdout = tiny_script("mix-stability", &stability, &[("SWARM_SEEDS", "0 1")]);
    assert!(stdout.contains("designed runs, argmin") && stdout.contains("all runs, bagged"), "{stdout}");
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_dir_all(&stability);
}

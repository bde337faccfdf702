//! `mixforge run` end to end on users' JSONL files (from ../shared/data) with the quick preset:
//! stage records, skipping, invalidation, a failing middle stage, a killed run, the report's
//! data files against the artifacts, its Markdown against a snapshot, and the page in Chromium.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use crate::common::{manifest_dir, mixforge, s, scratch};

fn shared(rel: &str) -> String {
    let path = manifest_dir().join("../shared/data/corpus").join(rel);
    assert!(path.parent().unwrap().exists(), "{} is missing: this test reads ../shared/data", path.display());
    path.display().to_string()
}

/// A recipe over two of a user's JSONL sources, on the quick preset's sizes; `extra` is
/// appended (recipe sections).
fn recipe(dir: &Path, extra: &str) -> PathBuf {
    let path = dir.join("recipe.toml");
    let text = format!(
        "[[sources]]\ndomain = \"web\"\npaths = [\"{}\"]\n\n[[sources]]\ndomain = \"code\"\npaths = [\"{}\"]\n\n{extra}",
        shared("web/*.jsonl"),
        shared("code/rust-crates.jsonl")
    );
    std::fs::write(&path, text).unwrap();
    path
}

fn run(recipe: &Path, out: &Path, more: &[&str]) -> Output {
    let mut args = vec!["run", s(recipe), "--preset", "quick", "--out", s(out)];
    args.extend(more);
    mixforge(&args)
}

fn ok(out: &Output) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "mixforge run failed:\n{stderr}\n{}", String::from_utf8_lossy(&out.stdout));
    stderr
}

/// Stages the log says were skipped, and those it ran.
fn skipped_and_ran(stderr: &str) -> (Vec<String>, Vec<String>) {
    let (mut skipped, mut ran) = (Vec::new(), Vec::new());
    for line in stderr.lines().filter(|l| l.starts_with("stage ")) {
        let name = line.split_whitespace().nth(2).unwrap().trim_end_matches(':').to_string();
        if line.ends_with("unchanged, skipped") {
            skipped.push(name);
        } else if line.contains(": done in") {
            ran.push(name);
        }
    }
    (skipped, ran)
}

/// The base run every test compares with (one per test process).
fn base() -> &'static Path {
    static BASE: OnceLock<PathBuf> = OnceLock::new();
    BASE.get_or_init(|| {
        let dir = scratch("run-base");
        let out = dir.join("run");
        ok(&run(&recipe(&dir, ""), &out, &[]));
        out
    })
}

fn json(path: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))).unwrap()
}

/// Rows of a CSV data file as header → value maps (the files never quote numbers).
fn csv(path: &Path) -> Vec<BTreeMap<String, String>> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut lines = text.lines();
    let header: Vec<String> = lines.next().unwrap().split(',').map(String::from).collect();
    lines.map(|l| header.iter().cloned().zip(l.split(',').map(String::from)).collect()).collect()
}

fn f(v: &str) -> f64 {
    v.parse().unwrap_or_else(|_| panic!("not a number: {v:?}"))
}

#[test]
fn flags_alone_run_every_stage_and_a_rerun_skips_them_all() {
    let dir = scratch("run-flags");
    let out = dir.join("run");
    let web = format!("web={}", shared("web/*.jsonl"));
    let code = format!("code={}", shared("code/rust-crates.jsonl"));
    let args = ["run", "--preset", "quick", "--source", &web, "--source", &code, "--out", s(&out)];
    let first = mixforge(&args);
    let stderr = ok(&first);
    let (_, ran) = skipped_and_ran(&stderr);
    assert_eq!(ran, ["corpus", "shards", "swarm", "propose", "train", "eval", "report"], "{stderr}");
    for file in ["report/index.html", "report/report.md", "stages/run.json"] {
        assert!(out.join(file).is_file(), "{file} missing");
    }
    for stage in &ran {
        let record = json(&out.join(format!("stages/{stage}.json")));
        assert_eq!(record["status"], "done", "{stage}: {record}");
        assert!(!record["outputs"].as_object().unwrap().is_empty(), "{stage} lists what it wrote");
    }
    let stdout = String::from_utf8_lossy(&first.stdout);
    assert!(
        stdout.contains("| metric |") && stdout.contains("report/index.html"),
        "summary and report path:\n{stdout}"
    );

    let again = mixforge(&args);
    let stderr = ok(&again);
    let (skipped, ran) = skipped_and_ran(&stderr);
    assert!(ran.is_empty(), "nothing reruns: {stderr}");
    assert_eq!(skipped.len(), 7, "{stderr}");
    // A directory that is not a run is never taken over.
    let foreign = dir.join("foreign");
    std::fs::create_dir_all(foreign.join("stages")).unwrap();
    std::fs::write(foreign.join("notes.txt"), "mine").unwrap();
    let refused = mixforge(&["run", "--preset", "quick", "--source", &web, "--out", s(&foreign)]);
    assert!(
        !refused.status.success() && String::from_utf8_lossy(&refused.stderr).contains("not a mixforge run directory")
    );
    assert_eq!(std::fs::read_to_string(foreign.join("notes.txt")).unwrap(), "mine");
}

#[test]
fn changing_one_value_reruns_exactly_that_stage_and_what_reads_it() {
    let dir = scratch("run-invalidate");
    let out = dir.join("run");
    copy_dir(base(), &out);
    // Training settings: the corpus, shards, swarm and proposal stay.
    let stderr = ok(&run(&recipe(&dir, "[train]\nlr = 0.02\n"), &out, &[]));
    let (skipped, ran) = skipped_and_ran(&stderr);
    assert_eq!(skipped, ["corpus", "shards", "swarm", "propose"], "{stderr}");
    assert_eq!(ran, ["train", "eval", "report"], "{stderr}");
    // The proposal's settings: the proposal and everything after it.
    let stderr = ok(&run(&recipe(&dir, "[train]\nlr = 0.02\n[propose]\nrisk = 0.5\n"), &out, &[]));
    let (skipped, ran) = skipped_and_ran(&stderr);
    assert_eq!(skipped, ["corpus", "shards", "swarm"], "{stderr}");
    assert_eq!(ran, ["propose", "train", "eval", "report"], "{stderr}");
    // --from forces a stage and the rest.
    let stderr = ok(&run(&recipe(&dir, "[train]\nlr = 0.02\n[propose]\nrisk = 0.5\n"), &out, &["--from", "eval"]));
    let (_, ran) = skipped_and_ran(&stderr);
    assert_eq!(ran, ["eval", "report"], "{stderr}");
    // --from names a stage of this run.
    let refused = run(&recipe(&dir, "[train]\nlr = 0.02\n[propose]\nrisk = 0.5\n"), &out, &["--from", "index"]);
    assert!(String::from_utf8_lossy(&refused.stderr).contains("--from index: not a stage of this run"));
    // A file added beside a stage's outputs is not one of them; an output changed by hand is
    // not trusted.
    std::fs::write(out.join("propose/my-notes.txt"), "mine").unwrap();
    let stderr = ok(&run(&recipe(&dir, "[train]\nlr = 0.02\n[propose]\nrisk = 0.5\n"), &out, &[]));
    assert_eq!(skipped_and_ran(&stderr).1, Vec::<String>::new(), "{stderr}");
    std::fs::write(out.join("propose/proposal.utility.csv"), "edited\n").unwrap();
    let stderr = ok(&run(&recipe(&dir, "[train]\nlr = 0.02\n[propose]\nrisk = 0.5\n"), &out, &[]));
    assert!(stderr.contains("stage 4/7 propose: its outputs changed since it finished"), "{stderr}");
}

#[test]
fn a_failing_middle_stage_names_itself_and_leaves_earlier_outputs_intact() {
    let dir = scratch("run-fail");
    let out = dir.join("run");
    copy_dir(base(), &out);
    let before: Vec<serde_json::Value> =
        ["corpus", "shards", "swarm"].iter().map(|s| json(&out.join(format!("stages/{s}.json")))).collect();
    let failed = run(&recipe(&dir, "[propose]\nobjective = [\"no_such_metric\"]\n"), &out, &[]);
    assert!(!failed.status.success());
    let stderr = String::from_utf8_lossy(&failed.stderr);
    assert!(stderr.contains("stage `propose` (4/7) failed") && stderr.contains("no_such_metric"), "{stderr}");
    let record = json(&out.join("stages/propose.json"));
    assert_eq!(record["status"], "failed");
    assert!(record["error"].as_str().unwrap().contains("no_such_metric"), "{record}");
    for (stage, old) in ["corpus", "shards", "swarm"].iter().zip(&before) {
        let now = json(&out.join(format!("stages/{stage}.json")));
        assert_eq!(&now, old, "{stage}'s record is untouched");
        for (file, hash) in now["outputs"].as_object().unwrap() {
            let bytes = std::fs::read(out.join(file)).unwrap_or_else(|e| panic!("{file}: {e}"));
            assert_eq!(
                format!("{:032x}", xxhash_rust::xxh3::xxh3_128(&bytes)),
                hash.as_str().unwrap(),
                "{file} intact"
            );
        }
    }
    // Fixed, the run continues from the failed stage; the proposal it writes is the bytes the
    // one before the failure wrote, so training and evaluation stand and only the report,
    // which shows the new record, is redone.
    let stderr = ok(&run(&recipe(&dir, ""), &out, &[]));
    let (skipped, ran) = skipped_and_ran(&stderr);
    assert_eq!(skipped, ["corpus", "shards", "swarm", "train", "eval"], "{stderr}");
    assert_eq!(ran, ["propose", "report"], "{stderr}");
}

#[test]
fn a_killed_run_resumes_and_ends_where_an_uninterrupted_one_does() {
    let dir = scratch("run-kill");
    let out = dir.join("run");
    let recipe = recipe(&dir, "");
    let mut child = Command::new(env!("CARGO_BIN_EXE_mixforge"))
        // One proxy at a time, so the swarm is surely killed halfway (the runs table is the
        // same bytes whatever the number of proxies at once).
        .args(["run", s(&recipe), "--preset", "quick", "--threads", "1", "--out", s(&out)])
        .current_dir(manifest_dir())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Killed in the swarm, once some proxies are in.
    let runs = out.join("swarm/runs.csv");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(300);
    while std::fs::read_to_string(&runs).map_or(0, |t| t.lines().count()) < 3 {
        assert!(std::time::Instant::now() < deadline, "the swarm never wrote two runs");
        assert!(child.try_wait().unwrap().is_none(), "the run ended before it was killed");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    assert_eq!(json(&out.join("stages/swarm.json"))["status"], "running");
    let stderr = ok(&run(&recipe, &out, &[]));
    assert!(stderr.contains("stage 3/7 swarm: continuing an interrupted attempt"), "{stderr}");
    assert!(json(&out.join("stages/swarm.json"))["resumed"].as_bool().unwrap());
    for file in ["swarm/runs.csv", "propose/proposal.toml", "eval/eval.json"] {
        assert_eq!(std::fs::read(out.join(file)).unwrap(), std::fs::read(base().join(file)).unwrap(), "{file}");
    }
}

#[test]
fn every_plotted_number_equals_its_artifact() {
    let run = base();
    let data = run.join("report/data");
    // Training curves against metrics.jsonl.
    let steps: Vec<serde_json::Value> = std::fs::read_to_string(run.join("train/metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .filter(|v: &serde_json::Value| v.get("loss").is_some())
        .collect();
    let rows = csv(&data.join("train-steps.csv"));
    assert_eq!(rows.len(), steps.len());
    for (row, step) in rows.iter().zip(&steps) {
        for key in ["loss", "lr", "grad_norm", "tokens_per_s"] {
            assert_eq!(f(&row[key]), step[key].as_f64().unwrap(), "{key} at step {}", row["step"]);
        }
    }
    // Swarm weights and metrics against runs.csv (which names weights `w:<domain>`).
    let runs = csv(&run.join("swarm/runs.csv"));
    let plotted = csv(&data.join("swarm-weights.csv"));
    assert_eq!(runs.len(), plotted.len());
    for (r, p) in runs.iter().zip(&plotted) {
        assert_eq!(r["index"], p["run"]);
        for (key, value) in r.iter().filter(|(k, _)| k.starts_with("w:") || k.starts_with("m:")) {
            assert_eq!(f(value), f(&p[&key[2..]]), "{key} of {}", r["index"]);
        }
    }
    // The proposal's weights, epochs and utility against proposal.toml.
    let proposal: toml::Table =
        toml::from_str(&std::fs::read_to_string(run.join("propose/proposal.toml")).unwrap()).unwrap();
    for row in csv(&data.join("proposal-weights.csv")) {
        let d = &row["domain"];
        for (column, table) in [("proposal", "weights"), ("epochs", "epochs"), ("utility", "utility")] {
            assert_eq!(f(&row[column]), proposal[table][d].as_float().unwrap(), "{column} of {d}");
        }
    }
    // Corpus counts against the manifest's accounting.
    let manifest = json(&run.join("corpus/manifest.json"));
    for row in csv(&data.join("corpus-domains.csv")) {
        let counts = &manifest["domains"][&row["domain"]];
        for key in ["docs_in", "docs_kept", "bytes_in", "bytes_kept"] {
            assert_eq!(row[key].parse::<u64>().unwrap(), counts[key].as_u64().unwrap(), "{key} of {}", row["domain"]);
        }
    }
    // Out-of-fold predictions against the proposal's cross-validation file.
    let cv = json(&run.join("propose/proposal.cv.json"));
    let rows = csv(&data.join("surrogate-cv.csv"));
    let mut k = 0;
    for m in cv["metrics"].as_array().unwrap() {
        for (o, p) in m["observed"].as_array().unwrap().iter().zip(m["predicted"].as_array().unwrap()) {
            assert_eq!(
                (f(&rows[k]["observed"]), f(&rows[k]["predicted_out_of_fold"])),
                (o.as_f64().unwrap(), p.as_f64().unwrap())
            );
            k += 1;
        }
    }
    assert_eq!(k, rows.len());
    // The evaluation table against eval.json; no standard error is invented.
    let eval = json(&run.join("eval/eval.json"));
    let rows = csv(&data.join("eval.csv"));
    for (row, e) in rows.iter().zip(eval["rows"].as_array().unwrap()) {
        assert_eq!(f(&row["value"]), e["value"].as_f64().unwrap());
        assert_eq!(row["stderr"].is_empty(), e["stderr"].is_null(), "{row:?}");
    }
    // Every figure has its data file, and the page links it.
    let html = std::fs::read_to_string(run.join("report/index.html")).unwrap();
    for entry in std::fs::read_dir(run.join("report/figures")).unwrap() {
        let id = entry.unwrap().path().file_stem().unwrap().to_string_lossy().into_owned();
        assert!(html.contains(&format!("<figure id=\"{id}\">")), "figure {id} on the page");
    }
    for entry in std::fs::read_dir(&data).unwrap() {
        let name = entry.unwrap().file_name().to_string_lossy().into_owned();
        assert!(html.contains(&format!("href=\"data/{name}\"")), "data/{name} linked from the page");
    }
}

/// Numbers that vary with the machine (floating point, timings, hashes) masked; structure,
/// names and integer counts kept.
fn mask(markdown: &str) -> String {
    let hash = regex::Regex::new(r"\b[0-9a-f]{16,}\b").unwrap();
    let float = regex::Regex::new(r"[-+]?\d+\.\d+(e[-+]?\d+)?|\d+e[-+]?\d+").unwrap();
    // Which surrogate cross-validation picks turns on the last digits of the proxies' losses.
    let surrogate = regex::Regex::new(r"\| (ensemble|gbdt|mixing_law|linear) \|").unwrap();
    // So does each gain's verdict and the seeds a paired check would need.
    let verdict = regex::Regex::new(r"\| (better|worse|not distinguishable) \| (\d+|–) \|$").unwrap();
    let masked = float.replace_all(&hash.replace_all(markdown, "<hash>"), "<x>").into_owned();
    let masked = surrogate.replace_all(&masked, "| <surrogate> |").into_owned();
    masked.lines().map(|l| verdict.replace(l, "| <verdict> | <seeds> |").into_owned()).collect::<Vec<_>>().join("\n")
}

#[test]
fn markdown_report_matches_its_snapshot() {
    let md = std::fs::read_to_string(base().join("report/report.md")).unwrap();
    let masked = mask(&md);
    // Machine-dependent lines (hardware, paths of this checkout) leave the snapshot.
    let kept: Vec<&str> = masked
        .lines()
        .filter(|l| {
            !["| cpu |", "| memory |", "| cores |", "| os |", "| libtorch |", "| commit |", "| threads |"]
                .iter()
                .any(|p| l.starts_with(p))
        })
        .filter(|l| !l.contains("/shared/data/") && !l.contains("mixforge-cli-"))
        // Which baseline comes closest, and whether within the spread, turns on the last
        // digits of the proxies' losses too.
        .filter(|l| !l.starts_with("Predicted objective (mean, proxy scale):"))
        .collect();
    let got = kept.join("\n") + "\n";
    let snapshot = manifest_dir().join("tests/snapshots/run-quick-report.md");
    if std::env::var_os("MIXFORGE_UPDATE_SNAPSHOTS").is_some() {
        std::fs::create_dir_all(snapshot.parent().unwrap()).unwrap();
        std::fs::write(&snapshot, &got).unwrap();
    }
    let want = std::fs::read_to_string(&snapshot)
        .expect("tests/snapshots/run-quick-report.md (MIXFORGE_UPDATE_SNAPSHOTS=1 writes it)");
    if got != want {
        let line = got.lines().zip(want.lines()).position(|(a, b)| a != b).unwrap_or(want.lines().count());
        panic!(
            "report.md differs from its snapshot at line {}:\n got: {:?}\nwant: {:?}\n(MIXFORGE_UPDATE_SNAPSHOTS=1 rewrites it)",
            line + 1,
            got.lines().nth(line),
            want.lines().nth(line)
        );
    }
}

fn python() -> String {
    let venv = std::env::var("MIXFORGE_VENV")
        .unwrap_or_else(|_| format!("{}/.cache/mixforge-venv", std::env::var("HOME").unwrap_or("/tmp".into())));
    format!("{venv}/bin/python")
}

#[test]
fn the_page_renders_in_chromium_without_errors_or_requests() {
    browser_check(base(), "report-quick.png");
}

/// Opens RUN's report in Chromium: no console error, no request, every figure drawn, the
/// embedded font loaded; keeps a screenshot under the target dir.
fn browser_check(run: &Path, screenshot: &str) {
    // scripts/test installs Chromium, chromedriver and selenium (scripts/setup-browser).
    let page = run.join("report/index.html");
    let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| manifest_dir().join("target"), PathBuf::from);
    let shot = target.join("test-artifacts").join(screenshot);
    std::fs::create_dir_all(shot.parent().unwrap()).unwrap();
    let out = Command::new(python())
        .args([s(&manifest_dir().join("tests/python/report_check.py")), s(&page), s(&shot)])
        .output()
        .expect("run tests/python/report_check.py (scripts/setup-browser installs what it needs)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "browser check failed:\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let result: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    let figures = std::fs::read_dir(run.join("report/figures")).unwrap().count() as u64;
    assert_eq!(result["figures"].as_u64().unwrap(), figures, "every figure rendered: {result}");
    assert!(
        result["fonts"].as_array().unwrap().iter().any(|f| f == "mixforge-sans"),
        "the embedded font loads: {result}"
    );
    assert!(shot.metadata().unwrap().len() > 10_000, "a screenshot was kept");
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

#[test]
fn specialists_and_their_merge_plug_in_as_stages_and_a_report_section() {
    let dir = scratch("run-merge");
    let out = dir.join("run");
    copy_dir(base(), &out);
    let extra = "[specialists]\nsteps = 4\nseq_len = 64\nbatch_size = 8\nlr = 0.001\n[merge]\nprobe_sequences = 2\n";
    let stderr = ok(&run(&recipe(&dir, extra), &out, &[]));
    let (skipped, ran) = skipped_and_ran(&stderr);
    assert_eq!(skipped, ["corpus", "shards", "swarm", "propose", "train"], "{stderr}");
    assert_eq!(ran, ["specialists", "merge", "eval", "report"], "{stderr}");
    let eval = json(&out.join("eval/eval.json"));
    assert_eq!(eval["checkpoint"], "merge", "the merge is the run's final model");
    let models: Vec<&String> = eval["models"].as_object().unwrap().keys().collect();
    assert_eq!(models, ["base", "merge", "specialist code", "specialist web"]);
    let search = json(&out.join("merge/search.json"));
    let w: f64 = search["chosen"]["weights"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).sum();
    assert!((w - 1.0).abs() < 1e-9, "{search}");
    // The heatmap's data equals the evaluation's losses.
    for row in csv(&out.join("report/data/merge-deltas.csv")) {
        let model = if row["model"] == "base" { "base".to_string() } else { row["model"].clone() };
        assert_eq!(f(&row["val_loss"]), eval["models"][&model][&row["domain"]].as_f64().unwrap(), "{row:?}");
    }
    let html = std::fs::read_to_string(out.join("report/index.html")).unwrap();
    assert!(html.contains("<figure id=\"merge-deltas\">") && html.contains("<figure id=\"merge-weights\">"));
}

#[test]
fn a_long_context_phase_plugs_in_before_evaluation_with_its_report_section() {
    let dir = scratch("run-long-context");
    let out = dir.join("run");
    copy_dir(base(), &out);
    let extra = "[long_context]\nseq_len = 256\nsteps = 3\nbatch_size = 4\nteacher_steps = 4\nniah_lengths = [160, 256]\nniah_per_cell = 1\n";
    let stderr = ok(&run(&recipe(&dir, extra), &out, &[]));
    let (skipped, ran) = skipped_and_ran(&stderr);
    assert_eq!(skipped, ["corpus", "shards", "swarm", "propose", "train"], "{stderr}");
    assert_eq!(ran, ["long_context", "eval", "report"], "{stderr}");
    let eval = json(&out.join("eval/eval.json"));
    assert_eq!(eval["checkpoint"], "long_context/model", "the phase's model is the run's final model");
    // It is scored on the training run's windows (64 tokens in the quick preset), not its own 256.
    let direct = mixforge(&[
        "eval",
        "--checkpoint",
        s(&out.join("long_context/model")),
        "--shards",
        s(&out.join("shards")),
        "--seq-len",
        "64",
        "--eval-sequences",
        "4",
        "--json",
    ]);
    let direct: serde_json::Value = serde_json::from_slice(&direct.stdout).unwrap();
    let row =
        eval["rows"].as_array().unwrap().iter().find(|r| r["task"] == "val/web" && r["metric"] == "loss").unwrap();
    assert_eq!(row["value"].as_f64(), direct["val_loss"]["web"].as_f64(), "{row}");
    let scores = json(&out.join("long_context/scores.json"));
    let models: Vec<&String> = scores["models"].as_object().unwrap().keys().collect();
    assert_eq!(models, ["after", "before", "teacher"]);
    let state = json(&out.join("long_context/model/checkpoints/step-00000003/state.json"));
    assert_eq!(state["config"]["phase"], "long-context");
    assert_eq!(state["config"]["loader"]["seq_len"], 256);
    assert!(state["config"]["teacher"].as_str().unwrap().ends_with("long_context/teacher"));
    // The heatmap's data is the scores file's grid.
    let grid = scores["models"]["after"]["grid"].as_array().unwrap();
    let rows = csv(&out.join("report/data/niah-after.csv"));
    assert_eq!(rows.len(), grid.len());
    for (row, cell) in rows.iter().zip(grid) {
        assert_eq!(f(&row["rank_acc"]), cell["rank_acc"].as_f64().unwrap(), "{row:?}");
    }
    let html = std::fs::read_to_string(out.join("report/index.html")).unwrap();
    assert!(html.contains("<figure id=\"niah-before\">") && html.contains("<figure id=\"loss-by-position\">"));
    browser_check(&out, "report-long-context.png");
    // A rerun skips the phase.
    let stderr = ok(&run(&recipe(&dir, extra), &out, &[]));
    assert!(skipped_and_ran(&stderr).1.is_empty(), "{stderr}");
}

#[test]
fn quantization_aware_training_and_exports_plug_in_after_evaluation_with_their_report_section() {
    let dir = scratch("run-qat");
    let out = dir.join("run");
    copy_dir(base(), &out);
    let extra = "[qat]\nscheme = \"accel\"\nsteps = 3\nbatch_size = 4\nlr = 0.001\n";
    let stderr = ok(&run(&recipe(&dir, extra), &out, &[]));
    let (skipped, ran) = skipped_and_ran(&stderr);
    assert_eq!(skipped, ["corpus", "shards", "swarm", "propose", "train", "eval"], "{stderr}");
    assert_eq!(ran, ["qat", "export", "report"], "{stderr}");
    let scores = json(&out.join("qat/scores.json"));
    let models: Vec<&String> = scores["models"].as_object().unwrap().keys().collect();
    assert_eq!(models, ["fp", "ptq", "qat"]);
    // Full precision here is the trained model as evaluation scored it.
    let eval = json(&out.join("eval/eval.json"));
    let row =
        eval["rows"].as_array().unwrap().iter().find(|r| r["task"] == "val/web" && r["metric"] == "loss").unwrap();
    assert_eq!(row["value"], scores["models"]["fp"]["val_loss"]["web"]);
    let state = json(&out.join("qat/model/checkpoints/step-00000003/state.json"));
    assert_eq!(state["config"]["phase"], "qat");
    assert_eq!(state["config"]["model"]["quant"]["scheme"], "accel");
    assert!(state["config"]["teacher"].as_str().unwrap().ends_with("qat/ptq"), "self-distillation from the start");
    // The real int4 model (bf16 activations) scores what the fake-quantized one does.
    let exports = json(&out.join("export/exports.json"));
    for (domain, loss) in scores["models"]["qat"]["val_loss"].as_object().unwrap() {
        let real = exports["int4_scores"]["val_loss"][domain].as_f64().unwrap();
        assert!((real - loss.as_f64().unwrap()).abs() < 0.01, "{domain}: {real} vs {loss}");
    }
    let formats: Vec<&str> =
        exports["files"].as_array().unwrap().iter().map(|f| f["format"].as_str().unwrap()).collect();
    assert_eq!(formats.len(), 4, "{formats:?}");
    assert!(out.join("export/model.gguf").exists() && out.join("export/int4/int4.json").exists());
    let rows = csv(&out.join("report/data/quantization.csv"));
    assert_eq!(rows.iter().map(|r| r["model"].as_str()).collect::<Vec<_>>(), ["fp", "ptq", "qat"]);
    assert_eq!(f(&rows[2]["web"]), scores["models"]["qat"]["val_loss"]["web"].as_f64().unwrap());
    let html = std::fs::read_to_string(out.join("report/index.html")).unwrap();
    assert!(html.contains("<figure id=\"quantization-loss\">") && html.contains("Quantization (int4)"));
    browser_check(&out, "report-qat.png");
    let stderr = ok(&run(&recipe(&dir, extra), &out, &[]));
    assert!(skipped_and_ran(&stderr).1.is_empty(), "{stderr}");
}

#[test]
fn instruction_tuning_plugs_in_after_the_phases_with_leave_one_out_weights_and_its_report_section() {
    let dir = scratch("run-sft");
    let out = dir.join("run");
    copy_dir(base(), &out);
    let demo = |p: &str| manifest_dir().join("data/demo/instruct").join(p).display().to_string();
    let extra = format!(
        "[sft]\nsteps = 4\nloo_steps = 2\nseq_len = 128\nbatch_size = 4\neval_examples = 8\n\n[[sft.data]]\ndomain = \
         \"short\"\npaths = [\"{}\"]\n\n[[sft.data]]\ndomain = \"dolly\"\npaths = [\"{}\"]\n",
        demo("ni-short"),
        demo("dolly")
    );
    let stderr = ok(&run(&recipe(&dir, &extra), &out, &[]));
    let (skipped, ran) = skipped_and_ran(&stderr);
    assert_eq!(skipped, ["corpus", "shards", "swarm", "propose", "train", "eval"], "{stderr}");
    assert_eq!(ran, ["loo", "sft", "report"], "{stderr}");
    // The fine-tune trained on the weights the leave-one-out stage wrote, from the final model.
    let scores = json(&out.join("sft/scores.json"));
    let loo = json(&out.join("loo/loo.json"));
    assert_eq!(scores["weights"], loo["weights"]);
    assert_eq!(scores["loo"]["domains"], serde_json::json!(["short", "dolly"]), "in the recipe's order");
    let state = json(&out.join("sft/model/checkpoints/step-00000004/state.json"));
    assert_eq!(state["config"]["phase"], "sft");
    assert!(state["config"]["init"]["parents"][0]["path"].as_str().unwrap().contains("/run/train/checkpoints/"));
    for d in ["dolly", "short"] {
        let (before, after) =
            (scores["before"]["val_loss"][d].as_f64().unwrap(), scores["after"]["val_loss"][d].as_f64().unwrap());
        assert!(before.is_finite() && after.is_finite() && before != after, "{d}: {before} → {after}");
    }
    let rows = csv(&out.join("report/data/instruct.csv"));
    assert_eq!(rows.iter().map(|r| r["domain"].as_str()).collect::<Vec<_>>(), ["dolly", "short"]);
    assert_eq!(f(&rows[1]["val_loss_after"]), scores["after"]["val_loss"]["short"].as_f64().unwrap());
    let html = std::fs::read_to_string(out.join("report/index.html")).unwrap();
    assert!(html.contains("<figure id=\"instruct-loo\">") && html.contains("Instruction tuning"));
    browser_check(&out, "report-sft.png");
    let stderr = ok(&run(&recipe(&dir, &extra), &out, &[]));
    assert!(skipped_and_ran(&stderr).1.is_empty(), "{stderr}");
}

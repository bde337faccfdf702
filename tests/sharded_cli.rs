//! Sharded corpus runs (`corpus run --shard I/N` then `corpus reduce`, or `corpus reduce
//! --finish-by-shard`, N `corpus finish --shard I/N` tasks and their merge) equal the
//! single-process run: kept documents, profile, summary, rejects, examples and shards byte for
//! byte, the manifest but for timings, for N ∈ {1, 2, 4, 7}, on the demo corpus and on the
//! whole shared corpus; token shards written by tasks (`corpus shard --shard I/N`) equal one process's;
//! duplicates across parts are found; bad parts are refused with what to do. Runs
//! without a near-duplicate pass, which write kept documents in pass 1, equal the reduce's.

use std::path::{Path, PathBuf};
use std::process::Output;

use crate::common::{manifest_dir, mixforge, s, scratch};

/// The files every corpus run writes, compared byte for byte.
const SAME_BYTES: [&str; 5] = ["profile.parquet", "summary.parquet", "summary.json", "rejects.jsonl", "examples.jsonl"];

pub fn ok(out: Output, what: &str) -> String {
    assert!(out.status.success(), "{what} failed:\n{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `corpus run ARGS --shard i/n` for every i, then `corpus reduce`.
fn sharded(args: &[&str], out: &Path, n: u32) {
    for i in 0..n {
        let shard = format!("{i}/{n}");
        let mut all = vec!["corpus", "run"];
        all.extend_from_slice(args);
        all.extend_from_slice(&["--out", s(out), "--shard", &shard]);
        let stdout = ok(mixforge(&all), &format!("part {shard}"));
        assert!(stdout.starts_with(&format!("part {shard}: ")), "{stdout}");
    }
    ok(mixforge(&["corpus", "reduce", "--out", s(out)]), "corpus reduce");
}

/// The kept documents of a sharded run's parts written again by N finish tasks and merged.
fn finish_by_shard(out: &Path, n: u32) {
    let stdout = ok(mixforge(&["corpus", "reduce", "--out", s(out), "--finish-by-shard"]), "reduce --finish-by-shard");
    assert!(stdout.contains("corpus finish --out"), "{stdout}");
    // The plain reduce's outputs before it are gone: nothing stale stands in for the merge's.
    assert!(!out.join("manifest.json").exists(), "no manifest before the merge");
    assert!(!out.join("examples.jsonl").exists() && kept_files(out).is_empty(), "no kept files before the merge");
    let merge_early = mixforge(&["corpus", "finish", "--out", s(out)]);
    let stderr = String::from_utf8_lossy(&merge_early.stderr);
    assert!(
        !merge_early.status.success() && stderr.contains(&format!("{n} of {n} finish tasks are missing")),
        "{stderr}"
    );
    for i in 0..n {
        let shard = format!("{i}/{n}");
        let stdout =
            ok(mixforge(&["corpus", "finish", "--out", s(out), "--shard", &shard]), &format!("finish {shard}"));
        assert!(stdout.starts_with(&format!("finish {shard}: ")) && !stdout.contains("already done"), "{stdout}");
    }
    // A task run again for the same reduce reuses its share.
    let stdout = ok(mixforge(&["corpus", "finish", "--out", s(out), "--shard", &format!("0/{n}")]), "finish again");
    assert!(stdout.contains("already done"), "{stdout}");
    // A task whose file went missing is incomplete: the merge names it, and a rerun rewrites it.
    let task = (0..n).find_map(|i| {
        let dir = out.join(format!("kept-parts/{i:05}-of-{n:05}"));
        let file = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| p.extension().is_some_and(|e| e == "parquet"))?;
        Some((i, file))
    });
    let (i, file) = task.expect("some task wrote a file");
    std::fs::remove_file(&file).unwrap();
    let merge = mixforge(&["corpus", "finish", "--out", s(out)]);
    let stderr = String::from_utf8_lossy(&merge.stderr);
    assert!(!merge.status.success() && stderr.contains(&format!("(shards {i})")), "{stderr}");
    let stdout = ok(mixforge(&["corpus", "finish", "--out", s(out), "--shard", &format!("{i}/{n}")]), "finish rerun");
    assert!(!stdout.contains("already done") && file.is_file(), "{stdout}");
    ok(mixforge(&["corpus", "finish", "--out", s(out)]), "corpus finish (merge)");
    assert!(!out.join("kept-parts").exists(), "the merge removes the tasks' shares");
    let again = mixforge(&["corpus", "finish", "--out", s(out)]);
    assert!(String::from_utf8_lossy(&again.stderr).contains("already merged"), "a second merge says it is done");
}

fn manifest_without_timings(dir: &Path) -> serde_json::Value {
    let mut m: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.join("manifest.json")).unwrap()).unwrap();
    let object = m.as_object_mut().unwrap();
    object.remove("timings");
    // Later stages a recipe's single run also does (shards, index) are not the corpus run's.
    let outputs = object.get_mut("outputs").unwrap().as_object_mut().unwrap();
    outputs.retain(|k, _| k != "shard" && k != "index");
    m
}

fn kept_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir.join("kept")).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    files
}

pub fn assert_same_run(single: &Path, sharded: &Path, label: &str) {
    for file in SAME_BYTES {
        assert!(
            std::fs::read(single.join(file)).unwrap() == std::fs::read(sharded.join(file)).unwrap(),
            "{label}: {file} differs"
        );
    }
    let (a, b) = (kept_files(single), kept_files(sharded));
    assert_eq!(
        a.iter().map(|p| p.file_name()).collect::<Vec<_>>(),
        b.iter().map(|p| p.file_name()).collect::<Vec<_>>()
    );
    assert!(!a.is_empty(), "{label}: no kept files");
    for (x, y) in a.iter().zip(&b) {
        assert!(std::fs::read(x).unwrap() == std::fs::read(y).unwrap(), "{label}: {} differs", x.display());
    }
    assert_eq!(manifest_without_timings(single), manifest_without_timings(sharded), "{label}: manifest");
}

#[test]
fn sharded_runs_equal_the_single_process_run_on_the_demo_corpus() {
    let root = scratch("sharded-demo");
    let single = root.join("single");
    ok(mixforge(&["corpus", "run", "recipes/demo.toml", "--out", s(&single)]), "single run");
    for n in [1, 2, 4, 7] {
        let dir = root.join(format!("n{n}"));
        sharded(&["recipes/demo.toml"], &dir, n);
        assert_same_run(&single, &dir, &format!("demo, N = {n}"));
        finish_by_shard(&dir, n);
        assert_same_run(&single, &dir, &format!("demo, N = {n}, finished by shard"));
    }
    // Shards follow from identical kept files: tokenized the same way, the same bytes, also
    // when three tasks tokenize every third chunk and a last run writes the manifest.
    let shard_args = |dir: &Path| -> Vec<String> {
        let out = format!("{}/tok", dir.display());
        ["corpus", "shard", "--in", s(dir), "--out", &out, "--vocab-size", "1024", "--chunk-docs", "300"]
            .map(String::from)
            .to_vec()
    };
    let run = |dir: &Path, extra: &[&str], what: &str| {
        let mut args = shard_args(dir);
        args.extend(extra.iter().map(|a| a.to_string()));
        ok(mixforge(&args.iter().map(String::as_str).collect::<Vec<_>>()), what)
    };
    run(&single, &[], "corpus shard");
    let sharded = root.join("n7");
    run(&sharded, &["--tokenizer-only"], "corpus shard --tokenizer-only");
    let (mut taken, mut chunks) = (0, 0);
    for task in ["0/3", "1/3", "2/3"] {
        let stdout = run(&sharded, &["--shard", task], task);
        // "shard task I/N: T of C chunks (0 already done), …"
        let words: Vec<&str> = stdout.split_whitespace().collect();
        assert_eq!(&words[..3], &["shard", "task", &format!("{task}:")], "{stdout}");
        taken += words[3].parse::<u32>().unwrap();
        chunks = words[5].parse::<u32>().unwrap();
        assert!(stdout.contains("(0 already done)"), "{stdout}");
    }
    assert!(chunks > 5 && taken == chunks, "every chunk in exactly one task: {taken} of {chunks}");
    assert!(!sharded.join("tok/manifest.json").exists(), "tasks write no manifest");
    let mut task_files: Vec<PathBuf> = Vec::new();
    collect(&sharded.join("tok"), &mut task_files);
    let modified = |files: &[PathBuf]| -> Vec<_> {
        files.iter().map(|f| std::fs::metadata(f).unwrap().modified().unwrap()).collect()
    };
    let before = modified(&task_files);
    let stdout = run(&sharded, &[], "corpus shard after the tasks");
    assert!(stdout.contains("total: "), "{stdout}");
    assert_eq!(before, modified(&task_files), "the last run reuses every task's chunk");
    assert_same_files(&single.join("tok"), &sharded.join("tok"), "shards by 3 tasks");
    // A task rerun rewrites only its chunk whose file went missing, and drops the manifest
    // that no longer describes the folder.
    std::fs::remove_file(sharded.join("tok/books/train-00000.bin")).unwrap();
    let stdout = run(&sharded, &["--shard", "0/3"], "task 0/3 again");
    let words: Vec<&str> = stdout.split_whitespace().collect();
    let taken: u32 = words[3].parse().unwrap();
    assert!(stdout.contains(&format!("({} already done)", taken - 1)), "{stdout}");
    assert!(!sharded.join("tok/manifest.json").exists(), "a task removes the stale manifest");
    run(&sharded, &[], "corpus shard after the rerun");
    assert_same_files(&single.join("tok"), &sharded.join("tok"), "shards after a task's rerun");
    std::fs::remove_dir_all(&root).unwrap();
}

/// Every file under `a` and `b`, the same names and bytes.
pub fn assert_same_files(a: &Path, b: &Path, label: &str) {
    let (mut ours, mut theirs) = (Vec::new(), Vec::new());
    collect(a, &mut ours);
    collect(b, &mut theirs);
    assert!(ours.len() > 10, "{label}: files {ours:?}");
    let names = |files: &[PathBuf], root: &Path| -> Vec<PathBuf> {
        let mut names: Vec<PathBuf> = files.iter().map(|f| f.strip_prefix(root).unwrap().to_path_buf()).collect();
        names.sort();
        names
    };
    assert_eq!(names(&ours, a), names(&theirs, b), "{label}: the same files");
    for file in ours {
        let rel = file.strip_prefix(a).unwrap();
        assert!(std::fs::read(&file).unwrap() == std::fs::read(b.join(rel)).unwrap(), "{label}: {}", rel.display());
    }
}

fn collect(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            collect(&path, out);
        } else {
            out.push(path);
        }
    }
}

/// The benchmark's data: all of ../shared/data/corpus (13 MB, seven files).
#[test]
fn sharded_runs_equal_the_single_process_run_on_the_shared_corpus() {
    let data = manifest_dir().join("../shared/data/corpus");
    let root = scratch("sharded-shared");
    let recipe = root.join("recipe.toml");
    let mut text = String::new();
    // As the demo recipe reads the same data.
    for (domain, glob, extra) in [
        ("web", "web/*.jsonl", ""),
        ("wiki", "wiki/*.txt", "separator = '^ = [^=].* = $'\n"),
        ("books", "books/*.txt", ""),
        ("math", "math/*.jsonl", "template = \"{question}\\n{answer}\"\n"),
        ("code", "code/*.jsonl", ""),
    ] {
        text.push_str(&format!(
            "[[sources]]\ndomain = \"{domain}\"\npaths = [\"{}/{glob}\"]\n{extra}\n",
            data.display()
        ));
    }
    std::fs::write(&recipe, text).unwrap();
    let single = root.join("single");
    let stdout = ok(mixforge(&["corpus", "run", s(&recipe), "--out", s(&single)]), "single run");
    assert!(stdout.contains("near duplicates removed"), "{stdout}");
    assert!(stdout.contains("documents: 7972 in = ") && stdout.contains("0 malformed records rejected"), "{stdout}");
    for n in [1, 2, 4, 7] {
        let dir = root.join(format!("n{n}"));
        sharded(&[s(&recipe)], &dir, n);
        assert_same_run(&single, &dir, &format!("shared corpus, N = {n}"));
        finish_by_shard(&dir, n);
        assert_same_run(&single, &dir, &format!("shared corpus, N = {n}, finished by shard"));
    }
    std::fs::remove_dir_all(&root).unwrap();
}

/// Duplicates that sit in different parts are found by the reduce, as in one process; malformed
/// records of files in different parts keep the single run's order.
#[test]
fn duplicates_and_rejects_across_parts_equal_one_process() {
    let root = scratch("sharded-dups");
    let base = "The quick brown fox jumps over the lazy dog while the farmer counts his sheep in the \
                morning light, and the river runs cold and clear past the mill where the old miller \
                grinds the autumn wheat into flour for the village bakers who rise before dawn.";
    let near = base.replace("before dawn", "at dawn");
    let lines =
        |docs: &[&str]| docs.iter().map(|t| serde_json::json!({ "text": t }).to_string() + "\n").collect::<String>();
    // Files a, b, c: with 2 shards, a is part 0 and b and c are part 1.
    let bad = "{\"text\": 3}\nnot json\n";
    let a = lines(&[base, "A different document about ships and harbours at dusk."]) + bad;
    std::fs::write(root.join("a.jsonl"), a).unwrap();
    let b = lines(&[base, &near, "Another one entirely, on mountains and snow."]) + bad;
    std::fs::write(root.join("b.jsonl"), b).unwrap();
    let c = bad.to_string() + &lines(&["A third file, about rivers and stone bridges."]);
    std::fs::write(root.join("c.jsonl"), c).unwrap();
    let source = format!("web={}/*.jsonl", root.display());
    let single = root.join("single");
    let stdout = ok(mixforge(&["corpus", "run", "--source", &source, "--out", s(&single)]), "single run");
    assert!(stdout.contains("dedup: 1 exact + 1 near duplicates removed"), "{stdout}");
    assert!(stdout.contains("6 malformed records rejected"), "{stdout}");
    let dir = root.join("n2");
    sharded(&["--source", &source], &dir, 2);
    assert_same_run(&single, &dir, "planted duplicates, N = 2");
    finish_by_shard(&dir, 2);
    assert_same_run(&single, &dir, "planted duplicates, N = 2, finished by shard");
    std::fs::remove_dir_all(&root).unwrap();
}

fn fails(out: Output, needles: &[&str]) {
    assert!(!out.status.success(), "expected a failure");
    let stderr = String::from_utf8_lossy(&out.stderr);
    for needle in needles {
        assert!(stderr.contains(needle), "`{needle}` in:\n{stderr}");
    }
}

#[test]
fn bad_parts_are_refused_with_what_to_do() {
    let root = scratch("sharded-bad");
    let input = root.join("in.jsonl");
    std::fs::write(&input, "{\"text\": \"one document here with some words\"}\n").unwrap();
    let other = root.join("in2.jsonl");
    std::fs::write(&other, "{\"text\": \"and a second document with other words\"}\n").unwrap();
    let source = format!("web={}/*.jsonl", root.display());
    let dir = root.join("run");
    fails(
        mixforge(&["corpus", "run", "--source", &source, "--out", s(&dir), "--shard", "2/2"]),
        &["I must be", "below N"],
    );
    fails(mixforge(&["corpus", "reduce", "--out", s(&dir)]), &["no parts/config.json", "--shard I/N"]);
    ok(mixforge(&["corpus", "run", "--source", &source, "--out", s(&dir), "--shard", "0/2"]), "part 0/2");
    // Part 1 is missing.
    fails(mixforge(&["corpus", "reduce", "--out", s(&dir)]), &["1 of 2 parts are missing", "shards 1", "--shard I/2"]);
    // Other settings into the same directory.
    fails(
        mixforge(&["corpus", "run", "--source", &source, "--out", s(&dir), "--shard", "1/2", "--threshold", "0.5"]),
        &["other settings", "new --out"],
    );
    fails(
        mixforge(&["corpus", "run", "--source", &source, "--out", s(&dir), "--shard", "1/3"]),
        &["another shard count"],
    );
    ok(mixforge(&["corpus", "run", "--source", &source, "--out", s(&dir), "--shard", "1/2"]), "part 1/2");
    // An input changed after its part was made: the reduce names it and the shard to rerun.
    std::thread::sleep(std::time::Duration::from_millis(20));
    std::fs::write(&other, "{\"text\": \"and a second document, edited since\"}\n").unwrap();
    fails(mixforge(&["corpus", "reduce", "--out", s(&dir)]), &["in2.jsonl", "changed", "rerun shard 1/2"]);
    ok(mixforge(&["corpus", "run", "--source", &source, "--out", s(&dir), "--shard", "1/2"]), "part 1/2 again");
    let stdout = ok(mixforge(&["corpus", "reduce", "--out", s(&dir)]), "reduce");
    assert!(stdout.contains("documents: 2 in = 2 kept"), "{stdout}");
    // The kept documents by shard: not before the reduce plans them, and not from inputs
    // changed since.
    fails(
        mixforge(&["corpus", "finish", "--out", s(&dir), "--shard", "0/2"]),
        &["no finish plan", "corpus reduce --out", "--finish-by-shard"],
    );
    ok(mixforge(&["corpus", "reduce", "--out", s(&dir), "--finish-by-shard"]), "reduce --finish-by-shard");
    ok(mixforge(&["corpus", "finish", "--out", s(&dir), "--shard", "0/2"]), "finish 0/2");
    std::thread::sleep(std::time::Duration::from_millis(20));
    std::fs::write(&other, "{\"text\": \"and a second document, edited once more\"}\n").unwrap();
    fails(
        mixforge(&["corpus", "finish", "--out", s(&dir), "--shard", "1/2"]),
        &["in2.jsonl", "changed", "rerun part 1/2, the reduce, then this task"],
    );
    fails(mixforge(&["corpus", "finish", "--out", s(&dir)]), &["1 of 2 finish tasks are missing", "shards 1"]);
    // A damaged part.
    let part = dir.join("parts/part-00000-of-00002.bin");
    let bytes = std::fs::read(&part).unwrap();
    std::fs::write(&part, &bytes[..bytes.len() / 2]).unwrap();
    fails(mixforge(&["corpus", "reduce", "--out", s(&dir)]), &["part-00000-of-00002.bin", "rerun shard 0/2"]);
    std::fs::remove_dir_all(&root).unwrap();
}

#[test]
fn exact_only_runs_write_kept_documents_in_pass_one_with_the_same_bytes() {
    let root = scratch("first-pass-kept");
    let base = "The quick brown fox jumps over the lazy dog while the farmer counts his sheep in the \
                morning light, and the river runs cold and clear past the mill.";
    let lines =
        |docs: &[&str]| docs.iter().map(|t| serde_json::json!({ "text": t }).to_string() + "\n").collect::<String>();
    let other = "Ships and harbours at dusk, gulls over the water, ropes and tar on the quay.";
    let short = "lorem ipsum dolor";
    // Two files, so two shards: the reduce writes kept/ from a second read, the single run from
    // pass 1 when its guess (the first copy is kept) holds.
    let run = |name: &str, later_copy: &str| {
        let dir = root.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("a.jsonl"), lines(&[base, other, short])).unwrap();
        std::fs::write(
            dir.join("b.jsonl"),
            lines(&[later_copy, "Mountains and snow, and a hut below the pass.", short]),
        )
        .unwrap();
        let source = format!("web={}/*.jsonl", dir.display());
        let single = dir.join("single");
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_mixforge"))
            .args(["corpus", "run", "--source", &source, "--no-minhash", "--out", s(&single)])
            .env("MIXFORGE_LOG", "corpus=info")
            .current_dir(manifest_dir())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        ok(out, "single run");
        let sharded_dir = dir.join("n2");
        sharded(&["--source", &source, "--no-minhash"], &sharded_dir, 2);
        assert_same_run(&single, &sharded_dir, name);
        stderr
    };
    // An identical later copy: the first is kept, as pass 1 guessed.
    let stderr = run("identical", base);
    assert!(stderr.contains("kept documents written in pass 1"), "{stderr}");
    // A later copy with more spaces is longer, so it is the keeper: the guess fails.
    let stderr = run("longer", &base.replace(' ', "  "));
    assert!(stderr.contains("writing kept documents from a second read"), "{stderr}");
    std::fs::remove_dir_all(&root).unwrap();
}

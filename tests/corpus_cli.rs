//! `mixforge corpus ...` as a user runs it: the demo recipe, flags, and errors that say what
//! to do.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::common::{manifest_dir, scratch};

fn mixforge(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mixforge")).args(args).current_dir(root()).output().expect("run mixforge")
}

fn root() -> PathBuf {
    manifest_dir()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The main job on the shipped demo corpus: every domain summarized, outputs written, and the
/// manifest's accounting balanced.
#[test]
fn demo_recipe_runs_and_reports() {
    let out = scratch("demo");
    let result = mixforge(&["corpus", "run", "recipes/demo.toml", "--out", out.to_str().unwrap()]);
    assert!(result.status.success(), "{}", text(&result.stderr));
    let stdout = text(&result.stdout);
    for domain in ["web", "wiki", "books", "math", "code", "all"] {
        assert!(stdout.lines().any(|l| l.starts_with(domain)), "summary row {domain} in:\n{stdout}");
    }
    assert!(stdout.contains("documents: 7972 in = "), "{stdout}");
    assert!(stdout.contains("16 bands × 8 rows"), "{stdout}");
    for file in
        ["manifest.json", "profile.parquet", "summary.parquet", "summary.json", "rejects.jsonl", "kept/wiki.parquet"]
    {
        assert!(out.join(file).is_file(), "{file} written");
    }
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("manifest.json")).unwrap()).unwrap();
    let totals = &manifest["totals"];
    let dropped: u64 = totals["dropped"].as_object().unwrap().values().map(|v| v.as_u64().unwrap()).sum();
    assert_eq!(totals["docs_in"].as_u64().unwrap(), totals["docs_kept"].as_u64().unwrap() + dropped);
    assert_eq!(manifest["format_version"], 1);
}

/// `--source` replaces the recipe's sources and works without a recipe.
#[test]
fn source_flags_replace_the_recipe() {
    let out = scratch("flags");
    let web = "data/demo/web/*.jsonl.zst";
    let result =
        mixforge(&["corpus", "profile", "--source", &format!("web={web}"), "--out", out.to_str().unwrap(), "--json"]);
    assert!(result.status.success(), "{}", text(&result.stderr));
    let manifest: serde_json::Value = serde_json::from_slice(&result.stdout).unwrap();
    assert_eq!(manifest["totals"]["docs_in"], 20);
    assert_eq!(manifest["sources"].as_array().unwrap().len(), 1);
}

/// A recipe with a typo fails naming the key; so do bad values and missing inputs.
#[test]
fn bad_recipes_and_inputs_say_what_is_wrong() {
    let dir = scratch("bad");
    let recipe = dir.join("recipe.toml");
    let cases: [(&str, &[&str]); 4] = [
        ("[[sources]]\ndomain = \"web\"\npaths = [\"x.jsonl\"]\ntext_feild = \"body\"\n", &["text_feild"]),
        (
            "[dedup]\nthreshold = 1.5\n[[sources]]\ndomain = \"web\"\npaths = [\"../../data/demo/web/*.zst\"]\n",
            &["dedup.threshold"],
        ),
        ("[[sources]]\ndomain = \"web\"\npaths = [\"nowhere/*.jsonl\"]\n", &["nowhere/*.jsonl", "matched no file"]),
        ("[filter]\nmode = \"maybe\"\n", &["maybe"]),
    ];
    for (body, expected) in cases {
        std::fs::write(&recipe, body).unwrap();
        let result = mixforge(&["corpus", "run", recipe.to_str().unwrap(), "--out", dir.join("out").to_str().unwrap()]);
        assert!(!result.status.success(), "should fail: {body}");
        let stderr = text(&result.stderr);
        for needle in expected {
            assert!(stderr.contains(needle), "error for {body:?} should mention {needle:?}:\n{stderr}");
        }
    }
    let result = mixforge(&["corpus", "run", "--source", "nodomain"]);
    assert!(text(&result.stderr).contains("DOMAIN=PATH"), "{}", text(&result.stderr));
}

/// `--strict` exits non-zero naming file:line; without it the run succeeds and counts.
#[test]
fn strict_mode_names_the_line() {
    let dir = scratch("strict");
    let file = dir.join("docs.jsonl");
    std::fs::write(&file, "{\"text\": \"a fine document\"}\n{not json}\n").unwrap();
    let source = format!("web={}", file.display());
    let out = dir.join("out");
    let strict = mixforge(&["corpus", "run", "--source", &source, "--out", out.to_str().unwrap(), "--strict"]);
    assert!(!strict.status.success());
    assert!(text(&strict.stderr).contains("docs.jsonl:2"), "{}", text(&strict.stderr));
    let lenient = mixforge(&["corpus", "run", "--source", &source, "--out", out.to_str().unwrap()]);
    assert!(lenient.status.success(), "{}", text(&lenient.stderr));
    assert!(text(&lenient.stdout).contains("rejected invalid_json: 1"), "{}", text(&lenient.stdout));
    assert!(Path::new(&out.join("rejects.jsonl")).is_file());
}

/// Every subcommand explains itself.
#[test]
fn help_explains_the_commands() {
    let result = mixforge(&["corpus", "run", "--help"]);
    assert!(result.status.success());
    let help = text(&result.stdout);
    for flag in ["--source", "--out", "--strict", "--threshold", "--num-perm", "--bands", "--filter-mode", "Example:"] {
        assert!(help.contains(flag), "--help mentions {flag}");
    }
}

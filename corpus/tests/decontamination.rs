//! Decontamination on real data: planted evaluation items are found, clean text is not.

use arrow_array::Array;
use arrow_array::cast::AsArray;
use arrow_array::types::UInt64Type;
use corpus::config::{SourceConfig, Stages};
use corpus::decontam::{DecontamConfig, EvalIndex, item_text};
use corpus::pipeline::{self, Silent};

use crate::common::{Rng, config, gsm8k, scratch, shared_data, wiki_articles, write_jsonl};

fn eval_files() -> Vec<std::path::PathBuf> {
    let dir = shared_data().join("eval");
    let mut files: Vec<_> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    files
}

/// Items planted in real articles are found with their benchmark and item index; the same
/// articles without them, and every GSM8K training problem, are clean.
#[test]
fn planted_items_are_found_and_clean_text_is_not() {
    let config = DecontamConfig { evals: eval_files(), ngram: 13, drop: false };
    let index = EvalIndex::build(&config).unwrap();
    assert_eq!(index.benchmarks().len(), 10);
    let mut words = Vec::new();
    let articles = wiki_articles();
    for article in &articles {
        assert_eq!(index.find(article, &mut words), None, "a WikiText article is clean");
    }
    let mut rng = Rng(3);
    for (benchmark_idx, path) in eval_files().iter().enumerate() {
        let lines: Vec<String> = std::fs::read_to_string(path).unwrap().lines().map(String::from).collect();
        for _ in 0..5 {
            let item = rng.below(lines.len());
            let text = item_text(&lines[item]).unwrap();
            let article = &articles[rng.below(articles.len())];
            let cut = article.char_indices().nth(article.chars().count() / 2).unwrap().0;
            let planted = format!("{} {} {}", &article[..cut], text, &article[cut..]);
            let hit = index.find(&planted, &mut words).expect("planted item found");
            // Another item of an earlier benchmark may share the same n-gram (duplicated
            // questions across sets); the planted one is found unless such a twin precedes it.
            if usize::from(hit.benchmark) == benchmark_idx {
                assert_eq!(hit.item, item as u32, "{}", path.display());
            } else {
                assert!(usize::from(hit.benchmark) < benchmark_idx);
            }
        }
    }
}

/// Through the pipeline: contaminated documents are marked in the profile, counted per
/// benchmark, and dropped on request.
#[test]
fn contamination_is_marked_counted_and_dropped_on_request() {
    let dir = scratch("decontam");
    let gsm8k_test = shared_data().join("eval/gsm8k-test.jsonl");
    let first_test_item: serde_json::Value =
        serde_json::from_str(std::fs::read_to_string(&gsm8k_test).unwrap().lines().nth(7).unwrap()).unwrap();
    let mut texts = gsm8k(200);
    texts.push(format!(
        "Homework help:\n{}\n{}",
        first_test_item["question"].as_str().unwrap(),
        first_test_item["answer"].as_str().unwrap()
    ));
    write_jsonl(&dir.join("docs.jsonl"), &texts);
    for drop in [false, true] {
        let out = dir.join(format!("out-{drop}"));
        let mut cfg = config(vec![SourceConfig::new("math", vec![dir.join("docs.jsonl").display().to_string()])], &out);
        cfg.stages = Stages { profile: false, filter: false, dedup: false };
        cfg.decontam = Some(DecontamConfig { evals: vec![gsm8k_test.clone()], ngram: 13, drop });
        let report = pipeline::run(&cfg, &Silent).unwrap();
        let totals = &report.manifest.accounting.totals;
        // The planted copy, and one real overlap: training problem 20 ("bought stamps at the
        // post office ... snowflake") shares a 13-gram with test item 632.
        assert_eq!(totals.contaminated.get("gsm8k-test"), Some(&2), "{:?}", totals.contaminated);
        assert_eq!(totals.dropped.get("contaminated:gsm8k-test").copied().unwrap_or(0), 2 * u64::from(drop));
        assert_eq!(report.manifest.eval_items.get("gsm8k-test"), Some(&1319));
        let file = std::fs::File::open(out.join("profile.parquet")).unwrap();
        let batch = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
            .unwrap()
            .build()
            .unwrap()
            .next()
            .unwrap()
            .unwrap();
        let by = batch.column_by_name("contaminated_by").unwrap().as_string::<i32>().clone();
        let item = batch.column_by_name("contaminated_item").unwrap().as_primitive::<UInt64Type>().clone();
        let marked: Vec<usize> = (0..batch.num_rows()).filter(|&i| by.is_valid(i)).collect();
        assert_eq!(marked, vec![20, 200]);
        assert_eq!((by.value(20), item.value(20)), ("gsm8k-test", 632));
        assert_eq!((by.value(200), item.value(200)), ("gsm8k-test", 7));
    }
}

/// An item shorter than n words is matched whole, not by n-grams.
#[test]
fn short_items_match_whole() {
    let dir = scratch("decontam-short");
    std::fs::write(dir.join("tiny.jsonl"), "{\"question\": \"Who wrote Hamlet?\", \"answer\": \"Shakespeare\"}\n")
        .unwrap();
    let index =
        EvalIndex::build(&DecontamConfig { evals: vec![dir.join("tiny.jsonl")], ngram: 13, drop: false }).unwrap();
    let mut words = Vec::new();
    assert!(index.find("Trivia night: who wrote Hamlet? Shakespeare, of course.", &mut words).is_some());
    assert!(index.find("Who wrote this? Hamlet said Shakespeare.", &mut words).is_none());
}

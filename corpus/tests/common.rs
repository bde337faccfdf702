//! Shared helpers: where the real data is, scratch directories, small real samples.

use std::path::{Path, PathBuf};

use corpus::config::{DedupConfig, FilterConfig, PipelineConfig, SourceConfig, Stages};

/// `../shared/data` from the workspace root. Tests need it; when it is missing they fail with
/// a message that says where it was looked for.
pub fn shared_data() -> PathBuf {
    let root = manifest_dir().join("../../shared/data");
    assert!(
        root.join("corpus").is_dir(),
        "real test data missing: expected {} (the shared data folder beside the checkout)",
        root.display()
    );
    root
}

/// A fresh, empty scratch directory unique to `name`.
pub fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("mixforge-test-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create scratch dir");
    dir
}

/// A config with defaults, given sources and output directory.
pub fn config(sources: Vec<SourceConfig>, out: &Path) -> PipelineConfig {
    PipelineConfig {
        sources,
        filter: FilterConfig::default(),
        dedup: DedupConfig::default(),
        decontam: None,
        stages: Stages::ALL,
        strict: false,
        out: out.to_path_buf(),
        batch_docs: 256,
    }
}

/// Real texts: WikiText-2 articles split on top-level headings.
pub fn wiki_articles() -> Vec<String> {
    let text = std::fs::read_to_string(shared_data().join("corpus/wiki/wikitext-2-valid.txt")).expect("read wikitext");
    let heading = regex::Regex::new(r"^ = [^=].* = $").unwrap();
    let mut articles: Vec<String> = Vec::new();
    for line in text.lines() {
        if heading.is_match(line) || articles.is_empty() {
            articles.push(String::new());
        }
        let last = articles.last_mut().unwrap();
        last.push_str(line);
        last.push('\n');
    }
    articles.retain(|a| a.split_whitespace().count() > 300);
    articles
}

/// Real short texts: GSM8K questions with their answers.
pub fn gsm8k(n: usize) -> Vec<String> {
    let text = std::fs::read_to_string(shared_data().join("corpus/math/gsm8k-train.jsonl")).expect("read gsm8k");
    text.lines()
        .take(n)
        .map(|line| {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            format!("{}\n{}", v["question"].as_str().unwrap(), v["answer"].as_str().unwrap())
        })
        .collect()
}

/// Writes `texts` as JSONL `{id, text}` records.
pub fn write_jsonl(path: &Path, texts: &[String]) {
    let mut out = String::new();
    for (i, text) in texts.iter().enumerate() {
        out.push_str(&serde_json::json!({"id": format!("doc-{i}"), "text": text}).to_string());
        out.push('\n');
    }
    std::fs::write(path, out).expect("write jsonl");
}

/// A small deterministic generator (SplitMix64) so tests need no rand crate.
pub struct Rng(pub u64);

impl Rng {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Replaces a fraction `rate` of the words of `text` with fresh tokens, keeping the rest.
pub fn mutate(text: &str, rate: f64, rng: &mut Rng) -> String {
    text.split_whitespace()
        .map(|w| if rng.unit() < rate { format!("zq{}", rng.next_u64() % 1_000_000_007) } else { w.to_string() })
        .collect::<Vec<_>>()
        .join(" ")
}

/// The package folder as cargo gives it to the running test (not as it was when compiled: a
/// binary reused from another checkout sharing the target dir would point there).
pub fn manifest_dir() -> PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")))
}

//! `mixforge tokenizer bench`: encoding throughput of a tokenizer on real text.

use std::io::{BufRead, Write};
use std::time::Instant;

use anyhow::{Context, Result};

use crate::cli::TokenizerBenchArgs;

/// Loads the texts, warms up, times `runs` full encodings, prints one JSON line.
pub fn bench(args: &TokenizerBenchArgs) -> Result<()> {
    let tokenizer = corpus::tokenize::load(&args.tokenizer)?;
    let file = std::fs::File::open(&args.input).with_context(|| format!("opening {}", args.input.display()))?;
    let mut texts = Vec::new();
    for (i, line) in std::io::BufReader::new(file).lines().enumerate() {
        let line = line.with_context(|| format!("{}:{}", args.input.display(), i + 1))?;
        let value: serde_json::Value =
            serde_json::from_str(&line).with_context(|| format!("{}:{}", args.input.display(), i + 1))?;
        let text = value["text"]
            .as_str()
            .with_context(|| format!("{}:{}: no string `text` field", args.input.display(), i + 1))?;
        texts.push(text.to_string());
    }
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let bytes: usize = refs.iter().map(|t| t.len()).sum();
    let encode = |batch: &[&str]| -> Result<usize> {
        let encodings = tokenizer
            .encode_batch_fast(batch.to_vec(), args.add_special_tokens)
            .map_err(|e| anyhow::anyhow!("encoding: {e}"))?;
        Ok(encodings.iter().map(|e| e.len()).sum())
    };
    encode(&refs[..refs.len().min(50)])?;
    let mut seconds = Vec::new();
    let mut tokens = 0;
    for _ in 0..args.runs.max(1) {
        let started = Instant::now();
        tokens = encode(&refs)?;
        seconds.push(started.elapsed().as_secs_f64());
    }
    seconds.sort_by(f64::total_cmp);
    let median = seconds[seconds.len() / 2];
    let report = serde_json::json!({
        "tool": "mixforge",
        "threads": rayon::current_num_threads(),
        "docs": texts.len(),
        "bytes": bytes,
        "tokens": tokens,
        "runs_s": seconds,
        "median_s": median,
        "tokens_per_s": tokens as f64 / median,
        "mb_per_s": bytes as f64 / 1e6 / median,
    });
    writeln!(std::io::stdout().lock(), "{report}")?;
    Ok(())
}

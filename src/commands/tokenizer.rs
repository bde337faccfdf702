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
    let encoder = corpus::tokenize::Encoder::new(&tokenizer);
    let encode = |texts: &[&str]| match args.pipeline {
        true => encoder.encode_by_pipeline(texts, args.add_special_tokens),
        false => encoder.encode_batch(texts, args.add_special_tokens),
    };
    encode(&refs[..refs.len().min(50)])?;
    let mut seconds = Vec::new();
    let mut ids = Vec::new();
    for _ in 0..args.runs.max(1) {
        let started = Instant::now();
        ids = encode(&refs)?;
        seconds.push(started.elapsed().as_secs_f64());
    }
    let tokens: usize = ids.iter().map(Vec::len).sum();
    seconds.sort_by(f64::total_cmp);
    let median = seconds[seconds.len() / 2];
    let report = serde_json::json!({
        "tool": "mixforge",
        "piecewise": encoder.is_piecewise() && !args.pipeline,
        "threads": rayon::current_num_threads(),
        "docs": texts.len(),
        "bytes": bytes,
        "tokens": tokens,
        "runs_s": seconds,
        "median_s": median,
        "tokens_per_s": tokens as f64 / median,
        "checksum": checksum(&ids),
        "mb_per_s": bytes as f64 / 1e6 / median,
    });
    writeln!(std::io::stdout().lock(), "{report}")?;
    Ok(())
}

/// An order-sensitive checksum of every id, computed the same way by the Python peer
/// (`bench/hf_tokenize.py`) so the two tools are shown to produce identical tokens.
fn checksum(docs: &[Vec<u32>]) -> u64 {
    const P: u128 = (1 << 61) - 1;
    let mut sum: u128 = 0;
    for ids in docs {
        let doc: u128 =
            ids.iter().enumerate().map(|(i, &id)| (u128::from(id) + 1) * (i as u128 + 1) % P).sum::<u128>() % P;
        sum = (sum * 1_000_003 + doc) % P;
    }
    sum as u64
}

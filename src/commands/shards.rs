//! `mixforge corpus shard | decode | index | search`, and the recipe's later stages after
//! `corpus run`.

use std::io::Write;
use std::path::Path;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use corpus::ids::DocId;
use corpus::pipeline::parts::Shard;
use corpus::shards::{self, ShardConfig, ShardManifest, Shards, TokenizerChoice};

use crate::cli::{DecodeArgs, IndexArgs, SearchArgs, ShardArgs};
use crate::progress::Bars;
use crate::recipe::LaterStages;

/// A tokenizer file wins over training one; one of the two must be given.
pub fn tokenizer_choice(file: Option<&Path>, vocab_size: Option<usize>, sample_docs: usize) -> Result<TokenizerChoice> {
    match (file, vocab_size) {
        (Some(path), _) => Ok(TokenizerChoice::File(path.to_path_buf())),
        (None, Some(vocab_size)) => Ok(TokenizerChoice::Train { vocab_size, sample_docs_per_domain: sample_docs }),
        (None, None) => bail!(
            "no tokenizer: give a tokenizer.json (--tokenizer, recipe `tokenizer`) or a vocabulary size to train one (--vocab-size, recipe `vocab_size`)"
        ),
    }
}

/// `corpus shard`.
pub fn shard(args: &ShardArgs) -> Result<()> {
    let tokenizer = tokenizer_choice(args.tokenizer.as_deref(), args.vocab_size, args.sample_docs)?;
    let config = ShardConfig {
        input: args.input.clone(),
        out: args.out.clone(),
        tokenizer,
        val_fraction: args.val_fraction,
        split_seed: args.split_seed,
        chunk_docs: args.chunk_docs,
    };
    let context = || format!("sharding {} into {}", args.input.display(), args.out.display());
    let mut stdout = std::io::stdout().lock();
    if args.tokenizer_only {
        let hash = shards::prepare_tokenizer(&config).with_context(context)?;
        writeln!(stdout, "tokenizer {hash} in {}", args.out.join("tokenizer.json").display())?;
        return Ok(());
    }
    if let Some(task) = args.shard.as_deref().map(Shard::parse).transpose()? {
        let r = shards::write_task(&config, task, &Bars::new()).with_context(context)?;
        writeln!(
            stdout,
            "shard task {task}: {} of {} chunks ({} already done), {} documents, {} tokens; \
             `corpus shard` without --shard writes the manifest once every task is done",
            r.chunks_taken, r.chunks, r.chunks_reused, r.docs, r.tokens
        )?;
        return Ok(());
    }
    let manifest = shards::write(&config, &Bars::new()).with_context(context)?;
    write!(stdout, "{}", render_shards(&manifest, &args.out))?;
    Ok(())
}

pub fn render_shards(m: &ShardManifest, out: &Path) -> String {
    let mut text = format!(
        "shards in {}: vocabulary {} ({:?} tokens), tokenizer {}\n{:<10} {:>10} {:>12} {:>10} {:>10}\n",
        out.display(),
        m.vocab_size,
        m.dtype,
        m.tokenizer_hash,
        "domain",
        "train docs",
        "train tokens",
        "val docs",
        "val tokens"
    );
    for (domain, d) in &m.domains {
        text.push_str(&format!(
            "{domain:<10} {:>10} {:>12} {:>10} {:>10}\n",
            d.train_docs, d.train_tokens, d.val_docs, d.val_tokens
        ));
    }
    text.push_str(&format!("total: {} documents, {} tokens\n", m.total_docs, m.total_tokens));
    text
}

/// `corpus decode`.
pub fn decode(args: &DecodeArgs) -> Result<()> {
    let id = parse_doc_id(&args.doc)?;
    let shards = Shards::open(&args.shards)?;
    let Some((domain, split, tokens)) = shards.find(id)? else {
        bail!(
            "document {id} is not in {} (dropped, or not in this run; see profile.parquet's drop_reason)",
            args.shards.display()
        );
    };
    let tokenizer = corpus::tokenize::load(&shards.tokenizer_path())?;
    let text = corpus::tokenize::decode(&tokenizer, &tokens)?;
    tracing::info!(%id, domain, split = split.name(), tokens = tokens.len(), "decoded");
    let mut stdout = std::io::stdout().lock();
    write!(stdout, "{text}")?;
    if !text.ends_with('\n') {
        writeln!(stdout)?;
    }
    Ok(())
}

fn parse_doc_id(text: &str) -> Result<DocId> {
    if let Some((file, row)) = text.split_once(':') {
        let file: u32 = file.parse().with_context(|| format!("--doc {text:?}: FILE must be a number"))?;
        let row: u32 = row.parse().with_context(|| format!("--doc {text:?}: ROW must be a number"))?;
        return Ok(DocId::new(corpus::ids::FileIdx(file), row));
    }
    Ok(DocId::from_raw(text.parse().with_context(|| format!("--doc {text:?}: expected FILE:ROW or a number"))?))
}

/// `corpus index`.
pub fn index(args: &IndexArgs) -> Result<()> {
    let n = corpus::search::build_index(&args.input, &args.out, &Bars::new())?;
    writeln!(std::io::stdout().lock(), "indexed {n} documents into {}", args.out.display())?;
    Ok(())
}

/// `corpus search`.
pub fn search(args: &SearchArgs) -> Result<()> {
    let hits = corpus::search::search(&args.index, &args.query, args.domain.as_deref(), args.limit)?;
    let mut stdout = std::io::stdout().lock();
    if args.json {
        for hit in &hits {
            serde_json::to_writer(&mut stdout, hit)?;
            writeln!(stdout)?;
        }
        return Ok(());
    }
    if hits.is_empty() {
        writeln!(stdout, "no match")?;
    }
    for hit in &hits {
        writeln!(
            stdout,
            "{:>8.3}  {:<10} {:<12} {}",
            hit.score,
            hit.domain,
            hit.doc,
            hit.source_id.as_deref().unwrap_or("")
        )?;
        writeln!(stdout, "          {}", hit.snippet)?;
    }
    Ok(())
}

/// After `corpus run`: shards and index as the recipe asks, timings added to the run manifest.
pub fn after_run(out: &Path, later: &LaterStages) -> Result<String> {
    let mut report = String::new();
    let mut timings = Vec::new();
    if let Some(s) = &later.shards {
        let tokenizer = tokenizer_choice(s.tokenizer.as_deref(), s.vocab_size, s.sample_docs)?;
        let config = ShardConfig {
            input: out.to_path_buf(),
            out: out.join("shards"),
            tokenizer,
            val_fraction: s.val_fraction,
            split_seed: s.split_seed,
            chunk_docs: s.chunk_docs,
        };
        let started = Instant::now();
        let manifest = shards::write(&config, &Bars::new())?;
        timings.push(("shard", started.elapsed().as_secs_f64(), "shards/manifest.json"));
        report.push_str(&render_shards(&manifest, &config.out));
    }
    if later.search.as_ref().is_some_and(|s| s.index) {
        let started = Instant::now();
        let n = corpus::search::build_index(out, &out.join("index"), &Bars::new())?;
        timings.push(("index", started.elapsed().as_secs_f64(), "index"));
        report.push_str(&format!("search index: {n} documents in {}\n", out.join("index").display()));
    }
    if !timings.is_empty() {
        let path = out.join("manifest.json");
        let mut manifest: serde_json::Value = serde_json::from_slice(&std::fs::read(&path)?)?;
        for (stage, seconds, output) in timings {
            manifest["timings"][stage] = seconds.into();
            manifest["outputs"][stage] = output.into();
        }
        corpus::atomic::write_json(&path, &manifest)?;
    }
    Ok(report)
}

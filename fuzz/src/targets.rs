//! The fuzz targets: each writes an input where the product would read it and runs the real
//! reader (and, for documents, the whole corpus pipeline). Errors are the expected outcome of
//! bad input; only a panic is a finding.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result};
use arrow_array::{ArrayRef, LargeStringArray, RecordBatch, StringArray, UInt64Array};
use arrow_schema::{Field, Schema};
use corpus::config::{DedupConfig, FilterConfig, PipelineConfig, SourceConfig, Stages};
use corpus::decontam::DecontamConfig;
use corpus::pipeline::Silent;
use corpus::shards::{DomainSegments, Dtype, Shard, Shards, Split};

#[allow(dead_code)] // only the parser is fuzzed; the binary uses the rest
#[path = "../../src/recipe.rs"]
mod recipe;

/// Every target, with what it reads.
pub const TARGETS: [(&str, &str); 6] = [
    (
        "jsonl",
        "JSONL documents through the whole corpus pipeline (ingest, signals, filters, dedup, decontamination, kept, profile)",
    ),
    ("text", "plain-text documents split by a heading regex, through the whole corpus pipeline"),
    ("parquet", "Parquet documents through the pipeline, and as a kept file through the kept reader"),
    ("shards", "a shard's .idx and .bin files and the shard manifest, through the shard reader and domain segments"),
    ("toml", "recipe, mixture and mix-proposal TOML"),
    ("json", "evaluation task files (JSONL) and Hugging Face config.json"),
];

/// Tokens the mutator inserts, per target.
pub fn dictionary(target: &str) -> &'static [&'static [u8]] {
    match target {
        "jsonl" | "json" => &[
            b"\"text\":",
            b"\"id\":",
            b"null",
            b"true",
            b"[]",
            b"{}",
            b"1e309",
            b"-1",
            b"\"\\ud800\"",
            b"\"\\u0000\"",
            b"\"query\":",
            b"\"choices\":",
            b"\"gold\":",
            b"\"context\":",
            b"\"continuation\":",
            b"\"answer\":",
            b"\"num_attention_heads\":",
            b"\"layer_types\":",
            b"\"sliding_window\":",
            b"0",
            b"18446744073709551615",
            b"\"context_options\":",
            b"\"rope_parameters\":",
            b"\"model_type\":\"llama\"",
            b"\xef\xbb\xbf",
        ],
        "text" => &[b"\n = Title = \n", b"\n", b"\r\n", b"\0", b"\xe2\x80\xa8", b" = = ", b"\xc3\xa9"],
        "toml" => &[
            b"[[sources]]",
            b"[weights]",
            b"[max_epochs]",
            b"domain = ",
            b"paths = []",
            b"= nan",
            b"= inf",
            b"= -1",
            b"= 1e308",
            b"[dedup]",
            b"threshold = ",
            b"num_perm = 0",
            b"bands = ",
            b"\"\"",
            b"'''",
            b"= {}",
        ],
        _ => &[b"\0\0\0\0", b"\xff\xff\xff\xff", b"\"format_version\": 1", b"\"dtype\": \"u32\"", b"\"domains\": {}"],
    }
}

/// Scratch space and the real data the seeds come from.
pub struct Ctx {
    pub dir: PathBuf,
    pub data: PathBuf,
    pub checkout: PathBuf,
}

impl Ctx {
    /// `dir` is private to this fuzzer process; `data` is `../shared/data`.
    pub fn new(dir: PathBuf, checkout: PathBuf) -> Result<Ctx> {
        std::fs::create_dir_all(&dir)?;
        let data = checkout.join("../shared/data");
        anyhow::ensure!(data.join("corpus").is_dir(), "seeds come from real data: {} is missing", data.display());
        let ctx = Ctx { dir, data, checkout };
        // A small evaluation set, so fuzzed documents also go through decontamination.
        let gsm = std::fs::read_to_string(ctx.data.join("eval/gsm8k-test.jsonl"))?;
        let gsm: String = gsm.lines().take(40).map(|l| format!("{l}\n")).collect();
        std::fs::write(ctx.dir.join("gsm8k-test.jsonl"), gsm)?;
        Ok(ctx)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}

fn first_lines(path: &Path, n: usize) -> Result<Vec<u8>> {
    let text = std::fs::read_to_string(path).with_context(|| path.display().to_string())?;
    let mut out: String = text.lines().take(n).map(|l| format!("{l}\n")).collect();
    out.truncate(out.floor_char_boundary(8 << 10));
    Ok(out.into_bytes())
}

/// Real inputs of the target's kind, small.
pub fn seeds(target: &str, ctx: &Ctx) -> Result<Vec<Vec<u8>>> {
    let corpus = ctx.data.join("corpus");
    Ok(match target {
        "jsonl" => vec![
            first_jsonl(&corpus.join("web"))?,
            first_jsonl(&corpus.join("code"))?,
            first_lines(&ctx.data.join("eval/gsm8k-test.jsonl"), 6)?,
        ],
        "text" => {
            let wiki = first_lines(&corpus.join("wiki/wikitext-2-valid.txt"), 60)?;
            let books = std::fs::read_dir(corpus.join("books"))?.next().context("a book")??.path();
            vec![wiki, first_lines(&books, 80)?]
        }
        "parquet" => {
            let texts: Vec<String> = String::from_utf8(first_lines(&corpus.join("wiki/wikitext-2-valid.txt"), 40)?)?
                .split("\n\n")
                .map(str::to_owned)
                .collect();
            vec![parquet_bytes(&texts, false)?, parquet_bytes(&texts, true)?]
        }
        "shards" => vec![shard_seed(ctx)?],
        "toml" => vec![
            std::fs::read(ctx.checkout.join("recipes/demo.toml"))?,
            b"[weights]\nweb = 0.5\ncode = 0.25\nmath = 0.25\n[max_epochs]\nweb = 2.0\n".to_vec(),
            b"max_epochs = 4\n[weights]\nbooks = 0.2\nwiki = 0.8\n".to_vec(),
        ],
        "json" => {
            let mut seeds = Vec::new();
            for entry in std::fs::read_dir(ctx.data.join("eval"))? {
                seeds.push(first_lines(&entry?.path(), 3)?);
            }
            for preset in ["tiny", "mobilellm-pro-1b"] {
                let config = train::ModelConfig::preset(preset)?;
                seeds.push(serde_json::to_vec_pretty(&train::hf::hf_config(&config, Some(1), Some(2)))?);
            }
            seeds.push(
                br#"{"model_type":"llama","vocab_size":32000,"hidden_size":64,"intermediate_size":128,"num_hidden_layers":2,"num_attention_heads":4,"num_key_value_heads":2,"rms_norm_eps":1e-5,"max_position_embeddings":256,"rope_scaling":null}"#
                    .to_vec(),
            );
            seeds
        }
        other => anyhow::bail!("no target {other}"),
    })
}

fn first_jsonl(dir: &Path) -> Result<Vec<u8>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)?.filter_map(|e| e.ok().map(|e| e.path())).collect();
    files.sort();
    first_lines(files.first().context("a JSONL file")?, 2)
}

fn parquet_bytes(texts: &[String], large: bool) -> Result<Vec<u8>> {
    let text: ArrayRef = if large {
        Arc::new(LargeStringArray::from_iter_values(texts))
    } else {
        Arc::new(StringArray::from_iter_values(texts))
    };
    let ids: ArrayRef = Arc::new(UInt64Array::from_iter_values(0..texts.len() as u64));
    let names: ArrayRef =
        Arc::new(StringArray::from_iter_values(texts.iter().enumerate().map(|(i, _)| format!("d{i}"))));
    let schema = Arc::new(Schema::new(vec![
        Field::new("doc_id", ids.data_type().clone(), false),
        Field::new("id", names.data_type().clone(), false),
        Field::new("text", text.data_type().clone(), false),
    ]));
    let batch = RecordBatch::try_new(schema.clone(), vec![ids, names, text])?;
    let mut out = Vec::new();
    let mut writer = parquet::arrow::ArrowWriter::try_new(&mut out, schema, None)?;
    writer.write(&batch)?;
    writer.close()?;
    Ok(out)
}

/// A shard input: `idx length (u32 LE) | bin length (u32 LE) | idx | bin | manifest.json`.
fn shard_seed(ctx: &Ctx) -> Result<Vec<u8>> {
    let dir = ctx.path("seed-shards");
    std::fs::create_dir_all(dir.join("web"))?;
    let docs: Vec<(u64, Vec<u32>)> = (0..5u64).map(|i| (i * 3 + 1, (0..(i as u32 * 7 + 1)).collect())).collect();
    let refs: Vec<(u64, &[u32])> = docs.iter().map(|(id, t)| (*id, t.as_slice())).collect();
    let entry = corpus::shards::write_shard(&dir.join("web"), Split::Train, 0, &refs, Dtype::U16)?;
    let manifest = serde_json::json!({
        "format_version": corpus::shards::SHARDS_FORMAT_VERSION, "tokenizer_hash": "0", "vocab_size": 300,
        "dtype": "u16", "val_fraction": 0.0, "split_seed": 0, "chunk_docs": 5,
        "domains": {"web": {"train_docs": entry.docs, "train_tokens": entry.tokens, "val_docs": 0, "val_tokens": 0,
                            "shards": [entry]}},
        "total_docs": entry.docs, "total_tokens": entry.tokens,
    });
    let (idx, bin) = (std::fs::read(dir.join("web/train-00000.idx"))?, std::fs::read(dir.join("web/train-00000.bin"))?);
    let mut out = Vec::new();
    out.extend_from_slice(&(idx.len() as u32).to_le_bytes());
    out.extend_from_slice(&(bin.len() as u32).to_le_bytes());
    out.extend_from_slice(&idx);
    out.extend_from_slice(&bin);
    out.extend_from_slice(&serde_json::to_vec_pretty(&manifest)?);
    Ok(out)
}

/// Runs one input; `Err` is a clean refusal (its message's shape feeds back into the pool).
pub fn run(target: &str, ctx: &Ctx, input: &[u8]) -> Result<String> {
    match target {
        "jsonl" => pipeline(ctx, "docs.jsonl", input, |s| s),
        "text" => pipeline(ctx, "docs.txt", input, |mut s| {
            s.separator = Some(r"^ = [^=].* = $".into());
            s
        }),
        "parquet" => {
            let report = pipeline(ctx, "docs.parquet", input, |mut s| {
                s.id_field = "id".into();
                s
            });
            let mut docs = 0;
            let kept = corpus::kept::read(&ctx.path("docs.parquet"), 64, |b| {
                docs += b.ids.len();
                Ok(())
            });
            Ok(format!("{} / kept reader {}", outcome(&report), outcome(&kept.map(|()| docs))))
        }
        "shards" => shards(ctx, input),
        "toml" => {
            let path = ctx.path("input.toml");
            std::fs::write(&path, input)?;
            let recipe = recipe::Recipe::load(&path).and_then(|r| {
                let config = PipelineConfig {
                    sources: r.sources,
                    filter: r.filter,
                    dedup: r.dedup,
                    decontam: r.decontam,
                    stages: Stages::ALL,
                    strict: false,
                    out: ctx.path("toml-out"),
                    batch_docs: r.batch_docs.unwrap_or(64),
                };
                Ok(config.validate()?)
            });
            let mixture = train::data::Mixture::from_toml_file(&path).map(|_| ());
            let proposal = mixsim::Proposal::load(&path).map(|_| ());
            Ok(format!("{} / {} / {}", outcome(&recipe), outcome(&mixture), outcome(&proposal)))
        }
        "json" => {
            let (task, config) = (ctx.path("task.jsonl"), ctx.path("config.json"));
            std::fs::write(&task, input)?;
            std::fs::write(&config, input)?;
            let items = train::eval::read_task(&task, None).map(|items| items.len());
            let model = train::hf::read_hf_config(&config).map(|c| c.param_count());
            Ok(format!("{} / {}", outcome(&items), outcome(&model)))
        }
        other => anyhow::bail!("no target {other}"),
    }
}

fn outcome<T, E: std::fmt::Display>(r: &std::result::Result<T, E>) -> String {
    match r {
        Ok(_) => "ok".into(),
        // The message's shape without numbers or paths: new shapes are new behaviour.
        Err(e) => {
            let words: Vec<String> =
                e.to_string().split_whitespace().filter(|w| !w.contains('/')).map(String::from).collect();
            words.join(" ").chars().filter(|c| c.is_alphabetic() || *c == ' ').take(48).collect()
        }
    }
}

fn pipeline(ctx: &Ctx, name: &str, input: &[u8], source: impl FnOnce(SourceConfig) -> SourceConfig) -> Result<String> {
    let path = ctx.path(name);
    std::fs::write(&path, input)?;
    let config = PipelineConfig {
        sources: vec![source(SourceConfig::new("web", vec![path.display().to_string()]))],
        filter: FilterConfig::default(),
        dedup: DedupConfig::default(),
        decontam: Some(DecontamConfig { evals: vec![ctx.path("gsm8k-test.jsonl")], ngram: 8, drop: true }),
        stages: Stages::ALL,
        strict: false,
        out: ctx.path("out"),
        batch_docs: 64,
    };
    match corpus::pipeline::run(&config, &Silent) {
        Ok(report) => {
            let totals = &report.manifest.accounting.totals;
            // A broken invariant is a finding, like a panic.
            assert!(report.manifest.accounting.balances(), "accounting does not balance");
            // The outcome's shape: which reasons fired (and whether anything was kept), so
            // inputs that reach new rules, rejects or dedup paths join the pool.
            let reasons = [&totals.rejected, &totals.dropped, &totals.filter_flagged, &totals.contaminated];
            let names: Vec<&str> = reasons.iter().flat_map(|m| m.keys().map(String::as_str)).collect();
            Ok(format!("ok kept={} {}", totals.docs_kept.min(3), names.join(",")))
        }
        Err(e) => Ok(outcome::<(), _>(&Err(e))),
    }
}

fn shards(ctx: &Ctx, input: &[u8]) -> Result<String> {
    if input.len() < 8 {
        return Ok("short".into());
    }
    let rest = &input[8..];
    let idx_len = u32::from_le_bytes(input[..4].try_into()?) as usize % (rest.len() + 1);
    let bin_len = u32::from_le_bytes(input[4..8].try_into()?) as usize % (rest.len() - idx_len + 1);
    let (idx, rest) = rest.split_at(idx_len);
    let (bin, manifest) = rest.split_at(bin_len);
    let dir = ctx.path("shards");
    std::fs::create_dir_all(dir.join("web"))?;
    std::fs::write(dir.join("web/train-00000.idx"), idx)?;
    std::fs::write(dir.join("web/train-00000.bin"), bin)?;
    std::fs::write(dir.join("manifest.json"), manifest)?;
    let read = |dtype| -> corpus::Result<u64> {
        let shard = Shard::open(&dir.join("web/train-00000.bin"), &dir.join("web/train-00000.idx"), dtype)?;
        let mut sum = 0u64;
        for i in 0..shard.len() {
            sum += shard.doc(i).to_vec().iter().map(|&t| u64::from(t)).sum::<u64>();
            let _ = shard.position(shard.doc_id(i));
        }
        Ok(sum)
    };
    let direct = format!("{} {}", outcome(&read(Dtype::U16)), outcome(&read(Dtype::U32)));
    let opened = Shards::open(&dir).and_then(|shards| {
        let mut docs = 0;
        for domain in shards.manifest().domains.keys() {
            for split in [Split::Train, Split::Val] {
                docs += shards.docs(domain, split)?.count();
            }
            DomainSegments::open(&shards, domain)?;
        }
        Ok(docs)
    });
    Ok(format!("{direct} / {}", outcome(&opened)))
}

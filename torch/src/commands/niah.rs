//! `mixforge niah make`.

use std::io::Write;

use anyhow::{Context, Result, bail};
use corpus::shards::{Shards, Split};
use train::niah::{self, Filler, MakeConfig};

use crate::cli::NiahMakeArgs;

pub fn make(args: &NiahMakeArgs, out: &mut dyn Write) -> Result<()> {
    let (text, tokenizer_path) = if args.filler.is_dir() {
        let shards = Shards::open(&args.filler)?;
        let tokenizer = corpus::tokenize::load(&shards.tokenizer_path())?;
        let domains: Vec<String> = match &args.domain {
            Some(d) if shards.manifest().domains.contains_key(d) => vec![d.clone()],
            Some(d) => bail!(
                "--domain {d:?} is not in {} (it has {})",
                args.filler.display(),
                shards.manifest().domains.keys().cloned().collect::<Vec<_>>().join(", ")
            ),
            None => shards.manifest().domains.keys().cloned().collect(),
        };
        let mut text = String::new();
        for domain in &domains {
            for (_, ids) in shards.docs(domain, Split::Val)? {
                text.push_str(&corpus::tokenize::decode(&tokenizer, &ids)?);
                text.push('\n');
            }
        }
        (text, args.tokenizer.clone().unwrap_or_else(|| shards.tokenizer_path()))
    } else {
        let text = std::fs::read_to_string(&args.filler)
            .with_context(|| format!("reading filler {} (a shards directory or a text file)", args.filler.display()))?;
        let Some(tokenizer) = args.tokenizer.clone() else {
            bail!("--filler {} is a text file: give --tokenizer (the model's tokenizer.json)", args.filler.display())
        };
        (text, tokenizer)
    };
    let tokenizer = corpus::tokenize::load(&tokenizer_path)?;
    let filler = Filler::new(text, &tokenizer)?;
    let config = MakeConfig {
        lengths: args.lengths.clone(),
        depths: args.depths.clone(),
        per_cell: args.per_cell,
        distractors: args.distractors,
        seed: args.seed,
    };
    let items = niah::make(&filler, &tokenizer, &config)?;
    let mut jsonl = String::new();
    for item in &items {
        jsonl.push_str(&serde_json::to_string(item)?);
        jsonl.push('\n');
    }
    corpus::atomic::write_file(&args.out, jsonl.as_bytes())?;
    writeln!(
        out,
        "wrote {} items ({} lengths × {} depths × {}, {} distractors each) → {}",
        items.len(),
        args.lengths.len(),
        args.depths.len(),
        args.per_cell,
        args.distractors,
        args.out.display()
    )?;
    Ok(())
}

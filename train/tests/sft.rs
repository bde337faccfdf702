//! Instruction tuning: the loss mask token by token, packing without cross-attention, a run
//! that can only learn responses, and the held-out split.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use corpus::instruct::{InstructSource, Message};
use tch::{Device, Kind, Tensor};
use train::config::{AttnKind, ModelConfig};
use train::data::{CapPolicy, LoaderConfig, Mixture};
use train::model::{Inputs, Llama};
use train::optim::AdamWConfig;
use train::sft::{Dataset, SftData, SftLoader};
use train::trainer::{TrainConfig, Trainer};

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("mixforge-sft-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

const WORDS: [&str; 24] = [
    "apple", "river", "stone", "cloud", "green", "table", "music", "light", "paper", "horse", "north", "glass",
    "bread", "chair", "smile", "dream", "ocean", "plant", "train", "sugar", "piano", "tiger", "heart", "storm",
];

/// A byte-level BPE with the chat markers, trained on text like the tests' conversations.
fn tokenizer(dir: &Path) -> PathBuf {
    let texts: Vec<String> = (0..200)
        .map(|i| {
            format!(
                "{} {} The answer is yes. Question: what is {i}? user assistant system",
                WORDS[i % 24],
                WORDS[(i * 7) % 24]
            )
        })
        .collect();
    let tok = corpus::tokenize::train_bpe(&texts, 400).unwrap();
    let path = dir.join("tokenizer.json");
    tok.save(&path, false).unwrap();
    path
}

fn words(seed: u64, n: usize) -> String {
    let mut rng = train::rng::Rng::new(seed);
    (0..n).map(|_| WORDS[rng.below(WORDS.len())]).collect::<Vec<_>>().join(" ")
}

/// The fixed question every conversation of [`write_set`] starts with.
const QUESTION: &str = "Question: what is the color of the ocean and the tiger?";

/// `n` conversations: a fixed question with random words after it, a fixed reply.
fn write_set(path: &Path, n: usize, seed: u64) {
    let mut f = std::fs::File::create(path).unwrap();
    for i in 0..n {
        let user = format!("{QUESTION} {}", words(seed * 1000 + i as u64, 6));
        let messages = [Message::new("user", user), Message::new("assistant", "The answer is yes.")];
        writeln!(f, "{}", serde_json::json!({ "messages": messages })).unwrap();
    }
}

fn model_config(vocab: usize) -> ModelConfig {
    ModelConfig {
        vocab_size: vocab,
        d_model: 64,
        n_heads: 4,
        n_kv_heads: 2,
        head_dim: 16,
        ffn_dim: 128,
        layer_types: vec![AttnKind::Global, AttnKind::Local],
        sliding_window: 32,
        rope_theta: 10_000.0,
        norm_eps: 1e-5,
        tie_embeddings: true,
        max_seq_len: 128,
        quant: None,
    }
}

fn loader_config(seq_len: usize, eos: u32) -> LoaderConfig {
    LoaderConfig {
        seq_len,
        batch_size: 4,
        seed: 3,
        doc_mask: true,
        reset_positions: true,
        cap_policy: CapPolicy::Warn,
        eos_id: eos,
        data_fraction: 1.0,
    }
}

#[test]
fn the_mask_covers_exactly_the_assistant_tokens() {
    let dir = scratch("mask");
    let tok = corpus::tokenize::load(&tokenizer(&dir)).unwrap();
    let messages = [
        Message::new("system", "Answer briefly."),
        Message::new("user", "what is 3? green river"),
        Message::new("assistant", "The answer is yes."),
        Message::new("user", "and ocean?"),
        Message::new("assistant", "music stone"),
    ];
    let encoded = corpus::chat::encode(&tok, &messages).unwrap();
    let rendered = corpus::chat::render(&messages, false);
    // The ids are those of the whole rendered text.
    assert_eq!(encoded.ids, tok.encode(rendered.text.as_str(), false).unwrap().get_ids());
    // Token by token: learned exactly when the token's text lies in an assistant turn.
    let (mut learned, mut rest) = (String::new(), String::new());
    for (id, l) in encoded.ids.iter().zip(&encoded.learned) {
        let piece = tok.decode(&[*id], false).unwrap();
        if *l { learned.push_str(&piece) } else { rest.push_str(&piece) }
    }
    assert_eq!(learned, "The answer is yes.<|im_end|>music stone<|im_end|>");
    assert_eq!(
        rest,
        "<|im_start|>system\nAnswer briefly.<|im_end|>\n<|im_start|>user\nwhat is 3? green river<|im_end|>\n\
         <|im_start|>assistant\n\n<|im_start|>user\nand ocean?<|im_end|>\n<|im_start|>assistant\n\n"
    );
}

fn dataset(dir: &Path, n: usize, seq_len: usize) -> (Dataset, PathBuf) {
    let tok = tokenizer(dir);
    let data = dir.join("set.jsonl");
    write_set(&data, n, 1);
    let sources = [InstructSource::new("qa", data.to_str().unwrap())];
    (Dataset::load(&sources, &tok, 0.2, seq_len + 1).unwrap(), tok)
}

#[test]
fn packed_examples_do_not_attend_to_each_other() {
    let dir = scratch("packing");
    let (data, tok) = dataset(&dir, 40, 128);
    let eos = train::data::eos_id(&corpus::tokenize::load(&tok).unwrap()).unwrap();
    let mut loader = SftLoader::new(
        data,
        &Mixture { weights: BTreeMap::from([("qa".into(), 1.0)]), max_epochs: BTreeMap::new() },
        loader_config(128, eos),
    )
    .unwrap();
    let batch = loader.next_batch(Device::Cpu).unwrap();
    let model = Llama::new(model_config(400), Device::Cpu, 7, false).unwrap();
    let packed = tch::no_grad(|| model.forward(&batch.inputs));
    let docs = Vec::<i64>::try_from(batch.documents.get(0)).unwrap();
    let tokens = batch.inputs.tokens.get(0);
    let mut checked = 0;
    let mut start = 0;
    while start < docs.len() {
        let end = (start..docs.len()).find(|&i| docs[i] != docs[start]).unwrap_or(docs.len());
        if end < docs.len() || start > 0 {
            // An example alone, from position 0, with plain causal attention.
            let alone = tch::no_grad(|| {
                model.forward(&Inputs::tokens(tokens.narrow(0, start as i64, (end - start) as i64).unsqueeze(0)))
            });
            let inside = packed.get(0).narrow(0, start as i64, (end - start) as i64);
            let diff = (alone.get(0) - inside).abs().max().double_value(&[]);
            assert!(diff < 1e-4, "example at {start}..{end} sees its neighbours: {diff}");
            checked += 1;
        }
        start = end;
    }
    assert!(checked >= 3, "a window should hold several examples, held {checked}");
    // Targets: -100 wherever the next token is not an assistant token of the same example.
    let targets = Vec::<i64>::try_from(batch.targets.get(0)).unwrap();
    let learned = targets.iter().filter(|t| **t != -100).count();
    assert!(learned > 0 && learned < targets.len() / 2, "{learned} of {} targets learned", targets.len());
}

fn sft_config(dir: &Path, tok: &Path, eos: u32, steps: u64, batch: usize, accum: u64) -> TrainConfig {
    let sources = vec![InstructSource::new("qa", dir.join("set.jsonl").to_str().unwrap())];
    TrainConfig {
        model: model_config(400),
        shards: PathBuf::new(),
        mixture: Mixture { weights: BTreeMap::from([("qa".into(), 1.0)]), max_epochs: BTreeMap::new() },
        loader: LoaderConfig { batch_size: batch, ..loader_config(64, eos) },
        optim: AdamWConfig { lr: 1e-2, warmup_steps: 5, ..AdamWConfig::default() },
        steps,
        grad_accum: accum,
        eval_every: 0,
        eval_sequences: 16,
        checkpoint_every: 0,
        keep_checkpoints: 1,
        teacher: None,
        kd: Default::default(),
        seed: 1,
        shards_ref: Default::default(),
        teacher_ref: Default::default(),
        phase: "sft".into(),
        init: None,
        teacher_packing: Default::default(),
        teacher_cache: None,
        sft: Some(SftData { sources, val_fraction: 0.2, fingerprint: String::new(), tokenizer: tok.to_path_buf() }),
    }
}

#[test]
fn accumulated_micro_batches_equal_one_larger_batch() {
    // Windows learn different numbers of tokens; 2 × 2 accumulated must equal 1 × 4 (the same
    // windows, drawn in the same order), not weigh a sparse window's tokens more.
    let dir = scratch("accum");
    let (_, tok) = dataset(&dir, 60, 64);
    // Replies of 1 to 24 words: windows learn very different numbers of tokens.
    let mut f = std::fs::File::create(dir.join("set.jsonl")).unwrap();
    for i in 0..60 {
        let messages =
            [Message::new("user", words(i, 3)), Message::new("assistant", words(100 + i, 1 + (i as usize * 7) % 24))];
        writeln!(f, "{}", serde_json::json!({ "messages": messages })).unwrap();
    }
    drop(f);
    let eos = train::data::eos_id(&corpus::tokenize::load(&tok).unwrap()).unwrap();
    let weights = |batch, accum| {
        let mut t = Trainer::new(sft_config(&dir, &tok, eos, 3, batch, accum), None, Device::Cpu).unwrap();
        t.train(false).unwrap();
        t.model.params.named().iter().map(|(_, p)| p.flatten(0, -1)).collect::<Vec<_>>()
    };
    let (one, two) = (weights(4, 1), weights(2, 2));
    let diff = one.iter().zip(&two).map(|(a, b)| (a - b).abs().max().double_value(&[])).fold(0.0, f64::max);
    assert!(diff < 1e-6, "accumulation moved the weights differently by {diff}");
}

#[test]
fn a_run_learns_the_responses_and_never_the_prompts() {
    let dir = scratch("responses");
    let (_, tok) = dataset(&dir, 160, 64);
    let eos = train::data::eos_id(&corpus::tokenize::load(&tok).unwrap()).unwrap();
    let mut trainer = Trainer::new(sft_config(&dir, &tok, eos, 80, 4, 1), None, Device::Cpu).unwrap();
    let before = trainer.validate()["qa"];
    let outcome = trainer.train(false).unwrap();
    let after = outcome.val_loss["qa"];
    assert!(before > 2.0 && after < 0.05, "held-out response loss {before:.3} → {after:.3}");
    // The question is as predictable as the reply (the same words every time), but it was never
    // a target: its loss stays high while the reply's fell to almost 0.
    let tokenizer = corpus::tokenize::load(&tok).unwrap();
    let held_out = [Message::new("user", QUESTION), Message::new("assistant", "The answer is yes.")];
    let encoded = corpus::chat::encode(&tokenizer, &held_out).unwrap();
    let ids: Vec<i64> = encoded.ids.iter().map(|&i| i64::from(i)).collect();
    let logits =
        tch::no_grad(|| trainer.model.forward(&Inputs::tokens(Tensor::from_slice(&ids[..ids.len() - 1]).unsqueeze(0))));
    let nll = logits.get(0).log_softmax(-1, Kind::Float).neg();
    // The question's tokens: after "<|im_start|>user\n" until the turn's end.
    let user_end = encoded.ids.iter().position(|&i| Some(i) == tokenizer.token_to_id("<|im_end|>")).unwrap();
    let prompt: Vec<f64> = (3..user_end).map(|p| nll.get(p as i64 - 1).double_value(&[ids[p]])).collect();
    let prompt_loss = prompt.iter().sum::<f64>() / prompt.len() as f64;
    eprintln!("response loss {before:.3} → {after:.4}; the question's tokens {prompt_loss:.3}");
    assert!(prompt_loss > 2.0, "the prompts were learned: {prompt_loss:.3} nats per token");
}

#[test]
fn the_held_out_split_does_not_depend_on_file_order() {
    let dir = scratch("split");
    let tok = tokenizer(&dir);
    let forward = dir.join("a.jsonl");
    write_set(&forward, 50, 2);
    let lines: Vec<String> = std::fs::read_to_string(&forward).unwrap().lines().rev().map(String::from).collect();
    let reversed = dir.join("b.jsonl");
    std::fs::write(&reversed, lines.join("\n") + "\n").unwrap();
    let held_out = |p: &Path| {
        let d = Dataset::load(&[InstructSource::new("qa", p.to_str().unwrap())], &tok, 0.2, 200).unwrap();
        assert_eq!((d.domains[0].val.len(), d.domains[0].train.len()), (10, 40));
        d.domains[0].val.iter().map(|e| e.ids.clone()).collect::<Vec<_>>()
    };
    assert_eq!(held_out(&forward), held_out(&reversed));
}

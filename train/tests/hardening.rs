//! Inputs that once panicked, now errors naming the file and what is wrong: Hugging Face
//! configs with zero heads or missing fields, evaluation items with an empty context or a
//! continuation longer than the model's window, checkpoints whose tensors have other shapes.

use std::path::{Path, PathBuf};

use tch::{Device, Tensor};
use train::config::{AttnKind, ModelConfig};
use train::eval::{self, Item};
use train::model::Llama;
use train::optim::{AdamW, AdamWConfig};

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("mixforge-train-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn shared(path: &str) -> PathBuf {
    let p = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_else(|| env!("CARGO_MANIFEST_DIR").into()))
        .join("../../shared/data")
        .join(path);
    assert!(p.exists(), "{} is missing: this test reads ../shared/data", p.display());
    p
}

fn hf_config(dir: &Path, edit: impl FnOnce(&mut serde_json::Value)) -> PathBuf {
    let mut config = train::hf::hf_config(&ModelConfig::preset("tiny").unwrap(), Some(1), Some(2));
    edit(&mut config);
    let path = dir.join("config.json");
    std::fs::write(&path, serde_json::to_vec(&config).unwrap()).unwrap();
    path
}

#[test]
fn hf_configs_with_bad_or_missing_fields_are_named() {
    let dir = scratch("hf-config");
    type Edit = fn(&mut serde_json::Value);
    let cases: [(&str, Edit); 5] = [
        ("num_attention_heads", |c| c["num_attention_heads"] = 0.into()),
        ("rms_norm_eps", |c| {
            c.as_object_mut().unwrap().remove("rms_norm_eps");
        }),
        ("max_position_embeddings", |c| {
            c.as_object_mut().unwrap().remove("max_position_embeddings");
        }),
        ("hidden_size", |c| c["hidden_size"] = "64".into()),
        ("sliding_window", |c| c["sliding_window"] = (-3).into()),
    ];
    for (field, edit) in cases {
        let path = hf_config(&dir, edit);
        let err = train::hf::read_hf_config(&path).unwrap_err().to_string();
        assert!(err.contains(field) && err.contains("config.json"), "{field}: {err}");
    }
    // Fields with a documented class default may be absent: Llama's num_key_value_heads is the
    // number of heads.
    let path = hf_config(&dir, |c| {
        let c = c.as_object_mut().unwrap();
        c.remove("num_key_value_heads");
        c.remove("head_dim");
    });
    let config = train::hf::read_hf_config(&path).unwrap();
    assert_eq!((config.n_kv_heads, config.head_dim), (config.n_heads, config.d_model / config.n_heads));
}

fn small_model(vocab_size: usize) -> Llama {
    let config = ModelConfig {
        vocab_size,
        d_model: 16,
        n_heads: 2,
        n_kv_heads: 1,
        head_dim: 8,
        ffn_dim: 32,
        layer_types: vec![AttnKind::Global],
        sliding_window: 0,
        rope_theta: 10_000.0,
        norm_eps: 1e-5,
        tie_embeddings: true,
        max_seq_len: 16,
        quant: None,
    };
    Llama::new(config, Device::Cpu, 0, false).unwrap()
}

#[test]
fn evaluation_items_that_do_not_fit_are_errors_and_empty_contexts_work() {
    let tok = corpus::tokenize::load(&shared("tokenizers/gpt-neo-test-tokenizer.json")).unwrap();
    let model = small_model(tok.get_vocab_size(true));
    // An empty context starts from the end-of-document token, as lm-evaluation-harness does.
    let items = [
        Item::Generate { context: String::new(), answers: vec!["paris".into()] },
        Item::Continuation { context: String::new(), continuation: "the".into() },
    ];
    let score = eval::evaluate(&model, &tok, "empty", &items).unwrap();
    assert_eq!(score.items, 2);
    let long = Item::Continuation { context: "Once".into(), continuation: "upon a time there was ".repeat(20) };
    let err = eval::evaluate(&model, &tok, "long", &[items[1].clone(), long]).unwrap_err().to_string();
    assert!(err.contains("item 2") && err.contains("longer than the model's window of 16"), "{err}");
}

#[test]
fn checkpoint_tensors_of_other_shapes_are_refused() {
    let dir = scratch("shapes");
    let model = small_model(97);
    let other = small_model(101);
    let weights = dir.join("model.safetensors");
    train::checkpoint::save_weights(&other, &weights).unwrap();
    let err = model.params.load(&train::checkpoint::read_tensors(&weights).unwrap(), "ckpt").unwrap_err().to_string();
    assert!(err.contains("shape"), "{err}");

    let mut optim = AdamW::new(AdamWConfig::default(), &model.params);
    let mut named: Vec<(String, Tensor)> = Vec::new();
    for i in 0..optim.m.len() {
        named.push((format!("m.{i}"), Tensor::zeros([3], (tch::Kind::Float, Device::Cpu))));
        named.push((format!("v.{i}"), optim.v[i].zeros_like()));
    }
    named.push(("step".into(), Tensor::from_slice(&[4i64])));
    Tensor::write_safetensors(&named, dir.join("optimizer.safetensors")).unwrap();
    let err = train::checkpoint::load_optimizer(&dir, &mut optim).unwrap_err().to_string();
    assert!(err.contains("optimizer.safetensors") && err.contains("m.0") && err.contains("shape"), "{err}");
}

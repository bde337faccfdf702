//! Hugging Face interchange.
//!
//! Export writes a `MinistralForCausalLM` directory: it is the Llama block exactly (RMSNorm,
//! SwiGLU, GQA, RoPE, no biases) plus a per-layer `layer_types` list of `sliding_attention` /
//! `full_attention` and one `sliding_window`, which is what the per-layer local/global pattern
//! needs; `transformers` loads it without custom code. Plain `LlamaForCausalLM` has no sliding
//! window, and MobileLLM-Pro's own class needs `trust_remote_code`.
//!
//! Import reads `llama`, `mistral` and `ministral` directories (safetensors, one file or
//! sharded with an index) so a teacher from the hub's ecosystem can be used offline.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::{Value, json};
use tch::{Device, Tensor};

use crate::checkpoint;
use crate::config::{AttnKind, ModelConfig};
use crate::model::Llama;
use crate::{Error, Result};

/// A model loaded for use (evaluation, generation, or as a teacher), with its tokenizer file.
pub struct Loaded {
    pub model: Llama,
    pub tokenizer: PathBuf,
}

/// Loads a mixforge checkpoint (step or run directory) or a Hugging Face model directory.
pub fn load_any(path: &Path, device: Device, trainable: bool) -> Result<Loaded> {
    if path.join(crate::int4::META).exists() {
        if device != Device::Cpu || trainable {
            return Err(Error::Config(format!(
                "{}: an int4 export runs on the CPU, for inference only (train from its source checkpoint)",
                path.display()
            )));
        }
        return Ok(Loaded {
            model: crate::int4::load(path, crate::int4::Precision::Bf16)?,
            tokenizer: path.join("tokenizer.json"),
        });
    }
    if path.join("config.json").exists() && !path.join("state.json").exists() {
        return load_hf(path, device, trainable);
    }
    let dir = checkpoint::resolve(path)?;
    let state = checkpoint::read_state(&dir)?;
    let model = Llama::new(state.config.model.clone(), device, 0, trainable)?;
    let weights = dir.join("model.safetensors");
    model.params.load(&checkpoint::read_tensors(&weights)?, &weights.display().to_string())?;
    Ok(Loaded { model, tokenizer: dir.join("tokenizer.json") })
}

/// The HF config of a model (Ministral).
pub fn hf_config(c: &ModelConfig, bos: Option<u32>, eos: Option<u32>) -> Value {
    let layer_types: Vec<&str> = c
        .layer_types
        .iter()
        .map(|k| match k {
            AttnKind::Global => "full_attention",
            AttnKind::Local => "sliding_attention",
        })
        .collect();
    json!({
        "architectures": ["MinistralForCausalLM"],
        "model_type": "ministral",
        "vocab_size": c.vocab_size,
        "hidden_size": c.d_model,
        "intermediate_size": c.ffn_dim,
        "num_hidden_layers": c.n_layers(),
        "num_attention_heads": c.n_heads,
        "num_key_value_heads": c.n_kv_heads,
        "head_dim": c.head_dim,
        "hidden_act": "silu",
        "max_position_embeddings": c.max_seq_len,
        "rms_norm_eps": c.norm_eps,
        "rope_theta": c.rope_theta,
        "rope_parameters": {"rope_type": "default", "rope_theta": c.rope_theta},
        "sliding_window": c.sliding_window,
        "layer_types": layer_types,
        "tie_word_embeddings": c.tie_embeddings,
        "attention_bias": false,
        "attention_dropout": 0.0,
        "initializer_range": 0.02,
        "use_cache": true,
        "bos_token_id": bos,
        "eos_token_id": eos,
        "torch_dtype": "float32",
    })
}

/// Writes `config.json`, `model.safetensors`, `tokenizer.json`, `tokenizer_config.json` and
/// `generation_config.json` into `out`.
pub fn export(model: &Llama, tokenizer_path: &Path, out: &Path) -> Result<()> {
    std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
    let tokenizer = corpus::tokenize::load(tokenizer_path)?;
    let eos = crate::data::eos_id(&tokenizer).ok();
    let bos = ["<|bos|>", "<s>", "<|begin_of_text|>", "<bos>"].iter().find_map(|t| tokenizer.token_to_id(t));
    let token = |id: Option<u32>| id.and_then(|i| tokenizer.id_to_token(i));
    let write_json = |name: &str, value: &Value| {
        let bytes = serde_json::to_vec_pretty(value).expect("json values serialize");
        corpus::atomic::write_file(&out.join(name), &bytes)
    };
    write_json("config.json", &hf_config(&model.config, bos, eos))?;
    let mut tokenizer_config = json!({
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": token(bos),
        "eos_token": token(eos),
        "model_max_length": model.config.max_seq_len,
    });
    // The chat template training used, so `apply_chat_template` gives the same ids; generation
    // stops at the end of an assistant turn as well as at the end of a document.
    let mut stops: Vec<u32> = eos.into_iter().collect();
    if corpus::chat::check_tokenizer(&tokenizer).is_ok() {
        tokenizer_config["chat_template"] = json!(corpus::chat::JINJA);
        stops.extend(tokenizer.token_to_id(corpus::chat::IM_END));
    }
    write_json("tokenizer_config.json", &tokenizer_config)?;
    let eos_ids = if stops.len() == 1 { json!(stops[0]) } else { json!(stops) };
    write_json("generation_config.json", &json!({"bos_token_id": bos, "eos_token_id": eos_ids}))?;
    corpus::atomic::write_via(&out.join("model.safetensors"), |tmp| match model.config.quant {
        None => checkpoint::save_weights(model, tmp),
        // The weights the quantized model computes with (its int8 activations are not expressible here).
        Some(_) => Ok(Tensor::write_safetensors(&model.effective_weights(), tmp)?),
    })?;
    let tokenizer_bytes = std::fs::read(tokenizer_path).map_err(|e| Error::io(tokenizer_path, e))?;
    corpus::atomic::write_file(&out.join("tokenizer.json"), &tokenizer_bytes)?;
    Ok(())
}

/// Reads a `llama`/`mistral`/`ministral` config.json into a [`ModelConfig`].
pub fn read_hf_config(path: &Path) -> Result<ModelConfig> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let v: Value = serde_json::from_str(&text).map_err(|e| Error::format(path, e.to_string()))?;
    let bad = |m: String| Error::format(path, m);
    let model_type = v["model_type"].as_str().unwrap_or("");
    if !["llama", "mistral", "ministral"].contains(&model_type) {
        return Err(bad(format!(
            "model_type {model_type:?} is not supported; mixforge reads llama, mistral and ministral models"
        )));
    }
    let int = |k: &str| {
        v[k].as_u64()
            .filter(|&x| x > 0 && x <= u32::MAX as u64)
            .map(|x| x as usize)
            .ok_or_else(|| bad(format!("{k} is missing or not a positive integer (got {})", v[k])))
    };
    // Fields transformers always writes are required; a few have a documented class default
    // (used when absent, and named in a warning so nothing is silently assumed).
    let mut defaulted = Vec::new();
    let mut optional_int = |k: &str, default: usize| -> Result<usize> {
        if v[k].is_null() {
            defaulted.push(format!("{k}={default}"));
            return Ok(default);
        }
        int(k)
    };
    let (d_model, n_heads) = (int("hidden_size")?, int("num_attention_heads")?);
    let n_layers = int("num_hidden_layers")?;
    let n_kv_heads = optional_int("num_key_value_heads", n_heads)?;
    let head_dim = optional_int("head_dim", d_model / n_heads)?;
    let float = |k: &str| {
        v[k].as_f64()
            .filter(|x| *x > 0.0 && x.is_finite())
            .ok_or_else(|| bad(format!("{k} is missing or not a positive number (got {})", v[k])))
    };
    if v["attention_bias"].as_bool() == Some(true) || v["mlp_bias"].as_bool() == Some(true) {
        return Err(bad("biases are not supported (attention_bias / mlp_bias)".into()));
    }
    let rope = &v["rope_parameters"];
    let scaling = if rope.is_object() { rope } else { &v["rope_scaling"] };
    if let Some(kind) = scaling["rope_type"].as_str().or(scaling["type"].as_str())
        && kind != "default"
    {
        return Err(bad(format!("RoPE scaling {kind:?} is not supported (only default RoPE)")));
    }
    let rope_theta = match rope["rope_theta"].as_f64().or(v["rope_theta"].as_f64()) {
        Some(theta) => theta,
        None if rope.is_null() && v["rope_theta"].is_null() => {
            defaulted.push("rope_theta=10000".into());
            10_000.0
        }
        None => return Err(bad("rope_theta is not a number".into())),
    };
    let window = match &v["sliding_window"] {
        Value::Null => None,
        w => Some(w.as_u64().ok_or_else(|| bad(format!("sliding_window is not an integer (got {w})")))? as usize),
    };
    let layer_types = match v["layer_types"].as_array() {
        Some(types) => types
            .iter()
            .map(|t| match t.as_str() {
                Some("full_attention") => Ok(AttnKind::Global),
                Some("sliding_attention") => Ok(AttnKind::Local),
                other => Err(bad(format!("layer type {other:?} is not supported"))),
            })
            .collect::<Result<Vec<_>>>()?,
        None if window.is_some() => vec![AttnKind::Local; n_layers],
        None => vec![AttnKind::Global; n_layers],
    };
    if layer_types.len() != n_layers {
        return Err(bad(format!("layer_types has {} entries for {n_layers} layers", layer_types.len())));
    }
    let tie_embeddings = match &v["tie_word_embeddings"] {
        Value::Null => {
            defaulted.push("tie_word_embeddings=false".into());
            false
        }
        t => t.as_bool().ok_or_else(|| bad(format!("tie_word_embeddings is not a boolean (got {t})")))?,
    };
    let config = ModelConfig {
        vocab_size: int("vocab_size")?,
        d_model,
        n_heads,
        n_kv_heads,
        head_dim,
        ffn_dim: int("intermediate_size")?,
        layer_types,
        sliding_window: window.unwrap_or(0),
        rope_theta,
        norm_eps: float("rms_norm_eps")?,
        tie_embeddings,
        max_seq_len: int("max_position_embeddings")?,
        quant: None,
    };
    config.validate().map_err(|e| bad(e.to_string()))?;
    if !defaulted.is_empty() {
        tracing::warn!(path = %path.display(), "absent from config.json, using the class defaults: {}", defaulted.join(", "));
    }
    Ok(config)
}

/// Loads a Hugging Face model directory (config.json, safetensors, tokenizer.json).
pub fn load_hf(dir: &Path, device: Device, trainable: bool) -> Result<Loaded> {
    let config = read_hf_config(&dir.join("config.json"))?;
    let mut tensors = BTreeMap::new();
    let index = dir.join("model.safetensors.index.json");
    let files: Vec<PathBuf> = if index.exists() {
        let text = std::fs::read_to_string(&index).map_err(|e| Error::io(&index, e))?;
        let v: Value = serde_json::from_str(&text).map_err(|e| Error::format(&index, e.to_string()))?;
        let map = v["weight_map"].as_object().ok_or_else(|| Error::format(&index, "weight_map is missing"))?;
        let mut names: Vec<&str> = map.values().filter_map(Value::as_str).collect();
        names.sort_unstable();
        names.dedup();
        names.into_iter().map(|n| dir.join(n)).collect()
    } else {
        vec![dir.join("model.safetensors")]
    };
    for file in files {
        tensors.extend(checkpoint::read_tensors(&file)?);
    }
    let model = Llama::new(config, device, 0, trainable)?;
    model.params.load(&tensors, &dir.display().to_string())?;
    let tokenizer = dir.join("tokenizer.json");
    if !tokenizer.exists() {
        return Err(Error::Data(format!("{} has no tokenizer.json", dir.display())));
    }
    Ok(Loaded { model, tokenizer })
}

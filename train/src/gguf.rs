//! GGUF export for llama.cpp: the `llama` architecture with Q4_0 matrices.
//!
//! Q4_0 stores blocks of 32 inputs as an fp16 scale `d` and 16 bytes of nibbles; the value of
//! nibble q is d·(q − 8), nibble j of a block in the low half of byte j and nibble j + 16 in its
//! high half. We write the quantized checkpoint's own codes and scales (never llama.cpp's
//! quantizer): the cpu scheme's groups of 32 are Q4_0 blocks, and the accel scheme's per-channel
//! scale is every block's `d`. The scales are fp16 already, so the file holds exactly the weights
//! the fake-quantized model computes with.
//!
//! What the `llama` architecture cannot express: a per-layer sliding window (llama.cpp attends
//! globally in every layer, which is exact for all-global models and for sequences no longer than
//! the window), and the cpu scheme's int8 activations (llama.cpp quantizes activations its own way).

use std::path::Path;

use tch::{Device, Kind, Tensor};

use crate::model::Llama;
use crate::quant::{GROUP, Int4};
use crate::{Error, Result};

const ALIGNMENT: usize = 32;
const TYPE_F32: u32 = 0;
const TYPE_Q4_0: u32 = 2;
/// `general.file_type`: LLAMA_FTYPE_MOSTLY_Q4_0.
const FILE_TYPE_Q4_0: u32 = 2;

enum Value {
    Bool(bool),
    U32(u32),
    F32(f32),
    Str(String),
    Strings(Vec<String>),
    I32s(Vec<i32>),
}

struct Writer {
    buf: Vec<u8>,
}

impl Writer {
    fn u32(&mut self, v: u32) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }
    fn u64(&mut self, v: u64) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }
    fn str(&mut self, s: &str) {
        self.u64(s.len() as u64);
        self.buf.extend_from_slice(s.as_bytes());
    }
    fn value(&mut self, v: &Value) {
        // GGUF value types: UINT32 4, INT32 5, FLOAT32 6, BOOL 7, STRING 8, ARRAY 9.
        match v {
            Value::Bool(x) => {
                self.u32(7);
                self.buf.push(u8::from(*x));
            }
            Value::U32(x) => {
                self.u32(4);
                self.u32(*x);
            }
            Value::F32(x) => {
                self.u32(6);
                self.buf.extend_from_slice(&x.to_le_bytes());
            }
            Value::Str(s) => {
                self.u32(8);
                self.str(s);
            }
            Value::Strings(xs) => {
                self.u32(9);
                self.u32(8);
                self.u64(xs.len() as u64);
                xs.iter().for_each(|s| self.str(s));
            }
            Value::I32s(xs) => {
                self.u32(9);
                self.u32(5);
                self.u64(xs.len() as u64);
                xs.iter().for_each(|x| self.buf.extend_from_slice(&x.to_le_bytes()));
            }
        }
    }
    fn pad(&mut self) {
        while !self.buf.len().is_multiple_of(ALIGNMENT) {
            self.buf.push(0);
        }
    }
}

/// One tensor to write: its GGUF name, `[out, in]` shape, type and bytes.
struct Entry {
    name: String,
    shape: [u64; 2],
    rank: usize,
    kind: u32,
    bytes: Vec<u8>,
}

fn f32_bytes(t: &Tensor) -> Vec<u8> {
    let v: Vec<f32> = Vec::try_from(t.to_device(Device::Cpu).to_kind(Kind::Float).flatten(0, -1)).expect("f32");
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// Q4_0 blocks of an int4 matrix (groups of 32, or per channel, whose scale repeats per block).
fn q4_0_bytes(q: &Int4) -> Vec<u8> {
    let (out, inp) = q.codes.size2().expect("[out, in]");
    let blocks = inp / GROUP as i64;
    let per_block = q.scales.repeat_interleave_self_int((q.group / GROUP) as i64, 1, None);
    // The scales are fp16 values already: this cast is exact.
    let scales: Vec<i16> =
        Vec::try_from(per_block.to_kind(Kind::Half).view_dtype(Kind::Int16).flatten(0, -1)).expect("f16 bits");
    let codes: Vec<i8> = Vec::try_from(q.codes.to_kind(Kind::Int8).flatten(0, -1)).expect("i8");
    let mut bytes = Vec::with_capacity((out * blocks * 18) as usize);
    for (b, chunk) in codes.chunks(GROUP).enumerate() {
        bytes.extend_from_slice(&scales[b].to_le_bytes());
        let nib = |j: usize| (chunk[j] + 8) as u8;
        bytes.extend((0..16).map(|j| nib(j) | (nib(j + 16) << 4)));
    }
    bytes
}

/// HF's rotate-half Q/K rows in llama.cpp's interleaved order (convert_hf_to_gguf's `permute`).
fn rope_rows(rows: i64, heads: i64) -> Tensor {
    Tensor::arange(rows, (Kind::Int64, Device::Cpu)).view([heads, 2, rows / heads / 2]).transpose(1, 2).flatten(0, -1)
}

fn gguf_name(hf: &str) -> String {
    let renames = [
        ("self_attn.q_proj", "attn_q"),
        ("self_attn.k_proj", "attn_k"),
        ("self_attn.v_proj", "attn_v"),
        ("self_attn.o_proj", "attn_output"),
        ("mlp.gate_proj", "ffn_gate"),
        ("mlp.up_proj", "ffn_up"),
        ("mlp.down_proj", "ffn_down"),
        ("input_layernorm", "attn_norm"),
        ("post_attention_layernorm", "ffn_norm"),
    ];
    match hf {
        "model.embed_tokens.weight" => "token_embd.weight".into(),
        "model.norm.weight" => "output_norm.weight".into(),
        "lm_head.weight" => "output.weight".into(),
        _ => {
            let rest = hf.strip_prefix("model.layers.").unwrap_or(hf);
            let (layer, module) = rest.split_once('.').unwrap_or((rest, ""));
            let module = module.strip_suffix(".weight").unwrap_or(module);
            let short = renames.iter().find(|(h, _)| *h == module).map_or(module, |(_, g)| g);
            format!("blk.{layer}.{short}.weight")
        }
    }
}

/// The tokenizer as GGUF's `gpt2` (byte-level BPE) vocabulary, padded to the model's vocabulary.
fn tokenizer_values(tokenizer_path: &Path, vocab_size: usize) -> Result<Vec<(&'static str, Value)>> {
    let text = std::fs::read_to_string(tokenizer_path).map_err(|e| Error::io(tokenizer_path, e))?;
    let json: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| Error::format(tokenizer_path, e.to_string()))?;
    let model = &json["model"];
    if model["type"] != "BPE" {
        return Err(Error::format(
            tokenizer_path,
            format!("GGUF export writes byte-level BPE tokenizers; this one is {}", model["type"]),
        ));
    }
    let mut tokens: Vec<Option<String>> = vec![None; vocab_size];
    let mut types = vec![1i32; vocab_size];
    let vocab = model["vocab"].as_object().ok_or_else(|| Error::format(tokenizer_path, "model.vocab is not a map"))?;
    for (token, id) in vocab {
        if let Some(slot) = id.as_u64().and_then(|i| tokens.get_mut(i as usize)) {
            *slot = Some(token.clone());
        }
    }
    for added in json["added_tokens"].as_array().into_iter().flatten() {
        if let (Some(id), Some(content)) = (added["id"].as_u64(), added["content"].as_str())
            && (id as usize) < vocab_size
        {
            tokens[id as usize] = Some(content.to_string());
            types[id as usize] = if added["special"].as_bool() == Some(true) { 3 } else { 4 };
        }
    }
    let tokens: Vec<String> = tokens
        .into_iter()
        .enumerate()
        .map(|(i, t)| {
            t.unwrap_or_else(|| {
                types[i] = 5;
                format!("[PAD{i}]")
            })
        })
        .collect();
    let merges: Vec<String> = model["merges"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|m| match m {
            serde_json::Value::String(s) => Some(s.clone()),
            serde_json::Value::Array(pair) => Some(format!("{} {}", pair.first()?.as_str()?, pair.get(1)?.as_str()?)),
            _ => None,
        })
        .collect();
    let find = |t: &str| tokens.iter().position(|x| x == t).map(|i| i as u32);
    let mut values = vec![
        ("tokenizer.ggml.model", Value::Str("gpt2".into())),
        ("tokenizer.ggml.pre", Value::Str("gpt-2".into())),
        ("tokenizer.ggml.tokens", Value::Strings(tokens.clone())),
        ("tokenizer.ggml.token_type", Value::I32s(types)),
        ("tokenizer.ggml.merges", Value::Strings(merges)),
        // mixforge trains without a leading BOS.
        ("tokenizer.ggml.add_bos_token", Value::Bool(false)),
    ];
    if let Some(bos) = ["<|bos|>", "<s>", "<|begin_of_text|>", "<bos>"].iter().find_map(|t| find(t)) {
        values.push(("tokenizer.ggml.bos_token_id", Value::U32(bos)));
    }
    if let Some(eos) = ["<|eos|>", "</s>", "<|end_of_text|>", "<eos>", "<|endoftext|>"].iter().find_map(|t| find(t)) {
        values.push(("tokenizer.ggml.eos_token_id", Value::U32(eos)));
    }
    Ok(values)
}

/// Writes `model` (quantized) as one GGUF file at `out`, atomically.
pub fn export(model: &Llama, tokenizer: &Path, out: &Path) -> Result<()> {
    let c = &model.config;
    let int4: std::collections::BTreeMap<String, Int4> = model.int4_weights()?.into_iter().collect();
    if let Some((name, q)) = int4.iter().find(|(_, q)| !q.group.is_multiple_of(GROUP)) {
        return Err(Error::Config(format!("{name}: Q4_0 needs groups of {GROUP} inputs, this one has {}", q.group)));
    }
    let mut entries = Vec::new();
    for (name, t) in model.effective_weights() {
        let heads = if name.ends_with("q_proj.weight") {
            Some(c.n_heads as i64)
        } else if name.ends_with("k_proj.weight") {
            Some(c.n_kv_heads as i64)
        } else {
            None
        };
        let size = t.size();
        let (shape, rank) = match size.as_slice() {
            [n] => ([*n as u64, 1], 1),
            [o, i] => ([*o as u64, *i as u64], 2),
            _ => return Err(Error::Data(format!("{name}: unexpected shape {size:?}"))),
        };
        let (kind, bytes) = match int4.get(&name) {
            Some(q) => {
                let q = match heads {
                    Some(h) => {
                        let rows = rope_rows(size[0], h);
                        Int4 {
                            codes: q.codes.index_select(0, &rows),
                            scales: q.scales.index_select(0, &rows),
                            group: q.group,
                        }
                    }
                    None => Int4 { codes: q.codes.shallow_clone(), scales: q.scales.shallow_clone(), group: q.group },
                };
                (TYPE_Q4_0, q4_0_bytes(&q))
            }
            None => {
                let t = match heads {
                    Some(h) => t.index_select(0, &rope_rows(size[0], h)),
                    None => t,
                };
                (TYPE_F32, f32_bytes(&t))
            }
        };
        entries.push(Entry { name: gguf_name(&name), shape, rank, kind, bytes });
    }
    let mut kv: Vec<(&str, Value)> = vec![
        ("general.architecture", Value::Str("llama".into())),
        ("general.name", Value::Str("mixforge".into())),
        ("general.file_type", Value::U32(FILE_TYPE_Q4_0)),
        ("general.alignment", Value::U32(ALIGNMENT as u32)),
        ("llama.context_length", Value::U32(c.max_seq_len as u32)),
        ("llama.embedding_length", Value::U32(c.d_model as u32)),
        ("llama.block_count", Value::U32(c.n_layers() as u32)),
        ("llama.feed_forward_length", Value::U32(c.ffn_dim as u32)),
        ("llama.attention.head_count", Value::U32(c.n_heads as u32)),
        ("llama.attention.head_count_kv", Value::U32(c.n_kv_heads as u32)),
        ("llama.attention.key_length", Value::U32(c.head_dim as u32)),
        ("llama.attention.value_length", Value::U32(c.head_dim as u32)),
        ("llama.attention.layer_norm_rms_epsilon", Value::F32(c.norm_eps as f32)),
        ("llama.rope.freq_base", Value::F32(c.rope_theta as f32)),
        ("llama.rope.dimension_count", Value::U32(c.head_dim as u32)),
        ("llama.vocab_size", Value::U32(c.vocab_size as u32)),
    ];
    kv.extend(tokenizer_values(tokenizer, c.vocab_size)?);

    let mut w = Writer { buf: Vec::new() };
    w.u32(0x4655_4747); // "GGUF"
    w.u32(3);
    w.u64(entries.len() as u64);
    w.u64(kv.len() as u64);
    for (key, value) in &kv {
        w.str(key);
        w.value(value);
    }
    let mut offset = 0u64;
    for e in &entries {
        w.str(&e.name);
        w.u32(e.rank as u32);
        // GGUF lists dimensions innermost first: [in, out].
        if e.rank == 1 {
            w.u64(e.shape[0]);
        } else {
            w.u64(e.shape[1]);
            w.u64(e.shape[0]);
        }
        w.u32(e.kind);
        w.u64(offset);
        offset += e.bytes.len().next_multiple_of(ALIGNMENT) as u64;
    }
    w.pad();
    for e in &entries {
        w.buf.extend_from_slice(&e.bytes);
        w.pad();
    }
    corpus::atomic::write_file(out, &w.buf)?;
    Ok(())
}

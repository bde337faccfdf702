//! Text generation: greedy or sampled continuation of a prompt (full recompute per token;
//! the models here are small and prompts short).

use tch::{Kind, Tensor};
use tokenizers::Tokenizer;

use crate::model::{Inputs, Llama};
use crate::{Error, Result};

#[derive(Debug, Clone, Copy)]
pub struct Sampling {
    /// 0 = greedy.
    pub temperature: f64,
    /// Keep the k most likely tokens (0 = all).
    pub top_k: i64,
    pub seed: u64,
}

fn encode(tok: &Tokenizer, text: &str) -> Result<Vec<i64>> {
    let enc = tok.encode_fast(text, false).map_err(|e| Error::Data(format!("tokenizing: {e}")))?;
    Ok(enc.get_ids().iter().map(|&x| i64::from(x)).collect())
}

fn decode(tok: &Tokenizer, ids: &[i64]) -> Result<String> {
    let ids: Vec<u32> = ids.iter().map(|&x| x as u32).collect();
    tok.decode(&ids, true).map_err(|e| Error::Data(format!("decoding: {e}")))
}

/// The prompt's ids; an empty prompt starts from the end-of-document token (as a document
/// boundary), as lm-evaluation-harness does for an empty context.
fn prompt_ids(tok: &Tokenizer, prompt: &str, eos: i64) -> Result<Vec<i64>> {
    let mut ids = encode(tok, prompt)?;
    if ids.is_empty() {
        ids.push(eos);
    }
    Ok(ids)
}

/// Generates up to `max_new` tokens after `prompt`, stopping at the end-of-document token.
pub fn generate(model: &Llama, tok: &Tokenizer, prompt: &str, max_new: usize, sampling: Sampling) -> Result<String> {
    let eos = i64::from(crate::data::eos_id(tok)?);
    let mut ids = prompt_ids(tok, prompt, eos)?;
    let start = ids.len();
    tch::manual_seed(sampling.seed as i64);
    for _ in 0..max_new {
        let next = next_token(model, &ids, sampling);
        if next == eos {
            break;
        }
        ids.push(next);
    }
    decode(tok, &ids[start..])
}

/// The assistant's reply to `messages`: the chat template with an open assistant turn,
/// continued until `<|im_end|>` (or the end-of-document token).
pub fn chat(
    model: &Llama,
    tok: &Tokenizer,
    messages: &[corpus::instruct::Message],
    max_new: usize,
    sampling: Sampling,
) -> Result<String> {
    corpus::chat::check_tokenizer(tok)?;
    let stops = [crate::data::eos_id(tok)?, tok.token_to_id(corpus::chat::IM_END).expect("checked")].map(i64::from);
    let mut ids: Vec<i64> = corpus::chat::encode_prompt(tok, messages)?.into_iter().map(i64::from).collect();
    let start = ids.len();
    tch::manual_seed(sampling.seed as i64);
    for _ in 0..max_new {
        let next = next_token(model, &ids, sampling);
        if stops.contains(&next) {
            break;
        }
        ids.push(next);
    }
    decode(tok, &ids[start..])
}

/// Greedy continuation, cut at the first of `stops` (as generation-style tasks score it).
pub fn greedy_until(model: &Llama, tok: &Tokenizer, prompt: &str, max_new: usize, stops: &[&str]) -> Result<String> {
    let eos = i64::from(crate::data::eos_id(tok)?);
    let mut ids = prompt_ids(tok, prompt, eos)?;
    let start = ids.len();
    let greedy = Sampling { temperature: 0.0, top_k: 0, seed: 0 };
    for _ in 0..max_new {
        let next = next_token(model, &ids, greedy);
        if next == eos {
            break;
        }
        ids.push(next);
        let text = decode(tok, &ids[start..])?;
        if let Some(cut) = stops.iter().filter_map(|s| text.find(s)).min() {
            return Ok(text[..cut].to_string());
        }
    }
    decode(tok, &ids[start..])
}

/// The next `n` greedy tokens after `ids`.
pub fn greedy_ids(model: &Llama, ids: &[i64], n: usize) -> Vec<i64> {
    let mut ids = ids.to_vec();
    let greedy = Sampling { temperature: 0.0, top_k: 0, seed: 0 };
    for _ in 0..n {
        ids.push(next_token(model, &ids, greedy));
    }
    ids.split_off(ids.len() - n)
}

fn next_token(model: &Llama, ids: &[i64], s: Sampling) -> i64 {
    let window = &ids[ids.len().saturating_sub(model.config.max_seq_len)..];
    tch::no_grad(|| {
        let tokens = Tensor::from_slice(window).view([1, -1]).to_device(model.device);
        let logits = model.forward(&Inputs::tokens(tokens)).select(0, 0).select(0, window.len() as i64 - 1);
        if s.temperature <= 0.0 {
            return logits.argmax(-1, false).int64_value(&[]);
        }
        let mut logits = logits / s.temperature;
        if s.top_k > 0 && s.top_k < logits.size()[0] {
            let (top, _) = logits.topk(s.top_k, -1, true, true);
            let floor = top.select(0, s.top_k - 1);
            logits =
                logits.where_self(&logits.ge_tensor(&floor), &Tensor::from(f64::NEG_INFINITY).to_device(model.device));
        }
        logits.softmax(-1, Kind::Float).multinomial(1, false).int64_value(&[0])
    })
}

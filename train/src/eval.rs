//! Task evaluation in lm-evaluation-harness's manner, for JSONL files of four shapes:
//! - `query` + `choices` + `gold`: multiple choice by log-likelihood of `" " + choice` after
//!   the query; `acc` and `acc_norm` (log-likelihood divided by the choice's length in characters);
//! - `context_options` + `continuation` + `gold`: partial scoring, the same continuation after
//!   each context (Winogrande); `acc`;
//! - `context` + `continuation`: `acc` when the continuation is the greedy one, and perplexity
//!   (LAMBADA);
//! - `context` + `answer` (+ `aliases`): greedy generation up to a newline, `.` or `,`, exact
//!   match after lowercasing and removing punctuation and articles (TriviaQA);
//! - `question` + `answer` with a final `#### N` (GSM8K): greedy generation after
//!   `Question: …\nAnswer:` up to a blank line, scored by the last number in the output
//!   against N (exact match, commas ignored).

use std::path::Path;

use serde::Serialize;
use tch::{Kind, Tensor};
use tokenizers::Tokenizer;

use crate::generate;
use crate::model::{Inputs, Llama};
use crate::{Error, Result};

/// One item of a task file.
#[derive(Debug, Clone, PartialEq)]
pub enum Item {
    Choice { context: String, choices: Vec<String>, gold: usize },
    Options { contexts: Vec<String>, continuation: String, gold: usize },
    Continuation { context: String, continuation: String },
    Generate { context: String, answers: Vec<String> },
    Math { question: String, answer: String },
    Needle(crate::niah::Needle),
}

/// Scores of one task.
#[derive(Debug, Clone, Serialize)]
pub struct TaskScore {
    pub task: String,
    pub items: usize,
    pub acc: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub acc_norm: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub perplexity: Option<f64>,
    /// Needle items: share whose key outscores every distractor (`acc` is exact match).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rank_acc: Option<f64>,
    /// Needle items: the scores per (length, depth).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub grid: Option<Vec<crate::niah::Cell>>,
}

/// Reads a task file, naming the line of any item it can't use.
pub fn read_task(path: &Path, limit: Option<usize>) -> Result<Vec<Item>> {
    // Plain, or compressed by extension (`.gz`, `.zst`), as the demo's GSM8K test set is.
    let text = corpus::ingest::read_text(path)?;
    let mut items = Vec::new();
    for (i, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        if limit.is_some_and(|n| items.len() >= n) {
            break;
        }
        let at = |m: String| Error::format(path, format!("line {}: {m}", i + 1));
        let v: serde_json::Value = serde_json::from_str(line).map_err(|e| at(format!("invalid JSON: {e}")))?;
        items.push(parse_item(&v).map_err(at)?);
    }
    if items.is_empty() {
        return Err(Error::format(path, "no items"));
    }
    Ok(items)
}

fn parse_item(v: &serde_json::Value) -> std::result::Result<Item, String> {
    let s = |k: &str| v[k].as_str().map(str::to_string);
    let strings = |k: &str| -> Option<Vec<String>> {
        v[k].as_array().map(|a| a.iter().filter_map(|x| x.as_str().map(str::to_string)).collect())
    };
    if let Some(needle) = crate::niah::parse(v) {
        return needle.map(Item::Needle);
    }
    let gold = |n: usize| -> std::result::Result<usize, String> {
        let g = v["gold"].as_u64().ok_or("gold is missing or not an integer")? as usize;
        if g >= n { Err(format!("gold {g} is out of range for {n} options")) } else { Ok(g) }
    };
    if let (Some(context), Some(choices)) = (s("query"), strings("choices")) {
        let gold = gold(choices.len())?;
        return Ok(Item::Choice { context, choices, gold });
    }
    if let (Some(contexts), Some(continuation)) = (strings("context_options"), s("continuation")) {
        let gold = gold(contexts.len())?;
        return Ok(Item::Options { contexts, continuation, gold });
    }
    if let (Some(context), Some(continuation)) = (s("context"), s("continuation")) {
        return Ok(Item::Continuation { context, continuation });
    }
    if let (Some(context), Some(answer)) = (s("context"), s("answer")) {
        let mut answers = vec![answer];
        answers.extend(strings("aliases").unwrap_or_default());
        return Ok(Item::Generate { context, answers });
    }
    if let (Some(question), Some(answer)) = (s("question"), s("answer")) {
        let answer = answer.rsplit("####").next().map(|a| a.trim().replace(',', "")).unwrap_or_default();
        if answer.is_empty() {
            return Err("answer has no final `#### N`".into());
        }
        return Ok(Item::Math { question, answer });
    }
    Err("unknown item shape: expected query+choices+gold, context_options+continuation+gold, \
         context+continuation, context+answer, question+answer, or context+key+distractors+length+depth"
        .into())
}

/// Log-likelihood of `continuation` after `context`, and whether it is the greedy continuation.
///
/// As lm-evaluation-harness does: trailing spaces of the context move to the continuation;
/// the continuation's tokens are those of `encode(context + continuation)` after
/// `encode(context)`; an empty context is replaced by the end-of-document token; inputs
/// longer than the model's window keep their last tokens.
pub fn loglikelihood(
    model: &Llama,
    tok: &Tokenizer,
    eos: u32,
    context: &str,
    continuation: &str,
) -> Result<(f64, bool)> {
    let trimmed = context.trim_end();
    let (context, continuation) = (trimmed, format!("{}{}", &context[trimmed.len()..], continuation));
    let enc = |s: &str| -> Result<Vec<u32>> {
        Ok(tok.encode_fast(s, false).map_err(|e| Error::Data(format!("tokenizing: {e}")))?.get_ids().to_vec())
    };
    let whole = enc(&format!("{context}{continuation}"))?;
    let ctx = if context.is_empty() { Vec::new() } else { enc(context)? };
    let n_ctx = ctx.len().min(whole.len());
    let (mut prefix, target) = (whole[..n_ctx].to_vec(), whole[n_ctx..].to_vec());
    if target.is_empty() {
        return Ok((0.0, true));
    }
    if prefix.is_empty() {
        prefix.push(eos);
    }
    if target.len() > model.config.max_seq_len {
        return Err(Error::Data(format!(
            "the continuation is {} tokens, longer than the model's window of {} tokens",
            target.len(),
            model.config.max_seq_len
        )));
    }
    let mut all: Vec<i64> = prefix.iter().chain(&target).map(|&x| i64::from(x)).collect();
    let max = model.config.max_seq_len + 1;
    if all.len() > max {
        all.drain(..all.len() - max);
    }
    let input = &all[..all.len() - 1];
    let n = target.len() as i64;
    tch::no_grad(|| {
        let tokens = Tensor::from_slice(input).view([1, -1]).to_device(model.device);
        let logits = model.forward(&Inputs::tokens(tokens)).squeeze_dim(0);
        let t = logits.size()[0];
        let logp = logits.narrow(0, t - n, n).log_softmax(-1, Kind::Float);
        let targets = Tensor::from_slice(&all[all.len() - n as usize..]).to_device(model.device);
        let ll = logp.gather(1, &targets.unsqueeze(1), false).sum(Kind::Double).double_value(&[]);
        let greedy = logp.argmax(-1, false).eq_tensor(&targets).all().int64_value(&[]) == 1;
        Ok((ll, greedy))
    })
}

/// Scores a task's items.
pub fn evaluate(model: &Llama, tok: &Tokenizer, task: &str, items: &[Item]) -> Result<TaskScore> {
    let eos = crate::data::eos_id(tok)?;
    let (mut hits, mut hits_norm, mut has_norm) = (0usize, 0usize, false);
    let (mut ll_sum, mut ll_tokens, mut has_ppl) = (0.0, 0usize, false);
    let (mut needles, mut needle_scores) = (Vec::new(), Vec::new());
    for (k, item) in items.iter().enumerate() {
        let at = |e: Error| Error::Data(format!("task {task}, item {}: {e}", k + 1));
        match item {
            Item::Choice { context, choices, gold } => {
                let lls = choices
                    .iter()
                    .map(|c| Ok(loglikelihood(model, tok, eos, context, &format!(" {c}")).map_err(at)?.0))
                    .collect::<Result<Vec<f64>>>()?;
                let norm: Vec<f64> =
                    lls.iter().zip(choices).map(|(ll, c)| ll / c.chars().count().max(1) as f64).collect();
                hits += usize::from(argmax(&lls) == *gold);
                hits_norm += usize::from(argmax(&norm) == *gold);
                has_norm = true;
            }
            Item::Options { contexts, continuation, gold } => {
                let lls = contexts
                    .iter()
                    .map(|c| Ok(loglikelihood(model, tok, eos, c, &format!(" {continuation}")).map_err(at)?.0))
                    .collect::<Result<Vec<f64>>>()?;
                hits += usize::from(argmax(&lls) == *gold);
            }
            Item::Continuation { context, continuation } => {
                let (ll, greedy) = loglikelihood(model, tok, eos, context, &format!(" {continuation}")).map_err(at)?;
                hits += usize::from(greedy);
                ll_sum += ll;
                ll_tokens += 1;
                has_ppl = true;
            }
            Item::Generate { context, answers } => {
                let out = generate::greedy_until(model, tok, context, 32, &["\n", ".", ","]).map_err(at)?;
                let got = normalize_answer(&out);
                hits += usize::from(answers.iter().any(|a| normalize_answer(a) == got));
            }
            Item::Math { question, answer } => {
                let prompt = format!("Question: {question}\nAnswer:");
                let out = generate::greedy_until(model, tok, &prompt, 256, &["\n\n", "Question:"]).map_err(at)?;
                hits += usize::from(last_number(&out).as_deref() == Some(answer.as_str()));
            }
            Item::Needle(needle) => {
                let score = crate::niah::score(model, tok, needle).map_err(at)?;
                hits += usize::from(score.exact);
                needles.push(needle.clone());
                needle_scores.push(score);
            }
        }
    }
    let has_needles = !needles.is_empty();
    let ranked = needle_scores.iter().filter(|s| s.rank == 1).count();
    let n = items.len() as f64;
    Ok(TaskScore {
        task: task.to_string(),
        items: items.len(),
        acc: hits as f64 / n,
        acc_norm: has_norm.then(|| hits_norm as f64 / n),
        // lm-eval's LAMBADA perplexity: exp of the mean negative log-likelihood per item.
        perplexity: has_ppl.then(|| (-ll_sum / ll_tokens.max(1) as f64).exp()),
        rank_acc: has_needles.then(|| ranked as f64 / needles.len() as f64),
        grid: has_needles.then(|| crate::niah::grid(&needles, &needle_scores)),
    })
}

/// Scores a task on an instruction-tuned model: generation items (`question`/`answer` math,
/// `context`/`answer`) are asked as the user's turn through the chat template and the reply (to
/// `<|im_end|>`) is checked as [`evaluate`] checks a completion (math: the last number; short
/// answers: the first line, normalized). Other item shapes are scored as [`evaluate`] does.
pub fn evaluate_chat(model: &Llama, tok: &Tokenizer, task: &str, items: &[Item]) -> Result<TaskScore> {
    if !items.iter().all(|i| matches!(i, Item::Math { .. } | Item::Generate { .. })) {
        return evaluate(model, tok, task, items);
    }
    let greedy = generate::Sampling { temperature: 0.0, top_k: 0, seed: 0 };
    let ask =
        |q: &str, max: usize| generate::chat(model, tok, &[corpus::instruct::Message::new("user", q)], max, greedy);
    let mut hits = 0usize;
    for (k, item) in items.iter().enumerate() {
        let at = |e: Error| Error::Data(format!("task {task}, item {}: {e}", k + 1));
        hits += usize::from(match item {
            Item::Math { question, answer } => last_number(&ask(question, 256).map_err(at)?).as_deref() == Some(answer),
            Item::Generate { context, answers } => {
                let reply = ask(context, 32).map_err(at)?;
                let got = normalize_answer(reply.lines().next().unwrap_or_default());
                answers.iter().any(|a| normalize_answer(a) == got)
            }
            _ => unreachable!("checked above"),
        });
    }
    Ok(TaskScore {
        task: task.to_string(),
        items: items.len(),
        acc: hits as f64 / items.len().max(1) as f64,
        acc_norm: None,
        perplexity: None,
        rank_acc: None,
        grid: None,
    })
}

/// The first index of the largest value.
fn argmax(xs: &[f64]) -> usize {
    let mut best = 0;
    for (i, x) in xs.iter().enumerate() {
        if *x > xs[best] {
            best = i;
        }
    }
    best
}

fn normalize_answer(s: &str) -> String {
    let lower: String = s.to_lowercase().chars().filter(|c| !c.is_ascii_punctuation()).collect();
    lower.split_whitespace().filter(|w| !matches!(*w, "a" | "an" | "the")).collect::<Vec<_>>().join(" ")
}

/// The last number in a text (commas dropped, a trailing period trimmed).
fn last_number(text: &str) -> Option<String> {
    text.split(|c: char| !(c.is_ascii_digit() || c == '.' || c == ',' || c == '-'))
        .map(|w| w.replace(',', "").trim_end_matches('.').to_string())
        .rfind(|w| w.chars().any(|c| c.is_ascii_digit()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_shape_and_names_bad_items() {
        let item = |j: &str| parse_item(&serde_json::from_str(j).unwrap());
        assert!(matches!(item(r#"{"query":"q","choices":["a","b"],"gold":1}"#), Ok(Item::Choice { gold: 1, .. })));
        assert!(matches!(
            item(r#"{"context_options":["a","b"],"continuation":"c","gold":0}"#),
            Ok(Item::Options { .. })
        ));
        assert!(matches!(item(r#"{"context":"a","continuation":"b"}"#), Ok(Item::Continuation { .. })));
        assert!(matches!(item(r#"{"context":"a","answer":"b","aliases":["c"]}"#), Ok(Item::Generate { .. })));
        assert_eq!(
            item(r#"{"question":"q","answer":"so 1,234\n#### 1,234"}"#).unwrap(),
            Item::Math { question: "q".into(), answer: "1234".into() }
        );
        assert!(item(r#"{"query":"q","choices":["a"],"gold":3}"#).unwrap_err().contains("out of range"));
        assert!(item(r#"{"foo":1}"#).unwrap_err().contains("unknown item shape"));
    }

    #[test]
    fn answers_are_normalized_and_numbers_extracted() {
        assert_eq!(normalize_answer("The Onion!"), "onion");
        assert_eq!(last_number("She makes 9 * 2 = $18 each day, so 1,800."), Some("1800".into()));
        assert_eq!(last_number("no digits"), None);
    }
}

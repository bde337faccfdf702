//! Long-context distillation pieces against their references: chunked losses against whole
//! ones (values and gradients), needle items (length, depth, chance level) and teacher-forced
//! exact match against greedy decoding.

use std::path::PathBuf;

use proptest::prelude::*;
use tch::{Device, Kind, Tensor};
use train::config::{AttnKind, ModelConfig};
use train::loss::{self, KdConfig};
use train::model::{Inputs, Llama};
use train::niah::{self, Filler, MakeConfig};

fn tiny(vocab: usize) -> ModelConfig {
    ModelConfig {
        vocab_size: vocab,
        d_model: 32,
        n_heads: 4,
        n_kv_heads: 2,
        head_dim: 8,
        ffn_dim: 48,
        layer_types: vec![AttnKind::Global, AttnKind::Local],
        sliding_window: 16,
        rope_theta: 10_000.0,
        norm_eps: 1e-5,
        tie_embeddings: true,
        max_seq_len: 512,
        quant: None,
    }
}

fn shared(path: &str) -> PathBuf {
    let p = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_else(|| env!("CARGO_MANIFEST_DIR").into()))
        .join("../../shared/data")
        .join(path);
    assert!(p.exists(), "{} is missing: this test reads ../shared/data", p.display());
    p
}

fn random_ids(shape: [i64; 2], vocab: i64, seed: i64) -> Tensor {
    tch::manual_seed(seed);
    Tensor::randint(vocab, shape, (Kind::Int64, Device::Cpu))
}

/// Every parameter's gradient, then cleared.
fn take_grads(model: &mut Llama) -> Vec<Tensor> {
    let grads = model.params.flat_grads().iter().map(|g| g.copy()).collect();
    model.params.zero_grads();
    grads
}

fn max_diff(a: &[Tensor], b: &[Tensor]) -> f64 {
    a.iter().zip(b).map(|(x, y)| (x - y).abs().max().double_value(&[])).fold(0.0, f64::max)
}

#[test]
fn chunked_ce_and_kl_equal_the_whole_losses_and_their_gradients() {
    let mut student = Llama::new(tiny(301), Device::Cpu, 1, true).unwrap();
    let teacher = Llama::new(tiny(301), Device::Cpu, 2, false).unwrap();
    let all = random_ids([3, 41], 301, 7);
    let inputs = Inputs::tokens(all.narrow(1, 0, 40));
    let targets = all.narrow(1, 1, 40);
    for kd in [KdConfig { temperature: 1.0, ce_weight: 0.0 }, KdConfig { temperature: 2.0, ce_weight: 0.5 }] {
        for with_teacher in [false, true] {
            // The whole loss, from whole logits.
            let logits = student.forward(&inputs);
            let whole = if with_teacher {
                let t = tch::no_grad(|| teacher.forward(&inputs));
                loss::distillation(&logits, &t, &targets, &kd)
            } else {
                loss::cross_entropy(&logits, &targets)
            };
            (&whole * 0.5).backward();
            let want = take_grads(&mut student);
            for chunk in [1, 7, 64, 1000] {
                let t = with_teacher.then_some(loss::Teacher::Online(&teacher, &inputs));
                let got = loss::window_loss(&student, &inputs, &targets, t, &kd, chunk, 0.5);
                assert!((got - whole.double_value(&[])).abs() < 1e-5, "chunk {chunk}: {got} vs {whole}");
                let grads = take_grads(&mut student);
                let diff = max_diff(&grads, &want);
                assert!(diff < 1e-6, "chunk {chunk}, teacher {with_teacher}: gradients differ by {diff}");
            }
        }
    }
}

#[test]
fn a_cache_of_the_whole_vocabulary_is_the_online_teacher() {
    let mut student = Llama::new(tiny(97), Device::Cpu, 1, true).unwrap();
    let teacher = Llama::new(tiny(97), Device::Cpu, 2, false).unwrap();
    let all = random_ids([2, 25], 97, 5);
    let inputs = Inputs::tokens(all.narrow(1, 0, 24));
    let targets = all.narrow(1, 1, 24);
    for kd in [KdConfig { temperature: 1.0, ce_weight: 0.0 }, KdConfig { temperature: 2.0, ce_weight: 0.3 }] {
        let online =
            loss::window_loss(&student, &inputs, &targets, Some(loss::Teacher::Online(&teacher, &inputs)), &kd, 7, 1.0);
        let want = take_grads(&mut student);
        let logp = tch::no_grad(|| (teacher.forward(&inputs) / kd.temperature).log_softmax(-1, Kind::Float));
        let (values, indices) = logp.view([-1, 97]).topk(97, -1, true, true);
        let cached = train::teacher_cache::CachedBatch { indices, logprobs: values };
        let got = loss::window_loss(&student, &inputs, &targets, Some(loss::Teacher::Cached(&cached)), &kd, 7, 1.0);
        assert!((got - online).abs() < 1e-5, "{got} vs {online}");
        let diff = max_diff(&take_grads(&mut student), &want);
        assert!(diff < 1e-6, "gradients differ by {diff}");
    }
}

#[test]
fn kl_from_itself_is_zero_with_zero_gradient() {
    let mut student = Llama::new(tiny(101), Device::Cpu, 4, true).unwrap();
    let teacher = Llama::new(tiny(101), Device::Cpu, 4, false).unwrap();
    let all = random_ids([2, 33], 101, 3);
    let inputs = Inputs::tokens(all.narrow(1, 0, 32));
    let kd = KdConfig::default();
    let kl = loss::window_loss(
        &student,
        &inputs,
        &all.narrow(1, 1, 32),
        Some(loss::Teacher::Online(&teacher, &inputs)),
        &kd,
        9,
        1.0,
    );
    assert!(kl.abs() < 1e-6, "KL {kl}");
    let grads = take_grads(&mut student);
    let largest = grads.iter().map(|g| g.abs().max().double_value(&[])).fold(0.0, f64::max);
    assert!(largest < 1e-6, "gradient {largest}");
}

fn filler_and_tokenizer() -> (Filler, tokenizers::Tokenizer) {
    let tok = corpus::tokenize::load(&shared("tokenizers/llama-test-tokenizer.json")).unwrap();
    let text = std::fs::read_to_string(shared("corpus/wiki/wikitext-2-test.txt")).unwrap();
    let text: String = text.chars().take(200_000).collect();
    (Filler::new(text, &tok).unwrap(), tok)
}

#[test]
fn needles_have_the_requested_length_and_depth() {
    let (filler, tok) = filler_and_tokenizer();
    let config =
        MakeConfig { lengths: vec![128, 300], depths: vec![0.0, 0.3, 0.5, 1.0], per_cell: 3, distractors: 4, seed: 5 };
    let items = niah::make(&filler, &tok, &config).unwrap();
    assert_eq!(items.len(), 2 * 4 * 3);
    let count = |s: &str| tok.encode(s, false).unwrap().len();
    for item in &items {
        assert_eq!(count(&format!("{} {}", item.context, item.key)), item.length);
        assert_eq!(item.distractors.len(), 4);
        for d in &item.distractors {
            assert_eq!(count(&format!(" {d}")), count(&format!(" {}", item.key)), "distractor {d}");
            assert_ne!(d, &item.key);
        }
        // Where the needle starts, as a share of the filler tokens around it.
        let at = item.context.find(" The pass key is").unwrap();
        let tail = item.context.rfind(" What is the pass key?").unwrap();
        let needle_end = item.context[at..].find("is the pass key.").unwrap() + at + "is the pass key.".len();
        let (head, before) = (count(niah_header()), count(&item.context[..at]));
        let after = count(&item.context[needle_end..tail]);
        let filler_tokens = (before - head) + after;
        let depth = (before - head) as f64 / filler_tokens as f64;
        assert!((depth - item.depth).abs() <= 0.02 + 3.0 / filler_tokens as f64, "{depth} vs {}", item.depth);
    }
    // The same seed gives the same items.
    assert_eq!(niah::make(&filler, &tok, &config).unwrap(), items);
}

fn niah_header() -> &'static str {
    "There is an important piece of information hidden inside a lot of irrelevant text. Find it and memorize it. \
     I will quiz you about it."
}

#[test]
fn without_a_needle_the_key_ranks_first_at_chance() {
    let (filler, tok) = filler_and_tokenizer();
    let config = MakeConfig { lengths: vec![96], depths: vec![0.5], per_cell: 200, distractors: 3, seed: 9 };
    let model = Llama::new(tiny(32000), Device::Cpu, 3, false).unwrap();
    let mut items = niah::make(&filler, &tok, &config).unwrap();
    for item in &mut items {
        // Remove the needle: the key is then a random one of the K candidates.
        let at = item.context.find(" The pass key is").unwrap();
        let end = item.context[at..].find("is the pass key.").unwrap() + at + "is the pass key.".len();
        item.context.replace_range(at..end, "");
    }
    let scores: Vec<_> = items.iter().map(|i| niah::score(&model, &tok, i).unwrap()).collect();
    let first = scores.iter().filter(|s| s.rank == 1).count() as f64 / scores.len() as f64;
    // K = 4: chance is 0.25; 200 items give a standard error of 0.03.
    assert!((first - 0.25).abs() < 0.1, "rank accuracy {first} without a needle");
    let grid = niah::grid(&items, &scores);
    assert_eq!(grid.len(), 1);
    assert_eq!(grid[0].items, 200);
}

#[test]
fn items_longer_than_the_window_are_an_error() {
    let (filler, tok) = filler_and_tokenizer();
    let config = MakeConfig { lengths: vec![200], depths: vec![0.5], per_cell: 1, distractors: 2, seed: 1 };
    let items = niah::make(&filler, &tok, &config).unwrap();
    let mut small = tiny(32000);
    small.max_seq_len = 128;
    let model = Llama::new(small, Device::Cpu, 3, false).unwrap();
    let err = niah::score(&model, &tok, &items[0]).unwrap_err().to_string();
    assert!(err.contains("longer than the model's window of 128"), "{err}");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]
    #[test]
    fn teacher_forced_exact_match_is_greedy_decoding(seed in 0u64..1000, n_ctx in 2usize..40, m in 1usize..6,
                                                     follow in any::<bool>()) {
        let model = Llama::new(tiny(61), Device::Cpu, seed, false).unwrap();
        let ctx: Vec<i64> = Vec::<i64>::try_from(random_ids([1, n_ctx as i64], 61, seed as i64).view(-1)).unwrap();
        let greedy = train::generate::greedy_ids(&model, &ctx, m);
        // Half the cases continue with the greedy tokens (a hit), half with random ones.
        let continuation = if follow {
            greedy.clone()
        } else {
            Vec::<i64>::try_from(random_ids([1, m as i64], 61, seed as i64 + 1).view(-1)).unwrap()
        };
        let all: Vec<i64> = ctx.iter().chain(&continuation).copied().collect();
        let scores = niah::continuation_scores(&model, &Tensor::from_slice(&all).view([1, -1]), n_ctx as i64);
        prop_assert_eq!(scores[0].1, greedy == continuation);
    }
}

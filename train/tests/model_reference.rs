//! The model against independent references: a naive attention written with explicit loops
//! and masks, packing switches against separate documents, distillation from an identical
//! teacher, deterministic initialisation.

use tch::{Device, Kind, Tensor};
use train::config::{AttnKind, ModelConfig};
use train::loss;
use train::model::{Inputs, Llama, naive_mask};

fn tiny(window: usize) -> ModelConfig {
    ModelConfig {
        vocab_size: 97,
        d_model: 32,
        n_heads: 4,
        n_kv_heads: 2,
        head_dim: 8,
        ffn_dim: 48,
        layer_types: vec![AttnKind::Local, AttnKind::Global, AttnKind::Local],
        sliding_window: window,
        rope_theta: 10_000.0,
        norm_eps: 1e-5,
        tie_embeddings: false,
        max_seq_len: 64,
        quant: None,
    }
}

fn tokens(n: i64, seed: u64) -> Tensor {
    let mut x = seed;
    let ids: Vec<i64> = (0..n)
        .map(|_| {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((x >> 33) % 97) as i64
        })
        .collect();
    Tensor::from_slice(&ids).view([1, n])
}

fn rms(x: &Tensor, w: &Tensor, eps: f64) -> Tensor {
    let var = x.square().mean_dim(-1, true, Kind::Float);
    x * (var + eps).rsqrt() * w
}

/// The whole forward pass written from the definitions: per-position RoPE angles computed
/// in f64 loops, K/V heads repeated by index, scores masked with `naive_mask`, softmax.
fn reference_logits(model: &Llama, ids: &Tensor, positions: &[i64], docs: Option<&[i64]>) -> Tensor {
    let c = &model.config;
    let p = |n: &str| model.params.get(n).detach();
    let t = ids.size()[1];
    let (nh, nkv, hd) = (c.n_heads as i64, c.n_kv_heads as i64, c.head_dim as i64);
    let mut cos = vec![0f32; (t * hd) as usize];
    let mut sin = vec![0f32; (t * hd) as usize];
    for (i, &pos) in positions.iter().enumerate() {
        for j in 0..hd / 2 {
            let angle = pos as f64 * c.rope_theta.powf(-2.0 * j as f64 / hd as f64);
            for k in [j, j + hd / 2] {
                cos[i * hd as usize + k as usize] = angle.cos() as f32;
                sin[i * hd as usize + k as usize] = angle.sin() as f32;
            }
        }
    }
    let cos = Tensor::from_slice(&cos).view([t, hd]);
    let sin = Tensor::from_slice(&sin).view([t, hd]);
    let rope = |x: &Tensor| {
        let x1 = x.narrow(-1, 0, hd / 2);
        let x2 = x.narrow(-1, hd / 2, hd / 2);
        x * &cos + Tensor::cat(&[x2.neg(), x1], -1) * &sin
    };
    let mut x = p("model.embed_tokens.weight").index_select(0, &ids.view([-1]));
    for (l, kind) in c.layer_types.iter().enumerate() {
        let w = |n: &str| p(&format!("model.layers.{l}.{n}.weight"));
        let h = rms(&x, &w("input_layernorm"), c.norm_eps);
        let window = (*kind == AttnKind::Local).then_some(c.sliding_window as i64);
        let mask = naive_mask(t, window, docs);
        let flat: Vec<f32> = mask.iter().flatten().map(|&ok| if ok { 0.0 } else { f32::NEG_INFINITY }).collect();
        let bias = Tensor::from_slice(&flat).view([t, t]);
        let mut heads = Vec::new();
        for head in 0..nh {
            let kv = head / (nh / nkv);
            let q = rope(&h.matmul(&w("self_attn.q_proj").narrow(0, head * hd, hd).tr()));
            let k = rope(&h.matmul(&w("self_attn.k_proj").narrow(0, kv * hd, hd).tr()));
            let v = h.matmul(&w("self_attn.v_proj").narrow(0, kv * hd, hd).tr());
            let scores = q.matmul(&k.tr()) / (hd as f64).sqrt() + &bias;
            heads.push(scores.softmax(-1, Kind::Float).matmul(&v));
        }
        x = &x + Tensor::cat(&heads, -1).matmul(&w("self_attn.o_proj").tr());
        let h = rms(&x, &w("post_attention_layernorm"), c.norm_eps);
        let gate = h.matmul(&w("mlp.gate_proj").tr());
        let mlp = (gate.sigmoid() * &gate * h.matmul(&w("mlp.up_proj").tr())).matmul(&w("mlp.down_proj").tr());
        x = &x + mlp;
    }
    rms(&x, &p("model.norm.weight"), c.norm_eps).matmul(&p("lm_head.weight").tr()).unsqueeze(0)
}

fn max_diff(a: &Tensor, b: &Tensor) -> f64 {
    (a - b).abs().max().double_value(&[])
}

#[test]
fn local_and_global_attention_match_the_naive_reference() {
    // Window 5 over 24 tokens: local layers see far less than global ones.
    let model = Llama::new(tiny(5), Device::Cpu, 1, false).unwrap();
    let ids = tokens(24, 7);
    let positions: Vec<i64> = (0..24).collect();
    let got = tch::no_grad(|| model.forward(&Inputs::tokens(ids.shallow_clone())));
    let want = tch::no_grad(|| reference_logits(&model, &ids, &positions, None));
    assert!(max_diff(&got, &want) < 1e-4, "max diff {}", max_diff(&got, &want));
    // The window matters: the same model with a window covering everything differs.
    let mut wide = tiny(64);
    wide.layer_types = vec![AttnKind::Global; 3];
    let global = Llama::new(wide, Device::Cpu, 1, false).unwrap();
    let other = tch::no_grad(|| global.forward(&Inputs::tokens(ids.shallow_clone())));
    assert!(max_diff(&got, &other) > 1e-3);
}

#[test]
fn document_masking_with_position_reset_equals_separate_documents() {
    let model = Llama::new(tiny(6), Device::Cpu, 2, false).unwrap();
    let (a, b) = (tokens(9, 3), tokens(13, 4));
    let packed = Tensor::cat(&[&a, &b], 1);
    let docs: Vec<i64> = [vec![0; 9], vec![1; 13]].concat();
    let positions: Vec<i64> = (0..9).chain(0..13).collect();
    let inputs = Inputs {
        tokens: packed.shallow_clone(),
        positions: Some(Tensor::from_slice(&positions).view([1, 22])),
        doc_ids: Some(Tensor::from_slice(&docs).view([1, 22])),
    };
    let together = tch::no_grad(|| model.forward(&inputs));
    let alone_a = tch::no_grad(|| model.forward(&Inputs::tokens(a)));
    let alone_b = tch::no_grad(|| model.forward(&Inputs::tokens(b)));
    assert!(max_diff(&together.narrow(1, 0, 9), &alone_a) < 1e-5);
    assert!(max_diff(&together.narrow(1, 9, 13), &alone_b) < 1e-5);
    // And the masked forward equals the naive reference with the same masks and positions.
    let want = tch::no_grad(|| reference_logits(&model, &packed, &positions, Some(&docs)));
    assert!(max_diff(&together, &want) < 1e-4);
}

#[test]
fn distilling_from_an_identical_teacher_has_zero_kl() {
    let student = Llama::new(tiny(8), Device::Cpu, 5, true).unwrap();
    let teacher = Llama::new(tiny(8), Device::Cpu, 5, false).unwrap();
    let ids = tokens(32, 9);
    let s = student.forward(&Inputs::tokens(ids.shallow_clone()));
    let t = tch::no_grad(|| teacher.forward(&Inputs::tokens(ids.shallow_clone())));
    for temperature in [1.0, 2.0] {
        let kl = loss::forward_kl(&s, &t, temperature).double_value(&[]);
        assert!(kl.abs() < 1e-6, "KL {kl} at T={temperature}");
    }
    // A different teacher gives a positive KL, and its gradient moves the student.
    let other = Llama::new(tiny(8), Device::Cpu, 6, false).unwrap();
    let o = tch::no_grad(|| other.forward(&Inputs::tokens(ids)));
    let kl = loss::forward_kl(&s, &o, 1.0);
    assert!(kl.double_value(&[]) > 1e-4);
    kl.backward();
    let grads = student.params.flat_grads();
    assert!(grads.iter().map(|g| g.abs().sum(Kind::Float).double_value(&[])).sum::<f64>() > 0.0);
}

#[test]
fn same_seed_same_weights() {
    let a = Llama::new(tiny(8), Device::Cpu, 11, false).unwrap();
    let b = Llama::new(tiny(8), Device::Cpu, 11, false).unwrap();
    let c = Llama::new(tiny(8), Device::Cpu, 12, false).unwrap();
    for ((name, x), (_, y)) in a.params.named().iter().zip(b.params.named()) {
        assert!(x.equal(y), "{name} differs");
    }
    assert!(!a.params.get("model.embed_tokens.weight").equal(&c.params.get("model.embed_tokens.weight")));
    assert_eq!(a.params.numel() as u64, a.config.param_count());
}

//! The decoder: token embedding, blocks of (RMSNorm → grouped-query attention with RoPE →
//! residual, RMSNorm → SwiGLU → residual), a final RMSNorm and the (optionally tied) output
//! projection. No biases. Attention is global or sliding-window per layer.
//!
//! Parameter names and layouts are Hugging Face's Llama/Ministral ones (`model.layers.0.
//! self_attn.q_proj.weight`, weights `[out, in]`, RoPE in the `rotate_half` layout), so export
//! and import are renames of nothing.

use tch::{Device, Kind, Tensor};

use crate::config::{AttnKind, ModelConfig};
use crate::params::{Init, ParamSpec, Params};

/// A batch of token ids and the optional packing switches.
pub struct Inputs {
    /// `[batch, seq]`, int64.
    pub tokens: Tensor,
    /// `[batch, seq]` position ids (reset per document when asked); `0..seq` when absent.
    pub positions: Option<Tensor>,
    /// `[batch, seq]` document index per token; when present a token attends only within its document.
    pub doc_ids: Option<Tensor>,
}

impl Inputs {
    pub fn tokens(tokens: Tensor) -> Inputs {
        Inputs { tokens, positions: None, doc_ids: None }
    }

    pub fn shallow_clone(&self) -> Inputs {
        Inputs {
            tokens: self.tokens.shallow_clone(),
            positions: self.positions.as_ref().map(Tensor::shallow_clone),
            doc_ids: self.doc_ids.as_ref().map(Tensor::shallow_clone),
        }
    }
}

struct Layer {
    kind: AttnKind,
    input_norm: Tensor,
    q: Weight,
    k: Weight,
    v: Weight,
    o: Weight,
    post_norm: Tensor,
    gate: Weight,
    up: Weight,
    down: Weight,
}

/// A matrix the model multiplies by: full precision, fake-quantized (PTQ/QAT), or packed int4
/// run by libtorch's int4 kernels (an int4 export).
pub enum Weight {
    Dense {
        w: Tensor,
        /// Fake-quantized in the forward under the model's scheme.
        quantized: bool,
        /// The accel scheme's learnable per-channel log-scale.
        log_scale: Option<Tensor>,
    },
    Int4(crate::int4::Packed),
}

/// A Llama-style decoder with per-layer attention types.
pub struct Llama {
    pub config: ModelConfig,
    pub params: Params,
    layers: Vec<Layer>,
    embed: Weight,
    norm: Tensor,
    lm_head: Weight,
    inv_freq: Tensor,
    pub device: Device,
}

/// The parameters of a configuration, in a fixed order (this order fixes initialisation).
pub fn param_specs(c: &ModelConfig) -> Vec<ParamSpec> {
    let (d, q_dim, kv_dim) = (c.d_model as i64, (c.n_heads * c.head_dim) as i64, (c.n_kv_heads * c.head_dim) as i64);
    let std = 0.02;
    // Projections that write into the residual stream start smaller so depth doesn't grow it.
    let out_std = std / (2.0 * c.n_layers() as f64).sqrt();
    let spec = |name: String, shape: Vec<i64>, init: Init| {
        let decay = shape.len() > 1;
        ParamSpec { name, shape, init, decay }
    };
    let mut specs = vec![spec("model.embed_tokens.weight".into(), vec![c.vocab_size as i64, d], Init::Normal { std })];
    for i in 0..c.n_layers() {
        let p = format!("model.layers.{i}");
        let f = c.ffn_dim as i64;
        specs.push(spec(format!("{p}.input_layernorm.weight"), vec![d], Init::Ones));
        specs.push(spec(format!("{p}.self_attn.q_proj.weight"), vec![q_dim, d], Init::Normal { std }));
        specs.push(spec(format!("{p}.self_attn.k_proj.weight"), vec![kv_dim, d], Init::Normal { std }));
        specs.push(spec(format!("{p}.self_attn.v_proj.weight"), vec![kv_dim, d], Init::Normal { std }));
        specs.push(spec(format!("{p}.self_attn.o_proj.weight"), vec![d, q_dim], Init::Normal { std: out_std }));
        specs.push(spec(format!("{p}.post_attention_layernorm.weight"), vec![d], Init::Ones));
        specs.push(spec(format!("{p}.mlp.gate_proj.weight"), vec![f, d], Init::Normal { std }));
        specs.push(spec(format!("{p}.mlp.up_proj.weight"), vec![f, d], Init::Normal { std }));
        specs.push(spec(format!("{p}.mlp.down_proj.weight"), vec![d, f], Init::Normal { std: out_std }));
    }
    specs.push(spec("model.norm.weight".into(), vec![d], Init::Ones));
    if !c.tie_embeddings {
        specs.push(spec("lm_head.weight".into(), vec![c.vocab_size as i64, d], Init::Normal { std }));
    }
    // The accel scheme's per-channel log-scales (set from the weights when a model is quantized).
    if let Some(q) = c.quant.as_ref().filter(|q| q.scheme == crate::quant::Scheme::Accel) {
        let scales: Vec<ParamSpec> = specs
            .iter()
            .filter(|s| q.quantizes(&s.name))
            .map(|s| ParamSpec {
                name: crate::quant::scale_name(&s.name),
                shape: vec![s.shape[0]],
                init: Init::Zeros,
                decay: false,
            })
            .collect();
        specs.extend(scales);
    }
    specs
}

impl Llama {
    /// A freshly initialised model; the same config and seed give the same weights.
    pub fn new(config: ModelConfig, device: Device, seed: u64, trainable: bool) -> crate::Result<Llama> {
        config.validate()?;
        let params = Params::new(&param_specs(&config), device, seed, trainable);
        let quant = config.quant.clone();
        let weight = |params: &Params, name: &str| {
            let quantized = quant.as_ref().is_some_and(|q| q.quantizes(name));
            let scale = crate::quant::scale_name(name);
            let log_scale = params.contains(&scale).then(|| params.get(&scale));
            Weight::Dense { w: params.get(name), quantized, log_scale }
        };
        Ok(Llama::assemble(config, params, weight, device))
    }

    /// A model whose matrices come from `weight` (by HF name) and the rest from `params`.
    pub(crate) fn assemble(
        config: ModelConfig,
        params: Params,
        weight: impl Fn(&Params, &str) -> Weight,
        device: Device,
    ) -> Llama {
        let weight = |name: &str| weight(&params, name);
        let layers = (0..config.n_layers())
            .map(|i| {
                let w = |s: &str| weight(&format!("model.layers.{i}.{s}.weight"));
                let norm = |s: &str| params.get(&format!("model.layers.{i}.{s}.weight"));
                Layer {
                    kind: config.layer_types[i],
                    input_norm: norm("input_layernorm"),
                    q: w("self_attn.q_proj"),
                    k: w("self_attn.k_proj"),
                    v: w("self_attn.v_proj"),
                    o: w("self_attn.o_proj"),
                    post_norm: norm("post_attention_layernorm"),
                    gate: w("mlp.gate_proj"),
                    up: w("mlp.up_proj"),
                    down: w("mlp.down_proj"),
                }
            })
            .collect();
        let embed = weight("model.embed_tokens.weight");
        let lm_head = weight(if config.tie_embeddings { "model.embed_tokens.weight" } else { "lm_head.weight" });
        let half = config.head_dim as i64 / 2;
        let inv_freq = (Tensor::arange(half, (Kind::Double, device))
            * (-2.0 * config.rope_theta.ln() / config.head_dim as f64))
            .exp()
            .to_kind(Kind::Float);
        Llama { norm: params.get("model.norm.weight"), config, params, layers, embed, lm_head, inv_freq, device }
    }

    /// `x · Wᵀ`, with the weight (and, under the cpu scheme, the activations) quantized as configured.
    fn project(&self, x: &Tensor, weight: &Weight) -> Tensor {
        match weight {
            Weight::Dense { w, quantized: false, .. } => x.linear::<Tensor>(w, None),
            Weight::Dense { w, log_scale, .. } => {
                let q = self.config.quant.as_ref().expect("a quantized weight has a scheme");
                let w = crate::quant::fake_weight(q, w, log_scale.as_ref());
                match q.scheme {
                    crate::quant::Scheme::Cpu => crate::quant::fake_activations(x).linear::<Tensor>(&w, None),
                    crate::quant::Scheme::Accel => x.linear::<Tensor>(&w, None),
                }
            }
            Weight::Int4(p) => p.matmul(x),
        }
    }

    /// The embedding rows of `tokens`.
    fn embed_tokens(&self, tokens: &Tensor) -> Tensor {
        match &self.embed {
            Weight::Dense { w, quantized: false, .. } => Tensor::embedding(w, tokens, -1, false, false),
            Weight::Dense { w, log_scale, .. } => {
                let q = self.config.quant.as_ref().expect("a quantized weight has a scheme");
                Tensor::embedding(&crate::quant::fake_weight(q, w, log_scale.as_ref()), tokens, -1, false, false)
            }
            Weight::Int4(p) => p.rows(tokens),
        }
    }

    /// The weights the forward computes with, by HF name (fake-quantized or dequantized where
    /// the model is quantized; what an HF export holds).
    pub fn effective_weights(&self) -> Vec<(String, Tensor)> {
        let effective = |w: &Weight| match w {
            Weight::Dense { w, quantized: false, .. } => w.detach(),
            Weight::Dense { w, log_scale, .. } => tch::no_grad(|| {
                crate::quant::fake_weight(self.config.quant.as_ref().expect("scheme"), w, log_scale.as_ref())
            }),
            Weight::Int4(p) => p.dequantize(),
        };
        let matrices = self.weights();
        let mut out: Vec<(String, Tensor)> = matrices.iter().map(|(n, w)| (n.clone(), effective(w))).collect();
        // The rest (norms) as they are; log-scales are part of their matrix already.
        for (name, t) in self.params.named() {
            if !matrices.iter().any(|(n, _)| n == name) && !name.ends_with("_fake_quantizer.log_scale") {
                out.push((name.clone(), t.detach()));
            }
        }
        out
    }

    /// The integer codes and scales of every quantized matrix, by HF name.
    pub fn int4_weights(&self) -> crate::Result<Vec<(String, crate::quant::Int4)>> {
        let q = self.config.quant.as_ref().ok_or_else(|| {
            crate::Error::Config("the model is not quantized: run `mixforge quantize` (or QAT) first".into())
        })?;
        let mut out = Vec::new();
        for (name, w) in self.weights() {
            match w {
                Weight::Dense { w, quantized: true, log_scale } => {
                    out.push((name, tch::no_grad(|| crate::quant::quantize(q, w, log_scale.as_ref()))))
                }
                Weight::Int4(p) => out.push((name, p.int4())),
                Weight::Dense { .. } => {}
            }
        }
        Ok(out)
    }

    /// The matrix called `name` (HF name).
    pub fn weight(&self, name: &str) -> Option<&Weight> {
        self.weights().into_iter().find(|(n, _)| n == name).map(|(_, w)| w)
    }

    /// Every matrix by HF name (the tied head once, as the embedding).
    fn weights(&self) -> Vec<(String, &Weight)> {
        let mut out = vec![("model.embed_tokens.weight".to_string(), &self.embed)];
        for (i, l) in self.layers.iter().enumerate() {
            let p = format!("model.layers.{i}");
            for (name, w) in [
                ("self_attn.q_proj", &l.q),
                ("self_attn.k_proj", &l.k),
                ("self_attn.v_proj", &l.v),
                ("self_attn.o_proj", &l.o),
                ("mlp.gate_proj", &l.gate),
                ("mlp.up_proj", &l.up),
                ("mlp.down_proj", &l.down),
            ] {
                out.push((format!("{p}.{name}.weight"), w));
            }
        }
        if !self.config.tie_embeddings {
            out.push(("lm_head.weight".to_string(), &self.lm_head));
        }
        out
    }

    /// Logits `[batch, seq, vocab]` in fp32.
    pub fn forward(&self, inputs: &Inputs) -> Tensor {
        self.logits(&self.hidden(inputs))
    }

    /// The output projection of final hidden states.
    pub fn logits(&self, hidden: &Tensor) -> Tensor {
        self.project(hidden, &self.lm_head).to_kind(Kind::Float)
    }

    /// Final hidden states `[batch, seq, d_model]` (after the last norm).
    // `x = x + f(x)`, not `x += …`: tch's `+=` adds in place, which autograd forbids here.
    #[allow(clippy::assign_op_pattern)]
    pub fn hidden(&self, inputs: &Inputs) -> Tensor {
        let c = &self.config;
        let (b, t) = inputs.tokens.size2().expect("tokens are [batch, seq]");
        let positions = match &inputs.positions {
            Some(p) => p.shallow_clone(),
            None => Tensor::arange(t, (Kind::Int64, self.device)).unsqueeze(0).expand([b, t], false),
        };
        let (cos, sin) = self.rope(&positions);
        let masks = Masks::new(c, t, inputs.doc_ids.as_ref(), self.device);
        let mut x = self.embed_tokens(&inputs.tokens);
        for layer in &self.layers {
            let h = x.rms_norm([c.d_model as i64], Some(&layer.input_norm), c.norm_eps);
            x = x + self.attention(layer, &h, &cos, &sin, &masks, b, t);
            let h = x.rms_norm([c.d_model as i64], Some(&layer.post_norm), c.norm_eps);
            let mlp = self.project(&(self.project(&h, &layer.gate).silu() * self.project(&h, &layer.up)), &layer.down);
            x = x + mlp;
        }
        x.rms_norm([c.d_model as i64], Some(&self.norm), c.norm_eps)
    }

    /// cos and sin `[batch, 1, seq, head_dim]` for the given positions (fp32, as HF computes them).
    fn rope(&self, positions: &Tensor) -> (Tensor, Tensor) {
        let freqs = positions.to_kind(Kind::Float).unsqueeze(-1) * self.inv_freq.view([1, 1, -1]);
        let emb = Tensor::cat(&[&freqs, &freqs], -1).unsqueeze(1);
        (emb.cos(), emb.sin())
    }

    #[allow(clippy::too_many_arguments)]
    fn attention(
        &self,
        layer: &Layer,
        h: &Tensor,
        cos: &Tensor,
        sin: &Tensor,
        masks: &Masks,
        b: i64,
        t: i64,
    ) -> Tensor {
        let c = &self.config;
        let (nh, nkv, hd) = (c.n_heads as i64, c.n_kv_heads as i64, c.head_dim as i64);
        let q = self.project(h, &layer.q).view([b, t, nh, hd]).transpose(1, 2);
        let k = self.project(h, &layer.k).view([b, t, nkv, hd]).transpose(1, 2);
        let v = self.project(h, &layer.v).view([b, t, nkv, hd]).transpose(1, 2);
        let (cos, sin) = (cos.to_kind(q.kind()), sin.to_kind(q.kind()));
        let q = &q * &cos + rotate_half(&q) * &sin;
        let k = &k * &cos + rotate_half(&k) * &sin;
        // Each KV head serves n_heads / n_kv_heads consecutive query heads (HF's repeat_kv).
        let rep = nh / nkv;
        let (k, v) = if rep == 1 {
            (k, v)
        } else {
            let expand = |x: Tensor| x.unsqueeze(2).expand([b, nkv, rep, t, hd], false).reshape([b, nh, t, hd]);
            (expand(k), expand(v))
        };
        let mask = match layer.kind {
            AttnKind::Global => masks.global.as_ref(),
            AttnKind::Local => masks.local.as_ref(),
        };
        let out = match mask {
            Some(m) => Tensor::scaled_dot_product_attention(&q, &k, &v, Some(m), 0.0, false, None, false),
            None => Tensor::scaled_dot_product_attention::<Tensor>(&q, &k, &v, None, 0.0, true, None, false),
        };
        self.project(&out.transpose(1, 2).reshape([b, t, nh * hd]), &layer.o)
    }
}

fn rotate_half(x: &Tensor) -> Tensor {
    let half = x.size().last().copied().expect("non-scalar") / 2;
    let x1 = x.narrow(-1, 0, half);
    let x2 = x.narrow(-1, half, half);
    Tensor::cat(&[&x2.neg(), &x1], -1)
}

/// Boolean attention masks (true = may attend) per attention kind; `None` means plain causal,
/// which lets SDPA use its fused causal kernel.
struct Masks {
    global: Option<Tensor>,
    local: Option<Tensor>,
}

impl Masks {
    fn new(c: &ModelConfig, t: i64, doc_ids: Option<&Tensor>, device: Device) -> Masks {
        let q = Tensor::arange(t, (Kind::Int64, device)).unsqueeze(1);
        let k = Tensor::arange(t, (Kind::Int64, device)).unsqueeze(0);
        let causal = k.le_tensor(&q);
        let window_needed = c.layer_types.contains(&AttnKind::Local) && (c.sliding_window as i64) < t;
        let local_base = window_needed.then(|| causal.logical_and(&(&q - &k).lt(c.sliding_window as i64)));
        match doc_ids {
            None => Masks { global: None, local: local_base },
            Some(docs) => {
                // [B, 1, T, T]: same document as the query.
                let same = docs.unsqueeze(2).eq_tensor(&docs.unsqueeze(1)).unsqueeze(1);
                let global = same.logical_and(&causal);
                let local = local_base.map(|l| same.logical_and(&l));
                let needs_local = c.layer_types.contains(&AttnKind::Local);
                let local = if needs_local { Some(local.unwrap_or_else(|| global.shallow_clone())) } else { None };
                Masks { global: Some(global), local }
            }
        }
    }
}

/// Reference attention for tests: explicit loops over positions, no fused kernels.
#[doc(hidden)]
pub fn naive_mask(t: i64, window: Option<i64>, docs: Option<&[i64]>) -> Vec<Vec<bool>> {
    (0..t)
        .map(|q| {
            (0..t)
                .map(|k| {
                    k <= q && window.is_none_or(|w| q - k < w) && docs.is_none_or(|d| d[q as usize] == d[k as usize])
                })
                .collect()
        })
        .collect()
}

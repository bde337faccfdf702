//! 4-bit quantization: the fake quantizers QAT and PTQ run in the forward, the integer codes
//! and scales the int4 exports store, and the conversion of a full-precision checkpoint.
//!
//! Two schemes, as MobileLLM-Pro deploys them:
//! - `cpu`: weights int4 symmetric per group of 32 along the input dimension, activations int8
//!   asymmetric per token, dynamic. torchao's conventions (`Int8DynActInt4WeightQATQuantizer`,
//!   `quant_primitives`): weight scale = max(absmax / 7.5, f32 eps) in fp16, codes
//!   `clamp(round(w · (1/scale)), −8, 7)` with round-half-to-even and 1/scale taken in the
//!   scale's fp16 (torchao's `input * (1.0 / scale)`); activation scale =
//!   (max(x_max, 0) − min(x_min, 0)) / 255 and torchao's zero point.
//! - `accel`: weights int4 symmetric per output channel with learnable scales (LSQ, libtorch's
//!   `_fake_quantize_learnable_per_channel_affine`), activations unquantized, the LM head untied.
//!
//! Scales are kept fp16-representable (torchao's `scales_precision=float16`), so the int4
//! safetensors and GGUF Q4_0 exports (an fp16 scale per block) hold exactly the weights the
//! fake-quantized model computes with. The learnable scales are stored as their logarithm
//! (`…weight_fake_quantizer.log_scale`): Adam's step is then relative to the scale's size.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

use crate::config::ModelConfig;
use crate::{Error, Result};

/// The int4 code range.
pub const QMIN: i64 = -8;
pub const QMAX: i64 = 7;
/// The CPU scheme's weight group (and GGUF Q4_0's block).
pub const GROUP: usize = 32;

/// The deployment a model is quantized for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scheme {
    /// int4 weights per group of 32, int8 dynamic per-token activations (XNNPACK-style).
    Cpu,
    /// int4 weights per channel with learnable scales, 16-bit activations (NPU-style).
    Accel,
}

impl Scheme {
    pub fn name(self) -> &'static str {
        match self {
            Scheme::Cpu => "cpu",
            Scheme::Accel => "accel",
        }
    }
}

/// What is quantized and how; part of a model's config.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuantConfig {
    pub scheme: Scheme,
    /// The token embedding and the LM head too (otherwise only the blocks' linear layers).
    pub embeddings: bool,
    /// `accel` only: the scales train with the weights (false: fixed at their absmax start).
    pub learnable_scales: bool,
}

impl QuantConfig {
    pub fn new(scheme: Scheme) -> QuantConfig {
        QuantConfig { scheme, embeddings: true, learnable_scales: scheme == Scheme::Accel }
    }

    /// The model config this scheme needs: the accelerator model has its own LM head.
    pub fn apply(&self, model: &ModelConfig) -> ModelConfig {
        let mut m = model.clone();
        m.quant = Some(self.clone());
        if self.scheme == Scheme::Accel {
            m.tie_embeddings = false;
        }
        m
    }

    pub(crate) fn check(&self, m: &ModelConfig) -> Result<()> {
        // The cpu scheme's groups, libtorch's int4 kernels and GGUF's Q4_0 blocks all take
        // inputs in groups of 32.
        let ins = [("d_model", m.d_model), ("ffn_dim", m.ffn_dim), ("n_heads × head_dim", m.n_heads * m.head_dim)];
        if let Some((name, v)) = ins.iter().find(|(_, v)| !v.is_multiple_of(GROUP)) {
            return Err(Error::Config(format!(
                "int4 quantization takes inputs in groups of {GROUP} (the cpu scheme's groups, the int4 kernels, \
                 GGUF's Q4_0 blocks) but {name} is {v}"
            )));
        }
        if self.scheme == Scheme::Accel && m.tie_embeddings {
            return Err(Error::Config("the accel scheme needs an untied LM head (tie_embeddings = false)".into()));
        }
        if self.scheme == Scheme::Cpu && self.learnable_scales {
            return Err(Error::Config("learnable scales are an accel-scheme option".into()));
        }
        Ok(())
    }

    /// Whether the weight called `name` (an HF parameter name) is quantized.
    pub fn quantizes(&self, name: &str) -> bool {
        let linear = name.starts_with("model.layers.") && name.ends_with("_proj.weight");
        let embedding = name == "model.embed_tokens.weight" || name == "lm_head.weight";
        linear || (self.embeddings && embedding)
    }
}

/// The name of a weight's learnable log-scale parameter.
pub fn scale_name(weight: &str) -> String {
    format!("{weight}_fake_quantizer.log_scale")
}

/// Rounds to the nearest fp16 value (kept in fp32).
fn to_fp16(x: &Tensor) -> Tensor {
    x.to_kind(Kind::Half).to_kind(Kind::Float)
}

/// `x` forward, `y`'s value: the straight-through estimator.
fn ste(x: &Tensor, y: &Tensor) -> Tensor {
    x + (y - x).detach()
}

/// The integer form of one weight matrix `[out, in]`: codes in [−8, 7] and the fp16-exact scale
/// of each group of `group` inputs (`group == in` for per-channel).
pub struct Int4 {
    /// `[out, in]`, int8.
    pub codes: Tensor,
    /// `[out, in / group]`, fp32 holding fp16 values.
    pub scales: Tensor,
    pub group: usize,
}

impl Int4 {
    /// codes · scale, `[out, in]` fp32: the weights the fake-quantized model computes with.
    pub fn dequantize(&self) -> Tensor {
        let (out, inp) = self.codes.size2().expect("[out, in]");
        let g = self.group as i64;
        (self.codes.to_kind(Kind::Float).view([out, inp / g, g]) * self.scales.unsqueeze(-1)).view([out, inp])
    }
}

/// torchao's group-wise symmetric scale: max(absmax / 7.5, eps), then fp16.
pub fn group_scales(w: &Tensor, group: usize) -> Tensor {
    let (out, inp) = w.size2().expect("[out, in]");
    let g = group as i64;
    let absmax = w.detach().view([out, inp / g, g]).abs().amax(-1, false);
    let scale = (absmax / ((QMAX - QMIN) as f64 / 2.0)).clamp_min(f32::EPSILON as f64);
    to_fp16(&scale)
}

/// The codes of `w` for scales `[out, in / group]`: clamp(round(w · (1/scale)), −8, 7). With
/// `fp16_reciprocal`, 1/scale is taken in fp16, as torchao does with fp16 scales (the cpu
/// scheme); otherwise in fp32, as libtorch's fake-quantize kernels do (the accel scheme).
pub fn codes(w: &Tensor, scales: &Tensor, fp16_reciprocal: bool) -> Tensor {
    let (out, inp) = w.size2().expect("[out, in]");
    let groups = scales.size()[1];
    let inv = if fp16_reciprocal {
        scales.to_kind(Kind::Half).reciprocal().to_kind(Kind::Float)
    } else {
        scales.reciprocal()
    };
    let inv = inv.unsqueeze(-1);
    (w.detach().view([out, groups, inp / groups]) * inv).round().clamp(QMIN, QMAX).view([out, inp]).to_kind(Kind::Int8)
}

/// The integer form of a weight under `config` (`log_scale` for accel's learned scales).
pub fn quantize(config: &QuantConfig, w: &Tensor, log_scale: Option<&Tensor>) -> Int4 {
    let (_, inp) = w.size2().expect("[out, in]");
    let (scales, group) = match (config.scheme, log_scale) {
        (Scheme::Cpu, _) => (group_scales(w, GROUP), GROUP),
        (Scheme::Accel, Some(ls)) => (accel_scale(&ls.detach()).unsqueeze(-1), inp as usize),
        (Scheme::Accel, None) => (group_scales(w, inp as usize), inp as usize),
    };
    Int4 { codes: codes(w, &scales, config.scheme == Scheme::Cpu), scales, group }
}

/// Per-channel fp16 scales from a log-scale parameter (fp16 rounding passed straight through).
fn accel_scale(log_scale: &Tensor) -> Tensor {
    let s = log_scale.exp().clamp_min(f32::EPSILON as f64);
    ste(&s, &to_fp16(&s))
}

/// The initial log-scales of a weight for the accel scheme: per channel absmax / 7.5.
pub fn initial_log_scale(w: &Tensor) -> Tensor {
    let (_, inp) = w.size2().expect("[out, in]");
    group_scales(w, inp as usize).squeeze_dim(-1).log()
}

/// The fake-quantized weight (straight-through gradients; LSQ gradients for accel's scales).
pub fn fake_weight(config: &QuantConfig, w: &Tensor, log_scale: Option<&Tensor>) -> Tensor {
    match (config.scheme, log_scale) {
        (Scheme::Accel, Some(ls)) => {
            let ls = if config.learnable_scales { ls.shallow_clone() } else { ls.detach() };
            lsq(w, &accel_scale(&ls))
        }
        _ => ste(w, &quantize(config, w, log_scale).dequantize()),
    }
}

/// libtorch's learnable per-channel fake quantization (symmetric, zero point 0): forward
/// (clamp(round(w · (1/s)), −8, 7)) · s; gradient to w where in range, and LSQ's to s.
pub fn lsq(w: &Tensor, scale: &Tensor) -> Tensor {
    let zero = Tensor::zeros_like(scale);
    w.internal_fake_quantize_learnable_per_channel_affine(scale, &zero, 0, QMIN, QMAX, 1.0)
}

/// torchao's per-token asymmetric int8 scale and zero point over the last dimension.
pub fn token_qparams(x: &Tensor) -> (Tensor, Tensor) {
    let (qmin, qmax) = (-128.0, 127.0);
    let x = x.detach().to_kind(Kind::Float);
    let min_neg = x.amin(-1, true).clamp_max(0.0);
    let max_pos = x.amax(-1, true).clamp_min(0.0);
    let scale = ((&max_pos - &min_neg) / (qmax - qmin)).clamp_min(f32::EPSILON as f64);
    let descaled_min = &min_neg / &scale;
    let descaled_max = &max_pos / &scale;
    let from_min = &descaled_min + qmin;
    let from_max = &descaled_max + qmax;
    let use_min = (&from_min + &from_max).gt(0.0);
    let zero = (-&descaled_min + qmin).where_self(&use_min, &(-&descaled_max + qmax));
    (scale, zero.clamp(qmin, qmax).round())
}

/// Dynamic int8 fake quantization of activations per token (straight-through).
/// Computed in fp32 whatever `x`'s kind (autocast's fp16 would change the scales, and a tiny
/// range would overflow the reciprocal), as torchao and the int4 kernel do.
pub fn fake_activations(x: &Tensor) -> Tensor {
    let xf = x.detach().to_kind(Kind::Float);
    let (scale, zero) = token_qparams(&xf);
    let q = ((&xf * scale.reciprocal()).round() + &zero).clamp(-128, 127);
    ste(x, &((q - zero) * scale).to_kind(x.kind()))
}

/// Adds what `to` needs and `tensors` (a model of config `from`) lacks: the untied LM head
/// (a copy of the embedding) and the accel scheme's initial log-scales.
pub fn prepare(
    mut tensors: BTreeMap<String, Tensor>,
    from: &ModelConfig,
    to: &ModelConfig,
) -> Result<BTreeMap<String, Tensor>> {
    if from.tie_embeddings && !to.tie_embeddings {
        let embed = tensors
            .get("model.embed_tokens.weight")
            .ok_or_else(|| Error::Data("the checkpoint has no model.embed_tokens.weight".into()))?;
        tensors.insert("lm_head.weight".into(), embed.copy());
    }
    if let Some(q) = &to.quant
        && q.scheme == Scheme::Accel
    {
        let missing: Vec<String> =
            tensors.keys().filter(|n| q.quantizes(n) && !tensors.contains_key(&scale_name(n))).cloned().collect();
        for name in missing {
            let scale = initial_log_scale(&tensors[&name]);
            tensors.insert(scale_name(&name), scale);
        }
    }
    Ok(tensors)
}

//! Training losses: next-token cross-entropy and forward KL from a teacher's logits, whole or in
//! chunks of positions.
//!
//! The chunked form never holds more than `chunk` rows of logits: each chunk's logits are made
//! from a detached slice of the final hidden states, its loss is back-propagated at once (into
//! the output projection and the slice), and the slices' gradients then flow through the rest
//! of the model in one backward. At a 202,048-token vocabulary and 4,096 positions the whole
//! logits tensor is 3.3 GB in fp32, before its softmax and gradient; a chunk of 512 rows is 0.4 GB.

use tch::{Kind, Reduction, Tensor};

use crate::model::{Inputs, Llama};

/// How the student learns.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct KdConfig {
    /// Softmax temperature applied to both teacher and student.
    pub temperature: f64,
    /// Weight of the cross-entropy term added to the KL term (0 = pure distillation).
    pub ce_weight: f64,
}

impl Default for KdConfig {
    fn default() -> Self {
        KdConfig { temperature: 1.0, ce_weight: 0.0 }
    }
}

/// Positions per chunk of logits in training and validation.
pub const DEFAULT_CHUNK: i64 = 512;

/// Mean next-token cross-entropy; `logits` `[B, T, V]`, `targets` `[B, T]`.
pub fn cross_entropy(logits: &Tensor, targets: &Tensor) -> Tensor {
    let v = logits.size().last().copied().expect("logits have a vocab axis");
    ce_sum(&logits.reshape([-1, v]), &targets.reshape([-1])) / targets.numel() as f64
}

/// Per-token forward KL(teacher ‖ student) over the full vocabulary at temperature τ,
/// averaged over tokens and scaled by τ² (so gradients keep their size as τ changes).
pub fn forward_kl(student_logits: &Tensor, teacher_logits: &Tensor, temperature: f64) -> Tensor {
    let v = student_logits.size().last().copied().expect("logits have a vocab axis");
    let rows = student_logits.numel() as i64 / v;
    kl_sum(&student_logits.reshape([-1, v]), &teacher_logits.reshape([-1, v]), temperature) / rows as f64
}

/// The distillation objective: τ²·KL + ce_weight·CE.
pub fn distillation(student_logits: &Tensor, teacher_logits: &Tensor, targets: &Tensor, kd: &KdConfig) -> Tensor {
    let kl = forward_kl(student_logits, teacher_logits, kd.temperature);
    if kd.ce_weight > 0.0 { kl + cross_entropy(student_logits, targets) * kd.ce_weight } else { kl }
}

/// Summed cross-entropy of `[N, V]` logits against `[N]` targets.
pub fn ce_sum(logits: &Tensor, targets: &Tensor) -> Tensor {
    logits.to_kind(Kind::Float).cross_entropy_loss::<Tensor>(targets, None, Reduction::Sum, -100, 0.0)
}

/// Summed τ²·KL(teacher ‖ student) of `[N, V]` logits.
pub fn kl_sum(student_logits: &Tensor, teacher_logits: &Tensor, temperature: f64) -> Tensor {
    let s = (student_logits.to_kind(Kind::Float) / temperature).log_softmax(-1, Kind::Float);
    let t = (teacher_logits.to_kind(Kind::Float) / temperature).log_softmax(-1, Kind::Float);
    (t.exp() * (&t - &s)).sum(Kind::Float) * (temperature * temperature)
}

/// Summed τ²·KL from a teacher known only at `indices` `[N, K]`, with its log-probabilities
/// `teacher_logp` `[N, K]` at temperature τ (a top-k cache): the mass outside the top k is
/// dropped, so with K = V this equals [`kl_sum`].
pub fn sparse_kl_sum(student_logits: &Tensor, indices: &Tensor, teacher_logp: &Tensor, temperature: f64) -> Tensor {
    let s = (student_logits.to_kind(Kind::Float) / temperature).log_softmax(-1, Kind::Float);
    let s = s.gather(1, indices, false);
    let t = teacher_logp.to_kind(Kind::Float);
    (t.exp() * (&t - s)).sum(Kind::Float) * (temperature * temperature)
}

/// A loss over `hidden` `[N, d]` (flattened positions) summed chunk by chunk: `term(h, start,
/// len)` turns a chunk of hidden states into that chunk's share of the loss (the shares add up
/// to the loss). When `hidden` requires a gradient, the loss times `scale` is back-propagated
/// as it goes, and the model's gradients equal those of the unchunked loss. Returns the loss.
pub fn chunked(hidden: &Tensor, chunk: i64, scale: f64, term: impl Fn(&Tensor, i64, i64) -> Tensor) -> f64 {
    let n = hidden.size()[0];
    let chunk = chunk.max(1);
    let mut total = 0.0;
    if !hidden.requires_grad() {
        let mut start = 0;
        while start < n {
            let len = chunk.min(n - start);
            total += tch::no_grad(|| term(&hidden.narrow(0, start, len), start, len)).double_value(&[]);
            start += len;
        }
        return total;
    }
    let mut grads = Vec::new();
    let mut start = 0;
    while start < n {
        let len = chunk.min(n - start);
        let h = hidden.narrow(0, start, len).detach().set_requires_grad(true);
        let loss = term(&h, start, len);
        total += loss.double_value(&[]);
        (loss * scale).backward();
        grads.push(h.grad());
        start += len;
    }
    // One backward through the model for every chunk's gradient with respect to its slice.
    (hidden * Tensor::cat(&grads, 0).detach()).sum(Kind::Float).backward();
    total
}

/// Where distillation targets come from.
pub enum Teacher<'a> {
    /// A teacher run now on the inputs it sees.
    Online(&'a Llama, &'a Inputs),
    /// A teacher's cached top-k for this batch.
    Cached(&'a crate::teacher_cache::CachedBatch),
}

/// The training loss of a window: cross-entropy against `targets` `[B, T]`, or, with a teacher,
/// τ²·KL + ce_weight·CE; in chunks of `chunk` positions, back-propagated times `scale` when the
/// student's weights require gradients. Returns the loss.
pub fn window_loss(
    student: &Llama,
    inputs: &Inputs,
    targets: &Tensor,
    teacher: Option<Teacher>,
    kd: &KdConfig,
    chunk: i64,
    scale: f64,
) -> f64 {
    let hidden = student.hidden(inputs).reshape([-1, student.config.d_model as i64]);
    let targets = targets.reshape([-1]);
    // Targets of -100 are not learned (instruction tuning's prompts and padding).
    let n = targets.ne(-100).sum(Kind::Int64).int64_value(&[]).max(1) as f64;
    let online = match &teacher {
        Some(Teacher::Online(t, t_inputs)) => {
            let h = tch::no_grad(|| t.hidden(t_inputs));
            Some((*t, h.reshape([-1, t.config.d_model as i64])))
        }
        _ => None,
    };
    chunked(&hidden, chunk, scale, |h, start, len| {
        let logits = student.logits(h);
        let ce = |w: f64| ce_sum(&logits, &targets.narrow(0, start, len)) * (w / n);
        let kl = match (&teacher, &online) {
            (Some(Teacher::Online(..)), Some((t, t_hidden))) => {
                let t_logits = tch::no_grad(|| t.logits(&t_hidden.narrow(0, start, len)));
                kl_sum(&logits, &t_logits, kd.temperature) / n
            }
            (Some(Teacher::Cached(c)), _) => {
                let (idx, logp) = (c.indices.narrow(0, start, len), c.logprobs.narrow(0, start, len));
                sparse_kl_sum(&logits, &idx, &logp, kd.temperature) / n
            }
            _ => return ce(1.0),
        };
        if kd.ce_weight > 0.0 { kl + ce(kd.ce_weight) } else { kl }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    #[test]
    fn sparse_kl_with_the_whole_vocabulary_is_the_kl() {
        tch::manual_seed(3);
        let s = Tensor::randn([6, 11], (Kind::Float, Device::Cpu));
        let t = Tensor::randn([6, 11], (Kind::Float, Device::Cpu)) * 2.0;
        for tau in [1.0, 2.0] {
            let (logp, idx) = (&t / tau).log_softmax(-1, Kind::Float).topk(11, -1, true, true);
            let sparse = sparse_kl_sum(&s, &idx, &logp, tau).double_value(&[]);
            let full = kl_sum(&s, &t, tau).double_value(&[]);
            assert!((sparse - full).abs() < 1e-5, "{sparse} vs {full}");
        }
    }
}

//! Training losses: next-token cross-entropy and forward KL from a teacher's logits.

use tch::{Kind, Reduction, Tensor};

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

/// Mean next-token cross-entropy; `logits` `[B, T, V]`, `targets` `[B, T]`.
pub fn cross_entropy(logits: &Tensor, targets: &Tensor) -> Tensor {
    let v = logits.size().last().copied().expect("logits have a vocab axis");
    logits.reshape([-1, v]).to_kind(Kind::Float).cross_entropy_loss::<Tensor>(
        &targets.reshape([-1]),
        None,
        Reduction::Mean,
        -100,
        0.0,
    )
}

/// Per-token forward KL(teacher ‖ student) over the full vocabulary at temperature τ,
/// averaged over tokens and scaled by τ² (so gradients keep their size as τ changes).
pub fn forward_kl(student_logits: &Tensor, teacher_logits: &Tensor, temperature: f64) -> Tensor {
    let v = student_logits.size().last().copied().expect("logits have a vocab axis");
    let s = (student_logits.reshape([-1, v]).to_kind(Kind::Float) / temperature).log_softmax(-1, Kind::Float);
    let t = (teacher_logits.reshape([-1, v]).to_kind(Kind::Float) / temperature).log_softmax(-1, Kind::Float);
    let kl = (t.exp() * (&t - &s)).sum_dim_intlist(-1, false, Kind::Float);
    kl.mean(Kind::Float) * (temperature * temperature)
}

/// The distillation objective: τ²·KL + ce_weight·CE.
pub fn distillation(student_logits: &Tensor, teacher_logits: &Tensor, targets: &Tensor, kd: &KdConfig) -> Tensor {
    let kl = forward_kl(student_logits, teacher_logits, kd.temperature);
    if kd.ce_weight > 0.0 { kl + cross_entropy(student_logits, targets) * kd.ce_weight } else { kl }
}

//! AdamW over the flat parameter groups, with its state as plain tensors (so checkpoints
//! hold it exactly), gradient clipping, and the warm-up + cosine learning-rate schedule.

use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

use crate::params::Params;

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct AdamWConfig {
    pub lr: f64,
    pub min_lr_ratio: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
    pub warmup_steps: u64,
    /// Clip the global gradient norm to this (0 = no clipping).
    pub grad_clip: f64,
}

impl Default for AdamWConfig {
    fn default() -> Self {
        AdamWConfig {
            lr: 3e-3,
            min_lr_ratio: 0.1,
            beta1: 0.9,
            beta2: 0.95,
            eps: 1e-8,
            weight_decay: 0.1,
            warmup_steps: 20,
            grad_clip: 1.0,
        }
    }
}

impl AdamWConfig {
    /// Linear warm-up to `lr`, then cosine decay to `min_lr_ratio · lr` at `total` steps.
    pub fn lr_at(&self, step: u64, total: u64) -> f64 {
        if step < self.warmup_steps {
            return self.lr * (step + 1) as f64 / self.warmup_steps as f64;
        }
        let span = total.saturating_sub(self.warmup_steps).max(1);
        let progress = ((step - self.warmup_steps) as f64 / span as f64).min(1.0);
        let min = self.lr * self.min_lr_ratio;
        min + 0.5 * (self.lr - min) * (1.0 + (std::f64::consts::PI * progress).cos())
    }
}

/// First and second moments per parameter group, and the step count.
pub struct AdamW {
    pub config: AdamWConfig,
    pub m: Vec<Tensor>,
    pub v: Vec<Tensor>,
    pub step: u64,
}

impl AdamW {
    pub fn new(config: AdamWConfig, params: &Params) -> AdamW {
        let zeros = || params.groups.iter().map(|g| g.flat.zeros_like()).collect::<Vec<_>>();
        AdamW { config, m: zeros(), v: zeros(), step: 0 }
    }

    /// One update from the current gradients at learning rate `lr`; returns the gradient
    /// norm before clipping.
    pub fn step(&mut self, params: &mut Params, lr: f64) -> f64 {
        let c = self.config;
        let grads = params.flat_grads();
        let norm = Tensor::stack(&grads.iter().map(|g| g.square().sum(Kind::Float)).collect::<Vec<_>>(), 0)
            .sum(Kind::Float)
            .sqrt()
            .double_value(&[]);
        let scale = if c.grad_clip > 0.0 && norm > c.grad_clip { c.grad_clip / (norm + 1e-6) } else { 1.0 };
        self.step += 1;
        let bc1 = 1.0 - c.beta1.powi(self.step as i32);
        let bc2 = 1.0 - c.beta2.powi(self.step as i32);
        tch::no_grad(|| {
            for (i, group) in params.groups.iter_mut().enumerate() {
                let g = if scale == 1.0 { grads[i].shallow_clone() } else { &grads[i] * scale };
                if group.decay && c.weight_decay > 0.0 {
                    let _ = group.flat.g_mul_scalar_(1.0 - lr * c.weight_decay);
                }
                let _ = self.m[i].g_mul_scalar_(c.beta1).g_add_(&(&g * (1.0 - c.beta1)));
                let _ = self.v[i].g_mul_scalar_(c.beta2).g_add_(&(g.square() * (1.0 - c.beta2)));
                let denom = (self.v[i].sqrt() / bc2.sqrt()).g_add_scalar_(c.eps);
                let update = (&self.m[i] / denom) * (lr / bc1);
                let _ = group.flat.g_sub_(&update);
            }
        });
        params.zero_grads();
        norm
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule_warms_up_then_decays_to_the_floor() {
        let c = AdamWConfig { lr: 1.0, min_lr_ratio: 0.1, warmup_steps: 10, ..Default::default() };
        assert!((c.lr_at(0, 100) - 0.1).abs() < 1e-12);
        assert!((c.lr_at(9, 100) - 1.0).abs() < 1e-12);
        assert!((c.lr_at(10, 100) - 1.0).abs() < 1e-12);
        assert!((c.lr_at(100, 100) - 0.1).abs() < 1e-12);
        assert!(c.lr_at(50, 100) < c.lr_at(30, 100));
    }
}

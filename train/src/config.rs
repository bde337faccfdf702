//! Model configurations: the shape of a Llama-style decoder with per-layer attention types,
//! presets, TOML files and the exact parameter count.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// The attention a layer uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AttnKind {
    /// Causal attention over the whole sequence.
    Global,
    /// Causal attention over the last `sliding_window` tokens, the query included
    /// (Hugging Face's convention: key k is visible from query q when q - k < window).
    Local,
}

/// Everything that fixes a model's shape.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    pub vocab_size: usize,
    pub d_model: usize,
    pub n_heads: usize,
    pub n_kv_heads: usize,
    pub head_dim: usize,
    pub ffn_dim: usize,
    /// One entry per layer; the number of layers is its length.
    pub layer_types: Vec<AttnKind>,
    pub sliding_window: usize,
    pub rope_theta: f64,
    pub norm_eps: f64,
    pub tie_embeddings: bool,
    /// The longest sequence the model is meant for (exported as max_position_embeddings).
    pub max_seq_len: usize,
    /// Fake quantization in the forward (a PTQ or QAT model); absent for a full-precision one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quant: Option<crate::quant::QuantConfig>,
}

/// The built-in presets, by name.
pub const PRESETS: [&str; 5] = ["tiny", "proxy-5m", "proxy-12m", "teacher-50m", "mobilellm-pro-1b"];

impl ModelConfig {
    /// A built-in configuration. Presets other than `mobilellm-pro-1b` have an 8,192-token
    /// vocabulary; training replaces it with the shards' vocabulary.
    pub fn preset(name: &str) -> Result<ModelConfig> {
        let alternating =
            |n: usize| (0..n).map(|i| if i % 2 == 0 { AttnKind::Local } else { AttnKind::Global }).collect();
        let config = match name {
            // Fast enough for unit tests: every feature present, window shorter than test sequences.
            "tiny" => ModelConfig {
                vocab_size: 8192,
                d_model: 64,
                n_heads: 4,
                n_kv_heads: 2,
                head_dim: 16,
                ffn_dim: 192,
                layer_types: alternating(4),
                sliding_window: 32,
                rope_theta: 10_000.0,
                norm_eps: 1e-5,
                tie_embeddings: true,
                max_seq_len: 512,
                quant: None,
            },
            // Simulator proxies: small enough for hundreds of runs on a CPU.
            "proxy-5m" => ModelConfig {
                vocab_size: 8192,
                d_model: 256,
                n_heads: 4,
                n_kv_heads: 2,
                head_dim: 64,
                ffn_dim: 768,
                layer_types: alternating(4),
                sliding_window: 64,
                rope_theta: 10_000.0,
                norm_eps: 1e-5,
                tie_embeddings: true,
                max_seq_len: 1024,
                quant: None,
            },
            "proxy-12m" => ModelConfig {
                vocab_size: 8192,
                d_model: 384,
                n_heads: 6,
                n_kv_heads: 2,
                head_dim: 64,
                ffn_dim: 1024,
                layer_types: alternating(6),
                sliding_window: 128,
                rope_theta: 10_000.0,
                norm_eps: 1e-5,
                tie_embeddings: true,
                max_seq_len: 2048,
                quant: None,
            },
            // A teacher a few times larger than the proxies, for distillation on small data.
            "teacher-50m" => ModelConfig {
                vocab_size: 8192,
                d_model: 640,
                n_heads: 10,
                n_kv_heads: 2,
                head_dim: 64,
                ffn_dim: 1792,
                layer_types: vec![AttnKind::Global; 10],
                sliding_window: 512,
                rope_theta: 10_000.0,
                norm_eps: 1e-5,
                tie_embeddings: true,
                max_seq_len: 4096,
                quant: None,
            },
            // The report's shape: 30 layers, global every 4th layer plus the last (22 local, 8 global).
            "mobilellm-pro-1b" => ModelConfig {
                vocab_size: 202_048,
                d_model: 1280,
                n_heads: 20,
                n_kv_heads: 4,
                head_dim: 64,
                ffn_dim: 6144,
                layer_types: (0..30)
                    .map(|i| if i % 4 == 3 || i == 29 { AttnKind::Global } else { AttnKind::Local })
                    .collect(),
                sliding_window: 512,
                rope_theta: 500_000.0,
                norm_eps: 1e-5,
                tie_embeddings: true,
                max_seq_len: 131_072,
                quant: None,
            },
            other => {
                return Err(Error::Config(format!("unknown model preset {other:?}; presets: {}", PRESETS.join(", "))));
            }
        };
        Ok(config)
    }

    /// Reads a TOML file with every field of [`ModelConfig`].
    pub fn from_toml_file(path: &Path) -> Result<ModelConfig> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let config: ModelConfig =
            toml::from_str(&text).map_err(|e| Error::Config(format!("{}: {}", path.display(), e.message())))?;
        config.validate()?;
        Ok(config)
    }

    /// A preset name or the path of a TOML file.
    pub fn resolve(name_or_path: &str) -> Result<ModelConfig> {
        if PRESETS.contains(&name_or_path) {
            return ModelConfig::preset(name_or_path);
        }
        let path = Path::new(name_or_path);
        if path.exists() {
            return ModelConfig::from_toml_file(path);
        }
        Err(Error::Config(format!(
            "{name_or_path:?} is neither a preset ({}) nor an existing config file",
            PRESETS.join(", ")
        )))
    }

    pub fn n_layers(&self) -> usize {
        self.layer_types.len()
    }

    /// Rejects shapes the model can't build, naming the field.
    pub fn validate(&self) -> Result<()> {
        let fail = |msg: String| Err(Error::Config(msg));
        if self.layer_types.is_empty() {
            return fail("layer_types is empty: a model needs at least one layer".into());
        }
        for (name, v) in [
            ("vocab_size", self.vocab_size),
            ("d_model", self.d_model),
            ("n_heads", self.n_heads),
            ("n_kv_heads", self.n_kv_heads),
            ("head_dim", self.head_dim),
            ("ffn_dim", self.ffn_dim),
            ("max_seq_len", self.max_seq_len),
        ] {
            if v == 0 {
                return fail(format!("{name} must be positive"));
            }
        }
        if !self.n_heads.is_multiple_of(self.n_kv_heads) {
            return fail(format!("n_heads ({}) must be a multiple of n_kv_heads ({})", self.n_heads, self.n_kv_heads));
        }
        if !self.head_dim.is_multiple_of(2) {
            return fail(format!("head_dim ({}) must be even for rotary embeddings", self.head_dim));
        }
        if self.layer_types.contains(&AttnKind::Local) && self.sliding_window == 0 {
            return fail("sliding_window must be positive when a layer is local".into());
        }
        if let Some(q) = &self.quant {
            q.check(self)?;
        }
        let positive = |x: f64| x > 0.0 && x.is_finite();
        if !positive(self.rope_theta) || !positive(self.norm_eps) {
            return fail("rope_theta and norm_eps must be positive".into());
        }
        Ok(())
    }

    /// The exact number of parameters: embeddings (once when tied), per layer the four
    /// attention projections, the three SwiGLU matrices and two RMSNorm weights, the final norm.
    pub fn param_count(&self) -> u64 {
        let (d, hd) = (self.d_model as u64, self.head_dim as u64);
        let q_dim = self.n_heads as u64 * hd;
        let kv_dim = self.n_kv_heads as u64 * hd;
        let attention = 2 * d * q_dim + 2 * d * kv_dim;
        let mlp = 3 * d * self.ffn_dim as u64;
        let per_layer = attention + mlp + 2 * d;
        let embeddings = self.vocab_size as u64 * d * if self.tie_embeddings { 1 } else { 2 };
        embeddings + self.n_layers() as u64 * per_layer + d
    }
}

/// The first field in which two model configs differ, as `field: a vs b` (for errors).
pub fn first_difference(a: &ModelConfig, b: &ModelConfig) -> String {
    let (a, b) = (serde_json::to_value(a).unwrap_or_default(), serde_json::to_value(b).unwrap_or_default());
    if let (Some(a), Some(b)) = (a.as_object(), b.as_object()) {
        // Both sides' keys: an optional field (quant) is absent from one of them.
        for key in a.keys().chain(b.keys()) {
            let (va, vb) = (a.get(key).cloned().unwrap_or_default(), b.get(key).cloned().unwrap_or_default());
            if va != vb {
                return format!("{key}: {va} vs {vb}");
            }
        }
    }
    "no field differs".to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mobilellm_pro_counts_exactly() {
        let c = ModelConfig::preset("mobilellm-pro-1b").unwrap();
        assert_eq!(c.param_count(), 1_084_453_120);
        assert_eq!(c.layer_types.iter().filter(|k| **k == AttnKind::Global).count(), 8);
    }

    #[test]
    fn presets_are_valid_and_round_trip_through_toml() {
        for name in PRESETS {
            let c = ModelConfig::preset(name).unwrap();
            c.validate().unwrap();
            let text = toml::to_string(&c).unwrap();
            assert_eq!(toml::from_str::<ModelConfig>(&text).unwrap(), c);
        }
    }

    #[test]
    fn bad_shapes_name_the_field() {
        let mut c = ModelConfig::preset("tiny").unwrap();
        c.n_kv_heads = 3;
        assert!(c.validate().unwrap_err().to_string().contains("n_kv_heads"));
        assert!(ModelConfig::resolve("no-such-model").unwrap_err().to_string().contains("tiny"));
    }
}

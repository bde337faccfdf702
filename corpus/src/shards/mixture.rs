//! The mixture the loader reads: domain weights (token fractions) and epoch caps, from a
//! proposal or any TOML file with a `[weights]` table. Here rather than in the trainer so
//! commands that only read mixtures (`mix propose --prior`) never link libtorch.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::Shards;
use crate::error::IoContext;
use crate::{Error, Result};

/// Domain weights and epoch caps: the part of a mix proposal the loader reads.
///
/// TOML: a `[weights]` table (domain = weight), and optionally `max_epochs = N` for every
/// domain or a `[max_epochs]` table per domain. Other keys (a proposal's predictions,
/// utilities, …) are ignored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Mixture {
    /// Weight per domain (normalised by the loader).
    pub weights: BTreeMap<String, f64>,
    /// Epoch cap per domain; a domain absent here is uncapped.
    #[serde(default)]
    pub max_epochs: BTreeMap<String, f64>,
}

#[derive(Deserialize)]
struct MixtureFile {
    weights: BTreeMap<String, f64>,
    #[serde(default)]
    max_epochs: Option<toml::Value>,
}

impl Mixture {
    /// Reads a mixture file, saying which field is wrong when it is.
    pub fn from_toml_file(path: &Path) -> Result<Mixture> {
        let text = std::fs::read_to_string(path).at(path)?;
        let file: MixtureFile = toml::from_str(&text)
            .map_err(|e| invalid(path, format!("{} (a mixture needs a [weights] table)", e.message())))?;
        let mut max_epochs = BTreeMap::new();
        match file.max_epochs {
            None => {}
            Some(toml::Value::Float(x)) => {
                max_epochs = file.weights.keys().map(|d| (d.clone(), x)).collect();
            }
            Some(toml::Value::Integer(x)) => {
                max_epochs = file.weights.keys().map(|d| (d.clone(), x as f64)).collect();
            }
            Some(toml::Value::Table(t)) => {
                for (d, v) in t {
                    let x = v
                        .as_float()
                        .or_else(|| v.as_integer().map(|i| i as f64))
                        .ok_or_else(|| invalid(path, format!("max_epochs.{d} must be a number")))?;
                    max_epochs.insert(d, x);
                }
            }
            Some(_) => return Err(invalid(path, "max_epochs must be a number or a table")),
        }
        let mixture = Mixture { weights: file.weights, max_epochs };
        mixture.validate().map_err(|e| invalid(path, e))?;
        Ok(mixture)
    }

    fn validate(&self) -> std::result::Result<(), String> {
        if let Some((d, w)) = self.weights.iter().find(|(_, w)| !w.is_finite() || **w < 0.0) {
            return Err(format!("weight of {d} is {w}; weights must be finite and non-negative"));
        }
        if self.weights.values().sum::<f64>() <= 0.0 {
            return Err("the weights sum to zero".into());
        }
        if let Some((d, e)) = self.max_epochs.iter().find(|(_, e)| e.is_nan() || **e <= 0.0) {
            return Err(format!("max_epochs of {d} is {e}; caps must be positive"));
        }
        Ok(())
    }

    /// Weights proportional to each domain's training tokens.
    pub fn natural(shards: &Shards) -> Mixture {
        let weights = shards.manifest().domains.iter().map(|(d, s)| (d.clone(), s.train_tokens as f64)).collect();
        Mixture { weights, max_epochs: BTreeMap::new() }
    }

    /// Equal weights.
    pub fn uniform(shards: &Shards) -> Mixture {
        let weights = shards.manifest().domains.keys().map(|d| (d.clone(), 1.0)).collect();
        Mixture { weights, max_epochs: BTreeMap::new() }
    }
}

fn invalid(path: &Path, reason: impl Into<String>) -> Error {
    Error::Format { path: path.to_path_buf(), reason: reason.into() }
}

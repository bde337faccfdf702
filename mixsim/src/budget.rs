//! Domains and budgets: the tokens each domain has, the tokens a target run will read, and the
//! epoch caps that bound each weight (`weight × target ≤ max_epochs × available`).

use std::collections::BTreeMap;
use std::path::Path;

use corpus::shards::{DomainSegments, Shards};

use crate::error::{Error, Result};

/// What a mixture may be: per domain, its available tokens and the bounds on its weight.
#[derive(Debug, Clone, PartialEq)]
pub struct Budget {
    /// Domain names, sorted.
    pub domains: Vec<String>,
    /// Training tokens per domain, one EOS per document included (what a trainer reads).
    pub available: Vec<u64>,
    /// Training tokens of the target run.
    pub target_tokens: u64,
    /// Epoch cap per domain (`None`: uncapped).
    pub max_epochs: Vec<Option<f64>>,
    /// Smallest weight any domain with data gets (0 lets a domain drop out).
    pub min_weight: f64,
}

impl Budget {
    /// Reads available tokens from a shard directory, counting them exactly as the trainer's
    /// loader does (held-out tails excluded). `max_epochs` applies to every domain unless
    /// `per_domain` names it; names not in the shards are an error.
    pub fn from_shards(
        dir: &Path,
        target_tokens: u64,
        max_epochs: Option<f64>,
        per_domain: &BTreeMap<String, f64>,
        min_weight: f64,
    ) -> Result<Budget> {
        let shards = Shards::open(dir)?;
        let mut domains = Vec::new();
        let mut available = Vec::new();
        for name in shards.manifest().domains.keys() {
            domains.push(name.clone());
            available.push(DomainSegments::open(&shards, name)?.train_tokens());
        }
        if let Some(unknown) = per_domain.keys().find(|d| !domains.contains(d)) {
            return Err(Error::Invalid(format!(
                "epoch cap for domain `{unknown}`, which {} does not have (domains: {})",
                dir.display(),
                domains.join(", ")
            )));
        }
        let caps = domains.iter().map(|d| per_domain.get(d).copied().or(max_epochs)).collect();
        Budget::new(domains, available, target_tokens, caps, min_weight)
    }

    /// Checks the settings and that some mixture satisfies them.
    pub fn new(
        domains: Vec<String>,
        available: Vec<u64>,
        target_tokens: u64,
        max_epochs: Vec<Option<f64>>,
        min_weight: f64,
    ) -> Result<Budget> {
        if domains.is_empty() || domains.len() != available.len() || domains.len() != max_epochs.len() {
            return Err(Error::Invalid("a budget needs one available count and one cap per domain".into()));
        }
        if target_tokens == 0 {
            return Err(Error::Invalid("the target token budget must be positive".into()));
        }
        if let Some((d, c)) = domains.iter().zip(&max_epochs).find(|(_, c)| c.is_some_and(|c| c.is_nan() || c <= 0.0)) {
            return Err(Error::Invalid(format!("max_epochs for `{d}` is {c:?}; caps must be positive")));
        }
        if !(0.0..1.0).contains(&min_weight) {
            return Err(Error::Invalid(format!("min_weight must be in [0, 1), got {min_weight}")));
        }
        let budget = Budget { domains, available, target_tokens, max_epochs, min_weight };
        let (lo, hi) = (budget.lower(), budget.upper());
        if let Some(j) = (0..lo.len()).find(|&j| lo[j] > hi[j]) {
            return Err(Error::Infeasible(format!(
                "domain `{}` must get at least {} of the mixture but its cap allows {:.4}",
                budget.domains[j], lo[j], hi[j]
            )));
        }
        if hi.iter().sum::<f64>() < 1.0 - 1e-12 {
            let most: u64 = budget.cap_tokens().iter().sum();
            return Err(Error::Infeasible(format!(
                "the epoch caps allow at most {most} of the {target_tokens} target tokens; lower the target, \
                 raise max_epochs, or add data"
            )));
        }
        if lo.iter().sum::<f64>() > 1.0 {
            return Err(Error::Infeasible(format!("min_weight {min_weight} × domains with data exceeds 1")));
        }
        Ok(budget)
    }

    /// Tokens each domain may contribute at most: `min(target, cap × available)`.
    pub fn cap_tokens(&self) -> Vec<u64> {
        self.available
            .iter()
            .zip(&self.max_epochs)
            .map(|(&a, c)| match c {
                Some(c) => ((c * a as f64).floor() as u64).min(self.target_tokens),
                None if a == 0 => 0,
                None => self.target_tokens,
            })
            .collect()
    }

    /// Upper bound of each weight.
    pub fn upper(&self) -> Vec<f64> {
        self.cap_tokens().iter().map(|&t| t as f64 / self.target_tokens as f64).collect()
    }

    /// Lower bound of each weight: `min_weight` for domains with data, else 0.
    pub fn lower(&self) -> Vec<f64> {
        self.available.iter().map(|&a| if a > 0 { self.min_weight } else { 0.0 }).collect()
    }

    /// Token shares as they are: `available / Σ available`.
    pub fn natural(&self) -> Vec<f64> {
        let total: u64 = self.available.iter().sum();
        self.available.iter().map(|&a| a as f64 / total.max(1) as f64).collect()
    }

    /// Equal weights over domains with data.
    pub fn uniform(&self) -> Vec<f64> {
        let n = self.available.iter().filter(|&&a| a > 0).count().max(1) as f64;
        self.available.iter().map(|&a| if a > 0 { 1.0 / n } else { 0.0 }).collect()
    }

    /// UniMax (Chung et al., 2023): spread the budget as evenly as possible, giving each domain
    /// at most its cap; what a capped domain cannot take goes evenly to the rest. Uncapped
    /// domains share equally.
    pub fn unimax(&self) -> Vec<f64> {
        let caps = self.cap_tokens();
        let mut order: Vec<usize> = (0..caps.len()).filter(|&j| self.available[j] > 0).collect();
        order.sort_by_key(|&j| (caps[j], j));
        let mut left = self.target_tokens as f64;
        let mut weights = vec![0.0; caps.len()];
        for (k, &j) in order.iter().enumerate() {
            let share = left / (order.len() - k) as f64;
            let take = share.min(caps[j] as f64);
            weights[j] = take / self.target_tokens as f64;
            left -= take;
        }
        weights
    }

    /// Epochs each domain is read at the target budget under `weights`.
    pub fn epochs(&self, weights: &[f64]) -> Vec<f64> {
        weights
            .iter()
            .zip(&self.available)
            .map(|(w, &a)| if a == 0 { 0.0 } else { w * self.target_tokens as f64 / a as f64 })
            .collect()
    }

    /// `name = value` per domain, for proposals and mixture files.
    pub fn named(&self, values: &[f64]) -> BTreeMap<String, f64> {
        self.domains.iter().cloned().zip(values.iter().copied()).collect()
    }
}

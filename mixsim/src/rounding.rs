//! Rounding a mixture to whole quanta of tokens without breaking a cap.
//!
//! Rounding each weight to the nearest quantum independently can push a domain past its epoch
//! cap (Marin's 4.10 epochs against a cap of 4). Here caps and floors are in whole quanta
//! first, then the largest-remainder method hands out what is left, only to domains below
//! their cap. No domain ever ends above its cap.

use crate::error::{Error, Result};

/// Tokens per domain, each a multiple of `quantum`, summing to `target` rounded down to a
/// whole quantum, with `tokens[j] ≤ cap_tokens[j]` and `tokens[j] ≥ ⌈min_tokens[j]⌉`
/// (the floor rounded up to a quantum, when the caps allow). Ties go to the lower index.
pub fn round_tokens(
    weights: &[f64],
    target: u64,
    quantum: u64,
    cap_tokens: &[u64],
    min_tokens: &[u64],
) -> Result<Vec<u64>> {
    if quantum == 0 || quantum > target {
        return Err(Error::Invalid(format!("the rounding quantum must be in 1..={target} tokens, got {quantum}")));
    }
    let total = target / quantum;
    let caps: Vec<u64> = cap_tokens.iter().map(|c| c / quantum).collect();
    let floors: Vec<u64> = min_tokens.iter().zip(&caps).map(|(m, c)| m.div_ceil(quantum).min(*c)).collect();
    if caps.iter().sum::<u64>() < total {
        return Err(Error::Infeasible(format!(
            "in whole quanta of {quantum} tokens the caps hold {} of {total} quanta; use a smaller quantum",
            caps.iter().sum::<u64>()
        )));
    }
    if floors.iter().sum::<u64>() > total {
        return Err(Error::Infeasible(format!("the minimum weights need more than {total} quanta")));
    }
    let ideal: Vec<f64> = weights.iter().map(|w| w.max(0.0) * total as f64).collect();
    let mut q: Vec<u64> =
        ideal.iter().zip(&caps).zip(&floors).map(|((x, c), f)| (x.floor() as u64).clamp(*f, *c)).collect();
    // Too many: take back from the domains furthest above their ideal (never below a floor).
    while q.iter().sum::<u64>() > total {
        let j = (0..q.len())
            .filter(|&j| q[j] > floors[j])
            .max_by(|&a, &b| (q[a] as f64 - ideal[a]).total_cmp(&(q[b] as f64 - ideal[b])).then(b.cmp(&a)))
            .expect("floors sum to at most total");
        q[j] -= 1;
    }
    // Too few: give to the domains furthest below their ideal (never above a cap).
    while q.iter().sum::<u64>() < total {
        let j = (0..q.len())
            .filter(|&j| q[j] < caps[j])
            .max_by(|&a, &b| (ideal[a] - q[a] as f64).total_cmp(&(ideal[b] - q[b] as f64)).then(b.cmp(&a)))
            .expect("caps sum to at least total");
        q[j] += 1;
    }
    Ok(q.iter().map(|x| x * quantum).collect())
}

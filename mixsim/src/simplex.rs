//! The feasible set of mixtures: the simplex cut by per-domain bounds `lo ≤ w ≤ hi`.

/// The Euclidean projection of `v` onto `{w : Σw = 1, lo ≤ w ≤ hi}`: `w_j = clamp(v_j − τ)`
/// with the one `τ` that makes the sum 1, found by bisection (the sum falls monotonically in
/// `τ`). Assumes `Σlo ≤ 1 ≤ Σhi` (what [`crate::Budget::new`] checks).
pub fn project(v: &[f64], lo: &[f64], hi: &[f64]) -> Vec<f64> {
    let at = |tau: f64| -> Vec<f64> { v.iter().zip(lo).zip(hi).map(|((x, l), h)| (x - tau).clamp(*l, *h)).collect() };
    let sum = |tau: f64| at(tau).iter().sum::<f64>();
    let span = v.iter().chain(lo).chain(hi).fold(0.0f64, |m, x| m.max(x.abs())) + 1.0;
    let (mut a, mut b) = (-span, span);
    for _ in 0..200 {
        let mid = 0.5 * (a + b);
        if sum(mid) > 1.0 { a = mid } else { b = mid }
    }
    let mut w = at(0.5 * (a + b));
    // Bisection leaves ~1e-16 of slack; put it on a domain with room so the sum is exact.
    let gap = 1.0 - w.iter().sum::<f64>();
    if let Some(j) = (0..w.len()).find(|&j| w[j] + gap >= lo[j] && w[j] + gap <= hi[j]) {
        w[j] += gap;
    }
    w
}

/// Whether `w` lies in the set, within `tol`.
pub fn feasible(w: &[f64], lo: &[f64], hi: &[f64], tol: f64) -> bool {
    (w.iter().sum::<f64>() - 1.0).abs() <= tol
        && w.iter().zip(lo).zip(hi).all(|((x, l), h)| *x >= l - tol && *x <= h + tol)
}

/// Whether two mixtures are equal within 1e-9 per weight.
pub fn same(a: &[f64], b: &[f64]) -> bool {
    a.iter().zip(b).all(|(x, y)| (x - y).abs() < 1e-9)
}

/// KL(w ‖ prior) in nats; domains the prior gives no weight are skipped (they have none here
/// either when the bounds came from the same budget).
pub fn kl(w: &[f64], prior: &[f64]) -> f64 {
    w.iter().zip(prior).filter(|(x, p)| **x > 0.0 && **p > 0.0).map(|(x, p)| x * (x / p).ln()).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn projection_respects_bounds_and_keeps_feasible_points() {
        let (lo, hi) = (vec![0.0, 0.05, 0.0], vec![0.2, 1.0, 1.0]);
        let w = project(&[0.9, 0.05, 0.05], &lo, &hi);
        assert!(feasible(&w, &lo, &hi, 1e-12), "{w:?}");
        assert!((w[0] - 0.2).abs() < 1e-12);
        let inside = [0.1, 0.5, 0.4];
        let same = project(&inside, &lo, &hi);
        assert!(inside.iter().zip(&same).all(|(a, b)| (a - b).abs() < 1e-12), "{same:?}");
    }
}

//! Budgets and swarm design: caps, floors, anchors and determinism.

use mixsim::{Budget, DesignConfig, design, simplex};

/// Five domains like the demo corpus: one tiny (web), one large (code).
pub fn demo_like_budget(target: u64, cap: f64, min_weight: f64) -> Budget {
    let domains = ["books", "code", "math", "web", "wiki"].map(String::from).to_vec();
    let available = vec![340_000, 1_620_000, 1_190_000, 42_000, 605_000];
    Budget::new(domains, available, target, vec![Some(cap); 5], min_weight).expect("feasible")
}

#[test]
fn caps_bound_weights_and_baselines() {
    let budget = demo_like_budget(1_000_000, 4.0, 0.0);
    let hi = budget.upper();
    assert!((hi[3] - 0.168).abs() < 1e-9, "web may take 4 × 42k of 1M tokens: {hi:?}");
    let unimax = budget.unimax();
    assert!(simplex::feasible(&unimax, &budget.lower(), &hi, 1e-12), "{unimax:?}");
    // UniMax gives the capped domain its cap and the rest equal shares.
    assert!((unimax[3] - 0.168).abs() < 1e-9 && (unimax[0] - 0.208).abs() < 1e-9, "{unimax:?}");
    assert!(Budget::new(vec!["a".into()], vec![10], 100, vec![Some(4.0)], 0.0).is_err(), "40 < 100 tokens");
}

#[test]
fn design_is_feasible_seeded_and_starts_with_anchors() {
    let budget = demo_like_budget(1_000_000, 4.0, 0.01);
    let config = DesignConfig {
        runs: 40,
        prior: budget.natural(),
        concentrations: DesignConfig::DEFAULT_CONCENTRATIONS.to_vec(),
        anchors: true,
        seed: 3,
    };
    let runs = design(&budget, &config).unwrap();
    assert_eq!(runs.len(), 40);
    let (lo, hi) = (budget.lower(), budget.upper());
    for w in &runs {
        assert!(simplex::feasible(w, &lo, &hi, 1e-9), "{w:?}");
    }
    // The prior (natural) first, then uniform with web clipped to its cap.
    assert!((runs[0][1] - budget.natural()[1]).abs() < 1e-9);
    assert!((runs[1][3] - hi[3]).abs() < 1e-9, "{:?}", runs[1]);
    assert_eq!(runs, design(&budget, &config).unwrap(), "same seed, same swarm");
    let other = design(&budget, &DesignConfig { seed: 4, ..config.clone() }).unwrap();
    assert_ne!(runs[5..], other[5..]);
    // Low concentrations reach far from the prior: some run gives a domain over half.
    assert!(runs.iter().any(|w| w.iter().any(|x| *x > 0.5) && w[1] < 0.2), "no extreme mixture drawn");
}

//! Rank metrics against hand-computed values, including ties.

use mixsim::{mae, pearson, spearman};

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-12
}

#[test]
fn spearman_uses_average_ranks() {
    // Ranks of a: 1, 2.5, 2.5, 4; of b: 1..4. Pearson of those ranks is 0.9486832980505138
    // (scipy.stats.spearmanr gives the same).
    let a = [1.0, 2.0, 2.0, 3.0];
    let b = [10.0, 20.0, 30.0, 40.0];
    assert!(close(spearman(&a, &b), 0.9486832980505138), "{}", spearman(&a, &b));
    assert!(close(spearman(&b, &[4.0, 3.0, 2.0, 1.0]), -1.0));
}

#[test]
fn pearson_and_mae() {
    assert!(close(pearson(&[1.0, 2.0, 3.0], &[2.0, 4.0, 6.0]), 1.0));
    assert_eq!(pearson(&[1.0, 1.0], &[1.0, 2.0]), 0.0);
    assert!(close(mae(&[1.0, 2.0], &[2.0, 4.0]), 1.5));
}

//! `mixforge mix import → fit → predict` on RegMix's published swarm: the round trip works and
//! the predictions rank the held-out mixtures as their real losses do.

use std::process::Command;

use crate::common::{manifest_dir, scratch};

fn mixforge(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_mixforge")).args(args).current_dir(manifest_dir()).output().unwrap()
}

fn regmix(file: &str) -> String {
    manifest_dir().join("../shared/data/regmix").join(file).display().to_string()
}

#[test]
fn import_fit_predict_round_trip() {
    let dir = scratch("mix");
    let path = |name: &str| dir.join(name).display().to_string();
    let imported = mixforge(&[
        "mix",
        "import",
        "--mixtures",
        &regmix("train_mixture_1m.csv"),
        "--metrics",
        &regmix("train_pile_loss_1m.csv"),
        "--out",
        &path("runs.csv"),
    ]);
    assert!(imported.status.success(), "{}", String::from_utf8_lossy(&imported.stderr));
    assert!(String::from_utf8_lossy(&imported.stdout).contains("imported 512 runs: 17 domains, 13 metrics"));
    let target = "the_pile_pile_cc_val_loss";
    let fit = mixforge(&[
        "mix",
        "fit",
        "--runs",
        &path("runs.csv"),
        "--target",
        target,
        "--surrogate",
        "gbdt",
        "--out",
        &path("model.json"),
    ]);
    assert!(fit.status.success(), "{}", String::from_utf8_lossy(&fit.stderr));
    assert!(String::from_utf8_lossy(&fit.stdout).contains("chosen: gbdt"));
    let predicted = mixforge(&[
        "mix",
        "predict",
        "--model",
        &path("model.json"),
        "--mixtures",
        &regmix("test_mixture_1m.csv"),
        "--out",
        &path("pred.csv"),
    ]);
    assert!(predicted.status.success(), "{}", String::from_utf8_lossy(&predicted.stderr));
    // Predictions against the real held-out losses.
    let pred: Vec<(String, f64)> = std::fs::read_to_string(path("pred.csv"))
        .unwrap()
        .lines()
        .skip(1)
        .map(|l| {
            let (i, p) = l.split_once(',').unwrap();
            (i.to_string(), p.parse().unwrap())
        })
        .collect();
    assert_eq!(pred.len(), 256);
    let truth_table = mixforge(&[
        "mix",
        "import",
        "--mixtures",
        &regmix("test_mixture_1m.csv"),
        "--metrics",
        &regmix("test_pile_loss_1m.csv"),
        "--out",
        &path("test_runs.csv"),
    ]);
    assert!(truth_table.status.success());
    let table = mixsim::RunsTable::read_csv(&dir.join("test_runs.csv")).unwrap();
    let (_, truth) = table.xy(target).unwrap();
    let by_index: std::collections::BTreeMap<&str, f64> = pred.iter().map(|(i, p)| (i.as_str(), *p)).collect();
    let ordered: Vec<f64> = table.rows.iter().map(|r| by_index[r.index.as_str()]).collect();
    let rho = mixsim::spearman(&ordered, &truth);
    assert!(rho >= 0.98, "Spearman {rho}");
    // A mixture whose domains are in another order is refused, not silently mispredicted.
    let shuffled = dir.join("shuffled.csv");
    let text = std::fs::read_to_string(regmix("test_mixture_1m.csv")).unwrap();
    let swapped: String = text
        .lines()
        .map(|l| {
            let mut cells: Vec<&str> = l.split(',').collect();
            cells.swap(1, 2);
            cells.join(",") + "\n"
        })
        .collect();
    std::fs::write(&shuffled, swapped).unwrap();
    let refused = mixforge(&[
        "mix",
        "predict",
        "--model",
        &path("model.json"),
        "--mixtures",
        shuffled.to_str().unwrap(),
        "--out",
        &path("bad.csv"),
    ]);
    assert!(!refused.status.success());
}

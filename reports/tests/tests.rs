//! The report on hand-made artifacts (the CLI tests cover real runs): what it refuses, and a
//! training section whose data file carries the metrics' exact values.

use std::path::PathBuf;

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("mixforge-reports-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn a_directory_without_run_artifacts_is_refused_by_name() {
    let dir = scratch("empty");
    let err = reports::write(&dir, None).err().expect("nothing to report").to_string();
    assert!(err.contains(&dir.display().to_string()) && err.contains("mixforge run"), "{err}");
    assert!(!dir.join("report").exists(), "no half report is left");
}

#[test]
fn training_curves_carry_the_metrics_exact_values() {
    let dir = scratch("train");
    std::fs::create_dir_all(dir.join("train")).unwrap();
    let losses = [7.123456789012345, 6.5, 0.1 + 0.2];
    let mut jsonl = String::new();
    for (k, loss) in losses.iter().enumerate() {
        jsonl.push_str(&format!(
            "{{\"step\":{},\"lr\":0.001,\"loss\":{loss},\"grad_norm\":1.5,\"tokens\":{},\"tokens_per_s\":1000.25}}\n",
            k + 1,
            (k + 1) * 64
        ));
    }
    jsonl.push_str("{\"step\":3,\"val_loss\":{\"code\":6.25,\"web\":5.75}}\n");
    std::fs::write(dir.join("train/metrics.jsonl"), jsonl).unwrap();
    let written = reports::write(&dir, Some("t")).unwrap();
    let csv = std::fs::read_to_string(dir.join("report/data/train-steps.csv")).unwrap();
    let got: Vec<f64> = csv.lines().skip(1).map(|l| l.split(',').nth(2).unwrap().parse().unwrap()).collect();
    assert_eq!(got, losses, "{csv}");
    let val = std::fs::read_to_string(dir.join("report/data/val-loss.csv")).unwrap();
    assert_eq!(val, "step,domain,val_loss\n3,code,6.25\n3,web,5.75\n");
    let html = std::fs::read_to_string(&written.html).unwrap();
    assert!(html.contains("<figure id=\"train-loss\">") && html.contains("@font-face"));
    assert!(std::fs::read_to_string(&written.markdown).unwrap().starts_with("# t\n"));
    // A second report replaces the first (its own kind); a foreign folder is refused.
    reports::write(&dir, None).unwrap();
    std::fs::remove_dir_all(dir.join("report")).unwrap();
    std::fs::create_dir_all(dir.join("report")).unwrap();
    std::fs::write(dir.join("report/notes.txt"), "mine").unwrap();
    assert!(reports::write(&dir, None).is_err(), "a folder that is not a report is never replaced");
    assert_eq!(std::fs::read_to_string(dir.join("report/notes.txt")).unwrap(), "mine");
}

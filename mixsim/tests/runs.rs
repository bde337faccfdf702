//! Importing RegMix files, our CSV round trip, and errors that name file:line.

use mixsim::{Error, RunsTable, read_mixtures};

use crate::common::{TARGET, regmix_dir, scratch, test, train};

#[test]
fn import_shapes_and_names() -> mixsim::Result<()> {
    let table = train()?;
    assert_eq!(table.rows.len(), 512);
    assert_eq!(table.domains.len(), 17);
    assert_eq!(table.metrics.len(), 13);
    assert_eq!(table.domains[0], "the_pile_arxiv");
    assert!(table.metrics.iter().any(|m| m == TARGET));
    assert_eq!(table.rows[0].index, "1");
    assert_eq!(test()?.rows.len(), 256);
    Ok(())
}

#[test]
fn import_write_read_round_trips() -> mixsim::Result<()> {
    let dir = scratch("round_trip");
    for table in [train()?, test()?] {
        let path = dir.join("runs.csv");
        table.write_csv(&path)?;
        assert_eq!(RunsTable::read_csv(&path)?, table);
    }
    Ok(())
}

#[test]
fn read_mixtures_matches_import() -> mixsim::Result<()> {
    let (indices, domains, weights) = read_mixtures(&regmix_dir().join("test_mixture_1m.csv"))?;
    let table = test()?;
    assert_eq!(domains, table.domains);
    assert_eq!(indices, table.rows.iter().map(|r| r.index.clone()).collect::<Vec<_>>());
    assert_eq!(weights, table.rows.iter().map(|r| r.weights.clone()).collect::<Vec<_>>());
    Ok(())
}

/// Writes `text` as a mixture file, pairs it with the real metrics, and returns the error text.
fn import_error(name: &str, text: &str) -> String {
    let path = scratch(name).join("mix.csv");
    std::fs::write(&path, text).expect("scratch file is writable");
    let metrics = regmix_dir().join("train_pile_loss_1m.csv");
    match RunsTable::import_regmix(&path, &metrics) {
        Ok(_) => panic!("{name}: expected an import error"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn bad_input_names_file_and_line() {
    let header = "index,train_a,train_b";
    let cases = [
        ("bad_number", format!("{header}\n1,0.5,0.5\n2,0.5,abc\n"), "mix.csv:3: column `train_b`"),
        ("column_count", format!("{header}\n1,0.5,0.5\n2,1.0\n"), "mix.csv:3: expected 3 columns, got 2"),
        ("weight_sum", format!("{header}\n1,0.5,0.3\n"), "mix.csv:2: weights sum to 0.8"),
        ("missing_index", format!("{header}\n1,0.5,0.5\nzz,0.5,0.5\n"), "mix.csv:3: column `index`: run `zz`"),
    ];
    for (name, text, expected) in cases {
        let message = import_error(name, &text);
        assert!(message.contains(expected), "{name}: `{message}` lacks `{expected}`");
    }
}

#[test]
fn metrics_row_without_mixture_is_an_error() -> mixsim::Result<()> {
    // Only the first 3 mixtures: the metrics file's line 5 (run 4) has no partner.
    let dir = scratch("unpaired");
    let source = std::fs::read_to_string(regmix_dir().join("train_mixture_1m.csv")).expect("data file");
    let head: Vec<&str> = source.lines().take(4).collect();
    let path = dir.join("mix.csv");
    std::fs::write(&path, head.join("\n")).expect("scratch file is writable");
    let err = RunsTable::import_regmix(&path, &regmix_dir().join("train_pile_loss_1m.csv"))
        .expect_err("run 4 has metrics but no mixture");
    assert!(matches!(err, Error::MissingIndex { line: 5, .. }), "{err}");
    assert!(err.to_string().contains("train_pile_loss_1m.csv:5"), "{err}");
    Ok(())
}

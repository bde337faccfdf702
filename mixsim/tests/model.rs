//! The saved-model artifact: reload gives identical predictions; wrong inputs are refused.

use mixsim::{Error, FittedModel, SurrogateKind};

use crate::common::{TARGET, scratch, test, train};

#[test]
fn saved_model_reloads_and_predicts_identically() -> mixsim::Result<()> {
    let table = train()?;
    let test = test()?;
    let (x, _) = test.xy(TARGET)?;
    let dir = scratch("save_load");
    for kind in [SurrogateKind::Linear, SurrogateKind::MixingLaw, SurrogateKind::Ensemble] {
        let model = FittedModel::fit(&table, TARGET, kind)?;
        let path = dir.join("model.json");
        model.save(&path)?;
        let loaded = FittedModel::load(&path)?;
        assert_eq!(loaded, model, "{kind:?}");
        assert_eq!(loaded.predict_rows(&test.domains, &x)?, model.predict_rows(&test.domains, &x)?);
        // Fitting is seeded, so a refit writes the same bytes.
        let again = dir.join("again.json");
        FittedModel::fit(&table, TARGET, kind)?.save(&again)?;
        assert_eq!(std::fs::read(&path).expect("saved"), std::fs::read(&again).expect("saved"));
    }
    Ok(())
}

#[test]
fn wrong_version_and_domains_are_refused() -> mixsim::Result<()> {
    let table = train()?;
    let model = FittedModel::fit(&table, TARGET, SurrogateKind::Linear)?;
    let mut reordered = table.domains.clone();
    reordered.swap(0, 1);
    let err = model.predict_rows(&reordered, &[table.rows[0].weights.clone()]).expect_err("reordered");
    assert!(matches!(err, Error::DomainMismatch { .. }), "{err}");

    let path = scratch("version").join("model.json");
    let json =
        serde_json::to_string(&model).expect("serializable").replace("\"format_version\":1", "\"format_version\":2");
    std::fs::write(&path, json).expect("scratch file is writable");
    let err = FittedModel::load(&path).expect_err("version 2");
    assert!(matches!(err, Error::FormatVersion { got: 2, .. }), "{err}");
    assert!(matches!(FittedModel::fit(&table, "nope", SurrogateKind::Linear), Err(Error::UnknownMetric { .. })));
    Ok(())
}

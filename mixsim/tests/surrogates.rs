//! Fit on the 512 RegMix training runs, predict the 256 held-out runs, check rank quality.

use mixsim::{CvReport, FittedModel, SurrogateKind};

use crate::common::{TARGET, test, train};

/// Test-set scores of one kind, plus the index of the predicted-best test mixture.
fn score(kind: SurrogateKind) -> mixsim::Result<(FittedModel, CvReport, usize)> {
    let model = FittedModel::fit(&train()?, TARGET, kind)?;
    let test = test()?;
    let (x, observed) = test.xy(TARGET)?;
    let predicted = model.predict_rows(&test.domains, &x)?;
    let best =
        (0..predicted.len()).min_by(|&a, &b| predicted[a].total_cmp(&predicted[b])).expect("test set is not empty");
    Ok((model, CvReport::score(&predicted, &observed), best))
}

/// Whether run `row` is among the `k` lowest observed losses of the test set.
fn in_true_top(row: usize, k: usize) -> mixsim::Result<bool> {
    let (_, observed) = test()?.xy(TARGET)?;
    let better = observed.iter().filter(|&&v| v < observed[row]).count();
    Ok(better < k)
}

#[test]
fn parametric_surrogates_are_sane() -> mixsim::Result<()> {
    for kind in [SurrogateKind::Linear, SurrogateKind::MixingLaw] {
        let (_, report, best) = score(kind)?;
        eprintln!("{kind:?}: test {report:?}, predicted best in true top 5: {}", in_true_top(best, 5)?);
        assert!(report.spearman > 0.8, "{kind:?}: {report:?}");
        assert!(report.mae < 0.2, "{kind:?}: {report:?}");
    }
    Ok(())
}

#[test]
fn tree_and_ensemble_scores() -> mixsim::Result<()> {
    for kind in [SurrogateKind::Gbdt, SurrogateKind::Ensemble] {
        let (_, report, best) = score(kind)?;
        eprintln!("{kind:?}: test {report:?}, predicted best in true top 5: {}", in_true_top(best, 5)?);
        assert!(report.spearman > 0.9, "{kind:?}: {report:?}");
    }
    Ok(())
}

#[test]
fn auto_choice_ranks_the_test_set() -> mixsim::Result<()> {
    let table = train()?;
    let (x, y) = table.xy(TARGET)?;
    let (chosen, cv) = mixsim::auto(&x, &y, 5, 17);
    for (name, report) in &cv {
        eprintln!("cv on train, {name}: {report:?}");
    }
    let (model, report, best) = score(SurrogateKind::Auto)?;
    assert_eq!(model.surrogate, chosen, "auto is deterministic");
    eprintln!("auto chose {}: test {report:?}", mixsim::Surrogate::name(&model.surrogate));
    assert!(report.spearman >= 0.98, "{report:?}");
    assert!(in_true_top(best, 5)?, "predicted-best test run {best} is not in the true top 5");
    Ok(())
}

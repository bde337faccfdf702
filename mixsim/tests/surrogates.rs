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
        eprintln!("{kind:?}: test {report:?}");
        assert!(report.spearman > 0.8, "{kind:?}: {report:?}");
        assert!(in_true_top(best, 5)?, "{kind:?}: predicted-best test run {best} is not in the true top 5");
        assert!(report.mae < 0.2, "{kind:?}: {report:?}");
    }
    Ok(())
}

#[test]
fn tree_and_ensemble_scores() -> mixsim::Result<()> {
    for kind in [SurrogateKind::Gbdt, SurrogateKind::Ensemble] {
        let (_, report, best) = score(kind)?;
        eprintln!("{kind:?}: test {report:?}");
        assert!(report.spearman > 0.9, "{kind:?}: {report:?}");
        assert!(in_true_top(best, 5)?, "{kind:?}: predicted-best test run {best} is not in the true top 5");
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

/// A swarm smaller than k-fold needs: 3 or 4 runs cross-validate leave-one-out, fewer is an
/// error that says how many runs are needed (this hit an assertion in the k-fold code).
#[test]
fn small_swarms_fit_leave_one_out_or_fail_clearly() -> mixsim::Result<()> {
    let mut table = train()?;
    table.rows.truncate(4);
    for kind in [SurrogateKind::Auto, SurrogateKind::Linear, SurrogateKind::MixingLaw] {
        let (model, reports) = FittedModel::fit_with_cv(&table, TARGET, kind)?;
        assert!(!reports.is_empty() && reports.iter().all(|(_, r)| r.mae.is_finite()), "{kind:?}: {reports:?}");
        let model = model.with_bootstrap(&table, 4, 1)?;
        let (x, _) = table.xy(TARGET)?;
        assert!(model.predict_rows(&table.domains, &x)?.iter().all(|p| p.is_finite()));
    }
    table.rows.truncate(2);
    let err = FittedModel::fit(&table, TARGET, SurrogateKind::Auto).unwrap_err().to_string();
    assert!(err.contains("at least 3 runs") && err.contains("has 2"), "{err}");
    Ok(())
}

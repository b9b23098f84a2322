"""Walk-forward models: purged splits, honest out-of-sample skill, and no look-ahead."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from research_lib.config import load_config
from research_lib.signals.evaluation import ic_summary, information_coefficient
from research_lib.signals.models import PurgedWalkForward, WalkForwardModel, make_estimator
from research_lib.signals import labels_for, permutation_importance
from research_lib.stages import compute_features
from tests.conftest import REPO


def synthetic_panel(n_dates=1500, n_symbols=30, strength=0.1, seed=0):
    """Features f0..f4 ~ N(0,1); labels = strength * f0 + noise (so only f0 predicts)."""
    rng = np.random.default_rng(seed)
    index = pd.MultiIndex.from_product([pd.bdate_range("2000-01-03", periods=n_dates), [f"S{i:02d}" for i in range(n_symbols)]],
                                       names=["date", "symbol"])
    X = pd.DataFrame(rng.normal(size=(len(index), 5)), index=index, columns=[f"f{i}" for i in range(5)])
    y = pd.Series(strength * X["f0"].to_numpy() + rng.normal(size=len(index)), index=index, name="label")
    return X, y


def oos_rank_ic(model, y):
    scores = model.predictions_.unstack()
    return ic_summary(information_coefficient(scores, y.loc[model.predictions_.index].unstack()), horizon=model.horizon)


@settings(max_examples=40, deadline=None)
@given(test_days=st.integers(5, 120), min_train=st.integers(30, 400), horizon=st.integers(1, 63),
       embargo=st.integers(0, 10), rolling=st.one_of(st.none(), st.integers(20, 300)))
def test_no_training_label_overlaps_its_test_block(test_days, min_train, horizon, embargo, rolling):
    """(c) Purging: every training label (s+1 .. s+h) ends, plus the embargo, before the test block."""
    dates = np.repeat(pd.bdate_range("2010-01-01", periods=800).to_numpy(), 3)
    splitter = PurgedWalkForward(test_days, min_train, horizon, embargo, rolling)
    sessions = np.unique(dates)
    for train, test in splitter.split(dates):
        last_train = np.searchsorted(sessions, dates[train].max())
        first_test = np.searchsorted(sessions, dates[test].min())
        assert last_train + horizon + embargo < first_test
        assert dates[test].min() > dates[train].max()
        if rolling is not None:
            assert last_train - np.searchsorted(sessions, dates[train].min()) < rolling


def test_thinned_training_dates_are_purged_by_true_session_distance():
    dates = pd.bdate_range("2010-01-01", periods=300)
    calendar = dates.to_numpy()
    thinned = calendar[::5]
    splitter = PurgedWalkForward(test_days=20, min_train_days=100, horizon=21, embargo_days=0)
    for train, test in splitter.split(thinned, calendar):
        assert np.searchsorted(calendar, thinned[train].max()) + 21 < np.searchsorted(calendar, thinned[test].min())


@pytest.mark.parametrize("name", ["ridge", "hgbr"])
def test_planted_signal_is_found_out_of_sample(name):
    """(b) One feature truly predicts the label: out-of-sample rank IC is clearly positive."""
    X, y = synthetic_panel(strength=0.15)
    model = WalkForwardModel(name, test_days=126, min_train_days=500, horizon=1, embargo_days=0,
                             train_step_days=2, inner_splits=1).fit(X, y)
    summary = oos_rank_ic(model, y)
    assert summary["mean"] > 0.08 and summary["t_stat"] > 5, summary
    assert model.predictions_.index.get_level_values("date").min() > X.index.get_level_values("date")[500 * 30 - 1]


@pytest.mark.parametrize("name", ["ridge", "hgbr"])
def test_pure_noise_has_no_out_of_sample_skill(name):
    """(b) On noise the out-of-sample rank IC is near zero: |mean| < 0.02 and |t| < 3."""
    X, y = synthetic_panel(strength=0.0, seed=1)
    model = WalkForwardModel(name, test_days=126, min_train_days=500, horizon=1, embargo_days=0,
                             train_step_days=2, inner_splits=1).fit(X, y)
    summary = oos_rank_ic(model, y)
    assert abs(summary["mean"]) < 0.02 and abs(summary["t_stat"]) < 3, summary


def test_permutation_importance_ranks_the_planted_feature_first():
    X, y = synthetic_panel(n_dates=800, strength=0.2)
    model = WalkForwardModel("ridge", test_days=100, min_train_days=500, horizon=1, embargo_days=0).fit(X, y)
    importance = permutation_importance(model, X, y)
    assert importance.index[0] == "f0" and importance.loc["f0", "mean"] > 0.1
    assert importance.drop("f0")["mean"].abs().max() < 0.03


def test_tuning_fits_a_pipelines_first_steps_once_with_the_same_predictions():
    """Candidates that differ only in a pipeline's last step share its fitted first steps; their
    predictions are those of fitting each candidate's whole pipeline."""
    from research_lib.signals.models import _candidate_predictions, _fit_predict

    X, y = synthetic_panel(n_dates=300, n_symbols=10)
    X = X.mask(np.random.default_rng(1).random(X.shape) < 0.05)  # the imputer has work to do
    X_train, y_train, X_test = X.iloc[:2000], y.iloc[:2000], X.iloc[2000:]
    for name in ("ridge", "hgbr"):
        estimator, grid = make_estimator(name)
        candidates = [dict(zip(grid, values)) for values in zip(*grid.values())]
        for shared, alone in zip(_candidate_predictions(estimator, candidates, X_train, y_train, X_test),
                                 [_fit_predict(estimator, c, X_train, y_train, X_test)[2] for c in candidates]):
            np.testing.assert_array_equal(shared, alone)


def test_permutation_importance_does_not_depend_on_n_jobs():
    """-1 means every core, as in scikit-learn (it once left no chunk for any feature: KeyError)."""
    X, y = synthetic_panel(n_dates=700, strength=0.2)
    tables = [permutation_importance(WalkForwardModel("hgbr", test_days=100, min_train_days=500, horizon=1,
                                                      embargo_days=0, n_jobs=n_jobs).fit(X, y), X, y)
              for n_jobs in (1, 2, -1)]
    pd.testing.assert_frame_equal(tables[0], tables[1], check_exact=True)
    pd.testing.assert_frame_equal(tables[0], tables[2], check_exact=True)


@pytest.fixture(scope="module")
def smoke_ml_inputs(bundled_small):
    config = load_config(REPO / "params" / "smoke.yaml", ["data.start=2015-01-01", "features.vix_symbol=null"])
    close = bundled_small["close"]
    features = compute_features(config, close)
    return config, close, features


def test_no_look_ahead_in_walk_forward_predictions(smoke_ml_inputs):
    """(a) Shock every price after t: features, labels known by t and predictions at or
    before t are unchanged."""
    config, close, _ = smoke_ml_inputs
    ml = config.ml.model_copy(update={"min_train_days": 300, "test_days": 42})

    def predictions(prices):
        features = compute_features(config, prices)
        return WalkForwardModel("hgbr", ml.test_days, ml.min_train_days, ml.horizon_days, ml.embargo_days,
                                ml.train_step_days, 1).fit(features, labels_for(features, prices, ml)).predictions_

    t = close.index[600]
    moved = close.copy()
    moved.loc[moved.index > t] *= np.random.default_rng(3).uniform(0.5, 2.0, size=close.shape[1])
    base, after = predictions(close), predictions(moved)
    past = base.index.get_level_values("date") <= t
    assert past.sum() > 100
    pd.testing.assert_series_equal(base[past], after[past])
    assert not base[~past].equals(after[~past])


def test_model_refusals(smoke_ml_inputs):
    _, _, features = smoke_ml_inputs
    labels = pd.Series(0.0, index=features.index)
    with pytest.raises(ValueError, match=r"unknown model 'svm'; valid models: \['ridge', 'hgbr'\]"):
        make_estimator("svm")
    with pytest.raises(ValueError, match="X and y must share the same"):
        WalkForwardModel("ridge").fit(features, labels.iloc[1:])
    with pytest.raises(ValueError, match=r"no walk-forward fold fits in \d+ sessions: need more than min_train_days \(5000\)"):
        WalkForwardModel("ridge", min_train_days=5000).fit(features, labels)


def test_importance_needs_a_labelled_block():
    X, y = synthetic_panel(n_dates=700)
    model = WalkForwardModel("ridge", test_days=100, min_train_days=500, horizon=1, embargo_days=0).fit(X, y)
    with pytest.raises(ValueError, match="no walk-forward test block has labels yet"):
        permutation_importance(model, X, y.where(y.index.get_level_values("date") < pd.Timestamp("2001-01-01")))


def test_fitted_folds_purge_on_the_true_calendar_with_thinned_training_dates():
    """The folds WalkForwardModel actually used: the last training date's label (plus the
    embargo) ends before the first test date, counted in sessions, with every 5th date kept."""
    X, y = synthetic_panel(n_dates=900, n_symbols=10)
    model = WalkForwardModel("ridge", test_days=100, min_train_days=300, horizon=22, embargo_days=5,
                             train_step_days=5).fit(X, y)
    sessions = X.index.get_level_values("date").unique()
    for fold in model.folds_:
        train_end, test_start = sessions.get_loc(pd.Timestamp(fold["train_end"])), sessions.get_loc(pd.Timestamp(fold["test_start"]))
        assert train_end + 22 + 5 < test_start
        assert train_end % 5 == 0, "only thinned dates are trained on"


def test_overlapping_noise_labels_show_no_skill():
    """Pure noise with 21-session overlapping labels (the realistic case): the out-of-sample
    rank IC's t-statistic stays inside +-3, so overlap does not manufacture skill."""
    rng = np.random.default_rng(5)
    X, _ = synthetic_panel(n_dates=1500, n_symbols=25, strength=0.0, seed=2)
    daily = pd.DataFrame(rng.normal(size=(1521, 25)))
    labels = (daily.rolling(21).sum().shift(-21).iloc[:1500]).to_numpy().ravel()
    y = pd.Series(labels, index=X.index, name="label")
    model = WalkForwardModel("hgbr", test_days=126, min_train_days=500, horizon=21, embargo_days=5,
                             train_step_days=5, inner_splits=1).fit(X, y)
    summary = ic_summary(information_coefficient(model.predictions_.unstack(), y.loc[model.predictions_.index].unstack()),
                         horizon=21)
    assert abs(summary["t_stat"]) < 3 and abs(summary["mean"]) < 0.03, summary

"""Signal evaluation agrees with closed forms, with scipy, and with signals planted in noise."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from research_lib.signals.evaluation import (
    _newey_west,
    _t_stat,
    ic_decay,
    ic_summary,
    information_coefficient,
    quantile_returns,
    quantile_spread_summary,
    signal_turnover,
)
from research_lib.signals.labels import forward_returns


def wide(values, start: str = "2020-01-01") -> pd.DataFrame:
    """A dates x symbols frame (symbols S00, S01, ...) on consecutive business days."""
    values = np.asarray(values, dtype=float)
    return pd.DataFrame(values, index=pd.bdate_range(start, periods=len(values), name="date"),
                        columns=[f"S{j:02d}" for j in range(values.shape[1])])


def noise(n_dates: int, n_symbols: int, seed: int) -> pd.DataFrame:
    return wide(np.random.default_rng(seed).standard_normal((n_dates, n_symbols)))


def closes_from(daily_returns: pd.DataFrame) -> pd.DataFrame:
    """Closes whose simple return from ``t - 1`` to ``t`` is ``daily_returns[t]``."""
    return (1.0 + daily_returns).cumprod()


# ---------------------------------------------------------------- information_coefficient


@pytest.mark.parametrize("method", ["spearman", "pearson"])
def test_a_perfect_signal_has_ic_one_and_a_reversed_one_minus_one(method):
    scores = noise(50, 10, seed=1)
    assert information_coefficient(scores, scores, method).to_numpy() == pytest.approx(np.ones(50), abs=1e-12)
    assert information_coefficient(-scores, scores, method).to_numpy() == pytest.approx(-np.ones(50), abs=1e-12)


def test_an_outlier_moves_pearson_but_not_spearman():
    scores = wide([[1, 2, 3, 4, 5]])
    returns = wide([[0.01, 0.02, 0.03, 0.04, 1.00]])
    assert information_coefficient(scores, returns, "spearman").iloc[0] == pytest.approx(1.0)
    pearson = information_coefficient(scores, returns, "pearson").iloc[0]
    assert pearson == pytest.approx(np.corrcoef([1, 2, 3, 4, 5], [0.01, 0.02, 0.03, 0.04, 1.0])[0, 1], abs=1e-12)
    assert pearson < 0.8


def test_agrees_with_scipy_date_by_date_with_ties_and_gaps():
    rng = np.random.default_rng(7)
    scores = wide(np.round(rng.standard_normal((40, 8)), 1))  # rounding makes ties
    returns = wide(rng.standard_normal((40, 8)) * 0.02)
    scores[rng.random(scores.shape) < 0.15] = np.nan
    returns[rng.random(returns.shape) < 0.15] = np.nan
    spearman = information_coefficient(scores, returns, "spearman", min_symbols=3)
    pearson = information_coefficient(scores, returns, "pearson", min_symbols=3)
    checked = 0
    for date in scores.index:
        pair = pd.concat([scores.loc[date], returns.loc[date]], axis=1).dropna()
        if len(pair) < 3:
            assert date not in spearman.index
            continue
        assert spearman[date] == pytest.approx(stats.spearmanr(pair.iloc[:, 0], pair.iloc[:, 1])[0], abs=1e-12)
        assert pearson[date] == pytest.approx(stats.pearsonr(pair.iloc[:, 0], pair.iloc[:, 1])[0], abs=1e-12)
        checked += 1
    assert checked == len(spearman) == len(pearson) > 30


def test_missing_symbols_are_left_out_and_thin_dates_dropped():
    scores = wide([[1, 2, 3, 4, 5, 6],
                   [1, 2, 3, 4, 5, np.nan],       # S05 has no score: 5 pairs remain
                   [1, 2, 3, 4, 5, 6]])
    returns = wide([[6, 5, 4, 3, 2, 1],
                    [1, 2, 3, 4, 5, -100],
                    [1, 2, 3, np.inf, np.nan, 6]])  # inf and NaN count as missing: 4 pairs
    ic = information_coefficient(scores, returns, "pearson", min_symbols=5)
    assert list(ic.index) == list(scores.index[:2])
    assert ic.to_numpy() == pytest.approx([-1.0, 1.0], abs=1e-12), "the -100 return of S05 must be ignored"
    assert len(information_coefficient(scores, returns, "pearson", min_symbols=4)) == 3


def test_dates_with_constant_scores_or_returns_have_no_ic():
    # Six returns of 0.7: their float mean is not exactly 0.7, yet the date must have no IC.
    scores = wide([[1, 1, 1, 1, 1, 1], [1, 2, 3, 4, 5, 6], [1, 2, 3, 4, 5, 6]])
    returns = wide([[1, 2, 3, 4, 5, 6], [0.7] * 6, [1, 2, 3, 4, 5, 6]])
    for method in ("spearman", "pearson"):
        assert list(information_coefficient(scores, returns, method).index) == [scores.index[2]]


def test_frames_are_aligned_on_common_dates_and_symbols():
    scores = noise(30, 8, seed=3)
    returns = scores.iloc[5:, 2:].iloc[:, ::-1]  # fewer dates, fewer symbols, another column order
    ic = information_coefficient(scores, returns)
    assert ic.index.equals(scores.index[5:])
    assert ic.to_numpy() == pytest.approx(np.ones(25), abs=1e-12)


def test_the_ic_of_a_date_uses_only_that_date():
    scores, returns = noise(20, 10, seed=4), noise(20, 10, seed=5)
    before = information_coefficient(scores, returns)
    scores.iloc[12], returns.iloc[7] = noise(1, 10, seed=6).iloc[0], noise(1, 10, seed=8).iloc[0]
    after = information_coefficient(scores, returns)
    changed = before.index[before.to_numpy() != after.to_numpy()]
    assert list(changed) == [scores.index[7], scores.index[12]]


def test_a_planted_signal_is_found_and_pure_noise_is_not():
    scores = noise(2000, 30, seed=11)
    planted = ic_summary(information_coefficient(scores, 0.1 * scores + noise(2000, 30, seed=12)), horizon=1)
    assert planted["mean"] == pytest.approx(0.1, abs=0.02)  # rank IC of 0.1 * x + e is about 0.095
    assert planted["t_stat"] > 3
    # Pure noise: the mean IC has a standard error of about 1 / sqrt(29 * 2000) = 0.004,
    # so 0.02 is five standard errors; the seed is fixed, so the test is deterministic.
    null = ic_summary(information_coefficient(scores, noise(2000, 30, seed=13)), horizon=1)
    assert abs(null["mean"]) < 0.02
    assert abs(null["t_stat"]) < 3
    assert null["n_dates"] == 2000


# ---------------------------------------------------------------- ic_summary and ic_decay


def test_ic_summary_closed_form():
    ic = pd.Series([0.1, -0.2, 0.3, 0.4, np.nan])
    out = ic_summary(ic, horizon=1)
    mean, std = 0.15, np.std([0.1, -0.2, 0.3, 0.4], ddof=1)
    assert out["n_dates"] == 4
    assert out["mean"] == pytest.approx(mean)
    assert out["std"] == pytest.approx(std)
    assert out["ic_ir"] == pytest.approx(mean / std)
    assert out["hit_rate"] == pytest.approx(0.75)
    assert out["t_stat_naive"] == pytest.approx(mean / std * 2)
    # One session ahead there is no overlap: HAC with 0 lags is the naive t-stat.
    assert out["t_stat"] == pytest.approx(out["t_stat_naive"], rel=1e-12)
    assert out["p_value"] == pytest.approx(2 * stats.norm.sf(out["t_stat"]), rel=1e-12)


@pytest.mark.parametrize("size, horizon", [(2, 1), (3, 5), (40, 21), (250, 22), (2520, 21), (3000, 63)])
def test_t_stats_are_statsmodels_and_scipys_to_the_bit(size, horizon):
    """The HAC t-stat and the p-value are computed without importing statsmodels' models and
    scipy.stats; they are theirs, bit for bit."""
    from statsmodels.regression.linear_model import OLS

    rng = np.random.default_rng(size)
    for values in (rng.normal(0.02, 0.1, size), np.cumsum(rng.normal(0.0, 0.05, size)) + 0.1):
        fit = OLS(values, np.ones(size)).fit(cov_type="HAC", cov_kwds={"maxlags": horizon - 1, "use_correction": True})
        assert _newey_west(values, horizon) == float(fit.tvalues[0])
        t, p_value = _t_stat(values, horizon)
        assert p_value == float(2.0 * stats.norm.sf(abs(t)))


def test_ic_summary_is_nan_where_undefined():
    one = ic_summary(pd.Series([0.3]), horizon=5)
    assert one["n_dates"] == 1 and one["mean"] == pytest.approx(0.3)
    assert all(np.isnan(one[key]) for key in ("std", "ic_ir", "t_stat", "p_value", "t_stat_naive"))
    flat = ic_summary(pd.Series([0.2, 0.2, 0.2]), horizon=1)
    assert np.isnan(flat["t_stat"]) and np.isnan(flat["ic_ir"])
    empty = ic_summary(pd.Series([], dtype=float), horizon=1)
    assert empty["n_dates"] == 0 and np.isnan(empty["mean"]) and np.isnan(empty["hit_rate"])


@pytest.fixture(scope="module")
def persistent_signal():
    """Scores that move slowly (AR(1), phi = 0.98) and closes whose next-day return they predict."""
    rng = np.random.default_rng(21)
    n_dates, n_symbols = 2000, 30
    scores = np.empty((n_dates, n_symbols))
    scores[0] = rng.standard_normal(n_symbols)
    for t in range(1, n_dates):
        scores[t] = 0.98 * scores[t - 1] + np.sqrt(1 - 0.98**2) * rng.standard_normal(n_symbols)
    scores = wide(scores)
    daily = 0.001 * scores.shift(1).fillna(0.0) + 0.01 * noise(n_dates, n_symbols, seed=22)
    return scores, closes_from(daily)


def test_overlapping_horizons_shrink_the_hac_t_stat(persistent_signal):
    scores, close = persistent_signal
    out = ic_summary(information_coefficient(scores, forward_returns(close, 21)), horizon=21)
    assert out["t_stat_naive"] > 3
    assert 0 < out["t_stat"] < out["t_stat_naive"] / 2  # overlapping 21-day ICs: ~sqrt(21) too large naively


def test_ic_decay_has_one_ic_summary_row_per_horizon(persistent_signal):
    scores, close = persistent_signal
    table = ic_decay(scores, close, horizons=(1, 5, 21))
    assert table.index.name == "horizon" and list(table.index) == [1, 5, 21]
    assert list(table.columns) == list(ic_summary(pd.Series([0.1, 0.2]), 1))
    expected = ic_summary(information_coefficient(scores, forward_returns(close, 5)), horizon=5)
    assert table.loc[5].to_dict() == pytest.approx(expected)


def test_a_one_day_signal_decays_with_the_horizon():
    scores = noise(2000, 30, seed=31)  # independent from day to day
    close = closes_from(0.002 * scores.shift(1).fillna(0.0) + 0.01 * noise(2000, 30, seed=32))
    means = ic_decay(scores, close, horizons=(1, 5, 21), method="pearson")["mean"]
    assert means[1] > 0.1
    assert means[1] > 1.5 * means[5] > 0
    assert abs(means[21]) < means[5]


# ---------------------------------------------------------------- quantile returns


def test_quantile_returns_closed_form_on_one_date():
    scores = wide([np.arange(10.0)])
    returns = wide([np.arange(10.0) / 100])
    qret = quantile_returns(scores, returns, n_quantiles=5)
    assert list(qret.columns) == [1, 2, 3, 4, 5] and qret.columns.name == "quantile"
    assert qret.iloc[0].to_numpy() == pytest.approx([0.005, 0.025, 0.045, 0.065, 0.085])


def test_small_and_tied_cross_sections():
    scores = wide([[0, 1, 2, 3, 4, 5, 6],                        # 7 names in 5 buckets: 2, 1, 2, 1, 1
                   [1, 1, 1, 1, 2, 2, 2],                        # ties: bucket of their average rank
                   [0, 1, 2, 3, np.nan, np.nan, np.nan]])       # fewer names than buckets: dropped
    returns = wide([[1, 2, 3, 4, 5, 6, 7]] * 3)
    qret = quantile_returns(scores, returns, n_quantiles=5)
    assert list(qret.index) == list(scores.index[:2])
    assert qret.iloc[0].to_numpy() == pytest.approx([1.5, 3, 4.5, 6, 7])
    assert qret.iloc[1].to_numpy() == pytest.approx([np.nan, 2.5, np.nan, 6, np.nan], nan_ok=True)
    # (average ranks 2.5 and 6 of 7 fall in buckets floor(1.5 * 5 / 7) + 1 = 2 and floor(5 * 5 / 7) + 1 = 4)


def test_a_monotone_planted_signal_has_increasing_quantile_means():
    scores = noise(500, 30, seed=41)
    qret = quantile_returns(scores, 0.01 * scores + 0.02 * noise(500, 30, seed=42), n_quantiles=5)
    assert qret.shape == (500, 5)
    out = quantile_spread_summary(qret, horizon=1)
    means = list(out["quantile_means"].values())
    assert list(out["quantile_means"]) == [1, 2, 3, 4, 5]
    assert means == sorted(means) and out["monotonic"]
    assert out["spread_mean"] == pytest.approx(means[-1] - means[0])
    assert out["spread_mean"] > 0 and out["spread_t_stat"] > 3 and out["spread_p_value"] < 1e-3
    assert out["n_dates"] == 500


def test_quantile_spread_summary_closed_form():
    qret = pd.DataFrame({1: [0.01, 0.03, 0.02], 2: [0.00, 0.00, 0.00], 3: [0.02, 0.06, 0.01]})
    out = quantile_spread_summary(qret, horizon=1)
    spread = np.array([0.01, 0.03, -0.01])
    assert out["quantile_means"] == pytest.approx({1: 0.02, 2: 0.0, 3: 0.03})
    assert not out["monotonic"]
    assert quantile_spread_summary(qret[[2, 1, 3]].set_axis([1, 2, 3], axis=1), horizon=1)["monotonic"]
    assert quantile_spread_summary(-qret[[2, 1, 3]].set_axis([1, 2, 3], axis=1), horizon=1)["monotonic"]
    assert out["spread_mean"] == pytest.approx(spread.mean())
    assert out["spread_t_stat"] == pytest.approx(spread.mean() / spread.std(ddof=1) * np.sqrt(3), rel=1e-12)


# ---------------------------------------------------------------- signal turnover


def test_a_score_constant_over_time_never_turns_over():
    scores = wide(np.tile(np.arange(10.0), (100, 1)))
    out = signal_turnover(scores, step=21, n_quantiles=5)
    assert out == {"rank_autocorrelation": pytest.approx(1.0), "top_quantile_turnover": 0.0}


def test_a_rotating_ranking_has_closed_form_turnover():
    # Symbol j scores (j + t) mod 10 on day t: each day the top 2 lose one name and gain one,
    # and 9 of 10 ranks move by 1 while one wraps by 9: Spearman 1 - 6 * 90 / (10 * 99) = 5 / 11.
    scores = wide([[(j + t) % 10 for j in range(10)] for t in range(30)])
    out = signal_turnover(scores, step=1, n_quantiles=5)
    assert out["rank_autocorrelation"] == pytest.approx(5 / 11, abs=1e-12)
    assert out["top_quantile_turnover"] == pytest.approx(0.5)


def test_top_quantile_turnover_is_sampled_every_step_sessions():
    # The ranking holds for 5 sessions, then rotates as above: compared every 5 sessions,
    # half the top quantile is new each time (day-by-day comparisons would mostly see none).
    scores = wide([[(j + t // 5) % 10 for j in range(10)] for t in range(50)])
    assert signal_turnover(scores, step=5, n_quantiles=5)["top_quantile_turnover"] == pytest.approx(0.5)
    assert signal_turnover(scores, step=1, n_quantiles=5)["top_quantile_turnover"] == pytest.approx(0.5 * 9 / 49)


def test_independent_daily_scores_turn_over_like_random_picks():
    out = signal_turnover(noise(2000, 30, seed=51), step=21, n_quantiles=5)
    # Fixed seed. Standard errors: ~0.005 for the mean rank correlation (1979 dates), ~0.015
    # for the turnover (94 comparisons of 6 names); tolerances are about 3 to 6 of them.
    assert abs(out["rank_autocorrelation"]) < 0.03
    assert out["top_quantile_turnover"] == pytest.approx(1 - 1 / 5, abs=0.05)


def test_turnover_is_nan_without_enough_history():
    out = signal_turnover(noise(10, 10, seed=61), step=21)
    assert np.isnan(out["rank_autocorrelation"]) and np.isnan(out["top_quantile_turnover"])


# ---------------------------------------------------------------- refused inputs


def test_refused_inputs_name_the_parameter_and_the_fix():
    scores = noise(10, 6, seed=71)
    with pytest.raises(ValueError, match=r"method must be one of \['pearson', 'spearman'\] \(got 'kendall'\)"):
        information_coefficient(scores, scores, method="kendall")
    with pytest.raises(ValueError, match=r"min_symbols must be at least 2 .*\(got 1\)"):
        information_coefficient(scores, scores, min_symbols=1)
    with pytest.raises(ValueError, match=r"scores and forward_returns share no dates/symbols; scores is 10 dates x 6"):
        information_coefficient(scores, scores.set_axis([f"X{j}" for j in range(6)], axis=1))
    with pytest.raises(ValueError, match=r"scores and close share no dates/symbols.*same index type"):
        ic_decay(scores, scores.set_axis(pd.bdate_range("2030-01-01", periods=10), axis=0))
    with pytest.raises(ValueError, match=r"horizon must be at least 1 session \(got 0\)"):
        ic_summary(pd.Series([0.1, 0.2]), horizon=0)
    with pytest.raises(ValueError, match=r"horizon must be at least 1 session \(got 0\)"):
        quantile_spread_summary(pd.DataFrame({1: [0.0], 2: [0.1]}), horizon=0)
    with pytest.raises(ValueError, match=r"n_quantiles must be at least 2 \(got 1\); 5 \(quintiles\) is usual"):
        quantile_returns(scores, scores, n_quantiles=1)
    with pytest.raises(ValueError, match=r"step must be at least 1 session \(got 0\)"):
        signal_turnover(scores, step=0)
    with pytest.raises(ValueError, match=r"scores is empty \(shape \(0, 0\)\)"):
        signal_turnover(pd.DataFrame())


def test_the_t_stat_keeps_its_level_for_a_persistent_signal_with_overlapping_labels():
    """Under the null (scores unrelated to returns), |t| > 1.96 about 5 % of the time even
    when scores are AR(1) with phi = 0.98 and labels are overlapping 21-session returns;
    Newey-West with h - 1 Bartlett lags rejects far more often (about 12 %)."""
    rng = np.random.default_rng(11)
    h, n_dates, n_symbols, reps = 21, 700, 25, 120
    rejected = {"t_stat": 0, "t_stat_newey_west": 0}
    for _ in range(reps):
        shocks = rng.normal(size=(n_dates, n_symbols))
        scores = np.zeros_like(shocks)
        for t in range(1, n_dates):
            scores[t] = 0.98 * scores[t - 1] + 0.2 * shocks[t]
        daily = rng.normal(size=(n_dates + h, n_symbols))
        labels = np.cumsum(daily, axis=0)
        forward = labels[h:] - labels[:-h]
        summary = ic_summary(information_coefficient(pd.DataFrame(scores), pd.DataFrame(forward[:n_dates])), h)
        for key in rejected:
            rejected[key] += abs(summary[key]) > 1.96
    assert rejected["t_stat"] / reps < 0.10, rejected
    assert rejected["t_stat_newey_west"] > rejected["t_stat"], rejected

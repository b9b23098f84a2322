"""Specification of the validation statistics and the sweep registry (issue 6): the papers' worked
examples, hand oracles, invariants, errors, and no look-ahead."""

from __future__ import annotations

import itertools
import math
import statistics

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from scipy import stats

from research_lib.validation.registry import list_trials, record_trials, trial_hash, trial_statistics
from research_lib.validation import (bootstrap_sharpe_interval, breakdown_by_regime, breakdown_by_year,
                                     deflated_sharpe_ratio, expected_max_sharpe, minimum_track_record_length,
                                     probabilistic_sharpe_ratio, probability_of_backtest_overfitting,
                                     sharpe_moments, walk_forward_selection)

FAST = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# The DSR paper's worked example (Bailey & López de Prado 2014, section 4): annualized with 250 periods.
PAPER_PERIODS = 250
PAPER_SR = 2.5 / math.sqrt(PAPER_PERIODS)
PAPER_T, PAPER_N = 1250, 100
PAPER_V = 0.5 / PAPER_PERIODS
PAPER_SKEW, PAPER_KURT = -3.0, 10.0


def psr_oracle(sharpe, n_obs, skew, kurtosis, benchmark=0.0) -> float:
    """PSR (2012, eq. 11) written out by hand."""
    denominator = math.sqrt(1 - skew * sharpe + (kurtosis - 1) / 4 * sharpe**2)
    return float(stats.norm.cdf((sharpe - benchmark) * math.sqrt(n_obs - 1) / denominator))


def noise_frame(rng, n_days, n_trials, start="2010-01-01", sd=0.01) -> pd.DataFrame:
    dates = pd.bdate_range(start, periods=n_days)
    return pd.DataFrame(rng.normal(0, sd, size=(n_days, n_trials)), index=dates,
                        columns=[f"T{i}" for i in range(n_trials)])


# --- 1. the DSR paper's worked example --------------------------------------------------------

def test_deflated_sharpe_reproduces_the_papers_worked_example():
    sr0 = expected_max_sharpe(PAPER_N, PAPER_V)
    assert sr0 * math.sqrt(PAPER_PERIODS) == pytest.approx(1.7894, abs=1e-4)
    dsr = deflated_sharpe_ratio(PAPER_SR, PAPER_T, PAPER_SKEW, PAPER_KURT, PAPER_N, PAPER_V)
    assert dsr == pytest.approx(0.9004, abs=1e-4)
    # the DSR is the PSR against the expected maximum
    assert dsr == pytest.approx(psr_oracle(PAPER_SR, PAPER_T, PAPER_SKEW, PAPER_KURT, sr0), abs=1e-12)


def test_expected_max_sharpe_matches_a_monte_carlo_of_the_max_of_iid_normal_sharpes():
    rng = np.random.default_rng(2014)
    annual_variance = 0.5
    maxima = np.empty(200_000)
    for i in range(0, maxima.size, 20_000):  # chunks keep memory small
        maxima[i:i + 20_000] = rng.normal(0, math.sqrt(annual_variance), size=(20_000, PAPER_N)).max(axis=1)
    analytic = expected_max_sharpe(PAPER_N, annual_variance / PAPER_PERIODS) * math.sqrt(PAPER_PERIODS)
    assert analytic == pytest.approx(maxima.mean(), rel=0.02)


# --- 2. PSR and MinTRL --------------------------------------------------------------------------

@pytest.mark.parametrize("sharpe, n_obs, benchmark", [(0.1, 252, 0.0), (0.05, 1000, 0.02), (-0.03, 500, 0.0),
                                                      (0.2, 30, 0.1)])
def test_psr_for_normal_returns_is_the_closed_form(sharpe, n_obs, benchmark):
    z = (sharpe - benchmark) * math.sqrt(n_obs - 1) / math.sqrt(1 + sharpe**2 / 2)  # skew 0, kurtosis 3
    assert probabilistic_sharpe_ratio(sharpe, n_obs, 0.0, 3.0, benchmark) == pytest.approx(stats.norm.cdf(z),
                                                                                           abs=1e-12)


def test_psr_against_its_own_sharpe_is_one_half():
    for sharpe, skew, kurt in [(0.1, 0.0, 3.0), (0.3, -1.0, 8.0), (-0.2, 0.5, 4.0)]:
        assert probabilistic_sharpe_ratio(sharpe, 300, skew, kurt, benchmark_sharpe=sharpe) == pytest.approx(0.5)


def test_psr_grows_with_the_track_record_and_shrinks_with_negative_skew_and_fat_tails():
    psrs = [probabilistic_sharpe_ratio(0.05, n, 0.0, 3.0) for n in (50, 100, 250, 1000, 5000)]
    assert all(a < b for a, b in zip(psrs, psrs[1:]))
    normal = probabilistic_sharpe_ratio(0.1, 250, 0.0, 3.0)
    assert probabilistic_sharpe_ratio(0.1, 250, -2.0, 3.0) < normal
    assert probabilistic_sharpe_ratio(0.1, 250, 0.0, 12.0) < normal
    assert probabilistic_sharpe_ratio(0.1, 250, -2.0, 12.0) < probabilistic_sharpe_ratio(0.1, 250, -2.0, 3.0)


@FAST
@given(st.floats(-0.3, 0.3), st.floats(0.005, 0.6), st.floats(-2.0, 2.0), st.floats(3.0, 12.0),
       st.floats(0.55, 0.999))
def test_min_track_record_length_is_the_inverse_of_the_psr(benchmark, excess, skew, kurt, confidence):
    sharpe = benchmark + excess
    assume(1 - skew * sharpe + (kurt - 1) / 4 * sharpe**2 > 1e-3)
    n = minimum_track_record_length(sharpe, skew, kurt, benchmark, confidence)
    assume(n >= 2)
    assert probabilistic_sharpe_ratio(sharpe, n, skew, kurt, benchmark) == pytest.approx(confidence, abs=1e-9)
    # one more return than needed clears the bar, one fewer does not
    assert probabilistic_sharpe_ratio(sharpe, n + 1, skew, kurt, benchmark) > confidence
    if n >= 3:
        assert probabilistic_sharpe_ratio(sharpe, n - 1, skew, kurt, benchmark) < confidence


def test_min_track_record_length_of_a_normal_strategy_by_hand():
    # SR 0.1 per period, normal, 95%: 1 + (1 + 0.1^2 / 2) (1.6449 / 0.1)^2
    expected = 1 + (1 + 0.005) * (stats.norm.ppf(0.95) / 0.1) ** 2
    assert minimum_track_record_length(0.1, 0.0, 3.0) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("sharpe, benchmark", [(0.1, 0.1), (0.05, 0.1), (-0.2, 0.0)])
def test_min_track_record_length_is_infinite_without_an_edge(sharpe, benchmark):
    assert minimum_track_record_length(sharpe, 0.0, 3.0, benchmark) == math.inf


def test_min_track_record_length_refuses_a_confidence_of_one_half_or_less():
    assert probabilistic_sharpe_ratio(0.01, 2, 0.0, 3.0) > 0.5, "any edge clears 50 % at once"
    for confidence in (0.05, 0.5):
        with pytest.raises(ValueError, match="strictly between 0.5 and 1"):
            minimum_track_record_length(0.01, 0.0, 3.0, confidence=confidence)


def test_psr_and_min_trl_refuse_bad_inputs_with_the_fix():
    with pytest.raises(ValueError, match="n_obs is 1; the PSR needs at least 2 returns"):
        probabilistic_sharpe_ratio(0.1, 1, 0.0, 3.0)
    for confidence in (0.0, 1.0, 1.5, -0.1):
        with pytest.raises(ValueError, match="strictly between 0.5 and 1, e.g. 0.95"):
            minimum_track_record_length(0.1, 0.0, 3.0, confidence=confidence)
    # 1 - 3 * 1 + (1 - 1) / 4 = -2: kurtosis passed as excess and an annualized Sharpe
    with pytest.raises(ValueError, match="non-positive variance.*kurtosis is non-excess.*per period"):
        probabilistic_sharpe_ratio(1.0, 250, 3.0, 1.0)
    with pytest.raises(ValueError, match="non-positive variance"):
        minimum_track_record_length(1.0, 3.0, 1.0)
    with pytest.raises(ValueError, match="non-positive variance"):
        deflated_sharpe_ratio(1.0, 250, 3.0, 1.0, 10, 0.01)
    with pytest.raises(ValueError, match="count at least the one configuration"):
        expected_max_sharpe(0, 0.01)
    with pytest.raises(ValueError, match="cannot be negative"):
        expected_max_sharpe(5, -0.01)


# --- 3. DSR -----------------------------------------------------------------------------------

def test_dsr_with_one_trial_is_the_psr_against_zero():
    for sharpe, n, skew, kurt, variance in [(0.1, 252, 0.0, 3.0, 0.01), (0.05, 1000, -1.0, 6.0, 0.5)]:
        assert deflated_sharpe_ratio(sharpe, n, skew, kurt, 1, variance) == pytest.approx(
            psr_oracle(sharpe, n, skew, kurt), abs=1e-12)


def test_dsr_falls_as_trials_and_their_dispersion_grow():
    by_trials = [deflated_sharpe_ratio(PAPER_SR, PAPER_T, PAPER_SKEW, PAPER_KURT, n, PAPER_V)
                 for n in (1, 2, 5, 10, 50, 100, 1000)]
    assert all(a > b for a, b in zip(by_trials, by_trials[1:]))
    by_variance = [deflated_sharpe_ratio(PAPER_SR, PAPER_T, PAPER_SKEW, PAPER_KURT, PAPER_N, v / PAPER_PERIODS)
                   for v in (0.0, 0.1, 0.5, 1.0, 2.0)]
    assert all(a > b for a, b in zip(by_variance, by_variance[1:]))
    # no dispersion among the trials: nothing to deflate
    assert by_variance[0] == pytest.approx(psr_oracle(PAPER_SR, PAPER_T, PAPER_SKEW, PAPER_KURT), abs=1e-12)


# --- 4. sharpe_moments --------------------------------------------------------------------------

def test_sharpe_moments_of_a_known_array():
    r = [0.01, -0.02, 0.03, 0.0, 0.015, -0.005, 0.04]
    n = len(r)
    mean = sum(r) / n
    m2, m3, m4 = (sum((x - mean) ** k for x in r) / n for k in (2, 3, 4))
    got = sharpe_moments(np.array(r))
    assert got["n_obs"] == n
    assert got["sharpe"] == pytest.approx(mean / statistics.stdev(r), rel=1e-12)  # ddof=1
    assert got["skew"] == pytest.approx(m3 / m2**1.5, rel=1e-10)  # sample moments, as scipy's skew
    assert got["skew"] == pytest.approx(stats.skew(r), rel=1e-12)
    assert got["kurtosis"] == pytest.approx(m4 / m2**2, rel=1e-10)  # non-excess
    # a Series with a NaN gives the same moments on its finite values
    s = pd.Series(r[:3] + [np.nan] + r[3:])
    assert sharpe_moments(s) == got


def test_sharpe_moments_of_a_normal_sample_have_kurtosis_three():
    got = sharpe_moments(np.random.default_rng(3).normal(0.001, 0.01, 20_000))
    assert got["kurtosis"] == pytest.approx(3.0, abs=0.15)
    assert got["skew"] == pytest.approx(0.0, abs=0.07)
    assert got["sharpe"] == pytest.approx(0.1, abs=0.03)


@pytest.mark.parametrize("returns", [[0.01, 0.02], [], [np.nan, 0.01, 0.02], [0.0, 0.0, 0.0, 0.0]])
def test_sharpe_moments_refuse_short_or_flat_returns(returns):
    with pytest.raises(ValueError, match="need at least 3 returns that vary.*a longer backtest is needed"):
        sharpe_moments(np.array(returns, dtype=float))


@pytest.mark.filterwarnings("ignore:Precision loss:RuntimeWarning")
def test_sharpe_moments_refuse_constant_non_zero_returns():
    with pytest.raises(ValueError, match="returns that vary"):
        sharpe_moments(np.array([0.1, 0.1, 0.1]))


# --- 5. PBO by CSCV --------------------------------------------------------------------------

def block_returns(means_by_block: dict[str, list[float]]) -> pd.DataFrame:
    """Each block is [a - 1, a, a + 1]: mean a, standard deviation (ddof=1) 1, Sharpe a."""
    return pd.DataFrame({name: [a + d for a in means for d in (-1.0, 0.0, 1.0)]
                         for name, means in means_by_block.items()})


# trial -> (Sharpe in block 0, Sharpe in block 1)
HAND = {"A": [4.0, -1.0], "B": [3.0, 3.0], "C": [2.0, 0.0], "D": [1.0, 2.0]}


def test_pbo_hand_oracle_with_two_splits():
    # IS = block 0: A is best (4); OOS block 1: A=-1 B=3 C=0 D=2 -> A ranks 1 of 4: w = 1/5, logit log(1/4)
    # IS = block 1: B is best (3); OOS block 0: A=4 B=3 C=2 D=1 -> B ranks 3 of 4: w = 3/5, logit log(3/2)
    got = probability_of_backtest_overfitting(block_returns(HAND), n_splits=2)
    np.testing.assert_allclose(got["logits"], [math.log(1 / 4), math.log(3 / 2)], atol=1e-12)
    assert got["pbo"] == 0.5
    assert got["n_combinations"] == 2 and got["n_trials"] == 4 and got["n_splits"] == 2
    assert got["prob_oos_loss"] == 0.5  # A earns a Sharpe of -1 out of sample
    assert got["performance_degradation"] == pytest.approx((3 - -1) / (3 - 4))  # OOS on IS through (4,-1), (3,3)


def test_pbo_median_rank_counts_as_overfit():
    # 3 trials: the IS best at rank 2 of 3 out of sample has w = 1/2, logit 0, which counts towards the PBO
    got = probability_of_backtest_overfitting(block_returns({"A": [3.0, 2.0], "B": [2.0, 3.0], "C": [1.0, 1.0]}),
                                              n_splits=2)
    np.testing.assert_allclose(got["logits"], [0.0, 0.0], atol=1e-12)
    assert got["pbo"] == 1.0 and got["prob_oos_loss"] == 0.0


def reference_cscv(frame: pd.DataFrame, n_splits: int) -> np.ndarray:
    """A slow, literal CSCV: concatenate the chosen blocks, Sharpe by np.std(ddof=1), rank with scipy."""
    values = frame.to_numpy()
    block = len(values) // n_splits
    blocks = np.split(values[len(values) - block * n_splits:], n_splits)
    logits = []
    for combo in itertools.combinations(range(n_splits), n_splits // 2):
        ins = np.concatenate([blocks[i] for i in combo])
        oos = np.concatenate([blocks[i] for i in range(n_splits) if i not in combo])
        is_sr, oos_sr = (x.mean(axis=0) / x.std(axis=0, ddof=1) for x in (ins, oos))
        rank = stats.rankdata(oos_sr)[np.argmax(is_sr)]
        w = rank / (frame.shape[1] + 1)
        logits.append(math.log(w / (1 - w)))
    return np.array(logits)


@settings(max_examples=15, deadline=None)
@given(st.integers(0, 2**32 - 1), st.sampled_from([2, 4, 6]), st.integers(2, 7), st.integers(0, 5))
def test_pbo_matches_a_literal_cscv(seed, n_splits, n_trials, extra_rows):
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(rng.normal(0, 0.01, size=(n_splits * 5 + extra_rows, n_trials))
                         + rng.normal(0, 0.003, size=n_trials))
    got = probability_of_backtest_overfitting(frame, n_splits=n_splits)
    expected = reference_cscv(frame, n_splits)
    np.testing.assert_allclose(got["logits"], expected, atol=1e-9)
    assert got["pbo"] == pytest.approx((expected <= 0).mean())
    assert got["n_combinations"] == math.comb(n_splits, n_splits // 2)


def test_pbo_of_pure_noise_is_about_one_half():
    pbos = [probability_of_backtest_overfitting(noise_frame(np.random.default_rng(seed), 1600, 20))["pbo"]
            for seed in range(5)]
    assert 0.3 <= np.mean(pbos) <= 0.7


def test_pbo_of_a_genuine_edge_is_small():
    frame = noise_frame(np.random.default_rng(11), 1600, 20)
    frame["T7"] += 0.002  # Sharpe 0.2 per period against 19 unskilled trials
    got = probability_of_backtest_overfitting(frame)
    assert got["pbo"] < 0.1
    assert got["n_combinations"] == math.comb(16, 8) == 12870 and got["n_splits"] == 16
    assert got["prob_oos_loss"] < 0.05


def test_pbo_drops_the_leading_rows_that_do_not_fill_a_block():
    hand = block_returns(HAND)
    baseline = probability_of_backtest_overfitting(hand, n_splits=2)
    garbage = pd.DataFrame([[-50.0, 50.0, 0.0, 0.0]], columns=hand.columns)  # 7 rows: 1 too many
    padded = probability_of_backtest_overfitting(pd.concat([garbage, hand], ignore_index=True), n_splits=2)
    np.testing.assert_allclose(padded["logits"], baseline["logits"], atol=1e-12)
    assert padded["pbo"] == baseline["pbo"]
    # the trailing rows are kept: appending the same rows instead shifts the blocks and changes the result
    trailing = probability_of_backtest_overfitting(pd.concat([hand, garbage], ignore_index=True), n_splits=2)
    assert not np.allclose(trailing["logits"], baseline["logits"])


@pytest.mark.parametrize("kwargs, frame, message", [
    ({"n_splits": 5}, "ok", r"n_splits is 5; pass an even number of at least 2 \(16 is usual\)"),
    ({"n_splits": 0}, "ok", "pass an even number of at least 2"),
    ({"n_splits": 4}, "one_trial", "a column per trial and at least 2 trials"),
    ({"n_splits": 4}, "nan", r"NaN or infinite.*align the trials on common dates first \(e.g. trial_returns.dropna"),
    ({"n_splits": 4}, "inf", "NaN or infinite"),
    ({"n_splits": 4}, "short", "7 dates cannot make 4 blocks of at least 2 returns; use fewer splits or a longer"),
])
def test_pbo_refuses_bad_inputs_with_the_fix(kwargs, frame, message):
    data = noise_frame(np.random.default_rng(0), 40, 3)
    nan, inf = data.copy(), data.copy()
    nan.iloc[5, 2], inf.iloc[3, 1] = np.nan, np.inf
    data = {"ok": data, "one_trial": data[["T0"]], "short": data.iloc[:7], "nan": nan, "inf": inf}[frame]
    with pytest.raises(ValueError, match=message):
        probability_of_backtest_overfitting(data, **kwargs)


# --- 6. bootstrap ------------------------------------------------------------------------------

def test_bootstrap_interval_is_reproducible_contains_the_estimate_and_narrows_with_data():
    rng = np.random.default_rng(5)
    long = pd.Series(rng.normal(0.0005, 0.01, 4000))
    a, b = bootstrap_sharpe_interval(long, seed=1), bootstrap_sharpe_interval(long, seed=1)
    np.testing.assert_array_equal(a.pop("samples"), b.pop("samples"))
    assert a == b
    assert bootstrap_sharpe_interval(long, seed=2)["low"] != a["low"]
    assert a["sharpe"] == pytest.approx(long.mean() / long.std(ddof=1) * math.sqrt(252))
    assert a["low"] < a["sharpe"] < a["high"]
    assert a["confidence"] == pytest.approx(0.95) and a["n_boot"] == 1000 and a["block"] == 21
    short = bootstrap_sharpe_interval(long.iloc[:500], seed=1)
    # the width scales like 1 / sqrt(n): sqrt(8) ~ 2.8 here
    assert (short["high"] - short["low"]) > 1.8 * (a["high"] - a["low"])
    # a narrower confidence level gives a narrower interval
    narrow = bootstrap_sharpe_interval(long, seed=1, alpha=0.5)
    assert a["low"] < narrow["low"] < narrow["high"] < a["high"]


def test_bootstrap_blocks_keep_serial_dependence():
    # AR(1) returns with phi = 0.9: the Sharpe's standard error is ~sqrt(19) times the iid one; blocks of one
    # return (an iid bootstrap) miss that, blocks of 63 see most of it
    rng = np.random.default_rng(9)
    shocks, r = rng.normal(0, 0.01, 2000), np.empty(2000)
    r[0] = shocks[0]
    for i in range(1, 2000):
        r[i] = 0.9 * r[i - 1] + shocks[i]
    r = pd.Series(r + 0.0005)
    iid, blocks = (bootstrap_sharpe_interval(r, n_boot=500, block=b) for b in (1, 63))
    assert blocks["high"] - blocks["low"] > 2 * (iid["high"] - iid["low"])


def test_bootstrap_refuses_too_short_series():
    r = pd.Series(np.random.default_rng(0).normal(0, 0.01, 41))
    with pytest.raises(ValueError, match="41 returns are too few for blocks of 21; need at least 42"):
        bootstrap_sharpe_interval(r)
    with pytest.raises(ValueError, match="too few"):
        bootstrap_sharpe_interval(pd.concat([r, pd.Series([np.nan] * 10)]))  # NaNs do not count
    assert bootstrap_sharpe_interval(r, block=20)["block"] == 20


# --- 7. walk-forward selection -------------------------------------------------------------------

TRAIN, TEST = 200, 100


@pytest.fixture(scope="module")
def trials() -> pd.DataFrame:
    return noise_frame(np.random.default_rng(21), 1050, 5, start="2015-01-01")


def test_walk_forward_stitches_exactly_the_out_of_sample_blocks(trials):
    got = walk_forward_selection(trials, TRAIN, TEST)
    assert got["returns"].index.equals(trials.index[TRAIN:])
    starts = trials.index[TRAIN::TEST]
    assert list(got["choices"]) == [str(d.date()) for d in starts]
    for start, pick in zip(starts, got["choices"].values()):
        block = trials.loc[start:].iloc[:TEST]
        pd.testing.assert_series_equal(got["returns"].loc[block.index], block[pick], check_names=False)
        # the choice is the best trailing Sharpe on the window before the block
        window = trials.loc[:start].iloc[:-1].iloc[-TRAIN:]
        assert pick == (window.mean() / window.std(ddof=1)).idxmax()
    stitched = got["returns"]
    assert got["sharpe"] == pytest.approx(stitched.mean() / stitched.std(ddof=1))


@pytest.mark.parametrize("cut", [TRAIN, 350, 500, 777, 1000])
def test_walk_forward_choices_never_see_the_future(trials, cut):
    before = walk_forward_selection(trials, TRAIN, TEST)["choices"]
    future = trials.copy()
    future.iloc[cut:, 3] += 0.05  # T3 becomes the best trial by far from row `cut` on
    future.iloc[cut:, 0] -= 0.05
    after = walk_forward_selection(future, TRAIN, TEST)["choices"]
    cut_date = str(trials.index[cut].date())
    kept = {d: p for d, p in before.items() if d <= cut_date}
    assert kept and {d: after[d] for d in kept} == kept
    # the perturbation is strong enough to be seen once it is in a training window
    later = [d for d in before if d > cut_date]
    if later:
        assert all(after[d] == "T3" for d in later)


def test_walk_forward_always_picks_a_trial_that_is_best_in_every_window(trials):
    skilled = trials.copy()
    skilled["T2"] += 0.004
    got = walk_forward_selection(skilled, TRAIN, TEST)
    assert set(got["choices"].values()) == {"T2"}
    pd.testing.assert_series_equal(got["returns"], skilled["T2"].iloc[TRAIN:], check_names=False)


def test_walk_forward_refuses_short_histories_and_bad_windows(trials):
    with pytest.raises(ValueError, match="299 common dates are fewer than train_days \\+ test_days = 300; shorten"):
        walk_forward_selection(trials.iloc[:299], TRAIN, TEST)
    with pytest.raises(ValueError, match="pass at least 2 and 1"):
        walk_forward_selection(trials, 1, TEST)
    with pytest.raises(ValueError, match="pass at least 2 and 1"):
        walk_forward_selection(trials, TRAIN, 0)


# --- 8. breakdowns -----------------------------------------------------------------------------

def test_breakdown_by_year_compounds_within_each_year_and_counts_sessions():
    dates = pd.to_datetime(["2020-12-30", "2020-12-31", "2021-01-04", "2021-01-05", "2021-01-06"])
    r = pd.Series([0.10, -0.10, 0.02, 0.03, -0.01], index=dates)
    got = breakdown_by_year(r)
    assert list(got.index) == [2020, 2021] and got.index.name == "year"
    assert got.loc[2020, "return"] == pytest.approx(1.1 * 0.9 - 1)  # -1%, not the 0% of a sum
    assert got.loc[2021, "return"] == pytest.approx(1.02 * 1.03 * 0.99 - 1)
    assert list(got["sessions"]) == [2, 3]
    y21 = r.iloc[2:]
    assert got.loc[2021, "volatility"] == pytest.approx(y21.std(ddof=1) * math.sqrt(252))
    assert got.loc[2021, "sharpe"] == pytest.approx(y21.mean() / y21.std(ddof=1) * math.sqrt(252))


def regime_labels(returns: pd.Series, benchmark: pd.Series, days) -> dict:
    """The regime breakdown_by_regime gives each day, read off one-day breakdowns."""
    out = {}
    for d in days:
        got = breakdown_by_regime(returns.iloc[[d]], benchmark)
        out[d] = got.index[0] if len(got) else None
    return out


@pytest.fixture(scope="module")
def volatility_break() -> tuple[pd.Series, pd.Series]:
    rng = np.random.default_rng(8)
    dates = pd.bdate_range("2018-01-01", periods=500)
    bench = pd.Series(np.r_[rng.normal(0, 0.005, 250), rng.normal(0, 0.025, 250)], index=dates)
    strategy = pd.Series(rng.normal(0.0005, 0.01, 500), index=dates)
    return strategy, bench


def test_breakdown_by_regime_finds_both_regimes_after_a_volatility_break(volatility_break):
    strategy, bench = volatility_break
    got = breakdown_by_regime(strategy, bench)
    assert set(got.index) == {"calm", "volatile"}
    # the first 125 sessions have no label: the lagged 63-session volatility starts on session 63, and its
    # expanding median needs 63 of them
    assert got["sessions"].sum() == 500 - 125
    labels = regime_labels(strategy, bench, range(330, 500, 17))  # well after the break
    assert set(labels.values()) == {"volatile"}
    volatile = strategy.iloc[[d for d, lab in regime_labels(strategy, bench, range(125, 500)).items()
                              if lab == "volatile"]]
    assert got.loc["volatile", "annual_return"] == pytest.approx(volatile.mean() * 252)
    assert got.loc["volatile", "sessions"] == len(volatile)


@pytest.mark.parametrize("t", [140, 200, 260, 400])
def test_breakdown_by_regime_labels_use_only_the_benchmarks_past(volatility_break, t):
    strategy, bench = volatility_break
    shocked = bench.copy()
    shocked.iloc[t:] = np.where(np.arange(len(bench) - t) % 2, 0.2, -0.2)  # a violent future from day t on
    days = range(t - 15, t + 2)
    before, after = regime_labels(strategy, bench, days), regime_labels(strategy, shocked, days)
    assert {d: after[d] for d in days if d <= t} == {d: before[d] for d in days if d <= t}
    assert after[t + 1] == "volatile"  # day t + 1 sees the shock of day t: the check can fail
    head = strategy.iloc[:t + 1]
    pd.testing.assert_frame_equal(breakdown_by_regime(head, bench), breakdown_by_regime(head, shocked))


# --- 9. the sweep registry ------------------------------------------------------------------------

def series(seed: int, n: int = 100, drift: float = 0.0005) -> pd.Series:
    return pd.Series(np.random.default_rng(seed).normal(drift, 0.01, n))


def per_period_sharpe(s: pd.Series) -> float:
    values = list(s.dropna())
    return statistics.mean(values) / statistics.stdev(values)


def test_trial_hash_is_stable_under_key_order_and_tells_configurations_apart():
    h = trial_hash("momentum", {"lookback": 20, "top": 5})
    assert h == trial_hash("momentum", {"top": 5, "lookback": 20})
    assert len(h) == 24 and h == trial_hash("momentum", {"lookback": 20, "top": 5})
    assert h != trial_hash("momentum", {"lookback": 21, "top": 5})
    assert h != trial_hash("reversal", {"lookback": 20, "top": 5})


def test_record_trials_counts_new_configurations_only(tmp_path):
    db = tmp_path / "state" / "registry.sqlite"
    a, b, c = series(1), series(2), series(3, drift=0.002)
    first = {"fast": ({"lookback": 10, "top": 5}, a), "slow": ({"lookback": 60, "top": 5}, b)}
    assert record_trials(db, "run-1", "momentum", first) == 2
    assert record_trials(db, "run-2", "momentum", first) == 0  # a re-run is not a new trial
    # the same parameters under another name, keys reordered, other returns: still the same configuration
    assert record_trials(db, "run-3", "momentum", {"again": ({"top": 5, "lookback": 10}, c)}) == 0
    # the same parameters in another family, and new parameters, are new trials
    assert record_trials(db, "run-3", "reversal", {"fast": ({"lookback": 10, "top": 5}, c)}) == 1
    flat, empty = pd.Series(0.0, index=range(50)), pd.Series([], dtype=float)
    short = pd.Series([0.01, np.nan, -0.02, np.nan])
    assert record_trials(db, "run-4", "momentum", {"flat": ({"lookback": 1}, flat), "empty": ({"lookback": 2}, empty),
                                                     "short": ({"lookback": 3}, short)}) == 0
    rows = list_trials(db)
    assert len(rows) == 3
    assert set(rows.columns) >= {"config_hash", "family", "name", "params", "sharpe", "n_obs", "run_id"}
    first_run = rows.set_index("config_hash").loc[trial_hash("momentum", {"lookback": 10, "top": 5})]
    assert first_run["name"] == "fast" and first_run["run_id"] == "run-1"  # the first record is kept
    assert first_run["sharpe"] == pytest.approx(per_period_sharpe(a)) and first_run["n_obs"] == 100
    stats_ = trial_statistics(db)
    assert stats_["n_trials"] == 3
    assert stats_["sharpe_variance"] == pytest.approx(
        statistics.variance([per_period_sharpe(a), per_period_sharpe(b), per_period_sharpe(c)]), rel=1e-9)


def test_trial_statistics_of_an_empty_or_single_trial_registry(tmp_path):
    db = tmp_path / "registry.sqlite"
    assert trial_statistics(db) == {"n_trials": 0, "sharpe_variance": 0.0}
    assert list_trials(db).empty
    with_nan = pd.concat([series(4), pd.Series([np.nan] * 5)], ignore_index=True)
    assert record_trials(db, "r", "f", {"x": ({"k": 1}, with_nan)}) == 1
    assert trial_statistics(db) == {"n_trials": 1, "sharpe_variance": 0.0}
    assert list_trials(db).loc[0, "n_obs"] == 100  # NaNs are not observations
    # the registry feeds the DSR: one trial means no deflation
    sharpe = list_trials(db).loc[0, "sharpe"]
    assert deflated_sharpe_ratio(sharpe, 100, 0.0, 3.0, 1, 0.0) == pytest.approx(psr_oracle(sharpe, 100, 0.0, 3.0))


def test_numpy_and_python_integers_are_the_same_configuration(tmp_path):
    assert trial_hash("momentum", {"lookback": np.int64(20)}) == trial_hash("momentum", {"lookback": 20})


def test_record_trials_skips_constant_non_zero_returns(tmp_path):
    flat = pd.Series(0.001, index=range(252))
    assert record_trials(tmp_path / "registry.sqlite", "r", "cash", {"cash": ({"rate": 0.001}, flat)}) == 0


# --- PBO over a wide sweep (issue 15 review): bounded memory, the same numbers ---------------------------

@settings(max_examples=10, deadline=None, derandomize=True)
@given(seed=st.integers(0, 10_000), n_trials=st.integers(2, 30), chunk=st.integers(1, 400), ties=st.booleans())
def test_pbo_in_chunks_of_combinations_is_pbo_at_once(seed, n_trials, chunk, ties):
    import research_lib.validation.statistics as module

    frame = noise_frame(np.random.default_rng(seed), 64, n_trials)
    if ties:
        frame.iloc[:, 1] = frame.iloc[:, 0]  # equal Sharpe ratios: ranks must tie the same way
    at_once = probability_of_backtest_overfitting(frame)
    original = module._PBO_CHUNK_CELLS
    try:
        module._PBO_CHUNK_CELLS = chunk  # as few as one combination per chunk
        chunked = probability_of_backtest_overfitting(frame)
    finally:
        module._PBO_CHUNK_CELLS = original
    np.testing.assert_allclose(chunked["logits"], at_once["logits"], rtol=1e-12, atol=1e-12)
    for key in ("pbo", "prob_oos_loss", "performance_degradation"):
        assert chunked[key] == pytest.approx(at_once[key], rel=1e-12, abs=1e-12, nan_ok=True)


def test_pbo_memory_does_not_grow_with_combinations_times_trials():
    import tracemalloc

    frame = noise_frame(np.random.default_rng(3), 32, 1_500)  # 12,870 x 1,500 float64 would be 154 MB
    tracemalloc.start()
    try:
        probability_of_backtest_overfitting(frame)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 100e6, f"PBO held {peak / 1e6:.0f} MB at its peak"

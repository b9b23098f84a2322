"""Specification of portfolio construction from signals (research_lib.portfolio._construct), the
research risk layer (clamp_weights), the exposure controls it uses, and the run-level artifacts."""

from __future__ import annotations

import datetime as dt
import json
import math
import shutil
import warnings
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from research_lib.config import load_config
from research_lib.portfolio import PortfolioConfig, VolTargetConfig
from research_lib.errors import ConfigError
from research_lib.portfolio import (PortfolioConstraints, blend_scores, book_exposures, construct_portfolio,
                                    efficient_frontier, optimize_weights, risk_contributions)
from research_lib.risk import RiskInputError, RiskLimits, clamp_weights, follow_multiplier
from tests.conftest import REPO

SYMBOLS = [f"S{i}" for i in range(6)]
SESSIONS = 400
DATES = pd.bdate_range("2021-01-04", periods=SESSIONS)
CAPITAL = 1_000_000.0
FAST = settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
FEW = settings(max_examples=5, deadline=None, suppress_health_check=[HealthCheck.too_slow])
# The names a risk event's reason may start with: the limits, and the sizing rule against accidental shorts.
LIMIT_NAMES = set(RiskLimits.model_fields) | {"no_short"}


def _market(seed: int = 11) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Geometric random walks with a shared factor (closes) and daily volumes in shares."""
    rng = np.random.default_rng(seed)
    returns = rng.normal(0.0, 0.008, size=(SESSIONS, 1)) + rng.normal(
        [0.0006, 0.0003, 0.0001, 0.0004, 0.0002, 0.0005], 0.014, size=(SESSIONS, len(SYMBOLS)))
    close = pd.DataFrame(100 * np.cumprod(1 + returns, axis=0), index=DATES, columns=SYMBOLS)
    volume = pd.DataFrame(rng.lognormal(math.log(2e5), 0.3, size=close.shape), index=DATES, columns=SYMBOLS)
    return close, volume


CLOSE, VOLUME = _market()


def random_scores(seed: int, every: int = 1) -> pd.DataFrame:
    """Scores for every symbol on every ``every``-th session."""
    rng = np.random.default_rng(seed)
    index = DATES[::every]
    return pd.DataFrame(rng.normal(size=(len(index), len(SYMBOLS))), index=index, columns=SYMBOLS)


def loose_limits(**changes) -> RiskLimits:
    """Limits that never bind on these books (unless changed)."""
    base = dict(max_weight=1.0, max_gross_exposure=3.0, max_net_exposure=3.0, max_order_notional=1e12,
                max_adv_fraction=1.0, fat_finger_band=0.05, max_price_age_seconds=900.0, max_open_orders=50,
                max_daily_orders=100, daily_loss_limit=0.05, drawdown_stop=0.25)
    return RiskLimits(**{**base, **changes})


def portfolio(**changes) -> PortfolioConfig:
    return PortfolioConfig(**{"lookback_days": 60, "capital": CAPITAL, **changes})


def drifted_oracle(weights: pd.Series, start: pd.Series, end: pd.Series) -> pd.Series:
    """Weights after prices moved from ``start`` to ``end``, the rest in cash (every symbol priced)."""
    growth = end / start
    return weights * growth / (1.0 + (weights * (growth - 1.0)).sum())


def vol_multiplier_oracle(weights: pd.Series, close: pd.DataFrame, at: int, lookback: int, target: float,
                          max_leverage: float) -> float:
    """min(max_leverage, target / annualized std of the book's last ``lookback`` daily returns up to ``at``)."""
    levels = close.to_numpy()[at - lookback: at + 1]
    book = (levels[1:] / levels[:-1] - 1.0) @ weights.to_numpy()
    vol = float(np.std(book, ddof=1)) * math.sqrt(252)
    return min(max_leverage, target / vol)


def notes_on(construction, date) -> list[str]:
    notes = construction.notes
    return notes.loc[notes["date"] == pd.Timestamp(date), "note"].tolist()


# --- blend_scores --------------------------------------------------------------------------------

def test_blend_scores_weights_the_z_scores_of_each_source():
    ml = pd.Series({"A": 1.0, "B": 2.0, "C": 3.0})  # z: -sqrt(1.5), 0, sqrt(1.5)
    llm = pd.Series({"A": 0.0, "B": 0.3, "C": np.nan})  # C unscored; z over A, B: -1, 1
    blend = blend_scores({"ml": ml, "llm": llm}, {"ml": 0.25, "llm": 0.75})
    z = math.sqrt(1.5)
    expected = pd.Series({"A": 0.25 * -z + 0.75 * -1.0, "B": 0.75 * 1.0, "C": z})
    pd.testing.assert_series_equal(blend.sort_index(), expected, check_names=False)
    # C is scored by ml alone: it gets ml's z-score, not a share of it.
    assert blend["C"] == pytest.approx(z)

    # A zero-weight source drops out, and so do the symbols only it scores; so does a source not weighted.
    only_ml = blend_scores({"ml": ml, "llm": pd.Series({"A": 5.0, "D": 1.0}), "other": ml * 7},
                           {"ml": 1.0, "llm": 0.0})
    pd.testing.assert_series_equal(only_ml.sort_index(), pd.Series({"A": -z, "B": 0.0, "C": z}), check_names=False)
    # The units of a source never matter: a positive affine change of it leaves the blend alone.
    rescaled = blend_scores({"ml": 40 * ml - 3, "llm": llm / 100}, {"ml": 0.25, "llm": 0.75})
    pd.testing.assert_series_equal(rescaled.sort_index(), expected, check_names=False)
    assert blend_scores({}, {"ml": 1.0}).empty


@FAST
@given(st.lists(st.one_of(st.none(), st.floats(-1e6, 1e6, allow_nan=False)), min_size=0, max_size=25))
def test_z_scores_on_arrays_are_pandas_to_the_bit(values):
    """The rebalance loop z-scores arrays as pandas' mean and population std would, bit for bit."""
    from research_lib.portfolio._construct import _zscores

    row = pd.Series([np.nan if v is None else v for v in values], dtype=float)
    scored = row.dropna()
    std = scored.std(ddof=0)
    expected = ((scored - scored.mean()) / std).reindex(row.index) if len(scored) >= 2 and std > 0 else row * np.nan
    np.testing.assert_array_equal(_zscores(row.to_numpy()), expected.to_numpy())


# --- construct_portfolio: point in time, cash dates, refused dates ----------------------------------

LOOKAHEAD_DATES = DATES[[45, 90, 130, 170, 210, 250, 290, 330, 370, 399]]


def _full_construction(close, volume, ml, llm, confidence):
    settings_ = portfolio(method="black_litterman", signal="blend", ml_weight=0.6, max_signal_age_sessions=10,
                          constraints=PortfolioConstraints(max_weight=0.4),
                          vol_target=VolTargetConfig(target_vol=0.15, lookback_days=40, max_leverage=1.2))
    limits = loose_limits(max_weight=0.3, max_gross_exposure=1.05, max_net_exposure=1.0,
                          max_order_notional=250_000.0, max_adv_fraction=0.5)
    return construct_portfolio(close, LOOKAHEAD_DATES, settings_, limits, scores={"ml": ml, "llm": llm},
                               confidences={"llm": confidence}, volume=volume)


@FEW
@given(st.integers(0, len(LOOKAHEAD_DATES) - 2), st.floats(0.5, 2.0), st.integers(0, 2**16))
def test_prices_and_scores_after_a_date_never_change_its_weights(cut, shock, seed):
    ml, llm = random_scores(1), random_scores(2, every=21)
    confidence = (llm.abs() / 3).clip(0.0, 1.0)
    before = _full_construction(CLOSE, VOLUME, ml, llm, confidence)

    when = LOOKAHEAD_DATES[cut]
    later = CLOSE.index > when
    close, volume = CLOSE.copy(), VOLUME.copy()
    close.loc[later] *= np.linspace(shock, 1 / shock, len(SYMBOLS))
    volume.loc[later] *= 3.0
    ml2, llm2, confidence2 = ml.copy(), llm.copy(), confidence.copy()
    ml2.loc[ml2.index > when] = random_scores(seed + 10).loc[ml2.index > when]
    llm2.loc[llm2.index > when] *= -1.0
    confidence2.loc[confidence2.index > when] = 1.0
    after = _full_construction(close, volume, ml2, llm2, confidence2)

    keep = slice(0, cut + 1)
    pd.testing.assert_frame_equal(before.weights.iloc[keep], after.weights.iloc[keep])
    pd.testing.assert_frame_equal(before.optimizer_weights.iloc[keep], after.optimizer_weights.iloc[keep])
    known = lambda frame: frame[frame["date"] <= when].reset_index(drop=True)  # noqa: E731
    pd.testing.assert_frame_equal(known(before.risk_events), known(after.risk_events))
    pd.testing.assert_frame_equal(known(before.notes), known(after.notes))
    assert not before.optimizer_weights.iloc[cut + 1:].equals(after.optimizer_weights.iloc[cut + 1:]), \
        "the change reaches the later dates (else this test shows nothing)"


def test_dates_before_the_lookback_are_cash_with_a_note_naming_it():
    dates = DATES[[30, 59, 60]]
    built = construct_portfolio(CLOSE, dates, portfolio(method="min_volatility"), loose_limits())
    for date, sessions in zip(dates[:2], (31, 60)):
        assert not built.weights.loc[date].any() and not built.optimizer_weights.loc[date].any()
        assert notes_on(built, date) == [f"cash: only {sessions} sessions of history; lookback_days=60 needs 61"]
    assert built.weights.loc[dates[2]].sum() == pytest.approx(1.0) and notes_on(built, dates[2]) == []


def test_a_stale_signal_leaves_the_date_in_cash_with_a_note():
    scores = random_scores(4).iloc[[100]]  # one row of scores, on session 100
    settings_ = portfolio(method="max_sharpe", signal="ml", max_signal_age_sessions=5,
                          constraints=PortfolioConstraints(max_weight=0.5))
    fresh, stale = DATES[105], DATES[106]  # 5 and 6 sessions after the scores
    built = construct_portfolio(CLOSE, [fresh, stale], settings_, loose_limits(), scores={"ml": scores})
    assert built.optimizer_weights.loc[fresh].sum() == pytest.approx(1.0, abs=1e-6) and notes_on(built, fresh) == []
    assert not built.weights.loc[stale].any() and not built.optimizer_weights.loc[stale].any()
    [note] = notes_on(built, stale)
    assert note.startswith("cash: 0 symbol(s)") and "fresh signal" in note


def test_rebalance_dates_outside_the_prices_are_refused_by_name():
    with pytest.raises(ValueError, match=r"rebalance dates \['2021-01-09', '2030-01-02'\] are not sessions"):
        construct_portfolio(CLOSE, sorted([DATES[100], pd.Timestamp("2021-01-09"), pd.Timestamp("2030-01-02")]),
                            portfolio(method="min_volatility"),
                            loose_limits())


# --- construct_portfolio: invariants of every row -------------------------------------------------

@st.composite
def construction_cases(draw):
    side = draw(st.sampled_from(["long_only", "long_short"]))
    max_weight = draw(st.floats(0.2, 0.6))
    constraints = (PortfolioConstraints(max_weight=max_weight) if side == "long_only" else
                   PortfolioConstraints(side="long_short", max_weight=max_weight,
                                        max_gross_exposure=draw(st.floats(1.0, 1.6))))
    vol_target = draw(st.one_of(st.none(), st.builds(
        VolTargetConfig, target_vol=st.floats(0.05, 0.4), lookback_days=st.just(40),
        max_leverage=st.floats(1.0, 2.0))))
    settings_ = portfolio(method=draw(st.sampled_from(["max_sharpe", "min_volatility", "black_litterman"])),
                          signal="ml", constraints=constraints, vol_target=vol_target)
    gross = draw(st.floats(0.8, 1.3))
    limits = loose_limits(max_weight=draw(st.floats(0.1, min(0.6, gross))), max_gross_exposure=gross,
                          allow_short=side == "long_short" and draw(st.booleans()),
                          max_net_exposure=draw(st.floats(0.5, gross)),
                          max_order_notional=draw(st.floats(0.1, 1.0)) * CAPITAL,
                          max_adv_fraction=draw(st.floats(0.005, 1.0)))
    return settings_, limits, draw(st.integers(0, 2**16))


@FAST
@given(construction_cases())
def test_every_row_respects_the_risk_limits_and_the_constraints(case):
    settings_, limits, seed = case
    dates = DATES[40::45]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pypfopt's solver chatter
        built = construct_portfolio(CLOSE, dates, settings_, limits, scores={"ml": random_scores(seed)},
                                    volume=VOLUME)
    c, tol = settings_.constraints, 1e-9
    assert list(built.weights.index) == list(dates) and list(built.weights.columns) == SYMBOLS
    noted = set(built.notes["date"])
    assert noted >= {d for d in dates if DATES.get_loc(d) < 60}, "dates before the lookback are noted"
    current, previous_at = pd.Series(0.0, index=SYMBOLS), None
    for date in dates:
        at = DATES.get_loc(date)
        if previous_at is not None:
            current = drifted_oracle(current, CLOSE.iloc[previous_at], CLOSE.iloc[at])
        final = built.weights.loc[date]
        # A book beyond a limit may shrink but not grow; one within it stays within.
        assert final.abs().sum() <= max(limits.max_gross_exposure, current.abs().sum()) + tol
        # Closing (part of) a position is exempt from the net limit (a hedged book can always be
        # flattened): net may pass its bound by at most what the closes moved it.
        same_side = np.sign(final) == np.sign(current)
        closed = np.where(same_side & (final.abs() < current.abs()), current - final, np.where(same_side, 0.0, current))
        assert abs(final.sum()) <= max(limits.max_net_exposure, abs(current.sum())) + np.abs(closed).sum() + tol
        assert (final.abs() <= np.maximum(limits.max_weight, current.abs()) + tol).all()
        optimized = built.optimizer_weights.loc[date]
        if date not in noted:
            assert optimized.sum() == pytest.approx(c.net_exposure, abs=1e-6)
            assert (optimized >= c.lower_bound - 1e-6).all() and (optimized <= c.max_weight + 1e-6).all()
        if c.side == "long_only" or not limits.allow_short:
            assert (final >= -tol).all()
        current, previous_at = final, at
    events = built.risk_events
    assert set(events["action"]) <= {"clamped", "rejected", "accepted"}
    assert all(reason.split(":")[0] in LIMIT_NAMES for reason in events["reason"]), events["reason"].tolist()
    for event in events.itertuples():
        assert built.weights.loc[event.date, event.symbol] == pytest.approx(event.final_weight, abs=1e-12)


def test_a_long_short_book_keeps_its_shorts_only_when_the_risk_layer_allows_them():
    settings_ = portfolio(method="max_sharpe", signal="ml",
                          constraints=PortfolioConstraints(side="long_short", max_weight=0.5, max_gross_exposure=1.6))
    dates, scores = DATES[[100, 150, 200]], {"ml": random_scores(3)}
    allowed = construct_portfolio(CLOSE, dates, settings_, loose_limits(allow_short=True), scores=scores)
    assert (allowed.optimizer_weights < -0.05).any().any(), "the optimizer shorts"
    assert allowed.risk_events.empty, "loose limits that allow shorts let the whole book through"
    np.testing.assert_allclose(allowed.weights, allowed.optimizer_weights, rtol=0, atol=1e-9)
    blocked = construct_portfolio(CLOSE, dates, settings_, loose_limits(), scores=scores)
    assert (blocked.weights >= 0).all().all() and (blocked.risk_events["reason"].str.startswith("no_short")).any()


# --- construct_portfolio: failures of the optimizer, volatility target ---------------------------

def test_when_the_optimizer_finds_no_weights_the_previous_targets_are_kept():
    scores = random_scores(5)
    scores.iloc[200:, 3:] = np.nan  # from session 200 only 3 symbols are scored: 3 x 0.3 < 1 is infeasible
    close = CLOSE.copy()
    close.iloc[230:, 0] = np.nan  # and S0 stops trading: a kept target on it is dropped
    settings_ = portfolio(method="max_sharpe", signal="ml", constraints=PortfolioConstraints(max_weight=0.3))
    dates = DATES[[150, 200, 240]]
    built = construct_portfolio(close, dates, settings_, loose_limits(), scores={"ml": scores})
    first = built.weights.loc[dates[0]]
    assert notes_on(built, dates[0]) == [] and first.sum() == pytest.approx(1.0, abs=1e-6) and first["S0"] > 0
    for date in dates[1:]:
        [note] = notes_on(built, date)
        assert note.startswith("previous targets kept: ") and "max_weight" in note
    pd.testing.assert_series_equal(built.optimizer_weights.loc[dates[1]], first, check_names=False)
    np.testing.assert_allclose(built.weights.loc[dates[1]], first, atol=1e-9)  # traded back from the drift
    pd.testing.assert_series_equal(built.optimizer_weights.loc[dates[2]], first.where(first.index != "S0", 0.0),
                                   check_names=False)


@pytest.mark.parametrize("target", [dict(method="efficient_return", target_return=5.0),
                                    dict(method="efficient_risk", target_volatility=0.01)])
def test_an_unreachable_target_keeps_the_previous_targets(target):
    settings_ = portfolio(signal="ml", constraints=PortfolioConstraints(max_weight=0.5), **target)
    built = construct_portfolio(CLOSE, DATES[[100, 150]], settings_, loose_limits(), scores={"ml": random_scores(6)})
    assert len(built.notes) == 2 and all(n.startswith("previous targets kept") for n in built.notes["note"])
    assert "cannot be reached by these assets" in built.notes["note"].iloc[0]
    assert not built.weights.any().any()


def test_a_failed_date_keeps_the_optimizer_weights_so_the_vol_target_is_not_applied_twice():
    scores = random_scores(5)
    scores.iloc[200:, 3:] = np.nan  # from session 200 only 3 symbols are scored: 3 x 0.3 < 1 is infeasible
    settings_ = portfolio(method="max_sharpe", signal="ml", constraints=PortfolioConstraints(max_weight=0.3),
                          vol_target=VolTargetConfig(target_vol=0.03, lookback_days=40))
    dates = DATES[[150, 200, 240, 280]]
    built = construct_portfolio(CLOSE, dates, settings_, loose_limits(), scores={"ml": scores})
    first = built.optimizer_weights.loc[dates[0]]
    assert built.weights.loc[dates[0]].sum() < 0.5 * first.sum(), "the vol target scaled the first book down"
    for date in dates[1:]:
        pd.testing.assert_series_equal(built.optimizer_weights.loc[date], first, check_names=False)
        scale = vol_multiplier_oracle(first, CLOSE, DATES.get_loc(date), 40, 0.03, 1.0)
        np.testing.assert_allclose(built.weights.loc[date], first * scale, atol=1e-9)  # scaled once, not again


def test_unsorted_or_repeated_rebalance_dates_are_refused():
    for dates in (DATES[[300, 100]], DATES[[100, 100]]):
        with pytest.raises(ValueError, match="rebalance dates must be increasing and distinct"):
            construct_portfolio(CLOSE, dates, portfolio(method="min_volatility"), loose_limits())


@pytest.mark.parametrize("target_vol, max_leverage", [(0.05, 1.0), (2.0, 1.5)])
def test_the_volatility_target_scales_the_optimizer_weights(target_vol, max_leverage):
    vt = VolTargetConfig(target_vol=target_vol, lookback_days=40, max_leverage=max_leverage)
    settings_ = portfolio(method="min_volatility", vol_target=vt, constraints=PortfolioConstraints(max_weight=0.5))
    dates = DATES[[100, 170, 240, 399]]
    built = construct_portfolio(CLOSE, dates, settings_, loose_limits())
    assert built.risk_events.empty, "no clamp binds, so the final rows are the scaled ones"
    for date in dates:
        optimized = built.optimizer_weights.loc[date]
        scale = vol_multiplier_oracle(optimized, CLOSE, DATES.get_loc(date), 40, target_vol, max_leverage)
        assert scale < 0.5 if max_leverage == 1.0 else scale == max_leverage
        np.testing.assert_allclose(built.weights.loc[date], optimized * scale, rtol=0, atol=1e-9)


def test_a_volatility_target_never_scales_a_book_without_a_full_window():
    # At the first invested date (at == lookback_days) a window as long as the lookback is all there is.
    vt = VolTargetConfig(target_vol=0.05, lookback_days=60, max_leverage=1.0)
    settings_ = portfolio(method="min_volatility", vol_target=vt, constraints=PortfolioConstraints(max_weight=0.5))
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # no NaN volatility on the way
        built = construct_portfolio(CLOSE, DATES[[60]], settings_, loose_limits())
    optimized = built.optimizer_weights.iloc[0]
    scale = vol_multiplier_oracle(optimized, CLOSE, 60, 60, 0.05, 1.0)
    assert scale < 0.5
    np.testing.assert_allclose(built.weights.iloc[0], optimized * scale, rtol=0, atol=1e-9)
    # A longer volatility window than the history each date has is refused (it once wrapped around to an
    # empty slice, a NaN volatility and a book scaled by max_leverage).
    with pytest.raises(ValidationError, match=r"vol_target.lookback_days \(63\) exceeds lookback_days \(20\)"):
        portfolio(lookback_days=20, vol_target=VolTargetConfig(target_vol=0.02, lookback_days=63))


# --- clamp_weights ------------------------------------------------------------------------------

WHEN = dt.datetime(2024, 3, 1, 16, 0)
EQUITY = 100_000.0
PRICES = pd.Series({"A": 100.0, "B": 50.0, "C": 25.0, "D": 37.17, "E": 80.0})


def clamp_limits(**changes) -> RiskLimits:
    return loose_limits(**{"max_weight": 0.3, "max_gross_exposure": 1.0, "max_net_exposure": 1.0,
                           "max_order_notional": 40_000.0, "max_adv_fraction": 0.01, **changes})


def test_clamp_weights_passes_what_fits_and_clamps_or_rejects_the_rest():
    current = pd.Series({"A": 0.10, "C": 0.10, "D": 0.20, "E": 0.05})
    target = pd.Series({"A": 0.15, "B": 0.50, "C": 0.40, "D": 0.0, "E": 0.05 + 1e-8})
    final, events = clamp_weights(current, target, PRICES, clamp_limits(), EQUITY, WHEN)
    expected = pd.Series({"A": 0.15,   # a 5,000 buy fits: passed unchanged
                          "B": 0.30,   # 50,000 > max_order_notional 40,000: sent as 2 x 25,000; max_weight clamps
                          "C": 0.30,   # 30,000 fits the notional but 0.4 > max_weight: clamped to 0.3
                          "D": 0.0,    # a full exit sells exactly the shares held
                          "E": 0.05})  # a change below min_trade is not traded
    pd.testing.assert_series_equal(final, expected, check_names=False, rtol=0, atol=1e-12)
    assert final["D"] == 0.0
    assert events[["symbol", "action"]].values.tolist() == [["B", "clamped"], ["C", "clamped"]], "one row per trade"
    rows = events.set_index("symbol")
    assert rows.loc["B", "reason"].startswith("max_weight: B weight after the order would be 0.5000 > limit 0.3000")
    assert rows.loc["C", "reason"].startswith("max_weight: C")
    assert rows.loc["B", "proposed_weight"] == 0.5 and rows.loc["B", "final_weight"] == pytest.approx(0.3)
    assert rows.loc["C", "proposed_weight"] == 0.4 and rows.loc["C", "final_weight"] == pytest.approx(0.3)
    assert set(events["date"]) == {pd.Timestamp("2024-03-01")}


def test_research_orders_ignore_order_counts_but_keep_every_sizing_limit():
    many = pd.Series(1 / 60, index=[f"S{i:02d}" for i in range(60)])
    prices = pd.Series(10.0, index=many.index)
    final, events = clamp_weights(pd.Series(dtype=float), many, prices, clamp_limits(max_open_orders=5,
                                  max_daily_orders=5, max_gross_exposure=1.01, max_net_exposure=1.01), EQUITY, WHEN)
    assert events.empty and final.sum() == pytest.approx(1.0), "research fills at once: no open-order cap"
    final, events = clamp_weights(pd.Series(dtype=float), pd.Series({"A": 0.9}), PRICES,
                                  clamp_limits(max_weight=1.0, max_order_notional=20_000.0), EQUITY, WHEN)
    assert final["A"] == pytest.approx(0.9) and events.empty, "a 90,000 trade goes as 5 orders of 18,000"


def test_clamp_weights_refuses_an_unpriced_holding_and_clamps_to_the_adv():
    with pytest.raises(RiskInputError, match=r"no positive decision price on 2024-03-01 for \['Z'\]"):
        clamp_weights(pd.Series({"A": 0.1, "Z": 0.1}), pd.Series({"A": 0.1, "Z": 0.1}), PRICES, clamp_limits(),
                      EQUITY, WHEN)
    adv = pd.Series({"A": 1_000.0, "B": np.nan})  # A: at most 1 % of 1,000 shares = 10 x 100 = 1 % of equity
    final, events = clamp_weights(pd.Series(dtype=float), pd.Series({"A": 0.05, "B": 0.1}), PRICES, clamp_limits(),
                                  EQUITY, WHEN, adv)
    assert final["A"] == pytest.approx(0.01, abs=1e-12) and final["B"] == pytest.approx(0.1, abs=1e-12)
    [reason] = events["reason"]
    assert events["symbol"].tolist() == ["A"] and reason.startswith("max_adv_fraction: A")


# --- follow_multiplier -------------------------------------------------------------------------

def test_follow_multiplier_adds_a_row_before_each_change_of_the_multiplier():
    d = pd.bdate_range("2024-01-01", periods=10)
    w1, w2, w3 = [0.6, 0.4], [0.2, 0.8], [0.5, 0.5]
    weights = pd.DataFrame([w1, w2, w3], index=d[[2, 5, 9]], columns=["A", "B"])
    multiplier = pd.Series([1, 0, 1, 1, 0, 0, 0, 1, 1, 1], index=d, dtype=float)
    out = follow_multiplier(weights, multiplier)
    # Changes after d0 (1 -> 0), d1 (0 -> 1), d3 (1 -> 0), d6 (0 -> 1); each row is the latest target
    # (cash before the first) times the next session's multiplier; the last date keeps its own.
    expected = pd.DataFrame([[0, 0], [0, 0], w1, [0, 0], [0, 0], w2, w3], columns=["A", "B"], dtype=float,
                            index=d[[0, 1, 2, 3, 5, 6, 9]])
    pd.testing.assert_frame_equal(out, expected, check_freq=False)
    pd.testing.assert_frame_equal(follow_multiplier(weights, pd.Series(1.0, index=d)), weights)


# --- book_exposures, risk_contributions, efficient_frontier -----------------------------------------

def test_book_exposures_of_a_hand_example():
    weights = pd.DataFrame([[0.5, -0.2, 0.3], [0.4, 0.0, 0.6]], columns=["A", "B", "C"],
                           index=pd.to_datetime(["2024-01-31", "2024-02-29"]))
    expected = pd.DataFrame({"gross": [1.0, 1.0], "net": [0.6, 1.0], "long": [0.8, 1.0], "short": [-0.2, 0.0],
                             "positions": [3, 2], "turnover": [1.0, 0.6]}, index=weights.index)
    pd.testing.assert_frame_equal(book_exposures(weights), expected, check_dtype=False)


def test_risk_contributions_of_a_two_asset_book():
    cov = pd.DataFrame([[0.04, 0.006], [0.006, 0.09]], index=["A", "B"], columns=["A", "B"])
    # cov @ w = (0.0298, 0.0312); w' cov w = 0.7 x 0.0298 + 0.3 x 0.0312 = 0.03022
    got = risk_contributions(pd.Series({"A": 0.7, "B": 0.3}), cov)
    np.testing.assert_allclose(got.to_numpy(), [0.02086 / 0.03022, 0.00936 / 0.03022], rtol=1e-12)
    assert got.sum() == pytest.approx(1.0)
    only_a = risk_contributions(pd.Series({"A": 1.0}), cov)  # a symbol missing from the weights holds 0
    assert only_a.tolist() == [1.0, 0.0]
    with pytest.raises(ValueError, match="zero variance"):
        risk_contributions(pd.Series({"A": 0.0, "B": 0.0}), cov)


def test_efficient_frontier_rises_from_the_minimum_volatility_portfolio():
    names = ["A", "B", "C", "D"]
    vols = np.array([0.15, 0.2, 0.25, 0.3])
    corr = np.full((4, 4), 0.3) + 0.7 * np.eye(4)
    cov = pd.DataFrame(corr * np.outer(vols, vols), index=names, columns=names)
    mu = pd.Series([0.04, 0.07, 0.09, 0.12], index=names)
    constraints = PortfolioConstraints(max_weight=0.5)
    frontier = efficient_frontier(mu, cov, constraints, points=12)
    assert len(frontier) >= 10 and list(frontier.columns) == ["volatility", "expected_return"]
    assert (frontier["expected_return"].diff().dropna() > 0).all()
    assert (frontier["volatility"].diff().dropna() > -1e-7).all() and frontier["volatility"].iloc[-1] > \
        frontier["volatility"].iloc[0]
    low = optimize_weights(None, cov, "min_volatility", constraints)
    assert frontier["volatility"].iloc[0] == pytest.approx(math.sqrt(low @ cov @ low), abs=1e-5)
    assert frontier["volatility"].min() == pytest.approx(frontier["volatility"].iloc[0], abs=1e-7)
    assert frontier["expected_return"].iloc[-1] == pytest.approx(0.5 * 0.12 + 0.5 * 0.09, abs=1e-3)


# --- the run: weights.parquet and its neighbours -------------------------------------------------

@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    """One smoke run's portfolio weights (fits the ML models once, ~15 s), in a scratch workspace."""
    from research_lib.stages import RunFolder, build_weights

    home = tmp_path_factory.mktemp("construct-workspace")
    (home / "params").symlink_to(REPO / "params")
    (home / "notebooks").symlink_to(REPO / "notebooks")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SPARTAN_HOME", str(home))
        params = home / "params" / "smoke.yaml"
        folder = RunFolder.open(params, home / "runs" / "smoke")
        config, run_dir = folder.config, folder.run_dir
        built = build_weights(folder)
        yield SimpleNamespace(params=params, config=config, run_dir=run_dir, built=built)


def copy_run(smoke_run, tmp_path):
    return shutil.copytree(smoke_run.run_dir, tmp_path / "run")


def test_weights_are_saved_fresh_reused_and_rebuilt_when_the_portfolio_changes(smoke_run, tmp_path, monkeypatch):
    import research_lib.portfolio as portfolio_module
    from research_lib.stages import RunFolder, backtest_strategies
    WEIGHTS_FILE = "weights.parquet"

    run_dir, config, built = copy_run(smoke_run, tmp_path), smoke_run.config, smoke_run.built
    record = json.loads((run_dir / "weights.json").read_text())
    assert record["config_key"] == RunFolder(config, run_dir).key("weights") and record["rows"] == len(built["weights"])
    assert set(record["inputs"]) == {"prices.parquet", "signals_ml.parquet", "signals_llm.parquet"}
    saved = pd.read_parquet(run_dir / WEIGHTS_FILE)
    pd.testing.assert_frame_equal(saved, built["weights"], check_freq=False)
    report = json.loads((run_dir / "portfolio_report.json").read_text())
    events = pd.read_parquet(run_dir / "risk_events.parquet")
    assert report["risk_clamped"] == (events["action"] == "clamped").sum() > 0, "smoke's risk limits bind"
    assert report["signal_sources"] == ["llm", "ml"] and report["rebalances"] == len(saved)
    assert (pd.read_parquet(run_dir / "weights_optimizer.parquet").max(axis=1) > 0.3 + 1e-6).any()

    real, calls = portfolio_module.construct_portfolio, []
    monkeypatch.setattr(portfolio_module, "construct_portfolio",
                        lambda *args, **kwargs: calls.append(1) or real(*args, **kwargs))
    pd.testing.assert_frame_equal(RunFolder(config, run_dir).weights, saved)
    assert calls == [], "fresh weights are read, not rebuilt"
    results = backtest_strategies(RunFolder(config, run_dir))
    assert list(results) == ["portfolio", "momentum_12_1", "ml_signal", "llm_signal"] and calls == []

    wider = load_config(smoke_run.params, overrides=["portfolio.constraints.max_weight=0.5"])
    RunFolder(wider, run_dir).weights
    assert calls == [1], "a portfolio parameter changed: the weights are rebuilt"
    assert json.loads((run_dir / "weights.json").read_text())["config_key"] == RunFolder(wider, run_dir).key("weights")
    RunFolder(wider, run_dir).weights
    assert calls == [1]

    # Same parameters, but 04 ran again and its views changed (e.g. Claude once a key is set): rebuilt.
    views = pd.read_parquet(run_dir / "signals_llm.parquet")
    views["expected_excess_return"] = -views["expected_excess_return"]
    views.to_parquet(run_dir / "signals_llm.parquet")
    RunFolder(wider, run_dir).weights
    assert calls == [1, 1], "an input artifact was rewritten: the weights are rebuilt"


def test_a_baseline_strategy_writes_its_rule_weights(smoke_run, tmp_path):
    from research_lib.stages import RunFolder, build_weights, rule_weights

    run_dir = copy_run(smoke_run, tmp_path)
    config = load_config(smoke_run.params, overrides=["strategy.name=momentum_12_1"])
    out = build_weights(RunFolder(config, run_dir))
    assert out["construction"] is None and out["report"]["construction"].startswith("baseline rule")
    expected = rule_weights(RunFolder(config, run_dir))
    pd.testing.assert_frame_equal(pd.read_parquet(run_dir / "weights.parquet"), expected, check_freq=False)
    assert (expected.sum(axis=1).round(9) == 1.0).any()


def test_the_circuit_breaker_adds_cash_rows_and_counts_its_trips(smoke_run, tmp_path):
    from research_lib.stages import RunFolder, build_weights

    run_dir = copy_run(smoke_run, tmp_path)
    config = load_config(smoke_run.params,
                         overrides=["portfolio.circuit_breaker={max_drawdown: 0.05, cooldown_days: 5}"])
    out = build_weights(RunFolder(config, run_dir))
    report = json.loads((run_dir / "portfolio_report.json").read_text())
    assert report["circuit_breaker_trips"] > 0 and report == out["report"]
    weights = pd.read_parquet(run_dir / "weights.parquet")
    decided = out["construction"].weights
    assert weights.index.is_monotonic_increasing and set(decided.index) < set(weights.index)
    invested = weights.index[weights.abs().sum(axis=1) > 0]
    after_start = weights.loc[invested[0]:]
    assert (after_start.abs().sum(axis=1) == 0).sum() >= report["circuit_breaker_trips"], "a cash row per trip"


def test_a_dry_run_analyst_cannot_feed_the_portfolio(smoke_run, tmp_path):
    from research_lib.stages import RunFolder, build_weights

    run_dir = copy_run(smoke_run, tmp_path)
    config = load_config(smoke_run.params, overrides=["llm.dry_run=true", "portfolio.signal=llm"])
    with pytest.raises(ConfigError, match="llm.dry_run is true"):
        build_weights(RunFolder(config, run_dir))


def test_the_portfolio_snapshot_describes_the_last_book(smoke_run, tmp_path):
    from research_lib.stages import RunFolder, portfolio_snapshot

    run_dir = copy_run(smoke_run, tmp_path)
    config, weights = smoke_run.config, smoke_run.built["weights"]
    snap = portfolio_snapshot(RunFolder(config, run_dir), weights)
    assert snap["date"] == weights.index[weights.abs().sum(axis=1) > 0][-1]
    contributions = snap["contributions"]
    assert contributions["risk_contribution"].sum() == pytest.approx(1.0)
    np.testing.assert_allclose(contributions["weight"], weights.loc[snap["date"], contributions.index])
    close = RunFolder(config, run_dir).prices["close"].loc[snap["date"]]
    allocation = snap["allocation"]
    spend = float((allocation.shares * close.reindex(allocation.shares.index)).sum())
    assert 0 < spend <= config.portfolio.capital and spend + allocation.leftover_cash == pytest.approx(
        config.portfolio.capital)
    assert not snap["frontier"].empty


# --- configuration --------------------------------------------------------------------------------

@pytest.mark.parametrize("changes, message", [
    (dict(method="efficient_risk"), "needs portfolio.target_volatility"),
    (dict(method="efficient_return"), "needs portfolio.target_return"),
    (dict(method="hrp", constraints=PortfolioConstraints(max_weight=0.5)), "leave portfolio.constraints at its"),
    (dict(method="black_litterman", constraints=PortfolioConstraints(turnover_penalty=0.01)),
     "constraints.turnover_penalty cannot be used with method 'black_litterman'"),
])
def test_portfolio_settings_missing_an_input_are_refused_by_key(changes, message):
    with pytest.raises(ValidationError, match=message):
        PortfolioConfig(**changes)


def test_a_bad_portfolio_override_names_the_key():
    with pytest.raises(ConfigError, match="portfolio.target_return"):
        load_config(REPO / "params" / "smoke.yaml", overrides=["portfolio.method=efficient_return"])
    assert PortfolioConfig(method="hrp", constraints=PortfolioConstraints(net_exposure=0.5)).method == "hrp"


def test_the_risk_layer_summary_says_what_happened(smoke_run):
    from research_lib.stages import risk_layer_summary

    clamped = (smoke_run.built["construction"].risk_events["action"] == "clamped").sum()
    assert risk_layer_summary(smoke_run.built).startswith(f"{clamped} trades clamped, ")
    baseline = {"construction": None, "report": {"strategy": "momentum_12_1"}}
    assert "baseline rule: its weights do not go through the risk layer" in risk_layer_summary(baseline)
    quiet = {"construction": SimpleNamespace(risk_events=pd.DataFrame(columns=["action"])), "report": {}}
    assert risk_layer_summary(quiet).startswith("every order fit the limits")
    noted = {"construction": SimpleNamespace(risk_events=pd.DataFrame({"action": ["accepted", "clamped"]})),
             "report": {}}
    assert risk_layer_summary(noted) == ("1 trades clamped, 0 rejected, 1 position-reducing trades accepted beyond "
                                         "the net limit")


def test_on_a_crypto_calendar_the_volatility_target_annualizes_with_365_sessions():
    vt = VolTargetConfig(target_vol=0.05, lookback_days=40, max_leverage=1.0)
    settings_ = portfolio(method="min_volatility", vol_target=vt, constraints=PortfolioConstraints(max_weight=0.5))
    dates = DATES[[100, 240]]
    stocks = construct_portfolio(CLOSE, dates, settings_, loose_limits())
    crypto = construct_portfolio(CLOSE, dates, settings_, loose_limits(), sessions_per_year=365)
    for date in dates:  # the same daily volatility is sqrt(365 / 252) times more in a crypto year
        scale = crypto.weights.loc[date].sum() / crypto.optimizer_weights.loc[date].sum()
        oracle = vol_multiplier_oracle(crypto.optimizer_weights.loc[date], CLOSE, DATES.get_loc(date), 40, 0.05,
                                       1.0) * (252 / 365) ** 0.5
        on_stocks = stocks.weights.loc[date].sum() / stocks.optimizer_weights.loc[date].sum()
        assert scale == pytest.approx(oracle, rel=1e-9) and scale == pytest.approx(on_stocks * (252 / 365) ** 0.5)

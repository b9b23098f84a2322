"""The sweep engine is run_backtest, many configurations at once.

The oracle is `run_backtest` on each book's decision rows, derived here independently of the
engine: for target weights, the rows with a decision; for entry/exit, the rows where a plain
loop's position changes. One rule is the engine's own: a target on a symbol without a price
at its trade's session is set to 0 first.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from research_lib.backtest import NO_POSITION, NoPosition, run_backtest
from research_lib.sweeps import Indicators, entry_exit, run_sweep, target_weights
from research_lib.validation import metrics
from tests.conftest import make_prices


def listed_prices(rng: np.random.Generator, n_sessions: int, n_symbols: int, late_listings: bool = True) -> pd.DataFrame:
    """Random walks with volume; most symbols listed at a random start and delisted at a random end
    (the first stays listed throughout, the third may have a one-session gap)."""
    closes = 100 * np.exp(np.cumsum(rng.normal(0, 0.02, (n_sessions, n_symbols)), axis=0))
    for j in range(1, n_symbols):
        start, end = sorted(rng.integers(0, n_sessions, 2)) if rng.random() < 0.6 else (0, n_sessions)
        start = start if late_listings else 0  # impact needs a volume history before each trade
        closes[:start, j] = np.nan
        closes[end + 1:, j] = np.nan
    if n_symbols > 2 and rng.random() < 0.5:
        closes[rng.integers(1, n_sessions), 2] = np.nan  # a gap: the holding is sold at the close before it
    volume = np.where(np.isnan(closes), np.nan, rng.uniform(1e5, 1e6, closes.shape))
    names = [f"S{j}" for j in range(n_symbols)]
    return make_prices({s: closes[:, j] for j, s in enumerate(names)},
                       volume={s: volume[:, j] for j, s in enumerate(names)})


WARM_UP = 25  # no decision in the first sessions: impact needs a history of volume before a trade


def random_weights(close: pd.DataFrame, seed: int) -> pd.DataFrame:
    """Decision rows on random sessions (NaN elsewhere), long, short, zero and NaN entries."""
    rng = np.random.default_rng(seed)
    weights = rng.choice([0.0, 0.3, -0.4, 1.0, 0.7, np.nan], size=close.shape, p=[.3, .2, .15, .15, .1, .1])
    weights[rng.random(len(close)) < rng.uniform(0.5, 0.97)] = np.nan
    weights[:WARM_UP] = np.nan
    return pd.DataFrame(weights, index=close.index, columns=close.columns)


def random_signals(close: pd.DataFrame, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    rng = np.random.default_rng(seed)
    rate = rng.uniform(0.01, 0.3)
    entries, exits = rng.random(close.shape) < rate, rng.random(close.shape) < rate
    entries[:WARM_UP] = False
    return pd.DataFrame(entries, close.index, close.columns), pd.DataFrame(exits, close.index, close.columns)


@target_weights
def weights_rule(ind, seed):
    return random_weights(ind.close, seed)


@entry_exit
def signals_rule(ind, seed):
    return random_signals(ind.close, seed)


signals_short = entry_exit(signals_rule.function, short=True)


def oracle_positions(entries: np.ndarray, exits: np.ndarray, short: bool) -> np.ndarray:
    """Position after each close: 1 on an entry, 0 (-1 when short) on an exit, else unchanged."""
    positions = np.zeros(entries.shape)
    state = np.zeros(entries.shape[1])
    for t in range(len(entries)):
        state = np.where(entries[t] & ~exits[t], 1.0, np.where(exits[t] & ~entries[t], -1.0 if short else 0.0, state))
        positions[t] = state
    return positions


def oracle_decisions(strategy, seed: int, close: pd.DataFrame, book: str) -> list[pd.DataFrame]:
    """Each book's decision rows (dates x its symbols), before the listing rule."""
    if strategy.kind == "target_weights":
        weights = random_weights(close, seed)
        if book == "portfolio":
            return [weights[weights.notna().any(axis=1)].fillna(0.0)]
        return [weights[[s]].dropna() for s in close.columns]
    entries, exits = (frame.to_numpy() for frame in random_signals(close, seed))
    positions = pd.DataFrame(oracle_positions(entries, exits, strategy.short), close.index, close.columns)
    changed = positions.diff().fillna(positions) != 0
    if book == "portfolio":
        return [positions[changed.any(axis=1)] / close.shape[1]]
    return [positions.loc[changed[s], [s]] for s in close.columns]


def priced_at_trade(decisions: pd.DataFrame, close: pd.DataFrame, lag: int) -> pd.DataFrame:
    """The engine's listing rule: a target on a symbol without a price at its trade's session is 0."""
    rows = close.index.get_indexer(decisions.index) + lag
    inside = rows < len(close)
    priced = np.ones(decisions.shape, dtype=bool)
    priced[inside] = close[decisions.columns].to_numpy()[rows[inside]] == close[decisions.columns].to_numpy()[rows[inside]]
    return decisions.where(priced, 0.0)


MODELS = st.fixed_dictionaries({
    "execution_lag_sessions": st.integers(1, 3), "cost_bps": st.sampled_from([0.0, 10.0, 35.0]),
    "spread_bps": st.sampled_from([0.0, 5.0]), "borrow_bps_per_year": st.sampled_from([0.0, 80.0]),
    "cash_rate_per_year": st.sampled_from([0.0, 0.04, -0.01, "series"]),
    "impact_coefficient": st.sampled_from([0.0, 0.0, 0.5])})


@settings(max_examples=40, deadline=None, derandomize=True)
@given(data=st.data(), n_sessions=st.integers(60, 200), n_symbols=st.integers(3, 5),
       strategy=st.sampled_from([weights_rule, signals_rule, signals_short]),
       book=st.sampled_from(["per_symbol", "portfolio"]), model=MODELS, seeds=st.lists(st.integers(0, 10**6),
                                                                                     min_size=1, max_size=3))
def test_every_book_is_run_backtest_on_its_decision_rows(data, n_sessions, n_symbols, strategy, book, model, seeds):
    prices = listed_prices(np.random.default_rng(seeds[0]), n_sessions, n_symbols,
                           late_listings=not model["impact_coefficient"] or seeds[0] % 4 == 0)
    close = prices["close"]
    if model["cash_rate_per_year"] == "series":
        model["cash_rate_per_year"] = pd.Series(np.linspace(0.0, 0.05, n_sessions), index=close.index)
    if model["impact_coefficient"]:
        model["capital"] = 1e6
    lag = model["execution_lag_sessions"]
    expected, failure = [], None
    for seed in seeds:
        for decisions in oracle_decisions(strategy, seed, close, book):
            try:
                expected.append(run_backtest(priced_at_trade(decisions, close, lag), prices, **model))
            except NoPosition:
                expected.append(None)
            except ValueError as error:  # impact without its inputs: the sweep stops too
                failure = error
    if failure is not None:
        event("impact without its inputs: refused")
        with pytest.raises(ValueError, match=r"configuration \d+ .*impact needs"):
            run_sweep(strategy, {"seed": seeds}, prices, book=book, **model)
        return

    result = run_sweep(strategy, {"seed": seeds}, prices, book=book, keep_returns=True, **model)
    assert len(result.table) == len(expected)
    event(f"impact {bool(model['impact_coefficient'])}, {sum(b is None for b in expected)} of {len(expected)} "
          "books never trade")
    for config, backtest in enumerate(expected):
        row = result.table.loc[config]
        if backtest is None:
            assert row[["sharpe", "cagr", "max_drawdown"]].isna().all() and row["n_obs"] == 0
            assert row["reason"].startswith(NO_POSITION) and config not in result.returns.columns
            continue
        swept = result.returns[config].dropna()
        assert swept.index.equals(backtest.returns.index)
        np.testing.assert_allclose(swept.to_numpy(), backtest.returns.to_numpy(), rtol=0, atol=1e-12)
        assert row["sharpe"] == pytest.approx(metrics.sharpe_ratio(backtest.returns), rel=1e-9, nan_ok=True)
        assert row["max_drawdown"] == pytest.approx(metrics.max_drawdown(backtest.returns), rel=1e-9, abs=1e-12)
        assert row["cagr"] == pytest.approx(metrics.cagr(backtest.returns), rel=1e-9, abs=1e-12)
        years = len(backtest.returns) / 252
        assert row["annual_turnover"] == pytest.approx(backtest.turnover.sum() / years, rel=1e-9)
        assert row["annual_cost"] == pytest.approx(backtest.costs.sum() / years, rel=1e-9, abs=1e-15)
        assert row["n_obs"] == len(backtest.returns) and row["reason"] is None


@pytest.fixture(scope="module")
def prices() -> pd.DataFrame:
    return listed_prices(np.random.default_rng(7), 150, 4)


def test_a_target_on_a_symbol_without_a_price_at_its_trade_is_zero():
    """B is listed on session 5: a target on it traded on session 3 is set to 0."""
    close = make_prices({"A": 100.0 + np.arange(10.0), "B": [np.nan] * 5 + list(100.0 + np.arange(5.0))})["close"]
    frame = make_prices({"A": close["A"].tolist(), "B": close["B"].tolist()})

    @target_weights
    def half_each(ind):
        weights = pd.DataFrame(np.nan, index=ind.close.index, columns=ind.close.columns)
        weights.iloc[2] = 0.5  # traded on session 3: B has no price yet
        return weights

    result = run_sweep(half_each, [{}], frame, cost_bps=0, keep_returns=True)
    expected = run_backtest(pd.DataFrame({"A": [0.5], "B": [0.0]}, index=close.index[2:3]), frame, cost_bps=0)
    pd.testing.assert_series_equal(result.returns[0].dropna(), expected.returns, check_names=False, check_freq=False)

    @target_weights
    def only_b(ind):
        weights = pd.DataFrame(np.nan, index=ind.close.index, columns=ind.close.columns)
        weights.iloc[2] = [0.0, 1.0]
        return weights

    reason = run_sweep(only_b, [{}], frame).table.loc[0, "reason"]
    assert reason == NO_POSITION + "every target weight is zero or on a symbol without a price at its trade's session."


def test_shared_indicators_are_computed_once(prices):
    seen = []

    @entry_exit
    def rsi_rule(ind, window, lower, upper):
        seen.append(ind)
        rsi = ind.rsi(window)
        return rsi < lower, rsi > upper

    run_sweep(rsi_rule, {"window": [5, 14], "lower": [20, 25, 30, 35], "upper": [65, 70, 75, 80, 85, 90]}, prices)
    assert len(seen) == 48 and all(ind is seen[0] for ind in seen)
    assert dict(seen[0].computed) == {("rsi", 5): 1, ("rsi", 14): 1}


def test_a_batch_size_changes_nothing(prices):
    @entry_exit
    def rsi_rule(ind, window, lower, upper):
        rsi = ind.rsi(window)
        return rsi < lower, rsi > upper

    grid = {"window": [3, 9], "lower": [30, 45], "upper": [55, 70]}
    whole = run_sweep(rsi_rule, grid, prices, keep_returns=True, batch_size=100)
    for batch_size in (1, 3):
        batched = run_sweep(rsi_rule, grid, prices, keep_returns=True, batch_size=batch_size)
        pd.testing.assert_frame_equal(batched.table, whole.table)
        pd.testing.assert_frame_equal(batched.returns, whole.returns)
    assert whole.params == ["window", "lower", "upper"]


def test_returns_are_kept_by_default_only_under_the_budget(prices, monkeypatch):
    from research_lib.sweeps import engine

    assert run_sweep(signals_rule, {"seed": [1, 2]}, prices).returns is not None
    monkeypatch.setattr(engine, "RETURNS_BUDGET_BYTES", 1000)
    assert run_sweep(signals_rule, {"seed": [1, 2]}, prices).returns is None
    assert run_sweep(signals_rule, {"seed": [1, 2]}, prices, keep_returns=True).returns is not None


def test_same_session_entry_and_exit_cancel():
    frame = make_prices({"A": 100.0 + np.arange(8.0)})

    @entry_exit
    def both(ind, when):
        entries = pd.DataFrame(False, index=ind.close.index, columns=ind.close.columns)
        exits = entries.copy()
        entries.iloc[[1, when]] = True
        exits.iloc[when] = True
        return entries, exits

    result = run_sweep(both, {"when": [3]}, frame, cost_bps=10, keep_returns=True)
    assert result.table.loc[0, "annual_turnover"] * result.table.loc[0, "n_obs"] / 252 == pytest.approx(1.0)
    assert result.returns[0].first_valid_index() == frame.index[2]


def bad(kind):
    @target_weights
    def rule(ind, size):
        close = ind.close
        return {"none": None, "short": close.iloc[:-1], "numpy": np.zeros((3, 3)), "text": pd.DataFrame("x", index=close.index, columns=close.columns),
                "inf": close * np.inf, "fine": close * 0 + 1}[kind if size == 2 else "fine"]
    return rule


@pytest.mark.parametrize("kind, error, match", [
    ("none", TypeError, r"configuration 1 \{'size': 2\}: weights is NoneType, not \(150, 4\)"),
    ("short", ValueError, r"configuration 1 \{'size': 2\}: weights are not indexed like prices\['close'\]"),
    ("numpy", TypeError, r"configuration 1 \{'size': 2\}: weights is \(3, 3\), not \(150, 4\)"),
    ("text", ValueError, r"configuration 1 \{'size': 2\}: weights cannot be read as float"),
    ("inf", ValueError, r"configuration 1 \{'size': 2\}: weights contain infinite values"),
])
def test_a_malformed_return_is_refused_naming_the_configuration(prices, kind, error, match):
    with pytest.raises(error, match=match):
        run_sweep(bad(kind), {"size": [1, 2]}, prices)


def test_an_entry_exit_rule_must_return_a_pair(prices):
    with pytest.raises(TypeError, match=r"configuration 0 \{'seed': 1\}: .* returned DataFrame; an entry/exit"):
        run_sweep(entry_exit(lambda ind, seed: ind.close > 0), {"seed": [1]}, prices)


@pytest.mark.parametrize("grid, error, match", [
    ({"sed": [1]}, ValueError, r"grid names 'sed', which is not a parameter of .*; its parameters: \['seed'\]\. "
                               r"Did you mean 'seed'\?"),
    ({"seed": []}, ValueError, r"has no configuration; give each parameter at least one value"),
    ([], ValueError, r"has no configuration"),
    ({"seed": 3}, ValueError, r"grid\['seed'\] must be a list of values \(got 3\); e.g. \[3\]"),
    ([{}], ValueError, r"grid gives no value for \['seed'\]"),
])
def test_a_malformed_grid_is_refused(prices, grid, error, match):
    with pytest.raises(error, match=match):
        run_sweep(signals_rule, grid, prices)


def test_a_plain_function_and_a_bad_book_are_refused(prices):
    with pytest.raises(TypeError, match=r"decorate the function with @entry_exit or @target_weights"):
        run_sweep(lambda ind, seed: None, {"seed": [1]}, prices)
    with pytest.raises(ValueError, match=r"book must be one of \['per_symbol', 'portfolio'\] \(got 'columns'\)"):
        run_sweep(signals_rule, {"seed": [1]}, prices, book="columns")


def test_a_malformed_model_is_refused_with_run_backtests_message(prices):
    with pytest.raises(ValueError, match=r"execution_lag_sessions must be a whole number >= 1"):
        run_sweep(signals_rule, {"seed": [1]}, prices, execution_lag_sessions=0)
    with pytest.raises(TypeError, match=r"cost_bsp.*run_backtest's keywords"):
        run_sweep(signals_rule, {"seed": [1]}, prices, cost_bsp=5)


def test_indicators_refuse_bad_windows(prices):
    ind = Indicators(prices)
    with pytest.raises(ValueError, match=r"window must be a whole number of sessions >= 1 \(got 0\)"):
        ind.rsi(0)
    with pytest.raises(ValueError, match=r"skip must be >= 0 and smaller than lookback \(5\) \(got 5\)"):
        ind.trailing_return(5, 5)
    pd.testing.assert_frame_equal(ind.sma(3), prices["close"].rolling(3).mean())


def test_a_configuration_that_cannot_be_simulated_is_named(prices):
    """Impact without a volume history before the trade, or a cash rate missing after the first
    trade, stop the sweep naming the configuration (run_backtest refuses both too)."""
    @target_weights
    def on_session(ind, day):
        weights = pd.DataFrame(np.nan, index=ind.close.index, columns=ind.close.columns)
        weights.iloc[day, 0] = 1.0
        return weights

    with pytest.raises(ValueError, match=r"configuration 1 \{'day': 0\}: impact needs S0's average traded value"):
        run_sweep(on_session, {"day": [40, 0]}, prices, impact_coefficient=0.5, capital=1e6)
    rates = pd.Series(0.02, index=prices.index[:100])
    with pytest.raises(ValueError, match=r"configuration 0 \{'day': 40\}: cash_rate_per_year has no rate for "):
        run_sweep(on_session, {"day": [40]}, prices, cash_rate_per_year=rates)
    assert run_sweep(on_session, {"day": [40]}, prices.iloc[:100], cash_rate_per_year=rates).table["n_obs"][0] == 59

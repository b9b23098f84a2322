"""Parameter sweeps: many configurations of a strategy, backtested at once.

- `ma_crossover_sweep`: a long/flat moving-average crossover on every symbol and (fast,
  slow) window pair, vectorized (rolling means from cumulative sums, all symbols of a
  block at once, float64).
- `sweep`: any weights rule over a parameter grid, each configuration through
  `research_lib.backtest.run_backtest`.

Both return a `SweepResult`: ``table`` has one row per configuration (its parameters,
then its metrics, then ``reason``) and ``returns`` the daily net returns of those that trade,
as sessions x configurations (``table``'s index), e.g. for a PBO computation. Metrics are
those of `research_lib.validation.metrics` (252 sessions a year, Sharpe with ddof=1 and no risk-free rate).

A configuration that never takes a position (no signal reaches its threshold, a window
longer than the data, no price...) does not stop the sweep: its row has NaN metrics,
``n_obs`` 0 and the ``reason``; it has no column in ``returns`` (a column of cash would
distort a PBO) and is not recorded as a trial. ``reason`` is None on the rows of the
configurations that trade, which are exactly what each gives when swept alone.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from research_lib.backtest import NO_POSITION, BacktestResult, NoPosition, run_backtest
from research_lib.units import SESSIONS_PER_YEAR

BLOCK_ELEMENTS = 1 << 18  # sessions x symbols per block: each array stays a few MB, in cache
METRICS = ("sharpe", "cagr", "annual_volatility", "max_drawdown", "annual_turnover")
NEVER_TRADES = NO_POSITION  # how every ``reason`` starts


@dataclass(frozen=True)
class SweepResult:
    """table : configurations x (parameters, then metrics), indexed by configuration number.
    returns : sessions x configurations (the table's index) of daily net returns, or None
        when not kept.
    """

    table: pd.DataFrame
    returns: pd.DataFrame | None


def ma_crossover_sweep(close: pd.DataFrame, pairs: Sequence[tuple[int, int]], cost_bps: float = 10.0,
                       keep_returns: bool = False) -> SweepResult:
    """Moving-average crossover for every (fast, slow) pair and symbol of ``close``.

    Long the symbol when its ``fast``-session mean close is above its ``slow``-session mean
    at the close of ``t`` (a mean over a window with a missing price is undefined: flat),
    flat otherwise. As in `run_backtest` with ``execution_lag_sessions=1``: the position is
    taken at the close of ``t + 1``, a holding whose price ends is sold at its last close,
    and ``cost_bps`` is paid per unit of position change. Every configuration is evaluated
    over all sessions of ``close`` (flat, earning 0, until its first position).

    Parameters
    ----------
    close : sessions x symbols of closes (``prices["close"]``).
    pairs : (fast, slow) windows in sessions, ``1 <= fast < slow`` (a slow window longer
        than ``close`` never trades).
    cost_bps : cost per unit of position change.
    keep_returns : also return the daily net returns (sessions x pairs x symbols floats).

    Returns
    -------
    SweepResult
        ``table`` has a row per pair and symbol (pair-major): fast, slow, symbol, then
        `METRICS`, ``n_obs`` and ``reason`` (see the module docstring).
    """
    if close.shape[0] == 0 or close.shape[1] == 0:
        raise ValueError(f"close has {close.shape[0]} sessions and {close.shape[1]} symbols; pass prices['close'] "
                         "with at least one of each.")
    fast, slow = _check_pairs(pairs)
    if not cost_bps >= 0:
        raise ValueError(f"cost_bps must be >= 0 (got {cost_bps}).")
    price = close.to_numpy(dtype=float)
    block = max(1, BLOCK_ELEMENTS // max(len(close), 1))
    parts = [_crossover_block(price[:, lo:lo + block], fast, slow, cost_bps / 1e4, keep_returns)
             for lo in range(0, price.shape[1], block)]
    stats = {name: np.concatenate([p[0][name] for p in parts], axis=1).ravel() for name in METRICS}
    traded = np.concatenate([p[1] for p in parts], axis=1).ravel()
    n_symbols = price.shape[1]
    table = pd.DataFrame({"fast": np.repeat(fast, n_symbols), "slow": np.repeat(slow, n_symbols),
                          "symbol": np.tile(close.columns.to_numpy(), len(fast)), **stats,
                          "n_obs": np.where(traded, len(close), 0)})
    reasons = [None] * len(table)
    for row in np.flatnonzero(~traded):
        pair, column = divmod(row, n_symbols)
        reasons[row] = _crossover_reason(price[:, column], fast[pair], slow[pair])
    table["reason"] = _reasons(reasons, table.index)
    table.index.name = "config"
    returns = None
    if keep_returns:
        growth = np.concatenate([p[2] for p in parts], axis=2)  # pairs x sessions x symbols
        returns = pd.DataFrame(growth.transpose(1, 0, 2).reshape(len(close), -1)[:, traded] - 1.0,
                               index=close.index, columns=table.index[traded])
    return SweepResult(table, returns)


def sweep(grid: Mapping[str, Sequence] | Sequence[Mapping], weights_fn: Callable[..., pd.DataFrame],
          prices: pd.DataFrame, *, record: bool = True, **backtest_model) -> SweepResult:
    """Backtest ``weights_fn(prices, **params)`` for every configuration of ``grid``.

    Every configuration is recorded in the workspace's sweep registry (``record=False``
    opts out, e.g. for a throwaway test), so the deflated Sharpe of whatever is validated
    later counts it: a sweep cannot be forgotten.

    Parameters
    ----------
    grid : parameter name -> list of values (every combination, in order), or a list of
        such ``{name: value}`` configurations.
    weights_fn : returns target weights (decision dates x symbols) for one configuration.
    prices : the canonical price frame.
    **backtest_model : keywords of `run_backtest` (cost_bps, spread_bps, ...), the same for all.

    Returns
    -------
    SweepResult
        ``table``: the parameters, then `METRICS`, ``n_obs``, ``annual_cost`` and ``reason`` (see
        the module docstring); ``returns``: the returns of each configuration that trades, from
        its first trade (NaN before: warm-up, in cash).

    Raises
    ------
    ValueError, TypeError
        for a malformed grid, or naming the configuration whose weights or backtest failed
        (never taking a position is not a failure).
    """
    configurations = _configurations(grid)
    rows, reasons, returns = [], [], {}
    for number, params in enumerate(configurations):
        try:
            outcome = _backtest(weights_fn, prices, params, backtest_model)
        except (ValueError, TypeError) as error:
            named = ValueError if isinstance(error, ValueError) else TypeError
            raise named(f"configuration {number} {params}: {error}") from error
        if isinstance(outcome, str):
            rows.append({**params, **dict.fromkeys(METRICS, np.nan), "n_obs": 0, "annual_cost": np.nan})
            reasons.append(outcome)
            continue
        growth = 1.0 + outcome.returns.to_numpy()[:, None]
        turnover = outcome.turnover.to_numpy()[:, None]
        stats = {name: value[0] for name, value in _column_metrics(growth, turnover).items()}
        years = len(growth) / SESSIONS_PER_YEAR
        rows.append({**params, **stats, "n_obs": len(growth), "annual_cost": outcome.costs.sum() / years})
        reasons.append(None)
        returns[number] = outcome.returns
    table = pd.DataFrame(rows)
    table["reason"] = _reasons(reasons, table.index)
    table.index.name = "config"
    if record:
        _record(weights_fn, configurations, returns, backtest_model)
    frame = pd.DataFrame(returns) if returns else pd.DataFrame(index=prices.index[:0], dtype=float)
    return SweepResult(table, frame.rename_axis(columns="config"))


def _reasons(reasons: list[str | None], index: pd.Index) -> pd.Series:
    """The ``reason`` column: None where the configuration trades, whatever the pandas version
    (which would otherwise turn None into NaN in a column of strings)."""
    return pd.Series(reasons, index=index, dtype=object)


def _backtest(weights_fn: Callable[..., pd.DataFrame], prices: pd.DataFrame, params: dict,
              backtest_model: dict) -> BacktestResult | str:
    """The configuration's backtest, or the reason it never takes a position (weights that are
    malformed, or a malformed backtest model, still raise: they are errors to fix)."""
    weights = weights_fn(prices, **params)
    if not isinstance(weights, pd.DataFrame):
        raise TypeError(f"weights_fn returned {type(weights).__name__}, not target weights; return a DataFrame "
                        "(decision dates x symbols).")
    try:
        return run_backtest(weights, prices, **backtest_model)
    except NoPosition as reason:
        return str(reason)  # starts with NO_POSITION


def _record(weights_fn: Callable, configurations: list[dict], returns: dict, backtest_model: dict) -> None:
    """Record the configurations that trade (``returns``: number -> daily returns) in the sweep registry."""
    from research_lib import paths
    from research_lib.validation import registry

    family = f"sweep:{getattr(weights_fn, '__module__', '')}.{getattr(weights_fn, '__qualname__', weights_fn)}"
    trials = {f"config {n}": ({"params": configurations[n], "backtest": backtest_model}, series)
              for n, series in returns.items()}
    registry.record_trials(paths.state_db(), "sweep", family, trials)


def _check_pairs(pairs) -> tuple[np.ndarray, np.ndarray]:
    pairs = [tuple(p) for p in pairs]
    if not pairs:
        raise ValueError("pairs is empty; give (fast, slow) windows, e.g. [(10, 50), (20, 100)].")
    for pair in pairs:
        if len(pair) != 2 or not all(isinstance(w, (int, np.integer)) and not isinstance(w, bool) for w in pair) \
                or not 1 <= pair[0] < pair[1]:
            raise ValueError(f"pair {pair} is not (fast, slow) whole numbers of sessions with 1 <= fast < slow; "
                             "e.g. (10, 50).")
    fast, slow = np.array(pairs, dtype=int).T
    return fast, slow


def _longest_run(flags: np.ndarray) -> int:
    """The length of the longest run of True in ``flags``."""
    edges = np.diff(np.r_[0, flags.astype(np.int8), 0])
    return int((np.flatnonzero(edges == -1) - np.flatnonzero(edges == 1)).max(initial=0))


def _crossover_reason(price: np.ndarray, fast: int, slow: int) -> str:
    """Why the (fast, slow) crossover never holds the symbol whose closes are ``price``."""
    if slow > len(price):
        return f"{NEVER_TRADES}the slow window ({slow} sessions) is longer than close ({len(price)} sessions)"
    if _longest_run(~np.isnan(price)) < slow:
        return f"{NEVER_TRADES}no {slow} consecutive closes for the slow mean"
    return (f"{NEVER_TRADES}the {fast}-session mean close never exceeds the {slow}-session mean on a session "
            "followed by a close")


def _configurations(grid) -> list[dict]:
    if isinstance(grid, Mapping):
        for name, values in grid.items():
            if isinstance(values, str) or not isinstance(values, (Sequence, np.ndarray)):
                raise ValueError(f"grid[{name!r}] must be a list of values (got {values!r}); e.g. [{values!r}].")
        configurations = [dict(zip(grid, combination)) for combination in itertools.product(*grid.values())]
    else:
        configurations = [dict(c) for c in grid]
    if not configurations:
        raise ValueError(f"grid {grid!r} has no configuration; give each parameter at least one value.")
    return configurations


def _rolling_means(price: np.ndarray, windows: np.ndarray) -> dict[int, np.ndarray]:
    """Trailing means over each window (NaN where the window is short or holds a NaN)."""
    valid = ~np.isnan(price)
    zero = np.zeros((1, price.shape[1]))
    sums = np.vstack([zero, np.cumsum(np.where(valid, price, 0.0), axis=0)])
    counts = np.vstack([zero, np.cumsum(valid, axis=0)])
    means = {}
    for window in windows:
        mean = np.full(price.shape, np.nan)
        complete = counts[window:] - counts[:-window] == window
        mean[window - 1:] = np.where(complete, (sums[window:] - sums[:-window]) / window, np.nan)
        means[window] = mean
    return means


def _crossover_block(price: np.ndarray, fast: np.ndarray, slow: np.ndarray, rate: float,
                     keep_returns: bool) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray | None]:
    """Metrics (pairs x symbols; NaN where never held), whether each pair ever holds each symbol
    (pairs x symbols) and, if kept, gross-of-one returns (pairs x sessions x symbols)."""
    valid = ~np.isnan(price)
    step = np.ones_like(price)  # 1 + the session's return; 1 where it or the previous close is missing
    with np.errstate(invalid="ignore"):
        step[1:] = np.where(valid[1:] & valid[:-1], price[1:] / price[:-1], 1.0)
    means = _rolling_means(price, np.unique(np.r_[fast, slow]))
    signal = np.empty_like(valid)
    held = np.zeros_like(valid)  # holding after the close of t: the signal of t - 1, if t has a price
    growth = np.ones_like(price)
    trades = np.zeros_like(valid)
    stats = {name: np.empty((len(fast), price.shape[1])) for name in METRICS}
    traded = np.empty((len(fast), price.shape[1]), dtype=bool)
    kept = np.empty((len(fast), *price.shape)) if keep_returns else None
    for k, (f, s) in enumerate(zip(fast, slow)):
        np.greater(means[f], means[s], out=signal)
        np.logical_and(signal[:-1], valid[1:], out=held[1:])
        np.logical_xor(held[1:], held[:-1] & valid[1:], out=trades[1:])
        np.multiply(np.where(held[:-1], step[1:], 1.0), np.where(trades[1:], 1.0 - rate, 1.0), out=growth[1:])
        traded[k] = held.any(axis=0)
        for name, value in _column_metrics(growth, trades).items():
            stats[name][k] = np.where(traded[k], value, np.nan)
        if keep_returns:
            kept[k] = growth
    return stats, traded, kept


def _column_metrics(growth: np.ndarray, turnover: np.ndarray) -> dict[str, np.ndarray]:
    """`research_lib.validation.metrics` numbers for each column of ``growth`` (1 + daily net returns)."""
    n_obs = len(growth)
    returns = growth - 1.0
    std = returns.std(axis=0, ddof=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        sharpe = np.where(std > 0, returns.mean(axis=0) / std * np.sqrt(SESSIONS_PER_YEAR), np.nan)
    wealth = np.cumprod(growth, axis=0)
    peaks = np.maximum(np.maximum.accumulate(wealth, axis=0), 1.0)
    return {"sharpe": sharpe, "cagr": wealth[-1] ** (SESSIONS_PER_YEAR / n_obs) - 1.0,
            "annual_volatility": std * np.sqrt(SESSIONS_PER_YEAR),
            "max_drawdown": (wealth / peaks).min(axis=0) - 1.0,
            "annual_turnover": turnover.sum(axis=0) / (n_obs / SESSIONS_PER_YEAR)}

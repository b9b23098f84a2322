"""The sweep engine: many configurations of one strategy, backtested together with exactly
`research_lib.backtest.run_backtest`'s semantics.

A strategy is a function of ``ind`` (the sweep's shared `Indicators`) and its parameters,
marked with its kind:

- `entry_exit`: returns ``(entries, exits)``, sessions x symbols booleans decided at each
  close. Per symbol the position goes to 1 on an entry, to 0 on an exit (``short=True``: to
  -1) and holds otherwise; an entry and an exit on the same session cancel (the position holds).
  Default book: ``per_symbol``.
- `target_weights`: returns sessions x symbols target weights (fractions of NAV). A row of NaN
  is no decision that session (holdings drift); any other row is a full decision row, as a row
  of run_backtest's ``weights``, its NaN entries meaning 0. Default book: ``portfolio``.

Books: ``per_symbol`` backtests each symbol as its own one-asset book (table rows are
configuration x symbol; a per-symbol decision is that symbol's non-NaN entry); ``portfolio``
backtests one book over all symbols per configuration.

Each book equals ``run_backtest(weights, prices, **model)`` where ``weights`` are its decision
rows (for entry/exit, the rows where its target changes), with one rule run_backtest leaves to
the caller: a target on a symbol that has no price at its trade's session (not listed yet, or
delisted) is set to 0 before trading. For entry/exit that means an entry traded where the symbol
has no price, or a holding sold at a gap or delisting, stays flat until the position changes again
(decisions are the changes, not a restated state). Metrics are over the daily series from the first trade
that takes a position: Sharpe (ddof=1, x sqrt(252), no risk-free rate), CAGR, annual
volatility, maximum drawdown, annual turnover, ``n_obs`` and ``annual_cost`` (all costs, borrow
included, a fraction of NAV a year). A configuration that never takes a position gets NaN
metrics, ``n_obs`` 0 and a ``reason``; it never stops the sweep.

Configurations are evaluated in batches (`BATCH_BUDGET_BYTES` of targets at a time), so memory
does not grow with the grid; `RETURNS_BUDGET_BYTES` bounds the returns matrix kept by default.
"""

from __future__ import annotations

import inspect
import itertools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import pandas as pd

from research_lib.backtest import NO_POSITION, NoPosition, impact_inputs, run_backtest
from research_lib.params import did_you_mean
from research_lib.progress import progress
from research_lib.sweeps import _kernel
from research_lib.sweeps._targets import fill_targets
from research_lib.sweeps.indicators import Indicators
from research_lib.units import SESSIONS_PER_YEAR

__all__ = ["BATCH_BUDGET_BYTES", "METRICS", "RETURNS_BUDGET_BYTES", "Strategy", "SweepResult", "entry_exit",
           "run_sweep", "target_weights"]

Book = Literal["per_symbol", "portfolio"]
BOOKS = ("per_symbol", "portfolio")
METRICS = ("sharpe", "cagr", "annual_volatility", "max_drawdown", "annual_turnover")
BATCH_BUDGET_BYTES = 64 * 2**20  # targets of one batch (float64 sessions x symbols per configuration)
RETURNS_BUDGET_BYTES = 32 * 2**20  # the float64 returns matrix is kept by default below this size
_NEVER = {_kernel.NO_DECISION: "no trade falls inside the price history (every decision date is within "
                               "execution_lag_sessions ({lag}) of the end, or there is none).",
          _kernel.ALL_ZERO: "every target weight is zero (too little history for its lookback?).",
          _kernel.ZEROED_UNPRICED: "every target weight is zero or on a symbol without a price at its trade's "
                                   "session."}


@dataclass(frozen=True)
class Strategy:
    """A strategy function and how to read what it returns (made by `entry_exit` or `target_weights`)."""

    function: Callable
    kind: Literal["entry_exit", "target_weights"]
    book: Book
    short: bool = False

    @property
    def name(self) -> str:
        return f"{getattr(self.function, '__module__', '')}.{getattr(self.function, '__qualname__', self.function)}"

    def __call__(self, ind: Indicators, **params):
        return self.function(ind, **params)


def entry_exit(function: Callable | None = None, *, short: bool = False, book: Book = "per_symbol"):
    """Mark ``function(ind, **params) -> (entries, exits)`` as an entry/exit strategy (see the module docstring)."""
    _check_book(book)
    if function is None:
        return lambda f: Strategy(f, "entry_exit", book, short)
    return Strategy(function, "entry_exit", book, short)


def target_weights(function: Callable | None = None, *, book: Book = "portfolio"):
    """Mark ``function(ind, **params) -> weights`` as a target-weight strategy (see the module docstring)."""
    _check_book(book)
    if function is None:
        return lambda f: Strategy(f, "target_weights", book)
    return Strategy(function, "target_weights", book)


@dataclass(frozen=True)
class SweepResult:
    """table : one row per configuration (per configuration and symbol for per-symbol books),
        indexed ``config``: the parameters (``params``), ``symbol`` for per-symbol books, `METRICS`,
        ``n_obs``, ``annual_cost`` and ``reason`` (None where it trades).
    returns : sessions x the table's rows that trade, daily net returns (float64, NaN before the
        first trade), or None when not kept.
    params : the parameter columns of ``table`` (e.g. to pivot a Sharpe heatmap on two of them).
    sweep_id : the registry's id of the recorded sweep, None when not recorded.
    """

    table: pd.DataFrame
    returns: pd.DataFrame | None
    params: list[str] = field(default_factory=list)
    sweep_id: str | None = None


def run_sweep(strategy: Strategy, grid: Mapping[str, Sequence] | Sequence[Mapping], prices: pd.DataFrame, *,
              book: Book | None = None, keep_returns: bool | None = None, batch_size: int | None = None,
              **model) -> SweepResult:
    """Backtest ``strategy`` for every configuration of ``grid`` on ``prices``.

    Parameters
    ----------
    strategy : made by `entry_exit` or `target_weights`.
    grid : parameter name -> values (every combination, in order), or a list of ``{name: value}``.
    prices : the canonical price frame (``volume`` is read for market impact).
    book : ``per_symbol`` or ``portfolio`` (default: the strategy's).
    keep_returns : keep the returns matrix (None: when under `RETURNS_BUDGET_BYTES`).
    batch_size : configurations per batch (None: as many as fit `BATCH_BUDGET_BYTES`).
    **model : run_backtest's keywords (cost_bps, execution_lag_sessions, spread_bps, ...).

    Raises
    ------
    ValueError, TypeError
        for a malformed grid or model, or naming the configuration whose strategy returned
        something malformed or could not be simulated (never taking a position is a row, not an error).
    """
    if not isinstance(strategy, Strategy):
        raise TypeError(f"strategy is a {type(strategy).__name__}; decorate the function with @entry_exit or "
                        "@target_weights (from research_lib.sweeps).")
    book = strategy.book if book is None else _check_book(book)
    configurations = configurations_of(grid, strategy.function)
    ind = Indicators(prices)
    return evaluate(lambda number, params: strategy(ind, **params), strategy, configurations, prices, book=book,
                    keep_returns=keep_returns, batch_size=batch_size, **model)


def evaluate(targets_of: Callable[[int, dict], object], strategy: Strategy, configurations: list[dict],
             prices: pd.DataFrame, *, book: Book, keep_returns: bool | None, batch_size: int | None,
             **model) -> SweepResult:
    """`run_sweep` once the configurations are known; ``targets_of(number, params)`` is what the
    strategy returns for configuration ``number``."""
    close = prices["close"]
    n_sessions, n_symbols = close.shape
    per_symbol = book == "per_symbol"
    inputs = _model_inputs(prices, close, model)
    n_books = len(configurations) * (n_symbols if per_symbol else 1)
    if keep_returns is None:
        keep_returns = n_books * n_sessions * 8 <= RETURNS_BUDGET_BYTES
    batch = batch_size or max(1, BATCH_BUDGET_BYTES // max(1, 8 * n_sessions * n_symbols))
    stats = np.empty((n_books, _kernel.N_STATS))
    status = np.empty((n_books, 3), dtype=np.int64)
    returns = np.empty((n_books if keep_returns else 0, n_sessions))
    price = close.to_numpy(dtype=float)
    starts = range(0, len(configurations), batch)
    for lo in progress(starts, total=len(starts), desc="sweep batches", unit="batch"):
        chunk = configurations[lo:lo + batch]
        targets = np.empty((len(chunk), n_sessions, n_symbols))
        for k, params in enumerate(chunk):
            fill_targets(targets[k], targets_of(lo + k, params), strategy, per_symbol, close, lo + k, params)
        rows = slice(lo * (n_symbols if per_symbol else 1), (lo + len(chunk)) * (n_symbols if per_symbol else 1))
        _kernel.simulate(price, targets, per_symbol, inputs["lag"], inputs["commission"],
                         inputs["spread"], inputs["borrow"], inputs["cash_rate"], inputs["impact"],
                         inputs["capital"], inputs["adv_value"], inputs["daily_vol"], stats[rows], status[rows],
                         returns[rows] if keep_returns else returns)
    _raise_failures(status, configurations, close, per_symbol)
    return _result(stats, status, returns if keep_returns else None, configurations, close, per_symbol,
                   inputs["lag"])


def configurations_of(grid, function: Callable | None = None) -> list[dict]:
    """The list of ``{name: value}`` configurations of ``grid``; names checked against ``function``'s."""
    if isinstance(grid, Mapping):
        for name, values in grid.items():
            if isinstance(values, str) or not isinstance(values, (Sequence, np.ndarray)):
                raise ValueError(f"grid[{name!r}] must be a list of values (got {values!r}); e.g. [{values!r}].")
        configurations = [dict(zip(grid, combination)) for combination in itertools.product(*grid.values())]
    else:
        configurations = [dict(c) for c in grid]
    if not configurations:
        raise ValueError(f"grid {grid!r} has no configuration; give each parameter at least one value.")
    if function is not None:
        _check_names(configurations[0], function)
    return configurations


def _check_names(params: dict, function: Callable) -> None:
    parameters = list(inspect.signature(function).parameters.values())[1:]  # the first is the indicators
    if any(p.kind is p.VAR_KEYWORD for p in parameters):
        return
    names = [p.name for p in parameters]
    for name in params:
        if name not in names:
            raise ValueError(f"grid names {name!r}, which is not a parameter of {function.__qualname__}; its "
                             f"parameters: {names}.{did_you_mean(name, names)}")
    missing = [p.name for p in parameters if p.default is p.empty and p.name not in params]
    if missing:
        raise ValueError(f"grid gives no value for {missing} of {function.__qualname__}; add e.g. "
                         f"{{{missing[0]!r}: [...]}} to the grid.")


def _check_book(book) -> Book:
    if book not in BOOKS:
        raise ValueError(f"book must be one of {list(BOOKS)} (got {book!r}).")
    return book


def _model_inputs(prices: pd.DataFrame, close: pd.DataFrame, model: dict) -> dict:
    """The kernel's inputs of run_backtest's model, checked by run_backtest itself (same messages)."""
    try:
        run_backtest(pd.DataFrame(index=close.index[:0], columns=close.columns[:0], dtype=float), prices, **model)
    except NoPosition:
        pass  # the model is valid; no weights, no position
    except TypeError as error:
        raise TypeError(f"{error}; the model takes run_backtest's keywords (cost_bps, execution_lag_sessions, "
                        "spread_bps, impact_coefficient, capital, borrow_bps_per_year, cash_rate_per_year).") from None
    defaults = {name: p.default for name, p in inspect.signature(run_backtest).parameters.items()}
    given = {**defaults, **model}
    rate = given["cash_rate_per_year"]
    annual = (rate.reindex(close.index).to_numpy(dtype=float) if isinstance(rate, pd.Series)
              else np.full(len(close), float(rate)))
    impact = float(given["impact_coefficient"])
    adv_value, daily_vol = impact_inputs(prices, close) if impact > 0 else (np.empty((0, 0)), np.empty((0, 0)))
    adv_value, daily_vol = np.ascontiguousarray(adv_value), np.ascontiguousarray(daily_vol)  # one compiled kernel
    return {"lag": int(given["execution_lag_sessions"]), "commission": given["cost_bps"] / 1e4,
            "spread": given["spread_bps"] / 1e4, "borrow": given["borrow_bps_per_year"] / 1e4 / SESSIONS_PER_YEAR,
            "cash_rate": annual / SESSIONS_PER_YEAR, "impact": impact, "capital": float(given["capital"] or 0.0),
            "adv_value": adv_value, "daily_vol": daily_vol}


def _raise_failures(status, configurations, close, per_symbol) -> None:
    failed = np.flatnonzero(status[:, 0] != _kernel.OK)
    if not len(failed):
        return
    book = failed[0]
    code, row, col = status[book]
    number = book // close.shape[1] if per_symbol else book
    where = f"configuration {number} {configurations[number]}"
    if code == _kernel.NO_CASH_RATE:
        raise ValueError(f"{where}: cash_rate_per_year has no rate for {close.index[row]:%Y-%m-%d}; give an annual "
                         "rate for every session from the first trade on (e.g. rates.reindex(sessions).ffill()).")
    symbol = close.columns[col]
    raise ValueError(f"{where}: impact needs {symbol}'s average traded value (close x volume) and volatility over "
                     f"the sessions before its trade on {close.index[row]:%Y-%m-%d}, and the prices do not have "
                     f"them; pass impact_coefficient=0, or prices with a volume field for {symbol}.")


def _result(stats, status, returns, configurations, close, per_symbol, lag) -> SweepResult:
    n_symbols = close.shape[1]
    repeat = n_symbols if per_symbol else 1
    params = list(configurations[0])
    table = pd.DataFrame([c for c in configurations for _ in range(repeat)], columns=params)
    if per_symbol:
        table["symbol"] = np.tile(close.columns.to_numpy(), len(configurations))
    for k, name in enumerate((*METRICS, "n_obs", "annual_cost")):
        column = (_kernel.SHARPE, _kernel.CAGR, _kernel.VOLATILITY, _kernel.DRAWDOWN, _kernel.TURNOVER,
                  _kernel.N_OBS, _kernel.COST)[k]
        table[name] = stats[:, column].astype(int) if name == "n_obs" else stats[:, column]
    trades = stats[:, _kernel.FIRST_ROW] >= 0
    reasons = [None if traded else NO_POSITION + _NEVER[saw].format(lag=lag)
               for traded, saw in zip(trades, status[:, 1])]
    table["reason"] = pd.Series(reasons, dtype=object)
    table.index.name = "config"
    frame = None
    if returns is not None:
        kept = returns if trades.all() else returns[trades]  # no copy when every book trades
        frame = pd.DataFrame(kept.T, index=close.index, columns=table.index[trades])
    return SweepResult(table, frame, params)

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
configuration x symbol; a per-symbol decision is that symbol's non-NaN entry, so one symbol's
weight is a fraction of its own book, e.g. 1 for all in); ``portfolio`` backtests one book over
all symbols per configuration (a row per configuration; for entry/exit each symbol's position is
divided by the number of symbols, the rest in cash, and the whole row is restated whenever any
symbol's position changes).

Each book equals ``run_backtest(weights, prices, **model)`` where ``weights`` are its decision
rows (for entry/exit, the rows where its target changes), with one rule run_backtest leaves to
the caller: a target on a symbol that has no price at its trade's session (not listed yet, or
delisted) is set to 0 before trading. For entry/exit that means an entry traded where the symbol
has no price, or a holding sold at a gap or delisting, stays flat until the position changes again
(decisions are the changes, not a restated state). Metrics are over the daily series from the first trade
that takes a position: Sharpe (ddof=1, x sqrt(sessions a year), no risk-free rate), CAGR, annual
volatility, maximum drawdown, annual turnover, ``n_obs`` and ``annual_cost`` (all costs, borrow
included, a fraction of NAV a year). A configuration that never takes a position gets NaN
metrics, ``n_obs`` 0 and a ``reason``; it never stops the sweep. One that trades on a single
session, or whose returns never vary, has a NaN Sharpe ratio and no ``reason``.

Inputs are checked before any configuration runs: prices indexed by increasing, distinct session
dates with positive closes (NaN: no price), run_backtest's model with finite numbers and a whole
number of sessions for the lag. An error raised by a strategy names the configuration.

Configurations are evaluated in batches (`BATCH_BUDGET_BYTES` of targets at a time), so memory
does not grow with the grid; batches are independent and run on the compute backend
(`research_lib.compute`), coming back in order. The returns matrix, when kept, is written batch by
batch into one array of the books that trade (float64, or float32 at half the memory), never copied after;
`RETURNS_BUDGET_BYTES` bounds the matrix kept by default.
"""

from __future__ import annotations

import inspect
import itertools
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import pandas as pd

from research_lib.backtest import NO_POSITION, NoPosition, impact_inputs, run_backtest
from research_lib.compute import imap_tasks
from research_lib.params import did_you_mean
from research_lib.sweeps import _kernel
from research_lib.sweeps._checks import check_prices, whole_number
from research_lib.sweeps._targets import fill_targets
from research_lib.sweeps.indicators import Indicators

__all__ = ["BATCH_BUDGET_BYTES", "METRICS", "RETURNS_BUDGET_BYTES", "Strategy", "SweepResult", "entry_exit",
           "run_sweep", "target_weights"]

Book = Literal["per_symbol", "portfolio"]
BOOKS = ("per_symbol", "portfolio")
ReturnsDtype = Literal["float64", "float32"]
RETURNS_DTYPES = ("float64", "float32")
METRICS = ("sharpe", "cagr", "annual_volatility", "max_drawdown", "annual_turnover")
BATCH_BUDGET_BYTES = 64 * 2**20  # targets of one batch (float64 sessions x symbols per configuration)
RETURNS_BUDGET_BYTES = 32 * 2**20  # 32 MiB: the returns matrix (of every book) is kept by default up to this size
_NEVER = {_kernel.NO_DECISION: "no trade falls inside the price history (every decision date is within "
                               "execution_lag_sessions ({lag}) of the end, or there is none).",
          _kernel.ALL_ZERO: "every target weight is zero (too little history for its lookback?).",
          _kernel.ZEROED_UNPRICED: "every target weight is zero or on a symbol without a price at its trade's "
                                   "session."}
_NEVER_ENTERS = {_kernel.NO_DECISION: "the entry signal never fires, or only within execution_lag_sessions ({lag}) "
                                    "of the end of the price history."}  # an entry/exit rule decides only on signals


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
    returns : sessions x the table's rows that trade, daily net returns (NaN before the first
        trade; float64, or float32 when asked for), or None when not kept: ``keep_returns=False``,
        or ``keep_returns=None`` and a matrix of every book over `RETURNS_BUDGET_BYTES` (32 MiB).
    params : the parameter columns of ``table`` (e.g. to pivot a Sharpe heatmap on two of them).
    sweep_id : the registry's id of the recorded sweep, None when not recorded.
    left_out : when recorded, the table's rows without a column in the recorded returns matrix
        (so not trials), by ``config``: why (its ``reason`` when it never trades, else why its
        Sharpe ratio is undefined); ``len(left_out)`` is how many. None when not recorded.
    """

    table: pd.DataFrame
    returns: pd.DataFrame | None
    params: list[str] = field(default_factory=list)
    sweep_id: str | None = None
    left_out: pd.Series | None = None


def run_sweep(strategy: Strategy, grid: Mapping[str, Sequence] | Sequence[Mapping], prices: pd.DataFrame, *,
              book: Book | None = None, keep_returns: bool | None = None, returns_dtype: ReturnsDtype = "float64",
              batch_size: int | None = None, **model) -> SweepResult:
    """Backtest ``strategy`` for every configuration of ``grid`` on ``prices``.

    Parameters
    ----------
    strategy : made by `entry_exit` or `target_weights`.
    grid : parameter name -> values (every combination, in order), or a list of ``{name: value}``
        (one that leaves out a parameter another names gets the function's default for it).
    prices : the canonical price frame, indexed by increasing session dates (``volume`` is read
        for market impact).
    book : ``per_symbol`` or ``portfolio`` (default: the strategy's; see the module docstring).
    keep_returns : keep the returns matrix (None: when a matrix of every book fits
        `RETURNS_BUDGET_BYTES`, 32 MiB; above it ``returns`` is None).
    returns_dtype : ``float64`` or ``float32`` (half the memory, about 7 significant digits: the
        precision the registry stores); metrics are computed in float64 either way.
    batch_size : configurations per batch, a whole number >= 1 (None: as many as fit `BATCH_BUDGET_BYTES`).
    **model : run_backtest's keywords (cost_bps, execution_lag_sessions, spread_bps, ...).

    Raises
    ------
    ValueError, TypeError
        for malformed prices, grid, model or arguments, or naming the configuration whose strategy
        raised one of them, returned something malformed or could not be simulated (never taking
        a position is a row, not an error). Any other error a strategy raises keeps its type and
        gets a note naming the configuration.
    """
    if not isinstance(strategy, Strategy):
        raise TypeError(f"strategy is a {type(strategy).__name__}; decorate the function with @entry_exit or "
                        "@target_weights (from research_lib.sweeps).")
    book = strategy.book if book is None else _check_book(book)
    configurations = configurations_of(grid, strategy.function)
    ind = Indicators(prices)
    return evaluate(lambda number, params: strategy(ind, **params), strategy, configurations, prices, book=book,
                    keep_returns=keep_returns, returns_dtype=returns_dtype, batch_size=batch_size, **model)


def evaluate(targets_of: Callable[[int, dict], object], strategy: Strategy, configurations: list[dict],
             prices: pd.DataFrame, *, book: Book, keep_returns: bool | None, returns_dtype: ReturnsDtype,
             batch_size: int | None, **model) -> SweepResult:
    """`run_sweep` once the configurations are known; ``targets_of(number, params)`` is what the
    strategy returns for configuration ``number``."""
    check_prices(prices)
    if batch_size is not None:
        whole_number("batch_size", batch_size, minimum=1, unit=" of configurations", example=100)
    if returns_dtype not in RETURNS_DTYPES:
        raise ValueError(f"returns_dtype must be one of {list(RETURNS_DTYPES)} (got {returns_dtype!r}).")
    close = prices["close"]
    n_sessions, n_symbols = close.shape
    per_symbol = book == "per_symbol"
    books_per_configuration = n_symbols if per_symbol else 1
    inputs = _model_inputs(prices, close, model)
    n_books = len(configurations) * books_per_configuration
    if keep_returns is None:
        keep_returns = n_books * n_sessions * np.dtype(returns_dtype).itemsize <= RETURNS_BUDGET_BYTES
    batch = batch_size or max(1, BATCH_BUDGET_BYTES // max(1, 8 * n_sessions * n_symbols))
    stats = np.empty((n_books, _kernel.N_STATS))
    status = np.empty((n_books, 3), dtype=np.int64)
    # Room for every book; only the books that trade are written, one after the other, so the
    # rows past them are never written (nor resident in memory).
    returns = np.empty((n_books if keep_returns else 0, n_sessions), dtype=returns_dtype)
    n_kept = 0
    # Batches are independent: they run on the compute backend (`research_lib.compute`; locally, here,
    # one after the other) and come back in order, each written into place.
    starts = range(0, len(configurations), batch)
    batch_results = imap_tasks(_simulate_batch, starts, desc="sweep batches", unit="batch", shared=dict(
        targets_of=targets_of, strategy=strategy, configurations=configurations, batch=batch, close=close,
        price=close.to_numpy(dtype=float), per_symbol=per_symbol, inputs=inputs, keep_returns=keep_returns,
        returns_dtype=returns_dtype))
    for lo, (batch_stats, batch_status, batch_returns) in zip(starts, batch_results):
        rows = slice(lo * books_per_configuration, lo * books_per_configuration + len(batch_stats))
        stats[rows], status[rows] = batch_stats, batch_status
        returns[n_kept:n_kept + len(batch_returns)] = batch_returns
        n_kept += len(batch_returns)
    _raise_failures(status, configurations, close, per_symbol)
    return _result(stats, status, returns[:n_kept] if keep_returns else None, configurations, close, per_symbol,
                   inputs["lag"], strategy.kind)


def _simulate_batch(lo: int, *, targets_of: Callable[[int, dict], object], strategy: Strategy,
                    configurations: list[dict], batch: int, close: pd.DataFrame, price: np.ndarray,
                    per_symbol: bool, inputs: dict, keep_returns: bool, returns_dtype: ReturnsDtype) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The kernel's ``(stats, status, returns)`` of configurations ``lo .. lo + batch - 1`` (the
    returns of the books that trade only, in order; none when not kept)."""
    chunk = configurations[lo:lo + batch]
    n_sessions, n_symbols = close.shape
    targets = np.empty((len(chunk), n_sessions, n_symbols))
    for k, params in enumerate(chunk):
        fill_targets(targets[k], _strategy_returns(targets_of, lo + k, params), strategy, per_symbol, close,
                     lo + k, params)
    n_books = len(chunk) * (n_symbols if per_symbol else 1)
    stats, status = np.empty((n_books, _kernel.N_STATS)), np.empty((n_books, 3), dtype=np.int64)
    returns = np.empty((n_books if keep_returns else 0, n_sessions), dtype=returns_dtype)
    n_kept = _kernel.simulate(price, targets, per_symbol, inputs["lag"], inputs["commission"],
                              inputs["spread"], inputs["borrow"], inputs["cash_rate"], inputs["impact"],
                              inputs["capital"], inputs["adv_value"], inputs["daily_vol"], inputs["sessions_per_year"],
                              stats, status, returns)
    return stats, status, returns[:n_kept]


def _strategy_returns(targets_of: Callable[[int, dict], object], number: int, params: dict):
    """What the strategy returns for configuration ``number``; an error it raises names the configuration."""
    try:
        return targets_of(number, params)
    except (ValueError, TypeError) as error:  # pydantic's ValidationError too: re-raised as its base
        raise (ValueError if isinstance(error, ValueError) else TypeError)(
            f"configuration {number} {params}: {error}") from error
    except Exception as error:  # a bug stays a bug of its own type, noted with the configuration
        error.add_note(f"raised by the strategy for configuration {number} {params}")
        raise


def configurations_of(grid, function: Callable | None = None) -> list[dict]:
    """The list of ``{name: value}`` configurations of ``grid``, each naming every parameter any of
    them names (the table's columns): one that leaves out a parameter of ``function`` with a
    default gets the default; names are checked against ``function``'s."""
    if isinstance(grid, Mapping):
        for name, values in grid.items():
            if isinstance(values, str) or not isinstance(values, (Sequence, np.ndarray)):
                raise ValueError(f"grid[{name!r}] must be a list of values (got {values!r}); e.g. [{values!r}].")
        configurations = [dict(zip(grid, combination)) for combination in itertools.product(*grid.values())]
    else:
        configurations = []
        for number, configuration in enumerate(grid):
            if not isinstance(configuration, Mapping):
                raise TypeError(f"grid[{number}] is a {type(configuration).__name__} ({configuration!r}); give each "
                                "configuration as a {name: value} dict, e.g. {'window': 14}.")
            configurations.append(dict(configuration))
    if not configurations:
        raise ValueError(f"grid {grid!r} has no configuration; give each parameter at least one value.")
    names = list(dict.fromkeys(name for params in configurations for name in params))
    defaults = _check_names(names, function) if function is not None else {}
    for number, params in enumerate(configurations):
        missing = [name for name in names if name not in params and name not in defaults]
        if missing:
            raise ValueError(f"configuration {number} {params} gives no value for {missing}, which other "
                             "configurations name; give every configuration a value for each parameter (the table "
                             "has a column for each).")
        configurations[number] = {name: params[name] if name in params else defaults[name] for name in names}
    return configurations


def check_distinct(configurations: list[dict]) -> None:
    """Refuse a configuration given twice (e.g. a value repeated in a grid's list), as recording
    a sweep must: it would be one trial counted twice by the deflated Sharpe."""
    seen: dict[str, int] = {}
    for number, params in enumerate(configurations):
        key = json.dumps(list(params.values()), default=lambda v: v.item() if isinstance(v, np.generic) else repr(v))
        if key in seen:
            raise ValueError(f"configurations {seen[key]} and {number} are the same, {configurations[seen[key]]}; "
                             "each configuration must differ in at least one parameter: drop the repeated value "
                             "from the grid.")
        seen[key] = number


def _check_names(names: list, function: Callable) -> dict:
    """Refuse names that are not parameters of ``function`` and parameters without a default that
    are not named; return the defaults of the others."""
    parameters = list(inspect.signature(function).parameters.values())[1:]  # the first is the indicators
    defaults = {p.name: p.default for p in parameters if p.default is not p.empty}
    if any(p.kind is p.VAR_KEYWORD for p in parameters):
        return defaults
    valid = [p.name for p in parameters]
    for name in names:
        if name not in valid:
            raise ValueError(f"grid names {name!r}, which is not a parameter of {function.__qualname__}; its "
                             f"parameters: {valid}.{did_you_mean(name, valid)}")
    missing = [p.name for p in parameters if p.default is p.empty and p.name not in names]
    if missing:
        raise ValueError(f"grid gives no value for {missing} of {function.__qualname__}; add e.g. "
                         f"{{{missing[0]!r}: [...]}} to the grid.")
    return defaults


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
    if model.get("delisting_return") not in (None, 0.0):
        raise ValueError(f"delisting_return={model['delisting_return']!r}: the sweep engine closes a delisted holding "
                         "at its last close (delisting_return None); leave it out of a sweep's model.")
    defaults = {name: p.default for name, p in inspect.signature(run_backtest).parameters.items()}
    given = {**defaults, **model}
    rate = given["cash_rate_per_year"]
    annual = (rate.reindex(close.index).to_numpy(dtype=float) if isinstance(rate, pd.Series)
              else np.full(len(close), float(rate)))
    impact = float(given["impact_coefficient"])
    adv_value, daily_vol = impact_inputs(prices, close) if impact > 0 else (np.empty((0, 0)), np.empty((0, 0)))
    adv_value, daily_vol = np.ascontiguousarray(adv_value), np.ascontiguousarray(daily_vol)  # one compiled kernel
    return {"lag": int(given["execution_lag_sessions"]), "commission": given["cost_bps"] / 1e4,
            "spread": given["spread_bps"] / 1e4, "borrow": given["borrow_bps_per_year"] / 1e4 / given["sessions_per_year"],
            "cash_rate": annual / given["sessions_per_year"], "sessions_per_year": int(given["sessions_per_year"]),
            "impact": impact, "capital": float(given["capital"] or 0.0),
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


def _result(stats, status, returns, configurations, close, per_symbol, lag, kind) -> SweepResult:
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
    never = {**_NEVER, **(_NEVER_ENTERS if kind == "entry_exit" else {})}
    reasons = [None if traded else NO_POSITION + never[saw].format(lag=lag) for traded, saw in zip(trades, status[:, 1])]
    table["reason"] = pd.Series(reasons, dtype=object)
    table.index.name = "config"
    frame = None
    if returns is not None:  # the rows of the books that trade, in order: wrapped, not copied
        frame = pd.DataFrame(returns.T, index=close.index, columns=table.index[trades], copy=False)
    return SweepResult(table, frame, params)

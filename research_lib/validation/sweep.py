"""Parameter sweeps that feed the skeptic: the sweep engine's results, recorded as trials.

- `sweep`: a strategy over a parameter grid, through `research_lib.sweeps` (one pass over
  the sessions for a batch of configurations, exactly `run_backtest`'s semantics), recorded
  in the workspace's registry with its returns matrix so PBO and DSR count every configuration.
  The strategy is either a `research_lib.sweeps` strategy (``@entry_exit`` / ``@target_weights``
  function of shared indicators) or a plain ``weights_fn(prices, **params)`` returning
  run_backtest's target weights (decision dates x symbols).
- `ma_crossover_sweep`: the moving-average crossover family (`research_lib.sweeps.families`) on
  every symbol and (fast, slow) pair.

Both return a `SweepResult` (``table``, ``returns``, ``params``, ``sweep_id``). Metrics are
those of `research_lib.validation.metrics` over each configuration's daily net returns from
its first trade (252 sessions a year, Sharpe with ddof=1 and no risk-free rate).

A configuration that never takes a position (no signal reaches its threshold, a window
longer than the data, no price...) does not stop the sweep: its row has NaN metrics,
``n_obs`` 0 and the ``reason``; it has no column in ``returns`` (a column of cash would
distort a PBO) and is not recorded as a trial. ``reason`` is None on the rows of the
configurations that trade, which are exactly what each gives when swept alone.

A configuration that trades but has no Sharpe ratio (a single daily return, returns that never
vary, e.g. a constant price without costs, or returns that are not finite) is not recorded as
a trial either: the recorded returns matrix leaves its column out, and the result's
``left_out`` says which configurations were left out and why.

One rule comes from the engine: a target on a symbol without a price at its trade's session
(not yet listed, or delisted) is set to 0 before trading, where run_backtest refuses it.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import inspect
import types
from collections.abc import Callable, Mapping, Sequence

import joblib
import numpy as np
import pandas as pd

from research_lib.backtest import NO_POSITION, check_weights
from research_lib.sweeps import Strategy, SweepResult, families, run_sweep
from research_lib.sweeps.engine import METRICS, check_distinct, configurations_of, evaluate

__all__ = ["METRICS", "NEVER_TRADES", "SweepResult", "ma_crossover_sweep", "sweep"]

NEVER_TRADES = NO_POSITION  # how every ``reason`` starts
UNDEFINED_SHARPE = "trades, but its Sharpe ratio is undefined: "  # how ``left_out`` says why for the others


def sweep(grid: Mapping[str, Sequence] | Sequence[Mapping], strategy: Strategy | Callable[..., pd.DataFrame],
          prices: pd.DataFrame, *, record: bool = True, book: str | None = None, **backtest_model) -> SweepResult:
    """Backtest ``strategy`` for every configuration of ``grid`` and record them as trials.

    Every configuration that trades is recorded in the workspace's sweep registry with the
    returns matrix (``record=False`` opts out, e.g. for a throwaway test), so the deflated
    Sharpe of whatever is validated later counts it: a sweep cannot be forgotten. A trial is
    named by the strategy's name and code (a digest of its source), its parameters and the
    backtest model: sweeping the same strategy again adds no trials, sweeping it after an edit
    does. Those without a Sharpe ratio are left out of the recorded matrix (``left_out`` says
    which and why).

    Recording keeps the returns as float32 (what the registry stores: about 7 significant
    digits, half the memory of float64), written batch by batch into one matrix that is not
    copied before the registry reads it; the table's metrics are computed in float64 all the same.

    Parameters
    ----------
    grid : parameter name -> list of values (every combination, in order), or a list of
        such ``{name: value}`` configurations.
    strategy : a `research_lib.sweeps` strategy, or ``weights_fn(prices, **params)`` returning
        target weights (decision dates x symbols) for one configuration (one portfolio book).
    prices : the canonical price frame, indexed by increasing session dates.
    book : for a `research_lib.sweeps` strategy, ``per_symbol`` (each symbol its own one-asset
        book: a row per configuration and symbol) or ``portfolio`` (one book over all symbols: a
        row per configuration); default: the strategy's own. A ``weights_fn`` is one portfolio book.
    **backtest_model : keywords of `run_backtest` (cost_bps, spread_bps, ...), the same for all.

    Returns
    -------
    SweepResult
        ``table``: the parameters, then `METRICS`, ``n_obs``, ``annual_cost`` and ``reason``;
        ``returns``: those of each configuration that trades, from its first trade (NaN before):
        float32 when recorded; float64 with ``record=False``, where it is None when a float64
        matrix of every configuration would be over `research_lib.sweeps.engine.RETURNS_BUDGET_BYTES`
        (32 MiB, e.g. 1,600 books of 2,600 sessions; a book is a configuration, or a configuration and a
        symbol for per-symbol books: use `run_sweep` with
        ``keep_returns=True`` to keep it anyway);
        ``sweep_id``: the registry's id and ``left_out``: the configurations without a column in
        the recorded matrix, with why (both None when not recorded).

    Raises
    ------
    ValueError, TypeError
        for malformed prices, grid or model, or naming the configuration whose weights are
        malformed (never taking a position is not a failure).
    """
    keep, dtype = (True, "float32") if record else (None, "float64")
    if record:  # refused before anything is computed, not by the registry after the whole grid ran
        check_distinct(configurations_of(grid, strategy.function if isinstance(strategy, Strategy) else None))
    if isinstance(strategy, Strategy):
        result = run_sweep(strategy, grid, prices, book=book, keep_returns=keep, returns_dtype=dtype, **backtest_model)
        name = strategy.name
    else:
        if book not in (None, "portfolio"):
            raise ValueError(f"book={book!r} needs a research_lib.sweeps strategy; weights_fn(prices, **params) is "
                             "backtested as one portfolio book: drop book=, or write it as a @target_weights "
                             "function of the shared indicators.")
        configurations = configurations_of(grid)
        close = prices["close"]
        as_targets = Strategy(strategy, "target_weights", "portfolio")
        result = evaluate(lambda number, params: _targets(strategy, prices, close, params), as_targets,
                          configurations, prices, book="portfolio", keep_returns=keep, returns_dtype=dtype,
                          batch_size=None, **backtest_model)
        name = as_targets.name
    if not record:
        return result
    from research_lib import paths
    from research_lib.validation import registry

    left_out = _left_out(result.table)
    recorded = result.returns.drop(columns=left_out.index.intersection(result.returns.columns))
    sweep_id = registry.record_sweep(paths.state_db(), f"sweep:{name}", result.table, recorded, backtest_model,
                                     code=code_digest(strategy.function if isinstance(strategy, Strategy) else strategy))
    return dataclasses.replace(result, sweep_id=sweep_id, left_out=left_out)


def code_digest(function: Callable) -> str:
    """16 hex digits of a SHA-256 naming what ``function`` computes: its source (its bytecode,
    names and constants where the source cannot be read), its default arguments and the values
    its closure captured; for a ``functools.partial``, the function and the bound arguments; for
    a callable object, its class's source and its attributes. A strategy edited and swept again
    is a new set of trials; the same strategy gives the same digest in every process."""
    return hashlib.sha256(_identity(function, depth=0).encode()).hexdigest()[:16]


def _identity(value, depth: int) -> str:
    """A text that is equal, in any process, for values that compute or hold the same thing."""
    if depth > 8:  # a closure reaching itself: stop following
        return "..."
    if isinstance(value, functools.partial):
        return repr(("partial", _identity(value.func, depth + 1), _identity(value.args, depth + 1),
                     _identity(sorted(value.keywords.items()), depth + 1)))
    if isinstance(value, types.FunctionType):
        cells = tuple(_identity(content, depth + 1) for content in map(_content, value.__closure__ or ())
                      if content is not value)  # a recursive function captures itself
        return repr((_source(value), _identity(value.__defaults__, depth + 1),
                     _identity(sorted((value.__kwdefaults__ or {}).items()), depth + 1), cells))
    if isinstance(value, (list, tuple)) and any(callable(item) for item in value):
        return repr(tuple(_identity(item, depth + 1) for item in value))
    try:
        return joblib.hash(value)  # data: arrays, frames, numbers, strings, containers of them
    except Exception:  # noqa: BLE001 - not picklable: a callable object, or a function nested in data
        pass
    if callable(value) and not isinstance(value, type):
        state = sorted((k, _identity(v, depth + 1)) for k, v in getattr(value, "__dict__", {}).items())
        return repr((_source(type(value)), state))
    return repr(type(value).__qualname__)


def _content(cell):
    try:
        return cell.cell_contents
    except ValueError:  # a name the function captures before it is assigned
        return None


def _source(function) -> str:
    """``function``'s source, or, where it cannot be read (a function made with exec or eval),
    its bytecode, names and constants (nested code objects followed)."""
    try:
        return inspect.getsource(function)
    except (OSError, TypeError):
        code = getattr(function, "__code__", None)
        return _code_text(code) if code is not None else repr(getattr(function, "__qualname__", function))


def _code_text(code: types.CodeType) -> str:
    def constant(c):  # a frozenset's order and a nested code object's repr (its address) vary
        if isinstance(c, types.CodeType):
            return _code_text(c)
        if isinstance(c, frozenset):
            return repr(sorted(repr(item) for item in c))
        return repr(tuple(constant(item) for item in c)) if isinstance(c, tuple) else repr(c)
    return repr((code.co_code, code.co_names, code.co_varnames, tuple(constant(c) for c in code.co_consts)))


def _left_out(table: pd.DataFrame) -> pd.Series:
    """The rows without a Sharpe ratio (the registry's trials have one), by config: why."""
    unrated = table[~np.isfinite(table["sharpe"].to_numpy(dtype=float))]
    why = unrated["reason"].copy()
    for config, row in unrated[why.isna()].iterrows():  # they trade
        if row["n_obs"] == 1:
            why[config] = UNDEFINED_SHARPE + "it has one daily return (a standard deviation needs two)."
        elif row["annual_volatility"] == 0:
            why[config] = UNDEFINED_SHARPE + f"its {row['n_obs']} daily returns are all equal (no variation)."
        else:
            why[config] = UNDEFINED_SHARPE + "its returns are not finite (its NAV reached 0 or below?)."
    return why.rename("left_out")


def ma_crossover_sweep(close: pd.DataFrame, pairs: Sequence[tuple[int, int]], cost_bps: float = 10.0,
                       keep_returns: bool = False) -> SweepResult:
    """Moving-average crossover (`research_lib.sweeps.families.ma_crossover`) for every (fast, slow)
    pair and symbol of ``close``, each symbol its own book.

    Long the symbol when its ``fast``-session mean close is above its ``slow``-session mean
    at the close of ``t`` (a mean over a window with a missing price is undefined: flat),
    flat otherwise; the position is taken at the close of ``t + 1``, a holding whose price
    ends is sold at its last close, and ``cost_bps`` is paid per unit of position change.
    Metrics are run_backtest's, over the sessions from each configuration's first trade (until
    issue 15 they were over all sessions of ``close``, flat before the first position).

    Parameters
    ----------
    close : sessions x symbols of closes (``prices["close"]``).
    pairs : (fast, slow) windows in sessions, ``1 <= fast < slow`` (a slow window longer
        than ``close`` never trades).
    cost_bps : cost per unit of position change.
    keep_returns : also return the daily net returns (sessions x trading rows, NaN before the first trade).

    Returns
    -------
    SweepResult
        ``table`` has a row per pair and symbol (pair-major): fast, slow, symbol, then
        `METRICS`, ``n_obs``, ``annual_cost`` and ``reason`` (see the module docstring).
    """
    if close.shape[0] == 0 or close.shape[1] == 0:
        raise ValueError(f"close has {close.shape[0]} sessions and {close.shape[1]} symbols; pass prices['close'] "
                         "with at least one of each.")
    _check_pairs(pairs)
    prices = pd.concat({"close": close.astype(float)}, axis=1, names=["field", "symbol"])
    grid = [{"fast": int(fast), "slow": int(slow)} for fast, slow in pairs]
    result = run_sweep(families.ma_crossover, grid, prices, keep_returns=keep_returns, cost_bps=cost_bps)
    table = result.table
    price = close.to_numpy(dtype=float)
    for row in np.flatnonzero(table["reason"].notna()):
        column = close.columns.get_loc(table.at[row, "symbol"])
        table.at[row, "reason"] = _crossover_reason(price[:, column], table.at[row, "fast"], table.at[row, "slow"])
    return result


def _targets(weights_fn: Callable[..., pd.DataFrame], prices: pd.DataFrame, close: pd.DataFrame,
             params: dict) -> pd.DataFrame:
    """A weights function's rows as the engine's targets (sessions x symbols, NaN: no decision),
    with run_backtest's checks of its weights (the engine names the configuration in their errors)."""
    weights = weights_fn(prices, **params)
    if not isinstance(weights, pd.DataFrame):
        raise TypeError(f"weights_fn returned {type(weights).__name__}, not target weights; return a DataFrame "
                        "(decision dates x symbols).")
    check_weights(weights, close)
    decided = weights.reindex(columns=close.columns, fill_value=0.0).astype(float)
    return decided.reindex(close.index)  # sessions without a decision: NaN rows


def _check_pairs(pairs) -> None:
    pairs = [tuple(p) for p in pairs]
    if not pairs:
        raise ValueError("pairs is empty; give (fast, slow) windows, e.g. [(10, 50), (20, 100)].")
    for pair in pairs:
        if len(pair) != 2 or not all(isinstance(w, (int, np.integer)) and not isinstance(w, bool) for w in pair) \
                or not 1 <= pair[0] < pair[1]:
            raise ValueError(f"pair {pair} is not (fast, slow) whole numbers of sessions with 1 <= fast < slow; "
                             "e.g. (10, 50).")


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

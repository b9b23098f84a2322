"""The numba core of the sweep engine: decision rows from signals, and one pass over the sessions
of each book that reproduces `research_lib.backtest.run_backtest` and accumulates its metrics.

Arrays only (no pandas). ``targets`` is a batch of configurations, configurations x sessions x
symbols of target weights decided at each session's close, NaN where nothing is decided. A book
is one configuration on one symbol (per-symbol books) or on every symbol (portfolio books).
Every loop here walks sessions in order, so what is computed for session ``t`` uses only rows
up to ``t``.

Compiled with numpy's error model, as run_backtest computes: a division by zero or the square
root of a negative number gives inf or NaN (a leveraged book whose NAV reaches 0), never a Python
exception. Prices are checked to be positive before they get here. Compiled code is cached on
disk where numba can write (the package's ``__pycache__``, ``NUMBA_CACHE_DIR`` or the user's
cache folder); where it cannot (a read-only install), each process compiles it again.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
from numba import njit

# Columns of the per-book statistics the kernel returns.
SHARPE, CAGR, VOLATILITY, DRAWDOWN, TURNOVER, N_OBS, COST, FIRST_ROW = range(8)
N_STATS = 8
# Why a book could not be simulated (the caller turns the code into an error naming the configuration).
OK, NO_IMPACT_INPUTS, NO_CASH_RATE = 0, 1, 2
# What a book that never trades saw (for its reason).
NO_DECISION, ALL_ZERO, ZEROED_UNPRICED = 0, 1, 2


def _jit(function):
    """``njit`` with numba's on-disk cache, or without it where numba finds no folder to write one."""
    try:
        return njit(cache=True, error_model="numpy")(function)
    except RuntimeError as error:  # numba: "cannot cache function ...: no locator available for file ..."
        if "cannot cache" not in str(error):
            raise
        warnings.warn("numba cannot write its cache beside research_lib/sweeps/_kernel.py nor in its cache folder, "
                      "so the sweep kernel is compiled again in each process (a few seconds); set NUMBA_CACHE_DIR "
                      "to a writable folder to keep it.", RuntimeWarning)
        return njit(error_model="numpy")(function)


@_jit
def signals_to_targets(entries, exits, short, per_symbol, out):
    """Write into ``out`` (sessions x symbols) the decision rows of an entry/exit rule.

    Per symbol the position goes to 1 on an entry, to 0 (``short``: -1) on an exit, and holds
    otherwise; an entry and an exit on the same session cancel (the position holds). A row is a
    decision where the position changes: per symbol for per-symbol books; for a portfolio book,
    the whole row (each symbol's position divided by the number of symbols) wherever any changes.
    """
    n, m = entries.shape
    low = -1.0 if short else 0.0
    state = np.zeros(m)
    for t in range(n):
        changed = False
        for j in range(m):
            new = state[j]
            if entries[t, j] and not exits[t, j]:
                new = 1.0
            elif exits[t, j] and not entries[t, j]:
                new = low
            out[t, j] = new if (per_symbol and new != state[j]) else np.nan
            changed = changed or new != state[j]
            state[j] = new
        if changed and not per_symbol:
            for j in range(m):
                out[t, j] = state[j] / m


@_jit
def simulate(price, targets, per_symbol, lag, commission_rate, spread_rate, borrow_rate, cash_rate,
             impact_coefficient, capital, adv_value, daily_vol, sessions_per_year, stats, status, returns):
    """Simulate every book of the batch; fill ``stats`` (books x N_STATS, annualized over
    ``sessions_per_year``) and ``status`` (books x 3:
    error code, row, column, or for a book that never trades the code OK and what it saw). When
    ``returns`` has rows (as many as the batch has books, float64 or float32), write the daily
    net returns of each book that trades (NaN before its first trade) into its next row, in order,
    and return how many rows were written (0 when ``returns`` has none)."""
    n, m = price.shape
    width = 1 if per_symbol else m
    cols = np.empty(width, dtype=np.int64)
    scratch = np.empty((5, width))
    buffer = np.empty(n)
    keep = returns.shape[0] > 0
    written = 0
    for config in range(targets.shape[0]):
        for first_col in range(m if per_symbol else 1):
            book = config * m + first_col if per_symbol else config
            for c in range(width):
                cols[c] = first_col + c
            _walk(price, targets[config], cols, lag, commission_rate, spread_rate, borrow_rate, cash_rate,
                  impact_coefficient, capital, adv_value, daily_vol, sessions_per_year, scratch, buffer, stats[book],
                  status[book])
            first = int(stats[book, FIRST_ROW])
            if keep and first >= 0:
                returns[written, :first] = np.nan
                returns[written, first:] = buffer[first:]
                written += 1
    return written


@_jit
def _walk(price, targets, cols, lag, commission_rate, spread_rate, borrow_rate, cash_rate, impact_coefficient,
          capital, adv_value, daily_vol, sessions_per_year, scratch, buffer, stats, status):
    """One book, session by session, exactly as run_backtest: see research_lib.backtest's docstring.

    Before the first trade the book is the all-cash segment run_backtest starts one session
    before it (NAV 1, earning the cash rate of the first trade's session). A segment starts at
    each trade's close with NAV 1: a holding is worth ``weight * price[t] / price[start]`` until
    its price ends (NaN), when its last value moves to cash.
    """
    n = price.shape[0]
    width = cols.shape[0]
    weight, start_price, value, target, alive = scratch[0], scratch[1], scratch[2], scratch[3], scratch[4]
    weight[:] = 0.0
    value[:] = 0.0
    alive[:] = 0.0
    cash = 1.0
    account = 1.0  # the account in units of capital after the previous trade's costs (impact scales with it)
    turnover_sum = 0.0
    cost_sum = 0.0
    first = -1
    status[0], status[1], status[2] = OK, NO_DECISION, -1
    for t in range(lag, n):
        decision = t - lag
        decided = False
        for c in range(width):
            if not math.isnan(targets[decision, cols[c]]):
                decided = True
        if first < 0:
            if not decided:
                continue
            status[1] = max(status[1], ALL_ZERO)
            active = False
            for c in range(width):
                wanted = targets[decision, cols[c]]
                if wanted != 0.0 and not math.isnan(wanted):
                    if math.isnan(price[t, cols[c]]):
                        status[1] = ZEROED_UNPRICED
                    else:
                        active = True
            if not active:
                continue  # run_backtest drops the all-zero rows before the first position
            first = t

        # drift from the previous close to this one
        held_prev, held_now, short_prev, proceeds, gain = 0.0, 0.0, 0.0, 0.0, 0.0
        for c in range(width):
            if alive[c] == 0.0:
                continue
            before = value[c]
            held_prev += before
            if before < 0.0:
                short_prev -= before
            now_price = price[t, cols[c]]
            if math.isnan(now_price):  # prices end: sold at the last close, the value moves to cash
                alive[c] = 0.0
                proceeds += before
                value[c] = 0.0
            else:
                value[c] = weight[c] * now_price / start_price[c]
                gain += value[c] - before
                held_now += value[c]
        rate = cash_rate[t]
        if not math.isfinite(rate):  # as run_backtest: an infinite rate is no rate
            status[0], status[1], status[2] = NO_CASH_RATE, t, -1
            return
        fee = borrow_rate * short_prev
        nav_prev = held_prev + cash
        gross = (gain + rate * cash - fee) / nav_prev
        cash = (1.0 + rate) * cash + proceeds - fee
        nav_now = held_now + cash
        trade_cost = 0.0
        borrow_cost = fee / nav_prev

        if decided:
            turnover, unit_impact = 0.0, 0.0
            for c in range(width):
                col = cols[c]
                wanted = targets[decision, col]
                target[c] = 0.0 if (math.isnan(wanted) or math.isnan(price[t, col])) else wanted
                drifted = value[c] / nav_now if alive[c] != 0.0 else 0.0
                traded = abs(target[c] - drifted)
                turnover += traded
                if impact_coefficient > 0.0 and traded > 0.0:
                    adv, vol = adv_value[t, col], daily_vol[t, col]
                    if not (adv > 0.0 and math.isfinite(vol)):
                        status[0], status[1], status[2] = NO_IMPACT_INPUTS, t, col
                        return
                    unit_impact += impact_coefficient * vol * math.sqrt(traded * capital / adv) * traded
            commission = commission_rate * turnover
            spread = spread_rate * turnover
            impact = 0.0
            if impact_coefficient > 0.0:
                account *= nav_now
                impact = unit_impact * math.sqrt(account)
                account *= 1.0 - (commission + spread) - impact
            trade_cost = commission + spread + impact
            turnover_sum += turnover
            invested = 0.0
            for c in range(width):
                weight[c] = target[c]
                value[c] = target[c]
                alive[c] = 1.0 if target[c] != 0.0 else 0.0
                start_price[c] = price[t, cols[c]]
                invested += target[c]
            cash = 1.0 - invested
        buffer[t] = (1.0 + gross) * (1.0 - trade_cost) - 1.0
        cost_sum += trade_cost + borrow_cost

    stats[FIRST_ROW] = first
    if first < 0:
        stats[:FIRST_ROW] = np.nan
        stats[N_OBS] = 0.0
        return
    _metrics(buffer[first:], turnover_sum, cost_sum, sessions_per_year, stats)


@_jit
def _metrics(returns, turnover_sum, cost_sum, sessions_per_year, stats):
    """research_lib.validation.metrics of ``returns`` (Sharpe with ddof=1, ``sessions_per_year``
    sessions a year)."""
    n = returns.shape[0]
    year = float(sessions_per_year)
    years = n / year
    mean = returns.sum() / n
    squares = 0.0
    wealth, peak, drawdown = 1.0, 1.0, 0.0
    for r in returns:
        squares += (r - mean) ** 2
        wealth *= 1.0 + r
        peak = max(peak, wealth)
        drawdown = min(drawdown, wealth / peak - 1.0)
    std = math.sqrt(squares / (n - 1)) if n > 1 else np.nan
    stats[SHARPE] = mean / std * math.sqrt(year) if std > 0.0 else np.nan
    stats[CAGR] = wealth ** (year / n) - 1.0
    stats[VOLATILITY] = std * math.sqrt(year)
    stats[DRAWDOWN] = drawdown
    stats[TURNOVER] = turnover_sum / years
    stats[N_OBS] = n
    stats[COST] = cost_sum / years

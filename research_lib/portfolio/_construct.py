"""From signals to the target weights of each rebalance date: estimate, optimize, control, check.

For each decision date ``t`` (at its close), in this order:

1. **Universe**: symbols priced on every session of the trailing ``lookback_days`` window
   and, when the method uses signals, scored by a signal no older than
   ``max_signal_age_sessions``.
2. **Estimates**: the covariance (``risk_model``) of the window's returns; expected returns
   (``returns_model``) or Black-Litterman views, both implied by the blended signal:
   ``base_return + signal_spread * z`` where ``z`` is the cross-sectional z-score.
3. **Optimizer**: the configured method and constraints, its problem built once for all dates
   and re-solved with each date's inputs (`ReusedOptimizer`; ``reuse_problem=False`` builds
   PyPortfolioOpt's problem anew per date: the same optimum within the solver's tolerance).
   When it finds no weights, the previous targets are kept (the date is noted with the reason).
4. **Volatility target** (optional): the weights are scaled so that their trailing
   volatility matches the target, never above ``max_leverage``.
5. **Risk layer**: the orders from the drifted current book to the targets go through the
   pre-trade checks (`research_lib.risk.clamp_weights`); clamps and rejections are kept.

Everything for ``t`` reads only prices and signals dated at or before ``t``. The estimates of
the dates are independent and run on the compute backend (`research_lib.compute`); the
optimizer, the volatility target and the risk layer follow the previous book, date by date.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd

from research_lib.compute import imap_tasks
from research_lib.portfolio._black_litterman import BlackLittermanViews
from research_lib.portfolio._constraints import InfeasibleConstraintsError, PortfolioConstraints
from research_lib.portfolio._inputs import expected_returns, risk_matrix, signal_expected_returns
from research_lib.portfolio._optimize import _NEEDS_MU, optimize_weights
from research_lib.portfolio._problem import FreshOptimizer, ReusedOptimizer
from research_lib.portfolio._settings import PortfolioConfig
from research_lib.progress import progress
from research_lib.risk import RiskLimits, clamp_weights, volatility_multiplier
from research_lib.risk import EVENT_COLUMNS

ADV_SESSIONS = 20  # sessions of volume averaged for the share-of-ADV check
DECISION_TIME = dt.time(16, 0)  # decisions are made at the close


@dataclass(frozen=True)
class Construction:
    """Target weights of every rebalance date and how they came about.

    weights : DataFrame (rebalance dates x symbols)
        Final targets, after the optional volatility target and the risk layer.
    optimizer_weights : DataFrame (rebalance dates x symbols)
        The optimizer's weights (or the kept previous targets), before both.
    risk_events : DataFrame
        One row per order the risk layer clamped or rejected (``EVENT_COLUMNS``).
    notes : DataFrame
        ``date, note``: dates held in cash or on previous targets, and why.
    """

    weights: pd.DataFrame
    optimizer_weights: pd.DataFrame
    risk_events: pd.DataFrame
    notes: pd.DataFrame


def _zscores(values: np.ndarray) -> np.ndarray:
    """Cross-sectional z-scores of one source's scores (NaN: not scored), with the mean and
    population standard deviation computed as pandas' ``Series.mean`` and ``std(ddof=0)`` do;
    all NaN when fewer than two symbols are scored or the scores do not vary."""
    scored = ~np.isnan(values)
    x = values[scored]
    out = np.full(values.shape, np.nan)
    if x.size < 2:
        return out
    count = float(x.size)
    mean = x.sum() / count
    std = np.sqrt(((mean - x) ** 2).sum() / count)
    if std > 0:
        out[scored] = (x - mean) / std
    return out


def _add_filled(total: np.ndarray, values: np.ndarray) -> np.ndarray:
    """``Series.add(values, fill_value=0.0)`` on aligned arrays: NaN only where both are NaN."""
    neither = np.isnan(total) & np.isnan(values)
    return np.where(neither, np.nan, np.where(np.isnan(total), 0.0, total) + np.where(np.isnan(values), 0.0, values))


def _blend(scores: Mapping[str, np.ndarray], weights: Mapping[str, float], size: int) -> np.ndarray:
    """`blend_scores` on arrays aligned to the same ``size`` symbols (NaN: not scored, nor blended)."""
    total, mass = np.full(size, np.nan), np.full(size, np.nan)
    for name, values in scores.items():
        if not weights.get(name, 0.0):
            continue
        z = _zscores(values)
        total = _add_filled(total, z * weights[name])
        mass = _add_filled(mass, np.where(np.isnan(z), np.nan, weights[name]))
    return total / mass


def blend_scores(rows: Mapping[str, pd.Series], weights: Mapping[str, float]) -> pd.Series:
    """One date's blended score per symbol.

    Each source's scores are z-scored across the symbols it scores; a symbol's blend is the
    ``weights``-weighted mean of the z-scores it has (sources without a score for it, or
    with a zero weight, drop out). Symbols no source scores are absent.
    """
    symbols = pd.Index([]).append([row.index for row in rows.values()]).unique().sort_values()
    blend = _blend({name: row.reindex(symbols).to_numpy(dtype=float) for name, row in rows.items()}, weights,
                   len(symbols))
    return pd.Series(blend, index=symbols).dropna()


def _blend_values(rows: Mapping[str, np.ndarray], weights: Mapping[str, float], size: int) -> np.ndarray:
    """Weighted mean of per-source values (e.g. confidences; NaN: the source has none for
    that symbol) over the sources present per symbol, on arrays aligned to ``size`` symbols."""
    total, mass = np.zeros(size), np.zeros(size)
    for name, values in rows.items():
        w = weights.get(name, 0.0)
        present = ~np.isnan(values)
        total = total + np.where(present, values, 0.0) * w
        mass = mass + present * w
    return total / np.where(mass == 0.0, np.nan, mass)


def source_weights(settings: PortfolioConfig) -> dict[str, float]:
    """The blend weight of each signal source the settings use."""
    if settings.signal == "blend":
        return {"ml": settings.ml_weight, "llm": 1.0 - settings.ml_weight}
    return {settings.signal: 1.0}


def _latest(frame: pd.DataFrame, sessions: pd.DatetimeIndex, at: int, max_age: int) -> pd.Series | None:
    """The last row of ``frame`` dated at or before session ``at``, if at most ``max_age`` sessions old."""
    pos = frame.index.searchsorted(sessions[at], side="right") - 1
    while pos >= 0:
        row = frame.iloc[pos]
        if row.notna().any():
            break
        pos -= 1  # a row without any value is no signal
    if pos < 0:
        return None
    age = at - sessions.searchsorted(frame.index[pos])
    return row if age <= max_age else None


@dataclass(frozen=True)
class Estimates:
    """What the optimizer sees on one date: expected returns (None for hrp, min_volatility,
    Black-Litterman), covariance, and Black-Litterman views when used."""

    mu: pd.Series | None
    cov: pd.DataFrame
    views: BlackLittermanViews | None
    universe: list[str]


def estimates_at(close: pd.DataFrame, at: int, settings: PortfolioConfig, *,
                 scores: Mapping[str, pd.DataFrame] | None = None,
                 confidences: Mapping[str, pd.DataFrame | float] | None = None,
                 benchmark: pd.Series | None = None, sessions_per_year: int = 252) -> Estimates | str:
    """The optimizer's inputs at the close of session number ``at``, or why there are none.

    ``scores`` are the signal sources (dates x symbols, e.g. ``{"ml": ..., "llm": ...}``),
    blended with ``ml_weight``; ``confidences`` give each source's Idzorek confidence (a frame
    like its scores, or one number). A source absent from ``scores`` drops out of the blend.
    Expected returns and covariances are annualized over ``sessions_per_year`` (the prices' calendar).
    """
    lookback = settings.lookback_days
    if at < lookback:
        return f"only {at + 1} sessions of history; lookback_days={lookback} needs {lookback + 1}"
    window = close.iloc[at - lookback: at + 1]
    universe = window.columns[(window.to_numpy() > 0).all(axis=0)]  # priced (not NaN, positive) every session
    needs_signal = settings.uses_signals
    rows = {}  # each source's latest scores on the universe (NaN: none)
    if needs_signal:
        weights = source_weights(settings)
        for name, frame in (scores or {}).items():
            row = _latest(frame, close.index, at, settings.max_signal_age_sessions)
            if row is not None:
                rows[name] = row.reindex(universe).to_numpy(dtype=float)
        blend = _blend(rows, weights, len(universe))
        blended = ~np.isnan(blend)
        universe, blend = universe[blended], blend[blended]
        rows = {name: values[blended] for name, values in rows.items()}
    if len(universe) < 2:
        what = "priced over the lookback window" + (" and scored by a fresh signal" if needs_signal else "")
        return f"{len(universe)} symbol(s) {what}; at least 2 are needed"
    window = window[universe]
    cov = risk_matrix(window, settings.risk_model, frequency=sessions_per_year)
    implied = (signal_expected_returns(pd.Series(blend, index=universe), settings.signal_spread, settings.base_return)
               if needs_signal else None)
    if settings.method == "black_litterman":
        per_source = {}
        for name, values in rows.items():
            value = (confidences or {}).get(name, settings.model_confidence)
            if isinstance(value, pd.DataFrame):
                row = _latest(value, close.index, at, settings.max_signal_age_sessions)
                confidence = (np.full(len(universe), np.nan) if row is None
                              else row.reindex(universe).to_numpy(dtype=float))
            else:
                confidence = np.full(len(universe), float(value))
            per_source[name] = np.where(np.isnan(values), np.nan, confidence)  # only where the source scores
        conf = pd.Series(_blend_values(per_source, weights, len(universe)), index=universe)
        views = BlackLittermanViews(implied, conf.fillna(settings.model_confidence).clip(0.0, 1.0))
        return Estimates(None, cov, views, list(universe))
    mu = None
    if settings.method in _NEEDS_MU:
        mu = implied if settings.returns_model == "signals" else expected_returns(
            window, settings.returns_model, benchmark=benchmark, risk_free_rate=settings.risk_free_rate,
            frequency=sessions_per_year)
    return Estimates(mu, cov, None, list(universe))


def _estimates_task(at: int, *, close: pd.DataFrame, settings: PortfolioConfig, scores, confidences,
                    benchmark, sessions_per_year) -> Estimates | str:
    """`estimates_at` with the session number first (a task of `research_lib.compute.imap_tasks`)."""
    return estimates_at(close, at, settings, scores=scores, confidences=confidences, benchmark=benchmark,
                        sessions_per_year=sessions_per_year)


def _drifted(weights: pd.Series, start: pd.Series, end: pd.Series) -> pd.Series:
    """Weights after prices moved from ``start`` to ``end`` (cash unchanged); unpriced symbols sold."""
    growth = (end / start).reindex(weights.index)
    held = (weights * growth).where(growth.notna(), 0.0)
    value = 1.0 + (weights * (growth - 1.0)).fillna(0.0).sum()  # an unpriced holding's last value goes to cash
    return held / value


def construct_portfolio(close: pd.DataFrame, rebalance_dates, settings: PortfolioConfig, limits: RiskLimits, *,
                        scores: Mapping[str, pd.DataFrame] | None = None,
                        confidences: Mapping[str, pd.DataFrame | float] | None = None,
                        volume: pd.DataFrame | None = None, benchmark: pd.Series | None = None,
                        reuse_problem: bool = True, sessions_per_year: int = 252) -> Construction:
    """Target weights on each rebalance date (see the module docstring for the steps).

    Parameters
    ----------
    close : DataFrame (sessions x symbols)
        Adjusted closes of the tradable symbols (NaN where a symbol is not listed).
    rebalance_dates : sequence of date-like
        Decision dates, sessions of ``close``.
    settings : PortfolioConfig
    limits : RiskLimits
        The pre-trade limits, applied to a notional account of ``settings.capital``.
    scores, confidences, benchmark
        As in `estimates_at`.
    volume : DataFrame (sessions x symbols), optional
        Daily volume in shares for the share-of-ADV check; None or NaN: not checked.
    reuse_problem : bool
        Build the optimizer's problem once and re-solve it per date (`ReusedOptimizer`, the
        default), rather than PyPortfolioOpt's new problem per date (False); weights agree
        within the solver's tolerance.
    sessions_per_year : int
        Sessions in a year on the prices' calendar (252 New York, 365 crypto): annualizes the
        expected returns, covariances and the volatility target's trailing volatility.

    Returns
    -------
    Construction
    """
    dates = pd.DatetimeIndex(rebalance_dates)
    if not dates.is_monotonic_increasing or dates.has_duplicates:
        raise ValueError("rebalance dates must be increasing and distinct; sort them and drop repeats "
                         "(e.g. sorted(set(dates)))")
    absent = dates.difference(close.index)
    if len(absent):
        raise ValueError(f"rebalance dates {[str(d.date()) for d in absent[:3]]} are not sessions of the prices; "
                         "pick them from the price index")
    close = close.copy()
    close.attrs = {}  # pandas deep-copies attrs (the data provenance) into every derived frame: slow here
    if not all(f.index.is_monotonic_increasing for f in [*(scores or {}).values(),
                                                         *[v for v in (confidences or {}).values()
                                                           if isinstance(v, pd.DataFrame)]]):
        raise ValueError("scores and confidences need increasing dates; sort them first (frame.sort_index())")
    # Rows without any value are dropped once here, so each date finds its latest signal in one step.
    scores = {k: v.dropna(how="all") for k, v in (scores or {}).items()}
    confidences = {k: v.dropna(how="all") if isinstance(v, pd.DataFrame) else v for k, v in (confidences or {}).items()}
    if volume is not None and not volume.notna().to_numpy().any():
        volume = None  # no volume at all (e.g. the bundled stocks): as unchecked as NaN ADVs, without averaging them
    symbols = close.columns
    previous = last_optimized = pd.Series(0.0, index=symbols)  # the book after the risk layer; the optimizer's
    previous_at = None
    finals, optimized, events, notes = [], [], [], []
    constraints = settings.constraints
    optimizer = (ReusedOptimizer if reuse_problem else FreshOptimizer)(
        settings.method, constraints, target_volatility=settings.target_volatility,
        target_return=settings.target_return, risk_free_rate=settings.risk_free_rate, solver=settings.solver)
    # Each date's estimates read only the data: they run on the compute backend (locally, here, one
    # date after the other), coming back in order. The optimizer's chain needs the previous book:
    # it runs here, date by date.
    positions = [close.index.get_loc(date) for date in dates]
    every_estimate = imap_tasks(_estimates_task, positions, shared=dict(
        close=close, settings=settings, scores=scores, confidences=confidences, benchmark=benchmark,
        sessions_per_year=sessions_per_year))
    for date, at, estimates in progress(zip(dates, positions, every_estimate), total=len(dates),
                                        desc="month-end optimizations", unit="date"):
        current = (previous if previous_at is None
                   else _drifted(previous, close.iloc[previous_at], close.iloc[at]))
        if isinstance(estimates, str):
            target = pd.Series(0.0, index=symbols)
            notes.append({"date": date, "note": f"cash: {estimates}"})
        else:
            target = _optimize(estimates, optimizer, previous, last_optimized, date, notes, close.iloc[at])
        optimized.append(target)
        last_optimized = target
        if settings.vol_target is not None and target.any():
            vt = settings.vol_target
            trailing = close.iloc[at - vt.lookback_days: at + 1].pct_change(fill_method=None).iloc[1:]
            scale = volatility_multiplier(target.to_numpy(), trailing.fillna(0.0).to_numpy(), vt.target_vol,
                                          vt.max_leverage, sessions_per_year)
            target = target * scale
        adv = None
        if volume is not None:
            adv = volume.iloc[max(0, at - ADV_SESSIONS + 1): at + 1].mean().where(lambda v: v > 0)
        when = dt.datetime.combine(date.date(), DECISION_TIME)
        final, clamped = clamp_weights(current, target, close.iloc[at], limits, settings.capital, when, adv)
        final = final.reindex(symbols, fill_value=0.0)
        if len(clamped):
            events.append(clamped)
        finals.append(final)
        previous, previous_at = final, at
    frame = lambda rows: pd.DataFrame(rows, index=dates, columns=symbols)  # noqa: E731
    risk_events = pd.concat(events, ignore_index=True) if events else pd.DataFrame(columns=EVENT_COLUMNS)
    return Construction(frame(finals), frame(optimized), risk_events, pd.DataFrame(notes, columns=["date", "note"]))


def _optimize(estimates: Estimates, optimizer: ReusedOptimizer | FreshOptimizer, previous: pd.Series, last_optimized: pd.Series,
              date: pd.Timestamp, notes: list, prices: pd.Series) -> pd.Series:
    """The optimizer's weights, or its previous ones (on symbols still priced) when it finds none.

    ``previous`` is the book held (for a turnover penalty); ``last_optimized`` the optimizer's
    last weights, kept rather than the held book so that a volatility target or a risk clamp
    is not applied twice."""
    try:
        weights = optimizer.weights(estimates.mu, estimates.cov, views=estimates.views,
                                    previous_weights=previous.reindex(estimates.universe).fillna(0.0))
    except InfeasibleConstraintsError as exc:
        notes.append({"date": date, "note": f"previous targets kept: {exc}"})
        return last_optimized.where(prices.reindex(last_optimized.index) > 0, 0.0)
    return weights.reindex(previous.index, fill_value=0.0)


def risk_contributions(weights: pd.Series, cov: pd.DataFrame) -> pd.Series:
    """Each asset's share of the portfolio variance, ``w_i (cov w)_i / (w' cov w)`` (sums to 1)."""
    w = weights.reindex(cov.columns).fillna(0.0)
    marginal = cov @ w
    variance = float(w @ marginal)
    if not variance > 0:
        raise ValueError("the portfolio has zero variance (no positions?); risk contributions are undefined")
    return (w * marginal / variance).rename("risk_contribution")


def efficient_frontier(mu: pd.Series, cov: pd.DataFrame, constraints: PortfolioConstraints | None = None,
                       points: int = 25, solver: str = "CLARABEL") -> pd.DataFrame:
    """Volatility and return of the efficient portfolios, from minimum volatility to the
    highest reachable return (columns ``volatility``, ``expected_return``; annualized)."""
    c = (constraints or PortfolioConstraints()).model_copy(update={"turnover_penalty": 0.0})  # no previous book here
    low_w = optimize_weights(mu, cov, "min_volatility", c, solver=solver)
    low = float(mu @ low_w)
    # The highest return the bounds allow: the best assets filled to max_weight in turn.
    high, left = 0.0, c.net_exposure
    for value in mu.sort_values(ascending=False):
        take = min(c.max_weight, left)
        high, left = high + take * value, left - take
    rows = []
    for target in np.linspace(low, high - 1e-6 * abs(high), points):
        try:
            w = optimize_weights(mu, cov, "efficient_return", c, target_return=float(target), solver=solver)
        except InfeasibleConstraintsError:
            continue
        rows.append({"volatility": float(np.sqrt(w @ cov @ w)), "expected_return": float(mu @ w)})
    return pd.DataFrame(rows)


def book_exposures(weights: pd.DataFrame) -> pd.DataFrame:
    """Per rebalance date: ``gross`` (sum |w|), ``net`` (sum w), ``long``, ``short``, ``positions``
    (non-zero weights) and ``turnover``, the one-way change of the targets from the previous
    date (``sum |w_t - w_{t-1}|``; the backtest measures the real turnover, after drift)."""
    return pd.DataFrame({
        "gross": weights.abs().sum(axis=1), "net": weights.sum(axis=1),
        "long": weights.clip(lower=0.0).sum(axis=1), "short": weights.clip(upper=0.0).sum(axis=1),
        "positions": (weights.abs() > 1e-9).sum(axis=1),
        "turnover": weights.diff().fillna(weights).abs().sum(axis=1)})

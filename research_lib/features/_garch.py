"""GARCH(1,1) forecasts of next-session volatility, refitted on a schedule, point in time.

Conventions. Returns are daily log returns of each symbol's own valid closes, scaled by
100 (percent) for the fit; variances in the numerical core are in percent squared per
session. The output is annualized volatility as a fraction (0.25 = 25 % a year), scaled
by ``sqrt(252)``. The value dated ``t`` is the forecast of the volatility of the return
from the close of ``t`` to the close of ``t + 1``, made with closes up to and including
``t`` only.

Schedule. Parameters are estimated by ``arch`` (constant mean, GARCH(1,1), normal
errors) at return positions ``min_history - 1``, ``min_history - 1 + refit_every``, ...
of each symbol, on the returns up to that date (all of them, or the last ``window``).
The forecast at a refit date is exactly ``arch``'s one-step forecast from that fit.
Between refits the variance recursion runs forward with the last fitted parameters,

    sigma2[t + 1] = omega + alpha * (r[t] - mu) ** 2 + beta * sigma2[t],

which only uses returns up to ``t``. If a fit fails (``arch`` reports no convergence, or
raises on degenerate data) the previous parameters are kept and the recursion simply
continues; before the first successful fit the output is NaN.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from pathlib import Path

from joblib import Memory
from threadpoolctl import threadpool_limits

from research_lib.compute import imap_tasks
from research_lib.progress import progress
from research_lib.units import SESSIONS_PER_YEAR

PERCENT = 100.0
MIN_HISTORY_FLOOR = 100


def garch_volatility(close: pd.DataFrame, refit_every: int = 252, min_history: int = 500,
                     window: int | None = None, *, n_jobs: int = 1, cache_dir: str | Path | None = None,
                     sessions_per_year: int = SESSIONS_PER_YEAR) -> pd.DataFrame:
    """Annualized GARCH(1,1) forecast of next-session volatility at each close.

    Parameters
    ----------
    close : pd.DataFrame, shape (n_dates, n_symbols)
        Closing prices, dates ascending. Each symbol is handled on its own valid closes:
        leading, trailing or interior NaN are skipped (a return then spans the gap).
    refit_every : int, default 252
        Sessions between re-estimations of the parameters (each symbol's own sessions).
    min_history : int, default 500
        Returns needed before the first fit; the first forecast is dated at the close
        that completes ``min_history`` returns. At least 100.
    window : int or None, default None
        Fit on the last ``window`` returns only; None fits on all returns so far
        (expanding). At least ``min_history``.
    n_jobs : int, default 1
        Symbols fitted in parallel processes (joblib); -1 for one per core. On the Dask
        backend (`research_lib.compute`) its workers fit them instead.
    cache_dir : path or None
        Keep each fit on disk (joblib.Memory), keyed by the exact returns it was fitted
        on: a later run on the same or extended history reuses them, with identical results.

    Returns
    -------
    pd.DataFrame, shape (n_dates, n_symbols)
        Same index and columns as ``close``. Annualized volatility as a fraction; NaN
        before each symbol's first successful fit and on dates where its close is NaN.

    Raises
    ------
    ValueError
        for ``refit_every < 1``, ``min_history < 100``, ``window < min_history``, an
        index that is not unique and ascending, or closes that are not positive.
    """
    _check_arguments(refit_every, min_history, window)
    if not (close.index.is_monotonic_increasing and close.index.is_unique):
        raise ValueError("close.index must be unique dates sorted ascending (oldest first); "
                         "try close[~close.index.duplicated()].sort_index().")
    not_positive = [str(s) for s in close.columns if (close[s] <= 0).any()]
    if not_positive:
        raise ValueError(f"close has zero or negative prices for {not_positive}; "
                         "load prices through research_lib.data.load_prices, which validates them.")

    series = [close.iloc[:, position].dropna() for position in range(close.shape[1])]
    returns = [PERCENT * np.diff(np.log(valid.to_numpy(dtype=float))) for valid in series]
    fit = Memory(str(cache_dir), verbose=0).cache(_fit) if cache_dir is not None else _fit
    # Every fit depends only on its own sample: the cached ones are read here, the others are fitted
    # in n_jobs processes.
    samples = [[r[first:stop] for first, stop in _samples(r.size, refit_every, min_history, window)] for r in returns]
    fitted = iter(_fit_all(samples, fit, n_jobs))
    out = pd.DataFrame(np.nan, index=close.index, columns=close.columns)
    for position, (valid, r, per_symbol) in enumerate(zip(series, returns, samples)):
        variance = _forecasts(r, refit_every, min_history, [next(fitted) for _ in per_symbol])
        out.iloc[close.index.get_indexer(valid.index[1:]), position] = np.sqrt(variance * sessions_per_year) / PERCENT
    return out


def garch_variance_forecasts(returns: np.ndarray, refit_every: int = 252, min_history: int = 500,
                             window: int | None = None, fit=None) -> np.ndarray:
    """Next-session variance forecasts from one symbol's returns (the numerical core).

    Parameters
    ----------
    returns : np.ndarray, shape (n,)
        Finite daily returns in percent, oldest first.
    refit_every, min_history, window
        As in ``garch_volatility``.
    fit : callable, optional
        The estimator of one sample (default ``_fit``; a cached version may be passed).

    Returns
    -------
    np.ndarray, shape (n,)
        Element ``t`` is the forecast of the variance of ``returns[t + 1]`` (percent
        squared per session) from ``returns[: t + 1]``; NaN before the first successful fit.
    """
    _check_arguments(refit_every, min_history, window)
    fit = fit or _fit
    with threadpool_limits(limits=1):  # the same numbers in the main process and in joblib workers
        fitted = [fit(returns[first:stop]) for first, stop in _samples(returns.size, refit_every, min_history, window)]
    return _forecasts(returns, refit_every, min_history, fitted)


def _samples(n: int, refit_every: int, min_history: int, window: int | None) -> list[tuple[int, int]]:
    """``(first, stop)`` of the returns each scheduled fit uses, in schedule order (see module doc)."""
    return [(0 if window is None else max(0, refit + 1 - window), refit + 1)
            for refit in range(min_history - 1, n, refit_every)]


def _fit_all(samples: list[list[np.ndarray]], fit, n_jobs: int) -> list:
    """``fit(sample)`` for every symbol's samples, flattened in order, with a bar of the fits as they come back.

    A fit already in ``fit``'s disk cache is read in this process: starting worker processes
    (each importing ``arch``) costs more than reading it. The others go to the workers of the
    compute backend one symbol at a time (a task per fit costs more in dispatch than it gains
    in balance); the workers write them to the cache.
    """
    in_cache = getattr(fit, "check_call_in_cache", lambda sample: False)
    cached = [[in_cache(sample) for sample in per_symbol] for per_symbol in samples]
    to_fit = [[s for s, hit in zip(per_symbol, hits) if not hit] for per_symbol, hits in zip(samples, cached)]
    to_fit = [chunk for chunk in to_fit if chunk]
    computed = imap_tasks(_fit_one_thread, to_fit, shared={"fit": fit}, n_jobs=n_jobs if to_fit else 1)
    fresh = (fitted for chunk in computed for fitted in chunk)
    results = (fit(sample) if hit else next(fresh)
               for per_symbol, hits in zip(samples, cached) for sample, hit in zip(per_symbol, hits))
    total = sum(len(per_symbol) for per_symbol in samples)
    with threadpool_limits(limits=1):  # a cache entry gone since the check is fitted here, as in a worker
        return list(progress(results, total=total, desc="GARCH fits", unit="fit"))


def _fit_one_thread(samples: list[np.ndarray], fit) -> list:
    with threadpool_limits(limits=1):  # the same numbers in the main process and in any worker
        return [fit(sample) for sample in samples]


def _forecasts(returns: np.ndarray, refit_every: int, min_history: int, fitted: list) -> np.ndarray:
    """The variance recursion driven by the scheduled fits (``fitted[i]`` from ``_fit`` or None)."""
    n = returns.size
    forecasts = np.full(n, np.nan)
    params = None  # (mu, omega, alpha, beta) of the last successful fit
    for refit, fit_result in zip(range(min_history - 1, n, refit_every), fitted):
        stop = min(refit + refit_every, n)
        if fit_result is not None:
            params, forecasts[refit] = fit_result
            start = refit + 1
        elif params is None:
            continue
        else:
            start = refit  # failed fit: carry on with the previous parameters
        mu, omega, alpha, beta = params
        drive = omega + alpha * (returns[start:stop] - mu) ** 2
        forecasts[start:stop] = _recursion(drive, beta, forecasts[start - 1])
    return forecasts


def _recursion(drive: np.ndarray, beta: float, initial: float) -> np.ndarray:
    """``s[t] = drive[t] + beta * s[t - 1]`` from ``s[-1] = initial``: what
    ``scipy.signal.lfilter([1.0], [1.0, -beta], drive, zi=[beta * initial])[0]`` computes, with
    the same roundings (one product and one sum per step), without importing ``scipy.signal``
    (half a second: a third of the features stage once the GARCH fits are cached)."""
    out, previous = [], float(initial)
    for value in drive.tolist():
        previous = value + beta * previous
        out.append(previous)
    return np.array(out, dtype=float)


def arch_model(*args, **kwargs):
    """``arch.arch_model``, imported on the first fit: a run whose fits are all cached never pays
    for importing ``arch`` (about 2 s). ``_fit`` calls it by this name, so its source, which keys
    the fit cache, is unchanged."""
    from arch import arch_model as make

    return make(*args, **kwargs)


def _fit(sample: np.ndarray) -> tuple[tuple[float, float, float, float], float] | None:
    """``(mu, omega, alpha, beta)`` and the one-step variance forecast, or None on failure."""
    model = arch_model(sample, mean="Constant", vol="GARCH", p=1, q=1, dist="normal", rescale=False)
    with np.errstate(all="ignore"):
        try:
            result = model.fit(disp="off", show_warning=False)
        except (ValueError, np.linalg.LinAlgError):
            return None
    if result.convergence_flag != 0:
        return None
    mu, omega, alpha, beta = (float(v) for v in result.params.to_numpy())
    forecast = omega + alpha * result.resid[-1] ** 2 + beta * result.conditional_volatility[-1] ** 2
    if not np.isfinite(forecast):
        return None
    return (mu, omega, alpha, beta), float(forecast)


def _check_arguments(refit_every: int, min_history: int, window: int | None) -> None:
    if refit_every < 1:
        raise ValueError(f"refit_every must be at least 1 session (got {refit_every}); "
                         "252 refits once a year.")
    if min_history < MIN_HISTORY_FLOOR:
        raise ValueError(f"min_history must be at least {MIN_HISTORY_FLOOR} returns (got {min_history}); "
                         "a GARCH fit on less is unreliable, 500 is the default.")
    if window is not None and window < min_history:
        raise ValueError(f"window must be at least min_history={min_history} returns (got {window}); "
                         "raise window, lower min_history, or pass window=None for an expanding fit.")

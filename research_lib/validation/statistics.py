"""Statistics that say whether a backtest's headline numbers are skill or luck.

Conventions: Sharpe ratios here are **per period** (daily returns give a daily Sharpe;
multiply by sqrt(252) to annualize), computed as mean / standard deviation (ddof=1) of
simple returns with a zero benchmark rate. Kurtosis is **non-excess** (a normal
distribution has 3). References: Bailey & López de Prado, "The Sharpe Ratio Efficient
Frontier" (2012: PSR, MinTRL); "The Deflated Sharpe Ratio" (2014: DSR); Bailey, Borwein,
López de Prado & Zhu, "The Probability of Backtest Overfitting" (2015: CSCV, PBO).
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pandas as pd
from scipy import stats

from research_lib.units import SESSIONS_PER_YEAR

EULER_GAMMA = 0.5772156649015329


def _sharpe_std_term(sharpe: float, skew: float, kurtosis: float) -> float:
    """``1 - skew * SR + (kurtosis - 1) / 4 * SR^2``: the variance of the Sharpe estimate times n - 1."""
    term = 1.0 - skew * sharpe + (kurtosis - 1.0) / 4.0 * sharpe**2
    if not term > 0:
        raise ValueError(f"skew={skew} and kurtosis={kurtosis} with sharpe={sharpe} give a non-positive variance "
                         "of the Sharpe estimate; check that kurtosis is non-excess (normal = 3) and the Sharpe "
                         "per period, not annualized")
    return term


def probabilistic_sharpe_ratio(sharpe: float, n_obs: int, skew: float, kurtosis: float,
                               benchmark_sharpe: float = 0.0) -> float:
    """Probability that the true Sharpe ratio exceeds ``benchmark_sharpe`` (PSR, 2012, eq. 11).

    ``PSR = Phi((SR - SR*) sqrt(n - 1) / sqrt(1 - g3 SR + (g4 - 1)/4 SR^2))`` with the
    per-period Sharpe ``SR`` observed over ``n_obs`` returns of skewness ``g3`` and
    non-excess kurtosis ``g4``.
    """
    if n_obs < 2:
        raise ValueError(f"n_obs is {n_obs}; the PSR needs at least 2 returns")
    z = (sharpe - benchmark_sharpe) * math.sqrt(n_obs - 1) / math.sqrt(_sharpe_std_term(sharpe, skew, kurtosis))
    return float(stats.norm.cdf(z))


def expected_max_sharpe(n_trials: int, trials_sharpe_variance: float) -> float:
    """Expected maximum Sharpe of ``n_trials`` unskilled trials (DSR paper, eq. 2):
    ``sqrt(V) ((1 - gamma) Phi^-1(1 - 1/N) + gamma Phi^-1(1 - 1/(N e)))``."""
    if n_trials < 1:
        raise ValueError(f"n_trials is {n_trials}; count at least the one configuration being judged")
    if trials_sharpe_variance < 0:
        raise ValueError(f"trials_sharpe_variance is {trials_sharpe_variance}; a variance cannot be negative")
    if n_trials == 1:
        return 0.0  # one trial: no selection, nothing to deflate
    inv = stats.norm.ppf
    return math.sqrt(trials_sharpe_variance) * ((1.0 - EULER_GAMMA) * inv(1.0 - 1.0 / n_trials)
                                                + EULER_GAMMA * inv(1.0 - 1.0 / (n_trials * math.e)))


def deflated_sharpe_ratio(sharpe: float, n_obs: int, skew: float, kurtosis: float, n_trials: int,
                          trials_sharpe_variance: float) -> float:
    """PSR against the Sharpe the best of ``n_trials`` unskilled trials would show (DSR, 2014).

    ``trials_sharpe_variance`` is the variance of the per-period Sharpe ratios of all the
    trials; with one trial the DSR is the PSR against 0.
    """
    benchmark = expected_max_sharpe(n_trials, trials_sharpe_variance)
    return probabilistic_sharpe_ratio(sharpe, n_obs, skew, kurtosis, benchmark_sharpe=benchmark)


def minimum_track_record_length(sharpe: float, skew: float, kurtosis: float, benchmark_sharpe: float = 0.0,
                                confidence: float = 0.95) -> float:
    """Number of returns needed for the PSR against ``benchmark_sharpe`` to reach ``confidence``
    (MinTRL, 2012, eq. 12); infinite when the Sharpe does not exceed the benchmark."""
    if not 0.5 < confidence < 1:
        raise ValueError(f"confidence is {confidence}; pass a probability strictly between 0.5 and 1, e.g. 0.95 "
                         "(at 0.5 or less any positive edge needs no track record)")
    if sharpe <= benchmark_sharpe:
        return math.inf
    z = stats.norm.ppf(confidence)
    return float(1.0 + _sharpe_std_term(sharpe, skew, kurtosis) * (z / (sharpe - benchmark_sharpe)) ** 2)


def is_flat(values: np.ndarray) -> bool:
    """Whether returns do not vary (up to rounding): a Sharpe ratio of them is meaningless."""
    return values.size < 2 or values.std(ddof=1) <= 1e-12 * max(abs(values.mean()), 1e-12)


def sharpe_moments(returns: pd.Series | np.ndarray) -> dict:
    """Per-period Sharpe (ddof=1), skewness and non-excess kurtosis (both unbiased-free, as in
    the papers: sample moments), and the number of returns."""
    values = np.asarray(returns, dtype=float)
    values = values[np.isfinite(values)]
    if values.size < 3 or is_flat(values):
        raise ValueError(f"need at least 3 returns that vary, got {values.size}; a longer backtest is needed")
    return {"sharpe": float(values.mean() / values.std(ddof=1)), "n_obs": int(values.size),
            "skew": float(stats.skew(values)), "kurtosis": float(stats.kurtosis(values, fisher=False))}


def probability_of_backtest_overfitting(trial_returns: pd.DataFrame, n_splits: int = 16) -> dict:
    """Combinatorially symmetric cross-validation (CSCV) of a set of trials (PBO, 2015).

    The dates x trials returns are cut into ``n_splits`` contiguous blocks of equal length
    (the first ``T mod n_splits`` rows are dropped). For every choice of half the blocks as
    in-sample, the trial with the best in-sample Sharpe is located in the out-of-sample
    ranking: ``w = rank / (N + 1)``, logit ``log(w / (1 - w))``. The PBO is the share of
    choices whose logit is at most 0 (the in-sample best is at or below the median
    out of sample).

    Returns
    -------
    dict
        ``pbo``, ``logits`` (one per combination), ``is_sharpe`` and ``oos_rank`` (per combination,
        the in-sample best's per-period in-sample Sharpe and relative out-of-sample rank ``w``;
        these three arrays are `PBO_ARRAYS`), ``n_combinations``, ``n_trials``,
        ``n_splits``, ``performance_degradation`` (slope of OOS on IS Sharpe of the chosen
        trials) and ``prob_oos_loss`` (share of combinations whose chosen trial loses out
        of sample).
    """
    if n_splits < 2 or n_splits % 2:
        raise ValueError(f"n_splits is {n_splits}; pass an even number of at least 2 (16 is usual)")
    values = trial_returns.to_numpy(dtype=float)
    if values.ndim != 2 or values.shape[1] < 2:
        raise ValueError("trial_returns needs a column per trial and at least 2 trials")
    if not np.isfinite(values).all():
        raise ValueError("trial_returns has NaN or infinite values; align the trials on common dates first "
                         "(e.g. trial_returns.dropna())")
    block = values.shape[0] // n_splits
    if block < 2:
        raise ValueError(f"{values.shape[0]} dates cannot make {n_splits} blocks of at least 2 returns; "
                         "use fewer splits or a longer history")
    values = values[values.shape[0] - block * n_splits:].reshape(n_splits, block, -1)
    sums, squares = values.sum(axis=1), (values**2).sum(axis=1)  # blocks x trials
    combos = np.array([c for c in itertools.combinations(range(n_splits), n_splits // 2)])
    chosen = np.zeros((len(combos), n_splits), dtype=bool)
    chosen[np.arange(len(combos))[:, None], combos] = True
    n_trials = values.shape[2]
    # Combinations are taken in chunks so that memory stays bounded however many trials there are
    # (all 12,870 at once for 10,000 trials would hold several 12,870 x 10,000 arrays, ~8 GB).
    step = max(1, _PBO_CHUNK_CELLS // n_trials)
    picked = [_cscv_choice(chosen[start:start + step], sums, squares, block * n_splits // 2)
              for start in range(0, len(combos), step)]
    picked_is, picked_oos, rank = (np.concatenate(parts) for parts in zip(*picked))
    omega = rank / (n_trials + 1.0)
    logits = np.log(omega / (1.0 - omega))
    slope = float(np.polyfit(picked_is, picked_oos, 1)[0]) if np.ptp(picked_is) > 0 else float("nan")
    return {"pbo": float((logits <= 0).mean()), "logits": logits, "is_sharpe": picked_is, "oos_rank": omega,
            "n_combinations": len(combos),
            "n_trials": int(n_trials), "n_splits": n_splits, "performance_degradation": slope,
            "prob_oos_loss": float((picked_oos < 0).mean())}


PBO_ARRAYS = ("logits", "is_sharpe", "oos_rank")  # per-combination arrays: for figures, not for JSON records
_PBO_CHUNK_CELLS = 2**20  # combinations x trials per chunk: a few arrays of 8 MB each


def _cscv_choice(chosen: np.ndarray, sums: np.ndarray, squares: np.ndarray,
                 n_half: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For each combination (a row of ``chosen``: its in-sample blocks), the in-sample best trial's
    in-sample and out-of-sample Sharpe, and its out-of-sample rank (1 = worst, N = best)."""
    def sharpe(mask: np.ndarray) -> np.ndarray:
        total, total_sq = mask @ sums, mask @ squares
        mean = total / n_half
        var = (total_sq - n_half * mean**2) / (n_half - 1)
        return mean / np.sqrt(np.where(var > 0, var, np.nan))

    rows = np.arange(len(chosen))
    is_sharpe = sharpe(chosen.astype(float))
    best = np.nanargmax(np.nan_to_num(is_sharpe, nan=-np.inf), axis=1)
    picked_is = is_sharpe[rows, best]
    del is_sharpe  # one chunk-sized array at a time
    oos_sharpe = sharpe((~chosen).astype(float))
    picked_oos = oos_sharpe[rows, best]
    rank = (oos_sharpe < picked_oos[:, None]).sum(axis=1) + 1
    return picked_is, picked_oos, rank


def bootstrap_sharpe_interval(returns: pd.Series, n_boot: int = 1000, block: int = 21, alpha: float = 0.05,
                              seed: int = 0, periods_per_year: int = SESSIONS_PER_YEAR) -> dict:
    """Annualized Sharpe with a circular block bootstrap confidence interval.

    Blocks of ``block`` consecutive returns keep short-range dependence; ``n_boot`` resamples
    with a fixed ``seed`` make the interval reproducible. Returns ``sharpe``, ``low``,
    ``high`` (the ``alpha / 2`` and ``1 - alpha / 2`` quantiles), the settings, and ``samples`` (the
    ``n_boot`` resampled Sharpe ratios, an array).
    """
    if not 0 < alpha < 1:
        raise ValueError(f"alpha is {alpha}; pass a probability strictly between 0 and 1, e.g. 0.05 for 95 %")
    values = np.asarray(returns.dropna(), dtype=float)
    n = values.size
    if n < 2 * block:
        raise ValueError(f"{n} returns are too few for blocks of {block}; need at least {2 * block}")
    rng = np.random.default_rng(seed)
    n_blocks = -(-n // block)
    starts = rng.integers(0, n, size=(n_boot, n_blocks))
    index = (starts[:, :, None] + np.arange(block)) % n
    samples = values[index.reshape(n_boot, -1)[:, :n]]
    sharpes = samples.mean(axis=1) / samples.std(axis=1, ddof=1) * math.sqrt(periods_per_year)
    point = values.mean() / values.std(ddof=1) * math.sqrt(periods_per_year)
    low, high = np.quantile(sharpes, [alpha / 2, 1 - alpha / 2])
    return {"sharpe": float(point), "low": float(low), "high": float(high), "confidence": 1 - alpha,
            "n_boot": n_boot, "block": block, "samples": sharpes}


def walk_forward_selection(trial_returns: pd.DataFrame, train_days: int = 756, test_days: int = 252) -> dict:
    """Pick the best trial on each trailing window, hold it for the next block, stitch the blocks.

    The stitched out-of-sample returns are what choosing by backtest would have earned: each
    block's choice uses only returns dated before the block. Returns ``returns`` (a Series),
    ``choices`` (block start -> trial) and the Sharpe per period of the stitched series.
    """
    if train_days < 2 or test_days < 1:
        raise ValueError(f"train_days={train_days} and test_days={test_days}; pass at least 2 and 1")
    values = trial_returns.dropna()
    if len(values) < train_days + test_days:
        raise ValueError(f"{len(values)} common dates are fewer than train_days + test_days = "
                         f"{train_days + test_days}; shorten the windows")
    pieces, choices = [], {}
    for start in range(train_days, len(values), test_days):
        train = values.iloc[start - train_days:start]
        score = train.mean() / train.std(ddof=1).replace(0, np.nan)
        pick = score.idxmax() if score.notna().any() else values.columns[0]
        block = values.iloc[start:start + test_days, values.columns.get_loc(pick)]
        pieces.append(block)
        when = values.index[start]
        choices[str(when.date()) if hasattr(when, "date") else str(when)] = str(pick)
    stitched = pd.concat(pieces).rename("walk_forward_oos")
    return {"returns": stitched, "choices": choices,
            "sharpe": float(stitched.mean() / stitched.std(ddof=1)) if stitched.std(ddof=1) > 0 else float("nan")}


def breakdown_by_year(returns: pd.Series, periods_per_year: int = SESSIONS_PER_YEAR) -> pd.DataFrame:
    """Per calendar year: compounded return, annualized volatility and Sharpe, sessions."""
    grouped = returns.groupby(returns.index.year)
    out = pd.DataFrame({
        "return": grouped.apply(lambda r: float((1 + r).prod() - 1)),
        "volatility": grouped.std(ddof=1) * math.sqrt(periods_per_year),
        "sharpe": grouped.mean() / grouped.std(ddof=1) * math.sqrt(periods_per_year),
        "sessions": grouped.size()})
    out.index.name = "year"
    return out


def breakdown_by_regime(returns: pd.Series, benchmark_returns: pd.Series, window: int = 63,
                        periods_per_year: int = SESSIONS_PER_YEAR) -> pd.DataFrame:
    """Annualized return, volatility and Sharpe in calm and volatile markets.

    A session is *volatile* when the benchmark's trailing ``window``-session volatility,
    measured up to the previous session, is above its median so far (expanding, so the
    label of day t uses nothing after t - 1).
    """
    vol = benchmark_returns.rolling(window).std().shift(1)
    median = vol.expanding(min_periods=window).median()
    regime = pd.Series(np.where(vol > median, "volatile", "calm"), index=vol.index).where(median.notna())
    joined = pd.DataFrame({"r": returns, "regime": regime.reindex(returns.index)}).dropna()
    grouped = joined.groupby("regime")["r"]
    return pd.DataFrame({
        "annual_return": grouped.mean() * periods_per_year,
        "volatility": grouped.std(ddof=1) * math.sqrt(periods_per_year),
        "sharpe": grouped.mean() / grouped.std(ddof=1) * math.sqrt(periods_per_year),
        "sessions": grouped.size()})

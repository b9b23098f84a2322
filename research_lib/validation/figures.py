"""What the validation page draws, as plain numbers in validation.json: the bootstrap
distribution of the Sharpe ratio, PBO's logits and its in-sample vs out-of-sample scatter, the
deflated Sharpe ratio against the number of trials, and the walk-forward selection's equity.

Each figure is small (bins, at most `MAX_POINTS` points), so that the page renders from the JSON
alone; a figure whose statistic could not be computed is None.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from research_lib.validation import statistics as st

BINS = 30
MAX_POINTS = 300  # points of a scatter or an equity line on the page


def validation_figures(returns: pd.Series, stats: dict, trial_stats: dict) -> dict:
    """The figures of `research_lib.validation.evidence.run_statistics`'s ``stats`` (with its
    arrays: the bootstrap's ``samples``, PBO's `statistics.PBO_ARRAYS`)."""
    return {"bootstrap": _bootstrap(stats.get("bootstrap")), "pbo": _pbo(stats.get("pbo"), stats["periods_per_year"]),
            "dsr": dsr_curve(stats.get("moments"), trial_stats["n_trials"], trial_stats["sharpe_variance"]),
            "walk_forward": _walk_forward(returns, stats.get("walk"))}


def histogram(values: np.ndarray, bins: int = BINS) -> dict:
    """``edges`` (bins + 1) and ``counts`` of the finite ``values``."""
    finite = np.asarray(values, dtype=float)
    finite = finite[np.isfinite(finite)]
    counts, edges = np.histogram(finite, bins=bins)
    return {"edges": edges.tolist(), "counts": counts.tolist()}


def _bootstrap(boot: dict | None) -> dict | None:
    if not boot or boot.get("samples") is None:
        return None
    return {**histogram(boot["samples"]), "sharpe": boot["sharpe"], "low": boot["low"], "high": boot["high"],
            "confidence": boot["confidence"]}


def _even(n: int, most: int = MAX_POINTS) -> np.ndarray:
    """At most ``most`` evenly spaced positions of ``n`` (all of them when there are few)."""
    return np.arange(n) if n <= most else np.unique(np.linspace(0, n - 1, most).round().astype(int))


def _pbo(pbo: dict | None, periods_per_year: int) -> dict | None:
    if not pbo or pbo.get("logits") is None:
        return None
    picked = _even(len(pbo["is_sharpe"]))
    return {"logits": histogram(pbo["logits"]),
            "is_sharpe_annual": (np.asarray(pbo["is_sharpe"])[picked] * math.sqrt(periods_per_year)).tolist(),
            "oos_rank": np.asarray(pbo["oos_rank"])[picked].tolist(), "shown": int(len(picked)),
            "of": int(len(pbo["is_sharpe"]))}


def dsr_curve(moments: dict | None, n_trials: int, sharpe_variance: float) -> dict | None:
    """The deflated Sharpe ratio of the headline as if it had been chosen from 1 to about four
    times as many trials as it was (at least 100), on a geometric grid that includes ``n_trials``."""
    if not moments:
        return None
    n_trials = max(int(n_trials), 1)
    grid = np.unique(np.r_[np.geomspace(1, max(4 * n_trials, 100), 24).round().astype(int), n_trials])
    args = (moments["sharpe"], moments["n_obs"], moments["skew"], moments["kurtosis"])
    values = [st.deflated_sharpe_ratio(*args, int(n), sharpe_variance) for n in grid]
    return {"n_trials": grid.tolist(), "dsr": [v if math.isfinite(v) else None for v in values], "actual": n_trials}


def _walk_forward(returns: pd.Series, walk: dict | None) -> dict | None:
    if not walk or walk.get("returns") is None or walk["returns"].empty:
        return None
    chosen = walk["returns"]
    headline = returns.reindex(chosen.index).fillna(0.0)
    growth = pd.DataFrame({"walk_forward": (1 + chosen).cumprod(), "headline": (1 + headline).cumprod()})
    shown = growth.iloc[_even(len(growth))]
    return {"dates": [f"{d:%Y-%m-%d}" if hasattr(d, "strftime") else str(d) for d in shown.index],
            "walk_forward": shown["walk_forward"].tolist(), "headline": shown["headline"].tolist()}

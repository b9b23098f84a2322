"""The evidence a run's promotion gate weighs, from plain series and numbers.

The validation stage gathers a run's returns, its trials and its cost-stressed backtests;
these functions turn them into the statistics, the gate's inputs and the record written to
``validation.json``. They know nothing of run folders or parameters files.
"""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd

from research_lib.units import SESSIONS_PER_YEAR
from research_lib.validation import _sweep_store as sc
from research_lib.validation import figures
from research_lib.validation import statistics as st
from research_lib.validation.metrics import headline_metrics

__all__ = ["LATE_START_SHARE", "PBO_MAX_BOOKS", "analyst_is_claude", "gate_inputs", "judged_returns",
           "llm_summary", "run_statistics", "sweep_pbo_span",
           "sweep_statistics", "trial_matrix", "validation_record"]


def analyst_is_claude(llm_report: dict | None) -> bool:
    """Whether the run's views came from Claude (not the offline analyst, not absent)."""
    return bool(llm_report) and "not Claude" not in llm_report.get("analyst", "not Claude")


def judged_returns(returns: pd.Series, *, after_cutoff_only: bool, cutoff: dt.date,
                   model: str) -> tuple[pd.Series, str]:
    """The returns the gate judges, and how they were chosen: all of them, or (a strategy trading
    on Claude's views) only those after the model's knowledge cutoff, before which Claude may remember."""
    if not after_cutoff_only:
        return returns, "every session of the backtest"
    cutoff = pd.Timestamp(cutoff)
    return returns[returns.index > cutoff], f"sessions after {model}'s knowledge cutoff {cutoff.date()}"


def trial_matrix(trials: dict[str, tuple[dict, pd.Series]], index: pd.DatetimeIndex) -> pd.DataFrame:
    """The trials' daily returns over the judged sessions; a trial not yet trading (warm-up) is in cash."""
    return pd.DataFrame({name: r for name, (_, r) in trials.items()}).reindex(index).fillna(0.0)


def run_statistics(returns: pd.Series, trial_returns: pd.DataFrame, trial_stats: dict, thresholds,
                   benchmark: pd.Series, periods_per_year: int = SESSIONS_PER_YEAR) -> dict:
    """Moments, PSR, DSR, MinTRL against the best unskilled trial, PBO, bootstrap and walk-forward
    selection; each is None when the history is too short for it (and its criterion then fails)."""
    def attempt(compute):
        try:
            return compute()
        except ValueError:
            return None

    n_trials = max(trial_stats["n_trials"], 1)
    best_unskilled = st.expected_max_sharpe(n_trials, trial_stats["sharpe_variance"])
    moments = attempt(lambda: st.sharpe_moments(returns))
    out = {"moments": moments, "expected_max_sharpe": best_unskilled, "psr": None, "dsr": None,
           "min_track_record": None}
    if moments:
        args = (moments["sharpe"], moments["n_obs"], moments["skew"], moments["kurtosis"])
        out["psr"] = attempt(lambda: st.probabilistic_sharpe_ratio(*args))
        out["dsr"] = attempt(lambda: st.deflated_sharpe_ratio(*args, n_trials, trial_stats["sharpe_variance"]))
        trl = attempt(lambda: st.minimum_track_record_length(
            moments["sharpe"], moments["skew"], moments["kurtosis"], benchmark_sharpe=best_unskilled,
            confidence=thresholds.track_record_confidence))
        out["min_track_record"] = None if trl is None or trl == float("inf") else trl
    out["pbo"] = attempt(lambda: st.probability_of_backtest_overfitting(trial_returns))
    out["bootstrap"] = attempt(lambda: st.bootstrap_sharpe_interval(returns, periods_per_year=periods_per_year))
    # Three years to choose on, one to hold; halved for short histories (e.g. the smoke scenario).
    n = len(trial_returns)
    year = periods_per_year
    train, test = (3 * year, year) if n >= 4 * year else (n // 2, max(n // 6, 1))
    out["walk"] = attempt(lambda: st.walk_forward_selection(trial_returns, max(train, 2), test))
    out["by_year"] = st.breakdown_by_year(returns, periods_per_year).reset_index().to_dict("records")
    out["by_regime"] = st.breakdown_by_regime(returns, benchmark, periods_per_year=periods_per_year
                                              ).reset_index().to_dict("records")
    out["periods_per_year"] = periods_per_year
    out["figures"] = figures.validation_figures(returns, out, trial_stats)
    return out


LATE_START_SHARE = 0.2  # a configuration starting later than this share of the history is left out of PBO
PBO_MAX_BOOKS = 2_000  # beyond this many returns columns (books), PBO ranks a seeded random sample of them
PBO_SAMPLE_SEED = 0


def sweep_pbo_span(sweep_returns: pd.DataFrame, late_start_share: float = LATE_START_SHARE) -> pd.DataFrame:
    """The sessions and books (returns columns) PBO is computed on.

    Before its first trade a book has no return (NaN: warm-up, in cash); counting those sessions
    as zeros would rank a slow configuration by its warm-up, so PBO starts where every book it
    counts has started. So that one late starter cannot shrink the span for all, a book whose
    first trade comes more than ``late_start_share`` of the sessions (from the earliest first
    trade to the end) after the earliest first trade is left out: the span keeps at least
    ``1 - late_start_share`` of those sessions. The span then runs from the latest first trade of
    the books kept to the end.
    """
    start, kept = _span_positions(sc.column_moments(sweep_returns).first, len(sweep_returns), late_start_share)
    return sweep_returns.iloc[start:, kept]


def _span_positions(first: np.ndarray, n_sessions: int, late_start_share: float) -> tuple[int, np.ndarray]:
    """`sweep_pbo_span`'s first row and column positions, from each column's first row with a return."""
    trading = first < n_sessions
    if not trading.any():
        return 0, np.zeros(0, dtype=int)
    earliest = int(first.min())
    kept = np.flatnonzero(first - earliest <= late_start_share * (n_sessions - earliest))
    return int(first[kept].max()), kept


def _pbo_sample(kept: np.ndarray, limit: int, seed: int) -> np.ndarray:
    """At most ``limit`` of the ``kept`` column positions, drawn at random with ``seed`` (in their order)."""
    if len(kept) <= limit:
        return kept
    return kept[np.sort(np.random.default_rng(seed).choice(len(kept), size=limit, replace=False))]


def sweep_statistics(sweep_returns: pd.DataFrame, n_configurations: int, moments: dict | None, *,
                     max_pbo_books: int | None = None, seed: int = PBO_SAMPLE_SEED,
                     periods_per_year: int = SESSIONS_PER_YEAR) -> dict:
    """The skeptic over the sweep the headline strategy was chosen from.

    Memory stays bounded however wide the sweep: the (float32) matrix is read a block of columns at
    a time for the moments, and only the books PBO ranks are copied (at most ``max_pbo_books``).

    Parameters
    ----------
    sweep_returns : sessions x the sweep's books that trade (a book is a configuration, or a
        configuration and a symbol for per-symbol books; daily returns, NaN before its first trade).
    n_configurations : books in the sweep (the rows of its table), those that never trade included.
    moments : the headline strategy's `statistics.sharpe_moments` (None: too short to judge).
    max_pbo_books, seed : PBO's time and memory grow with the books it ranks; beyond this many
        (after `sweep_pbo_span`; None: ``PBO_MAX_BOOKS``, 2,000, about a second and 130 MB over
        2,000 sessions), it ranks a random sample of them drawn with ``seed``. DSR always counts
        every book.

    Returns
    -------
    dict
        ``n_configurations`` (books, as the table's rows), ``n_trading``, ``n_never_traded``;
        ``n_trials`` and ``sharpe_variance`` (of the per-period Sharpe ratios, ddof=1, of each book
        from its first trade); ``expected_max_sharpe_annual`` and ``dsr`` (the headline's deflated
        Sharpe against them); ``pbo`` (CSCV over `sweep_pbo_span`, without the logits; None with
        ``pbo_error`` when the span is too short or fewer than two books trade), ``pbo_sessions``,
        ``pbo_first``, ``pbo_last``, ``pbo_configurations`` (the books PBO ranks), ``pbo_late_starts``
        (left out by the span's rule), ``pbo_late_start_share``, ``pbo_max_books`` (the cap),
        ``pbo_sampled_from`` (how many it was sampled from, None when not sampled) and ``pbo_seed``.
        When no book has a Sharpe ratio, ``n_trials`` is 0 and DSR, PBO and the expected best Sharpe
        are None.
    """
    columns = sc.column_moments(sweep_returns)
    usable = columns.sharpe_usable()
    sharpes = columns.mean[usable] / columns.std[usable]
    n_trials = len(sharpes)
    variance = float(np.var(sharpes, ddof=1)) if n_trials > 1 else 0.0
    dsr = expected_max = None
    if n_trials:
        expected_max = float(st.expected_max_sharpe(n_trials, variance) * periods_per_year ** 0.5)
        if moments:
            try:
                dsr = st.deflated_sharpe_ratio(moments["sharpe"], moments["n_obs"], moments["skew"],
                                               moments["kurtosis"], n_trials, variance)
            except ValueError:
                dsr = None
    start, kept = _span_positions(columns.first, len(sweep_returns), LATE_START_SHARE)
    cap = max_pbo_books or PBO_MAX_BOOKS
    ranked_columns = _pbo_sample(kept, cap, seed)
    span_index = sweep_returns.index[start:]
    if not n_trials:
        pbo, pbo_error = None, "no configuration trades"
    else:
        try:
            ranked = sweep_returns.iloc[start:, ranked_columns]  # the only copy: at most `cap` books
            pbo, pbo_error = st.probability_of_backtest_overfitting(ranked), None
        except ValueError as error:
            pbo, pbo_error = None, str(error)
    return {"n_configurations": int(n_configurations), "n_trading": int(sweep_returns.shape[1]),
            "n_never_traded": int(n_configurations - sweep_returns.shape[1]), "n_trials": n_trials,
            "sharpe_variance": variance, "dsr": dsr, "expected_max_sharpe_annual": expected_max,
            "pbo": pbo and {k: v for k, v in pbo.items() if k not in st.PBO_ARRAYS}, "pbo_error": pbo_error,
            "pbo_sessions": len(span_index), "pbo_first": _session(span_index[0]) if len(span_index) else None,
            "pbo_last": _session(span_index[-1]) if len(span_index) else None,
            "pbo_configurations": int(len(ranked_columns)),
            "pbo_late_starts": int((columns.count > 0).sum() - len(kept)),
            "pbo_late_start_share": LATE_START_SHARE, "pbo_max_books": int(cap),
            "pbo_sampled_from": int(len(kept)) if len(ranked_columns) < len(kept) else None,
            "pbo_seed": seed}


def _session(label) -> str:
    """A session label as text: the date of a timestamp, else the label itself."""
    return str(label.date()) if isinstance(label, pd.Timestamp) else str(label)


def gate_inputs(returns: pd.Series, stats: dict, trial_stats: dict, stress: dict, thresholds) -> dict:
    """What the gate's criteria compare with their thresholds (``promotion.evaluate_gate``), annualized
    on the sessions a year `run_statistics` was given."""
    headline = headline_metrics(returns, stats["periods_per_year"])
    return {"sharpe": headline["sharpe"], "win_rate": headline["win_rate"], "max_drawdown": headline["max_drawdown"],
            "deflated_sharpe": stats["dsr"], "pbo": (stats["pbo"] or {}).get("pbo"), "n_obs": len(returns),
            "min_track_record": stats["min_track_record"], "n_trials": trial_stats["n_trials"],
            "stress_cagr": stress[f"{thresholds.cost_stress_multiple:g}x"]["cagr"]}


def llm_summary(llm_report: dict | None, metrics: dict) -> dict | None:
    """The analyst's part of the record: who it was, what it cost, and the numbers around its cutoff."""
    if not llm_report or "analyst" not in llm_report:
        return None
    return {"analyst": llm_report["analyst"], "cost_usd": llm_report.get("cost_usd"),
            "usd_per_signal": llm_report.get("usd_per_signal"), "views": llm_report.get("views"),
            "by_cutoff": metrics.get("llm_signal_by_cutoff"), "strategy_by_cutoff": metrics.get("strategy_by_cutoff")}


def validation_record(*, strategy: str, run_id: str, judged_on: str, gate_stats: dict, verdict: dict,
                      thresholds, stats: dict, trial_stats: dict, trial_names: list[str], stress: dict,
                      llm: dict | None, provenance: dict, sweep: dict | None = None) -> dict:
    """``validation.json``: the gate's inputs and verdict and every statistic behind them; ``sweep``:
    the statistics over the sweep the strategy was chosen from (`sweep_statistics`), when one is named."""
    pbo, walk = stats["pbo"] or {}, stats["walk"]
    year = stats["periods_per_year"]
    return {
        "strategy": strategy, "run_id": run_id, "judged_on": judged_on, "gate_stats": gate_stats,
        "verdict": verdict, "thresholds": thresholds.model_dump(), "moments": stats["moments"], "psr": stats["psr"],
        "trials": {**trial_stats, "this_run": sorted(trial_names), "expected_max_sharpe_annual":
                   stats["expected_max_sharpe"] * year ** 0.5},
        "pbo": {k: v for k, v in pbo.items() if k not in st.PBO_ARRAYS},
        "bootstrap": stats["bootstrap"] and {k: v for k, v in stats["bootstrap"].items() if k != "samples"},
        "cost_stress": stress,
        "by_year": stats["by_year"],
        "by_regime": stats["by_regime"],
        "sessions_per_year": year,
        "walk_forward": walk and {"sharpe_annual": walk["sharpe"] * year ** 0.5,
                                  "sessions": len(walk["returns"]), "choices": walk["choices"]},
        "figures": stats["figures"],
        "llm": llm,
        "sweep": sweep,
        "provenance": provenance,
    }

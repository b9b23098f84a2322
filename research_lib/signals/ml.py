"""From prices to out-of-sample ML signals: the dataset, the walk-forward fits, the report.

The signal frame is wide: rows are dates, columns symbols, values the model's score
(higher = expected to outperform over the label horizon). Scores exist only for dates
inside walk-forward test blocks.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from threadpoolctl import threadpool_limits

from research_lib.compute import map_tasks, parallelism
from research_lib.signals.evaluation import (
    ic_decay,
    ic_summary,
    information_coefficient,
    quantile_returns,
    quantile_spread_summary,
    signal_turnover,
)
from research_lib.signals.labels import excess_forward_returns, forward_returns
from research_lib.signals.models import WalkForwardModel, mean_rank_ic
from research_lib.signals.settings import MLConfig


def labels_for(features: pd.DataFrame, close: pd.DataFrame, ml: MLConfig, lag: int = 1) -> pd.Series:
    """Forward returns over ``ml.horizon_days`` from the close ``lag`` sessions after each
    date (the first close a decision can trade at), aligned to the feature panel."""
    symbols = features.index.get_level_values("symbol").unique()
    make = excess_forward_returns if ml.label == "excess" else forward_returns
    return make(close[list(symbols)], ml.horizon_days, lag).stack(future_stack=True).reindex(features.index).rename("label")


def fit_models(features: pd.DataFrame, labels: pd.Series, ml: MLConfig, lag: int = 1) -> dict[str, WalkForwardModel]:
    """One walk-forward fit per configured model; a label spans ``lag + horizon`` sessions
    after its date, and that is what purging keeps out of each test block."""
    return {name: WalkForwardModel(name, ml.test_days, ml.min_train_days, lag + ml.horizon_days, ml.embargo_days,
                                   ml.train_step_days, ml.inner_splits, ml.random_state, ml.n_jobs).fit(features, labels)
            for name in ml.models}


def signal_frame(model: WalkForwardModel) -> pd.DataFrame:
    """Out-of-sample scores as dates x symbols."""
    return model.predictions_.unstack("symbol").rename_axis(columns=None)


def evaluate_signal(scores: pd.DataFrame, close: pd.DataFrame, horizon: int, n_quantiles: int = 5,
                    lag: int = 1) -> tuple[dict, pd.Series]:
    """IC and rank IC, IC decay, quantile spreads and turnover of ``scores``, against the
    returns a trade made ``lag`` sessions after each date would earn.

    Returns the summary (JSON-ready) and the daily rank IC series.
    """
    close = close[scores.columns].loc[scores.index[0]:]
    labels = forward_returns(close, horizon, lag).loc[scores.index]
    rank_ic = information_coefficient(scores, labels, method="spearman")
    summary = {
        "ic": ic_summary(information_coefficient(scores, labels, method="pearson"), horizon),
        "rank_ic": ic_summary(rank_ic, horizon),
        "ic_decay": ic_decay(scores, close, lag=lag).reset_index().to_dict(orient="records"),
        "quantiles": quantile_spread_summary(quantile_returns(scores, labels, n_quantiles), horizon),
        "turnover": signal_turnover(scores, step=horizon, n_quantiles=n_quantiles),
    }
    return summary, rank_ic


def permutation_importance(model: WalkForwardModel, features: pd.DataFrame, labels: pd.Series,
                           n_repeats: int = 3, random_state: int = 0) -> pd.DataFrame:
    """Drop in mean rank IC on the latest test block with labels when a feature is shuffled.

    Each feature's column is permuted across that block's rows ``n_repeats`` times. Returns
    a frame indexed by feature with ``mean`` and ``std`` of the drop, largest first.

    The features are scored in the model's ``n_jobs`` processes (or on the Dask workers of the
    compute backend), each predicting on one thread:
    the same numbers as one process (the permutations are drawn here, in order), and no
    threads waiting on each other for every tree when other work shares the cores.
    """
    labelled = [b for b in model.fitted_blocks_ if labels.loc[b[1]].notna().sum() >= 20]
    if not labelled:
        raise ValueError("no walk-forward test block has labels yet; importance needs out-of-sample outcomes.")
    estimator, index, used = labelled[-1]
    X, y = features.loc[index, used], labels.loc[index]
    rng = np.random.default_rng(random_state)
    shuffles = [(column, [rng.permutation(X[column].to_numpy()) for _ in range(n_repeats)]) for column in used]
    workers = parallelism(model.n_jobs)  # n_jobs=-1 is every core, as in scikit-learn; or the Dask workers
    jobs = [[(None, [None])], *(shuffles[i::2 * workers] for i in range(2 * workers))]  # the base IC first
    scored = dict(pair for chunk in map_tasks(_shuffled_ics, jobs, shared={"estimator": estimator, "X": X, "y": y},
                                              n_jobs=workers) for pair in chunk)
    base = scored.pop(None)[0]
    drops = {column: [base - ic for ic in scored[column]] for column in used}
    table = pd.DataFrame({"mean": {k: np.mean(v) for k, v in drops.items()}, "std": {k: np.std(v) for k, v in drops.items()}})
    return table.sort_values("mean", ascending=False)


def _shuffled_ics(shuffles: list[tuple[str | None, list[np.ndarray | None]]], *, estimator, X: pd.DataFrame,
                  y: pd.Series) -> list[tuple[str | None, list[float]]]:
    """For each ``(column, values)``: the mean rank IC of ``estimator`` on ``X`` with ``column``
    replaced by each of ``values`` (column None: ``X`` as it is), predicting on one thread."""
    out = []
    with threadpool_limits(limits=1):
        for column, values in shuffles:
            shuffled, ics = X.copy(), []
            for permuted in values:
                if column is not None:
                    shuffled[column] = permuted
                ics.append(mean_rank_ic(pd.Series(estimator.predict(shuffled), index=X.index), y))
            out.append((column, ics))
    return out

"""Walk-forward machine-learning signals with purging, an embargo and inner tuning.

Samples are ``(date, symbol)`` rows. The label of date ``s`` spans sessions ``s+1 .. s+h``
(``h`` = ``horizon``). Test blocks are consecutive runs of ``test_days`` sessions; a block
starting at session ``a`` is predicted by a model trained only on dates ``s`` with
``s + h + embargo_days < a + 1``, i.e. whose labels ended (plus an embargo) before the
first test label starts. Hyperparameters are chosen inside each training window by the
same purged walk-forward split, scored by the mean daily rank IC. So every prediction
dated ``t`` uses only data known at ``t``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Literal

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, clone
from sklearn.ensemble import HistGradientBoostingRegressor
from sklearn.impute import SimpleImputer
from sklearn.linear_model import Ridge
from sklearn.model_selection import ParameterGrid
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

from research_lib.compute import map_tasks
from research_lib.signals.evaluation import information_coefficient

ModelName = Literal["ridge", "hgbr"]


def make_estimator(name: str, random_state: int = 0):
    """A fresh scikit-learn regressor and its default hyperparameter grid."""
    if name == "ridge":
        estimator = make_pipeline(SimpleImputer(strategy="median"), StandardScaler(), Ridge())
        return estimator, {"ridge__alpha": [1.0, 100.0, 10_000.0, 1_000_000.0]}
    if name == "hgbr":
        # No early stopping: its validation split is random, not purged, so it would peek at
        # labels that overlap the training rows.
        estimator = HistGradientBoostingRegressor(max_iter=100, learning_rate=0.05, min_samples_leaf=200,
                                                  l2_regularization=1.0, early_stopping=False,
                                                  random_state=random_state)
        return estimator, {"max_leaf_nodes": [7, 31]}
    raise ValueError(f"unknown model {name!r}; valid models: ['ridge', 'hgbr']")


@dataclass(frozen=True)
class PurgedWalkForward:
    """Walk-forward splits over session dates with purging and an embargo (see module doc).

    Parameters
    ----------
    test_days : sessions per test block.
    min_train_days : sessions before the first test block.
    horizon : label length in sessions (training labels must end before test labels start).
    embargo_days : extra sessions dropped between the last training label and the test block.
    max_train_days : if set, a rolling window of at most this many training sessions.
    """

    test_days: int = 252
    min_train_days: int = 1260
    horizon: int = 21
    embargo_days: int = 5
    max_train_days: int | None = None

    def blocks(self, n_sessions: int) -> Iterator[tuple[int, int, int, int]]:
        """(train_start, train_end, test_start, test_end) session positions, ends exclusive."""
        for test_start in range(self.min_train_days, n_sessions, self.test_days):
            train_end = test_start - self.horizon - self.embargo_days
            if train_end <= 0:
                continue
            train_start = 0 if self.max_train_days is None else max(0, train_end - self.max_train_days)
            yield train_start, train_end, test_start, min(test_start + self.test_days, n_sessions)

    def split(self, dates: pd.Index, calendar: np.ndarray | None = None) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Row positions (train, test) for samples dated ``dates`` (repeats allowed).

        Sessions are counted on ``calendar`` (sorted session dates; default: the distinct
        ``dates``), so a thinned sample is still purged by true session distance.
        """
        dates = np.asarray(dates)
        sessions = np.unique(dates) if calendar is None else np.asarray(calendar)
        position = np.searchsorted(sessions, dates)
        for train_start, train_end, test_start, test_end in self.blocks(int(position.max()) + 1):
            train = np.flatnonzero((position >= train_start) & (position < train_end))
            test = np.flatnonzero((position >= test_start) & (position < test_end))
            if len(train) and len(test):
                yield train, test


def _fit_predict(estimator, params: dict, X_train: pd.DataFrame, y_train: pd.Series, X_test: pd.DataFrame):
    """Fit a clone on the features that vary in the training rows; predict the test rows.

    A feature with no variation in the training window (not yet available there, e.g. the
    VIX before its history starts) carries no information: it is left out of that fit.
    Returns ``(fitted, used_columns, predictions)``.
    """
    usable = _usable(X_train)
    fitted = clone(estimator).set_params(**params).fit(X_train[usable], y_train)
    return fitted, usable, fitted.predict(X_test[usable])


def _usable(X: pd.DataFrame) -> list:
    """The columns of ``X`` that vary (see `_fit_predict`)."""
    return [c for c in X.columns if _varies(X[c])]


def _candidate_predictions(estimator, candidates: list[dict], X_train: pd.DataFrame, y_train: pd.Series,
                           X_test: pd.DataFrame) -> list[np.ndarray]:
    """The test predictions of each candidate's `_fit_predict`.

    When the candidates only set parameters of a pipeline's last step, the steps before it are
    fitted once (on the same rows, they are the same for every candidate) and only the last step
    is fitted per candidate: the same arrays reach it, so the same predictions come out. Ridge's
    imputer and scaler were most of its tuning time.
    """
    last = estimator.steps[-1][0] if isinstance(estimator, Pipeline) else None
    if last is None or len(estimator.steps) < 2 or not all(k.startswith(f"{last}__") for c in candidates for k in c):
        return [_fit_predict(estimator, params, X_train, y_train, X_test)[2] for params in candidates]
    usable = _usable(X_train)
    before = clone(Pipeline(estimator.steps[:-1]))
    train, test = before.fit_transform(X_train[usable], y_train), before.transform(X_test[usable])
    final = estimator.steps[-1][1]
    prefix = len(last) + 2
    return [clone(final).set_params(**{k[prefix:]: v for k, v in params.items()}).fit(train, y_train).predict(test)
            for params in candidates]


def _varies(column: pd.Series) -> bool:
    """Whether ``column`` holds at least two distinct values, NaN aside (``nunique() >= 2``).

    For numbers that is "the smallest is below the largest", found without the hash table
    ``nunique`` builds (a tenth of the walk-forward's time went there).
    """
    if not (isinstance(column.dtype, np.dtype) and column.dtype.kind in "fiu"):
        return column.nunique() >= 2
    values = column.to_numpy()
    values = values[~np.isnan(values)] if column.dtype.kind == "f" else values
    return bool(values.size) and bool(values.min() < values.max())


def mean_rank_ic(predictions: pd.Series, labels: pd.Series) -> float:
    """Mean over dates of the cross-sectional Spearman correlation (long panels)."""
    ic = information_coefficient(predictions.unstack(), labels.unstack(), method="spearman", min_symbols=3)
    return float(ic.mean()) if ic.notna().any() else float("nan")


class WalkForwardModel(BaseEstimator):
    """Fit ``model`` walk-forward and keep its out-of-sample predictions.

    Learned attributes: ``predictions_`` (Series over every test row, index (date, symbol)),
    ``folds_`` (one dict per block: dates, chosen hyperparameters, train rows, test IC),
    ``fitted_blocks_`` (per block: the fitted estimator, its test rows and the features it used).
    """

    def __init__(self, model: ModelName = "hgbr", test_days: int = 252, min_train_days: int = 1260,
                 horizon: int = 21, embargo_days: int = 5, train_step_days: int = 5, inner_splits: int = 2,
                 random_state: int = 0, n_jobs: int = 1):
        self.model = model
        self.test_days = test_days
        self.min_train_days = min_train_days
        self.horizon = horizon
        self.embargo_days = embargo_days
        self.train_step_days = train_step_days
        self.inner_splits = inner_splits
        self.random_state = random_state
        self.n_jobs = n_jobs

    def fit(self, X: pd.DataFrame, y: pd.Series) -> WalkForwardModel:
        """``X``: features indexed by (date, symbol); ``y``: labels on the same index (NaN allowed).

        Blocks are fitted in ``n_jobs`` processes (or on the Dask workers of the compute
        backend, `research_lib.compute`), each on one thread; results do not depend on where.
        """
        if not X.index.equals(y.index):
            raise ValueError("X and y must share the same (date, symbol) index; align them with y.reindex(X.index).")
        estimator, grid = make_estimator(self.model, self.random_state)
        dates = X.index.get_level_values("date")
        sessions = np.unique(np.asarray(dates))
        thinned = sessions[:: self.train_step_days]
        outer = PurgedWalkForward(self.test_days, self.min_train_days, self.horizon, self.embargo_days)
        blocks = []
        for train, test in outer.split(dates):
            train = train[np.isin(dates[train], thinned) & y.iloc[train].notna().to_numpy()]
            blocks.append((train, test))
        if not blocks:
            raise ValueError(f"no walk-forward fold fits in {len(sessions)} sessions: need more than "
                             f"min_train_days ({self.min_train_days}) sessions; lower it or load more history.")
        inner = {"calendar": sessions, "horizon": self.horizon, "embargo_days": self.embargo_days,
                 "inner_splits": self.inner_splits}
        fitted_blocks = map_tasks(_fit_block, blocks, shared={"estimator": estimator, "grid": grid, "X": X, "y": y,
                                                              **inner},
                                  n_jobs=self.n_jobs, desc=f"{self.model} walk-forward blocks", unit="block")

        predictions, self.folds_, self.fitted_blocks_ = [], [], []
        for (train, test), (params, fitted, used, predicted) in zip(blocks, fitted_blocks):
            predictions.append(pd.Series(predicted, index=X.index[test], name=self.model))
            self.fitted_blocks_.append((fitted, X.index[test], used))
            self.folds_.append({
                "train_start": str(dates[train].min().date()), "train_end": str(dates[train].max().date()),
                "test_start": str(dates[test].min().date()), "test_end": str(dates[test].max().date()),
                "train_rows": int(len(train)), "params": params,
                "unused_features": [c for c in X.columns if c not in used],
                "test_rank_ic": mean_rank_ic(predictions[-1], y.iloc[test]),
            })
        self.predictions_ = pd.concat(predictions)
        return self


def _fit_block(block: tuple[np.ndarray, np.ndarray], *, estimator, grid: dict, X: pd.DataFrame, y: pd.Series,
               calendar: np.ndarray, horizon: int, embargo_days: int, inner_splits: int):
    """Tune inside the training window, refit on all of it, predict the test block; ``block`` is
    the (train, test) row positions in ``X`` and ``y``.

    One thread (OpenMP start-up costs more than it saves on these sizes, and results then
    do not depend on where the block runs). Returns ``(params, fitted, used_columns, predictions)``.
    """
    train, test = block
    X_train, y_train, X_test = X.iloc[train], y.iloc[train], X.iloc[test]
    with threadpool_limits(limits=1):
        params = _tune(estimator, grid, X_train, y_train, calendar, horizon, embargo_days, inner_splits)
        fitted, used, predicted = _fit_predict(estimator, params, X_train, y_train, X_test)
    return params, fitted, used, predicted


def _tune(estimator, grid: dict, X: pd.DataFrame, y: pd.Series, calendar: np.ndarray, horizon: int,
          embargo_days: int, inner_splits: int) -> dict:
    """Pick hyperparameters by purged walk-forward CV inside the training window only."""
    candidates = list(ParameterGrid(grid))
    dates = X.index.get_level_values("date")
    n_sessions = int(np.searchsorted(calendar, np.asarray(dates).max())) + 1
    block = max(n_sessions // (inner_splits + 2), 1)
    inner = PurgedWalkForward(block, n_sessions - inner_splits * block, horizon, embargo_days)
    splits = list(inner.split(dates, calendar))
    if len(candidates) == 1 or not splits:
        return candidates[0]
    ics = [[] for _ in candidates]
    for tr, te in splits:
        predicted = _candidate_predictions(estimator, candidates, X.iloc[tr], y.iloc[tr], X.iloc[te])
        for candidate_ics, values in zip(ics, predicted):
            candidate_ics.append(mean_rank_ic(pd.Series(values, index=X.index[te]), y.iloc[te]))
    scores = [np.nanmean(v) if np.isfinite(v).any() else np.nan for v in ics]
    return candidates[int(np.nanargmax(scores))] if np.isfinite(scores).any() else candidates[0]

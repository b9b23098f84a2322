"""Signals: labels, walk-forward models and how well their scores predict.

- ``labels``: forward returns, the targets a model learns (computed from prices after ``t``).
- ``models``: purged walk-forward cross-validation and the out-of-sample scores it yields.
- ``evaluation``: information coefficients, quantile spreads and turnover of any score panel.
- ``ml``: the machine-learning signal from features to out-of-sample scores.
"""

from research_lib.signals.evaluation import (ic_decay, ic_summary, information_coefficient, quantile_returns,
                                             quantile_spread_summary, signal_turnover)
from research_lib.signals.labels import excess_forward_returns, forward_returns
from research_lib.signals.ml import (compute_features, evaluate_signal, feature_inputs, fit_models, labels_for,
                                     permutation_importance, signal_frame)
from research_lib.signals.models import PurgedWalkForward, WalkForwardModel, make_estimator, mean_rank_ic

__all__ = ["PurgedWalkForward", "WalkForwardModel", "compute_features", "evaluate_signal", "excess_forward_returns",
           "feature_inputs", "fit_models", "forward_returns", "ic_decay", "ic_summary", "information_coefficient",
           "labels_for", "make_estimator", "mean_rank_ic", "permutation_importance", "quantile_returns",
           "quantile_spread_summary", "signal_frame", "signal_turnover"]

"""Signals: labels, walk-forward models and how well their scores predict.

- ``labels``: forward returns, the targets a model learns (computed from prices after ``t``).
- ``models``: purged walk-forward cross-validation and the out-of-sample scores it yields.
- ``evaluation``: information coefficients, quantile spreads and turnover of any score panel.
- ``ml``: the machine-learning signal from features to out-of-sample scores.
- ``settings``: its parameters (`MLConfig`, ``params: ml``).

The names below are imported on first use: scikit-learn takes a while to import, and
`research_lib.config` needs only the light ``settings``.
"""

from research_lib._lazy import lazy_exports

_WHERE = {
    "ic_decay": "evaluation", "ic_summary": "evaluation", "information_coefficient": "evaluation",
    "quantile_returns": "evaluation", "quantile_spread_summary": "evaluation", "signal_turnover": "evaluation",
    "excess_forward_returns": "labels", "forward_returns": "labels",
    "evaluate_signal": "ml", "fit_models": "ml", "labels_for": "ml", "permutation_importance": "ml",
    "signal_frame": "ml",
    "PurgedWalkForward": "models", "WalkForwardModel": "models", "make_estimator": "models", "mean_rank_ic": "models",
    "MLConfig": "settings", "ModelName": "settings",
}

__all__ = sorted(_WHERE)


__getattr__, __dir__ = lazy_exports(__name__, _WHERE)

"""Stage 03 (``03_fit_ml_signals``): walk-forward ML models, their out-of-sample scores and report."""

from __future__ import annotations

import pandas as pd

from research_lib._io import write_parquet
from research_lib.stages.folder import RunFolder, produces

__all__ = ["fit_ml_signals", "make_ml_signals"]

PREDICTIONS_FILE = "ml_predictions.parquet"
IC_FILE = "ic_by_date.parquet"


def fit_ml_signals(folder: RunFolder) -> dict:
    """Fit every configured model walk-forward; save signals, predictions and the evaluation.

    Returns ``{"signals", "models", "report", "importance", "ic_by_date"}``.
    """
    # scikit-learn is imported here, when a model is fitted, so that light stages start fast
    from research_lib.signals import evaluate_signal, fit_models, labels_for, permutation_importance, signal_frame

    config = folder.config
    close = folder.prices["close"]
    features = folder.features
    lag = config.backtest.execution_lag_sessions
    labels = labels_for(features, close, config.ml, lag)
    models = fit_models(features, labels, config.ml, lag)
    report = {"label": config.ml.label, "horizon_days": config.ml.horizon_days, "label_lag_sessions": lag,
              "signal_model": config.ml.signal_model, "models": {}}
    daily_ic = {}
    for name, model in models.items():
        summary, daily_ic[name] = evaluate_signal(signal_frame(model), close, config.ml.horizon_days, lag=lag)
        report["models"][name] = {**summary, "folds": model.folds_}
    importance = permutation_importance(models[config.ml.signal_model], features, labels)
    report["permutation_importance"] = importance["mean"].to_dict()
    ic_by_date = pd.DataFrame(daily_ic)
    write_parquet(pd.DataFrame({n: m.predictions_ for n, m in models.items()}), folder.path(PREDICTIONS_FILE))
    write_parquet(ic_by_date, folder.path(IC_FILE))
    folder.write_report("ml", report)
    signals = folder.save("signals", signal_frame(models[config.ml.signal_model]))
    return {"signals": signals, "models": models, "report": report, "importance": importance, "ic_by_date": ic_by_date}


@produces("signals")
def make_ml_signals(folder: RunFolder) -> pd.DataFrame:
    return fit_ml_signals(folder)["signals"]

# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 03 Fit ML signals
# Walk-forward models (regularized linear and gradient boosting) trained on past features
# and labels only, with purging and an embargo, hyperparameters tuned inside each training
# window. Out-of-sample scores go to `run_dir/signals_ml.parquet`; their evaluation to
# `run_dir/ml_report.json`.

# %% tags=["parameters"]
config_path: str = "../params/daily.yaml"  # run parameters (YAML); the pipeline passes the resolved copy
run_dir: str = "../reports/lab"  # folder with upstream artifacts; outputs go here too

# %%
import pandas as pd

from research_lib.plots import plot_ic_decay, plot_quantile_returns, plot_rolling_ic
from research_lib.stages import RunFolder, fit_ml_signals

folder = RunFolder.open(config_path, run_dir)
config = folder.config
config.ml

# %% [markdown]
# ## Fit walk-forward
# Labels: the forward return from the close of *t* to the close of *t + horizon*, in excess
# of the cross-section. Each test block is predicted by a model that never saw its labels.

# %%
result = fit_ml_signals(folder)
report = result["report"]
pd.DataFrame(report["models"][config.ml.signal_model]["folds"]).tail()

# %% [markdown]
# ## Information coefficient
# Mean daily IC and rank IC. Daily ICs of overlapping forward returns are autocorrelated, so
# the t-statistic counts an effective sample of n / horizon; Newey-West and the naive
# t-stat are shown for contrast (both too large for persistent signals).

# %%
pd.DataFrame({(m, kind): r[kind] for m, r in report["models"].items() for kind in ("ic", "rank_ic")}).round(4)

# %%
plot_rolling_ic(result["ic_by_date"]);

# %% [markdown]
# ## IC decay, quantile spreads and turnover

# %%
plot_ic_decay({m: r["ic_decay"] for m, r in report["models"].items()});

# %%
plot_quantile_returns({m: r["quantiles"] for m, r in report["models"].items()});

# %%
pd.DataFrame({m: r["turnover"] for m, r in report["models"].items()}).round(3)

# %% [markdown]
# ## Permutation feature importance
# Drop in rank IC on the latest test block when one feature is shuffled.

# %%
result["importance"].head(15).round(4)

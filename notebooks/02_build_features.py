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
# # 02 Build features
# Point-in-time features of each symbol (returns, momentum, reversal, volatility, GARCH,
# drawdown, RSI, MACD, moving averages, beta), weekly and monthly features from completed
# periods only, and market-regime features. Saved to `run_dir/features.parquet`.

# %% tags=["parameters"]
config_path: str = "../params/daily.yaml"  # run parameters (YAML); the pipeline passes the resolved copy
run_dir: str = "../reports/lab"  # folder with upstream artifacts; outputs go here too

# %%
from research_lib.plots import plot_feature_coverage
from research_lib.stages import RunFolder

folder = RunFolder.open(config_path, run_dir)
folder.config.features

# %% [markdown]
# ## Compute
# Each value dated *t* uses closes up to *t* only; symbol features are standardized
# across symbols on each date (`features.cross_section`).

# %%
features = folder.features
features.describe().T.round(3)

# %% [markdown]
# ## Coverage
# Share of symbols with a value, per feature and year: long lookbacks and the VIX (bundled
# only for 2014-2019) start late.

# %%
plot_feature_coverage(features);

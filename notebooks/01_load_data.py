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
# # 01 Load data
# Loads the run's price history (universe and benchmark) from the configured source,
# validates it, and saves it with its provenance to `run_dir/prices.parquet`.
# Offline, the source is real market history bundled in PyPI packages.

# %% tags=["parameters"]
config_path: str = "../params/daily.yaml"  # run parameters (YAML); the pipeline passes the resolved copy
run_dir: str = "../reports/lab"  # folder for this run's artifacts

# %%
from research_lib.plots import plot_prices
from research_lib.stages import RunFolder

folder = RunFolder.open(config_path, run_dir)
folder.config.data

# %% [markdown]
# ## Load and validate
# Every load is checked (missing, non-positive or stale prices, duplicated dates,
# impossible jumps) and cached as a snapshot under `data/snapshots/`.

# %%
prices = folder.prices
prices.attrs["provenance"]

# %% [markdown]
# ## What was loaded

# %%
prices["close"].describe().T.round(2)

# %%
plot_prices(prices["close"]);

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
# # 05 Build portfolio
# From signals to target weights on each rebalance date: expected returns or
# Black-Litterman views implied by the ML and analyst signals, a covariance from the trailing
# window, PyPortfolioOpt's optimizer under the portfolio constraints, an optional volatility
# target, then the pre-trade risk layer, which clamps or rejects orders that break a limit.
# The result is `weights.parquet`, which 06_validate_strategy backtests.

# %% tags=["parameters"]
config_path: str = "../params/daily.yaml"  # run parameters (YAML); the pipeline passes the resolved copy
run_dir: str = "../reports/lab"  # folder with upstream artifacts; outputs go here too

# %%
import pandas as pd

from research_lib.plots import plot_exposures, plot_frontier, plot_risk_contributions, plot_weights
from research_lib.portfolio import book_exposures
from research_lib.stages import RunFolder, build_weights, portfolio_snapshot, risk_event_tables, risk_layer_summary

folder = RunFolder.open(config_path, run_dir)
config = folder.config
{"strategy": config.strategy.name, **config.portfolio.model_dump()}

# %% [markdown]
# ## Target weights
# Who produced the signals comes first: when the analyst's views are used and no API key is
# set, they come from the offline analyst, not Claude.

# %%
built = build_weights(folder)
pd.Series(built["report"], dtype=object)

# %%
plot_weights(built["weights"], title=f"Target weights of {config.strategy.name}");

# %% [markdown]
# ## Exposure and turnover
# Gross and net exposure of the targets, and how much of the book each rebalance changes
# (before drift; 06_validate_strategy measures the traded turnover).

# %%
exposures = book_exposures(built["weights"])
plot_exposures(exposures);
exposures.describe().loc[["mean", "min", "max"]].round(3)

# %% [markdown]
# ## The last book: efficient frontier and risk contributions
# On the last rebalance date: the frontier under the portfolio constraints, every asset, and
# the chosen weights; then each asset's weight beside its share of the portfolio's variance.

# %%
snapshot = portfolio_snapshot(folder, built["weights"])
plot_frontier(snapshot["frontier"], snapshot["mu"], snapshot["cov"], snapshot["contributions"]["weight"],
              title=f"Efficient frontier on {snapshot['date']:%Y-%m-%d} ({snapshot['mu_source']})");

# %%
plot_risk_contributions(snapshot["contributions"]);

# %% [markdown]
# ## What the risk layer clamped and why
# Each rebalance's orders go through the same pre-trade checks as paper trading (limits in
# `params: risk`). A clamped order was sent smaller; a rejected one not at all.

# %%
print(risk_layer_summary(built))
tables = risk_event_tables(built)  # None when nothing was clamped or rejected: no empty tables
if tables:
    by_limit, latest = tables
    display(by_limit, latest)

# %% [markdown]
# ## Shares for the capital
# The last book in shares for `portfolio.capital` (whole shares unless `fractional_shares`).

# %%
print(f"Leftover cash: {snapshot['allocation'].leftover_cash:,.2f}")
snapshot["allocation"].shares[snapshot["allocation"].shares != 0]

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
# # 06 Validate strategy
# Backtests the target weights of 05_build_portfolio (`weights.parquet`) on the run's prices, net of
# costs, with execution one session after each decision; writes `metrics.json`, the quantstats
# tearsheet against the benchmark, and `validation.html`: the statistics that say whether the
# numbers are luck (deflated Sharpe over every trial in the workspace, backtest overfitting,
# bootstrap, costs stressed, years and regimes) and the promotion gate's verdict.

# %% tags=["parameters"]
config_path: str = "../params/daily.yaml"  # run parameters (YAML); the pipeline passes the resolved copy
run_dir: str = "../reports/lab"  # folder with upstream artifacts; outputs go here too

# %%
import pandas as pd

from research_lib.plots import plot_growth
from research_lib.reports import gate_table, metrics_table, stress_table, write_metrics, write_tearsheet
from research_lib.stages import RunFolder, backtest_strategies, tearsheet_title, validate_strategy, validation_metrics

folder = RunFolder.open(config_path, run_dir)
config, prices = folder.config, folder.prices
config.strategy

# %% [markdown]
# ## Backtest
# Target weights are decided at the close of each rebalance date from data up to that date.
# Alongside: the 12-1 momentum baseline, and the top names by ML score and by the analyst's
# views when 03 and 04 have run.

# %%
results = backtest_strategies(folder)
metrics = validation_metrics(folder, results)
metrics_table(metrics)

# %%
benchmark_returns = prices["close"][config.data.benchmark].pct_change()
plot_growth(pd.DataFrame({n: r.returns for n, r in results.items()}).join(benchmark_returns.rename(config.data.benchmark), how="left"),
            title="Growth of $1, net of costs");

# %% [markdown]
# ## Tearsheet and metrics
# The full quantstats report of the configured strategy is written to `tearsheet.html`;
# the headline numbers to `metrics.json`.

# %%
main = results[metrics["strategy_name"]]
if config.report.tearsheet:
    write_tearsheet(main.returns, benchmark_returns.rename(config.data.benchmark), folder.path("tearsheet.html"),
                    tearsheet_title(config, folder.report("llm"), metrics["strategy_name"]), config.sessions_per_year)
write_metrics(metrics, folder.path("metrics.json"))

# %% [markdown]
# ## Validation and the promotion gate
# Every configuration this run backtested (its strategies and a sweep of the momentum
# baseline) is recorded in the workspace's sweep registry; the deflated Sharpe counts them all.

# %%
validation = validate_strategy(folder, results, metrics)
print("Gate:", "PASSED" if validation["verdict"]["passed"] else f"FAILED on {', '.join(validation['verdict']['failed'])}")
gate_table(validation["verdict"])

# %%
stress_table(validation["cost_stress"])

# %%
pd.DataFrame(validation["by_regime"]).set_index("regime")

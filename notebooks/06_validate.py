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
# # 06 Validate
# Backtests the baseline strategy on the run's prices, net of costs, with execution one
# session after each decision, and writes `metrics.json` and the quantstats tearsheet
# against the benchmark.

# %% tags=["parameters"]
config_path: str = "../params/daily.yaml"  # run parameters (YAML); the pipeline passes the resolved copy
run_dir: str = "../reports/lab"  # folder with upstream artifacts; outputs go here too

# %%
from research_lib.backtest import run_backtest
from research_lib.metrics import backtest_metrics
from research_lib.plots import plot_growth
from research_lib.reports import write_metrics, write_tearsheet
from research_lib.run import open_run, run_prices, universe_and_benchmark
from research_lib.strategies import baseline_weights

config, run_dir = open_run(config_path, run_dir)
prices = run_prices(config, run_dir)
symbols, benchmark = universe_and_benchmark(config, prices)
config.strategy

# %% [markdown]
# ## Target weights
# Decided at the close of each rebalance date from closes up to that date.

# %%
weights = baseline_weights(prices["close"][symbols], config.strategy)
weights.tail(3).round(3)

# %% [markdown]
# ## Backtest

# %%
result = run_backtest(weights, prices, cost_bps=config.backtest.cost_bps,
                      execution_lag_sessions=config.backtest.execution_lag_sessions)
benchmark_returns = prices["close"][benchmark].pct_change().reindex(result.returns.index).fillna(0.0)
metrics = backtest_metrics(result.returns, result.turnover, result.costs, benchmark_returns)
write_metrics(metrics, run_dir / "metrics.json")
metrics

# %%
plot_growth(result.returns.to_frame("strategy").join(benchmark_returns.rename(benchmark)), title="Growth of $1, net of costs");

# %% [markdown]
# ## Tearsheet
# The full quantstats report is written to the run folder as `tearsheet.html`.

# %%
if config.report.tearsheet:
    print(write_tearsheet(result.returns, benchmark_returns.rename(benchmark), run_dir / "tearsheet.html", config.report.title))

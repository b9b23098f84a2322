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
# # 00 Explore
# Where a researcher starts: load prices from any source, look at them and at a feature, sweep a
# built-in strategy family over a grid and read its Sharpe surface, then look at one configuration
# the way a tearsheet would. Change the parameters below and run all cells; nothing here is written
# to a run folder (`make run` and notebooks 01-06 are the recorded research chain).

# %% tags=["parameters"]
source: str = "bundled"  # bundled (real history shipped offline), synthetic, yfinance, alpaca, polygon
symbols: str = "AAPL,JPM,KO,MSFT,XOM"  # comma-separated; crypto as BTC-USD (yfinance) or BTC/USD (alpaca)
benchmark: str = "SP500"  # compared with in the snapshot
start: str = "2008-01-01"
end: str = "2022-12-31"
cost_bps: float = 10.0  # commission per side, in basis points of the traded value

# %%
import quantstats as qs

from research_lib.data import load_prices, sessions_per_year, universe_calendar
from research_lib.features import rsi
from research_lib.plots import plot_prices, plot_sharpe_heatmap
from research_lib.sweeps import families, run_sweep

universe = [s.strip() for s in symbols.split(",") if s.strip()]
prices = load_prices(source, [*universe, benchmark], start, end)
close = prices["close"][universe]
year = sessions_per_year(universe_calendar([*universe, benchmark], "XNYS"))  # 252 New York, 365 crypto
prices.attrs["provenance"]

# %% [markdown]
# ## Prices and a feature
# Growth of $1 in each symbol, and the 14-session RSI the next sweep trades on (a feature dated
# `t` uses closes up to `t` only).

# %%
plot_prices(close);

# %%
rsi(close, 14).iloc[-252:].plot(figsize=(10, 3), title="RSI (14 sessions), the last year", ylim=(0, 100));

# %% [markdown]
# ## A sweep of a built-in family
# RSI thresholds: buy when the RSI falls below `lower`, sell when it rises above `upper`; every
# configuration on every symbol, net of costs, executed the session after the signal. The other
# families: `ma_crossover`, `bollinger_bands`, `time_series_momentum`, `cross_sectional_momentum`.

# %%
grid = {"window": [7, 14, 21], "lower": [20, 25, 30, 35], "upper": [65, 70, 75, 80]}
result = run_sweep(families.rsi_thresholds, grid, prices.drop(columns=benchmark, level=1), cost_bps=cost_bps,
                   sessions_per_year=year)
result.table.sort_values("sharpe", ascending=False).head(5)

# %%
plot_sharpe_heatmap(result, x="lower", y="upper");

# %% [markdown]
# ## One configuration, as a tearsheet shows it
# The best Sharpe of the grid, so a lucky one: chosen from the table above, its numbers are biased
# upward. Record a sweep with `research_lib.validation.registry.record_sweep` and name it in
# `validation.sweep`: the validation page then deflates the Sharpe by the number of trials and
# estimates the probability of backtest overfitting.

# %%
best = result.table["sharpe"].idxmax()
chosen = result.returns[best].dropna().rename("strategy")
print(result.table.loc[best, [*result.params, "symbol", "sharpe", "cagr", "max_drawdown"]].to_dict())
qs.plots.snapshot(chosen, title=f"RSI {result.table.loc[best, 'symbol']}, configuration {best}", show=True);

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
# # 07 Paper trade
# One paper-trading cycle of a **promoted** strategy (`params/promoted/<strategy>.yaml`, written
# by `spartan promote`): reconcile with the broker, take the promoted run's decision in force,
# run the risk layer and the kill switch, write each order's intent to the ledger, then send.
# `spartan trade` executes this notebook for one session and keeps it, with `summary.html` and
# `cycle.json`, in `reports/paper/<strategy>/<session>/`.
#
# Opened by hand it makes a **dry run** by default: everything but sending orders. The broker is
# the offline simulated one unless `broker` says `alpaca` (keys from the environment, never
# from here). `spartan status`, `spartan halt` and `spartan resume` act on the same ledger.

# %% tags=["parameters"]
strategy: str = ""  # a promoted strategy; empty: the only one promoted
broker: str = ""  # sim | alpaca; empty: the promoted parameters' paper.broker
asof: str = ""  # session to trade (YYYY-MM-DD); empty: the sim's next session, or today at Alpaca
dry_run: bool = True  # True: reconcile and report what would be sent, send nothing
report_dir: str = ""  # where cycle.json and summary.html go; empty: reports/paper/<strategy>/<session>/

# %%
import pandas as pd

from research_lib import trading
from research_lib.stages import paper
from research_lib.validation import promotion

promotion.promoted_names()

# %% [markdown]
# ## The cycle
# (Needs a promoted strategy; the tests run this notebook through `spartan trade`.)

# %%
# NBVAL_SKIP
result = paper.trade_session(strategy or None, broker or None, asof or None, dry_run, report_dir or None)
print(trading.describe_session(result))

# %% [markdown]
# ## Positions after the cycle, and the orders of the session

# %%
# NBVAL_SKIP
pd.DataFrame(result["positions"])

# %%
# NBVAL_SKIP
pd.DataFrame(result["session_orders"])

# %% [markdown]
# ## Tracking: daily P&L, and paper against the backtest of the same sessions

# %%
# NBVAL_SKIP
pd.DataFrame(result["drift"]["by_session"]).tail(10)

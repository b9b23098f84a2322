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
# # 04 Ask Claude
# Claude as an analyst: for each rebalance date, a prompt of point-in-time features (symbols
# and dates masked by default) and a structured answer per symbol: direction, conviction,
# expected excess return, confidence, rationale and risks. Answers are validated (anything
# off-schema abstains, never trades), only valid ones are cached (a re-run costs nothing),
# costed, and flagged when dated before the model's knowledge cutoff. Without an API key
# the offline analyst fills the same schema and every report says "offline analyst, not
# Claude".

# %% tags=["parameters"]
config_path: str = "../params/daily.yaml"  # run parameters (YAML); the pipeline passes the resolved copy
run_dir: str = "../reports/lab"  # folder with upstream artifacts; outputs go here too

# %%
import pandas as pd

from research_lib.stages import RunFolder, fit_llm_signals, ic_table

folder = RunFolder.open(config_path, run_dir)
folder.config.llm.model_dump(exclude={"prices", "knowledge_cutoff"})

# %% [markdown]
# ## Views
# Who answered is the first line: Claude, cached Claude answers, or the offline analyst; the
# second says how many views came back ("no views" when every symbol abstained).

# %%
llm = fit_llm_signals(folder)
report = llm["report"]
print(f"Analyst: {report.get('analyst', 'dry run, nothing sent')}\n{report.get('status', '')}")

# %%
llm["result"].views.tail(8) if llm["result"] else pd.Series(report["dry_run"])

# %% [markdown]
# ## Abstentions and their reasons
# Refusals, cut-off or malformed answers, bad replies from the API, schema violations,
# symbols named twice and unknown symbols never trade.

# %%
llm["result"].abstentions["reason"].value_counts() if llm["result"] else None

# %% [markdown]
# ## Cost
# Tokens and dollars of this run (cached answers cost nothing now), cache writes and reads as
# the API reported them; the budget stops before it is passed. The system prompt is marked for
# prompt caching only when it reaches the model's minimum cacheable length.

# %%
pd.Series({k: report.get(k) for k in ("requests", "sources", "input_tokens", "output_tokens", "cache_read_tokens",
                                      "cache_write_tokens", "cost_usd", "usd_per_signal")})

# %% [markdown]
# ## Skill, before and after the knowledge cutoff, and agreement with the ML signal
# Views dated before the model's cutoff may use hindsight (the model may know what
# happened next): only the after-cutoff IC is evidence of skill.

# %%
ic_table(report)

# %%
report.get("agreement_with_ml")

# %% [markdown]
# ## Masked versus unmasked (when `llm.ablation` is on)
# Much better unmasked IC before the cutoff suggests the model recalls history.

# %%
pd.DataFrame(report["ablation"]).drop(index=[], errors="ignore").round(4) if report.get("ablation") else "llm.ablation is off"

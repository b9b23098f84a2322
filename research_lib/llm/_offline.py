"""The offline analyst: a deterministic, rule-based stand-in that fills Claude's schema.

It exists so that the chain runs with no API key and no cache. It is NOT Claude: every
view it writes says so in its rationale, and every report that uses it is labelled
"offline analyst, not Claude". Its rule: a blend of 12-1 momentum (trend) and 5-day
idiosyncratic reversal, both cross-sectional z-scores from the same prompt table.

A symbol's view depends on its own row only, so it is the same whether the universe is asked in
one prompt or in chunks (``llm.chunk_symbols``), and whichever other symbols are asked.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd

from research_lib.llm._prompt import PromptRequest

OFFLINE_MODEL = "offline-analyst-v1"
LABEL = "offline analyst, not Claude"
_WEIGHTS = {"momentum_12_1": 0.6, "reversal_5d": 0.4}


def offline_answer(request: PromptRequest, table: pd.DataFrame, horizon_days: int) -> str:
    """The JSON text the offline analyst answers for ``request`` (same schema as Claude's)."""
    score = pd.Series(0.0, index=table.index)
    for column, weight in _WEIGHTS.items():
        if column in table.columns:
            score = score + weight * table[column].fillna(0.0)
    by_symbol = {s: a for a, s in request.aliases.items()}
    values = np.clip(score.loc[request.symbols].to_numpy(dtype=float), -3.0, 3.0).tolist()
    views = []
    for symbol, value in zip(request.symbols, values):
        direction = "neutral" if abs(value) < 0.25 else ("up" if value > 0 else "down")
        views.append({
            "symbol": by_symbol[symbol],
            "direction": direction,
            "conviction": round(min(abs(value) / 2.0, 1.0), 3),
            "expected_excess_return": round(0.01 * value, 4),
            "confidence": round(0.5 + min(abs(value), 2.0) * 0.05, 3),
            "rationale": f"{LABEL}: rule score {value:+.2f} from momentum_12_1 and reversal_5d z-scores.",
            "key_risks": ["rule-based stand-in, no judgement"],
        })
    return json.dumps({"horizon_days": horizon_days, "views": views})

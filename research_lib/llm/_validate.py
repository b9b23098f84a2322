"""Turn an answer into views, or into abstentions with reasons. Never a default trade.

Refusals, truncated answers (``max_tokens``), any other unexpected stop, malformed JSON,
answers that break the schema or answer another horizon abstain on every symbol of the
date. Inside a valid answer, a view that breaks the schema, contradicts itself (direction
"up" with a negative expected excess return, or the reverse), names a symbol outside the
prompt, or repeats one abstains alone; a symbol with no view abstains as "no view".
"""

from __future__ import annotations

import json
import re

from pydantic import ValidationError

from research_lib.llm._prompt import PromptRequest
from research_lib.llm._schema import SymbolView

_JSON = re.compile(r"\{.*\}", re.DOTALL)


COMPLETE = ("end_turn", "stop_sequence")


def parse_answer(text: str, stop_reason: str | None, request: PromptRequest,
                 horizon_days: int | None = None) -> tuple[list[dict], list[dict]]:
    """``(views, abstentions)``: views carry real symbols; abstentions are ``{symbol, reason}``.

    ``horizon_days``: the horizon asked for; an answer for another one abstains.
    """
    everyone = lambda reason: [{"symbol": s, "reason": reason} for s in request.symbols]  # noqa: E731
    if stop_reason == "refusal":
        return [], everyone("the model refused")
    if stop_reason == "max_tokens":
        return [], everyone("answer cut off at max_tokens")
    if stop_reason and stop_reason.startswith("batch_"):
        return [], everyone(f"the batch did not answer ({stop_reason.removeprefix('batch_')})")
    if stop_reason not in COMPLETE:
        return [], everyone(f"unexpected stop_reason {stop_reason!r}")
    found = _JSON.search(text or "")
    try:
        answer = json.loads(found.group(0) if found else text)
    except (json.JSONDecodeError, TypeError):
        return [], everyone(f"malformed JSON: {str(text)[:80]!r}")
    if not isinstance(answer, dict) or not isinstance(answer.get("views"), list) or set(answer) - {"horizon_days", "views"}:
        return [], everyone("schema violation: the answer must be {horizon_days, views: [...]} and nothing else")
    if horizon_days is not None and answer.get("horizon_days") != horizon_days:
        return [], everyone(f"answered horizon_days {answer.get('horizon_days')!r}, asked for {horizon_days}")

    views, abstentions, seen = [], [], set()
    for raw in answer["views"]:
        try:
            view = SymbolView.model_validate(raw)
        except ValidationError as err:
            symbol = request.aliases.get(raw.get("symbol")) if isinstance(raw, dict) else None
            first = err.errors()[0]
            abstentions.append({"symbol": symbol, "reason": f"schema violation: {'.'.join(map(str, first['loc']))}: {first['msg']}"})
            continue
        if view.symbol not in request.aliases:
            abstentions.append({"symbol": None, "reason": f"unknown symbol {view.symbol!r} (not in the prompt)"})
            continue
        symbol = request.aliases[view.symbol]
        sign = {"up": 1, "down": -1, "neutral": 0}[view.direction]
        if sign * view.expected_excess_return < 0:
            abstentions.append({"symbol": symbol, "reason": f"contradiction: direction {view.direction!r} with "
                                                            f"expected_excess_return {view.expected_excess_return:+g}"})
            seen.add(symbol)
            continue
        if symbol in seen:
            abstentions.append({"symbol": symbol, "reason": "more than one view for the symbol"})
            continue
        seen.add(symbol)
        views.append({**view.model_dump(), "symbol": symbol})
    duplicated = {a["symbol"] for a in abstentions if a["reason"] == "more than one view for the symbol"}
    views = [v for v in views if v["symbol"] not in duplicated]
    named = {v["symbol"] for v in views} | {a["symbol"] for a in abstentions}
    abstentions += [{"symbol": s, "reason": "no view given"} for s in request.symbols if s not in named]
    return views, abstentions

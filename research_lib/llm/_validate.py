"""Turn an answer into views, or into abstentions with reasons. Never a default trade.

Refusals, truncated answers (``max_tokens``), any other unexpected stop, a bad reply from
the API, text that is not standard JSON (``NaN``/``Infinity`` literals included), and an
answer that breaks the schema or answers another horizon abstain on every symbol of the
date. Inside a valid answer, each entry of ``views`` is checked strictly (JSON types as
the schema states them: ``true`` or ``"0.9"`` is not a number, a list is not a symbol):
an entry that breaks the schema, contradicts itself (direction "up" with a negative
expected excess return, or the reverse) or names a symbol outside the prompt abstains
alone; a symbol named by more than one entry abstains, whatever those entries hold; a
symbol with no entry abstains as "no view given".

So every symbol of the prompt ends as exactly one view or one abstention, and an entry
that names no symbol of the prompt adds an abstention without a symbol. An answer is
*valid* (and may be cached) when it gives a view for every symbol and abstains on none.
"""

from __future__ import annotations

import json
import re
from collections import Counter

from pydantic import ValidationError

from research_lib.llm._prompt import PromptRequest
from research_lib.llm._schema import AnalystAnswer, SymbolView

_JSON = re.compile(r"\{.*\}", re.DOTALL)
COMPLETE = ("end_turn", "stop_sequence")
BAD_REPLY = "bad_api_reply"  # our stop reason for a reply that is not a Message; its text says what was wrong
DUPLICATE = "more than one view for the symbol"
_SHOWN = 80  # characters of the model's text quoted in a reason


def parse_answer(text: str, stop_reason: str | None, request: PromptRequest,
                 horizon_days: int | None = None) -> tuple[list[dict], list[dict]]:
    """``(views, abstentions)``: views carry real symbols; abstentions are ``{symbol, reason}``.

    ``horizon_days``: the horizon asked for; an answer for another one abstains.
    """
    problem = _stop_problem(stop_reason, text)
    answer = None
    if problem is None:
        answer, problem = _load_json(text)
    if problem is None:
        problem = _envelope_problem(answer, horizon_days)
    if problem is not None:
        return [], [{"symbol": s, "reason": problem} for s in request.symbols]
    return _views(answer["views"], request)


def is_valid_answer(text: str, stop_reason: str | None, request: PromptRequest, horizon_days: int | None) -> bool:
    """True when the answer gives a view for every symbol and abstains on none (it may be cached)."""
    return not parse_answer(text, stop_reason, request, horizon_days)[1]


def _stop_problem(stop_reason, text) -> str | None:
    if stop_reason in COMPLETE:
        return None
    if stop_reason == "refusal":
        return "the model refused"
    if stop_reason == "max_tokens":
        return "answer cut off at max_tokens"
    if stop_reason == BAD_REPLY:
        return _clip(f"bad reply from the Anthropic API: {text}", 300)
    if isinstance(stop_reason, str) and stop_reason.startswith("batch_"):
        return f"the batch did not answer ({stop_reason.removeprefix('batch_')})"
    return _clip(f"unexpected stop_reason {stop_reason!r}", 120)


def _refuse_constant(name: str):
    raise ValueError(f"{name} is not JSON")


def _load_json(text) -> tuple[object, str | None]:
    """The JSON object in ``text`` (standard JSON only), or the reason it is not one."""
    if not isinstance(text, str):
        return None, f"malformed JSON: the answer is {type(text).__name__}, not text"
    found = _JSON.search(text)
    try:
        return json.loads(found.group(0) if found else text, parse_constant=_refuse_constant), None
    except (ValueError, RecursionError):  # JSONDecodeError, NaN/Infinity, an integer of thousands of digits, deep nesting
        return None, f"malformed JSON: {_clip(text, _SHOWN)!r}"


def _envelope_problem(answer, horizon_days: int | None) -> str | None:
    """Why ``answer`` is not ``{horizon_days, views: [...]}`` for ``horizon_days``, or None."""
    if not isinstance(answer, dict) or set(answer) != {"horizon_days", "views"} or not isinstance(answer["views"], list):
        return "schema violation: the answer must be {horizon_days, views: [...]} and nothing else"
    try:  # horizon_days checked by the schema's own model (the views are checked one by one)
        AnalystAnswer.model_validate({"horizon_days": answer["horizon_days"], "views": []}, strict=True)
    except ValidationError as err:
        return f"schema violation: {_first_error(err)}"
    if horizon_days is not None and answer["horizon_days"] != horizon_days:
        return f"answered horizon_days {answer['horizon_days']!r}, asked for {horizon_days}"
    return None


def _alias_of(raw) -> str | None:
    symbol = raw.get("symbol") if isinstance(raw, dict) else None
    return symbol if isinstance(symbol, str) else None


def _views(entries: list, request: PromptRequest) -> tuple[list[dict], list[dict]]:
    counts = Counter(_alias_of(raw) for raw in entries)
    views, abstentions, duplicated = [], [], set()
    for raw in entries:
        alias = _alias_of(raw)
        symbol = request.aliases.get(alias) if alias is not None else None
        if symbol is not None and counts[alias] > 1:
            if symbol not in duplicated:
                duplicated.add(symbol)
                abstentions.append({"symbol": symbol, "reason": DUPLICATE})
            continue
        view, reason = _view(raw, alias, symbol)
        if view is not None:
            views.append(view)
        else:
            abstentions.append({"symbol": symbol, "reason": reason})
    named = {v["symbol"] for v in views} | {a["symbol"] for a in abstentions}
    abstentions += [{"symbol": s, "reason": "no view given"} for s in request.symbols if s not in named]
    return views, abstentions


def _view(raw, alias: str | None, symbol: str | None) -> tuple[dict | None, str | None]:
    """One entry as a view of ``symbol``, or the reason it abstains."""
    try:
        view = SymbolView.model_validate(raw, strict=True)
    except ValidationError as err:
        return None, f"schema violation: {_first_error(err)}"
    if symbol is None:
        return None, f"unknown symbol {_clip(alias, 40)!r} (not in the prompt)"
    sign = {"up": 1, "down": -1, "neutral": 0}[view.direction]
    if sign * view.expected_excess_return < 0:
        return None, (f"contradiction: direction {view.direction!r} with expected_excess_return "
                      f"{view.expected_excess_return:+g}")
    return {**view.model_dump(), "symbol": symbol}, None


def _first_error(err: ValidationError) -> str:
    first = err.errors()[0]
    return _clip(f"{'.'.join(map(str, first['loc']))}: {first['msg']}", 200)


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."

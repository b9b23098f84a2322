"""Turn an answer into views, or into abstentions with reasons. Never a default trade.

Two levels, and only the first decides what is kept in the response cache:

* **Reply level**: the reply as a whole is not an answer, so every symbol of the date abstains,
  nothing is cached and the request is asked again next run. That is a stop other than
  ``end_turn``/``stop_sequence`` (refused, cut off at ``max_tokens``, a bad reply from the API,
  no reply at all, a batch item that did not succeed), text that is not valid Unicode (a lone
  surrogate cannot be stored or shown), text that is not exactly one JSON object (below), a key
  given twice in that object, or an object that is not ``{horizon_days, views: [...]}`` for the
  horizon asked (JSON types as the schema states them: ``21.0`` or ``true`` is not an integer).
* **Entry level**: the reply is an answer (it may be cached) and each entry of ``views`` is
  checked strictly: ``true`` or ``"0.9"`` is not a number, a list is not a symbol. An entry that
  breaks the schema (a key given twice included), contradicts itself (direction "up" with a
  negative expected excess return, or the reverse) or names a symbol outside the prompt abstains
  alone; a symbol named by more than one entry abstains, whatever those entries hold; a symbol
  with no entry abstains as "no view given". These are derived again, identically, each time a
  cached answer is read.

One JSON object: the text from its first ``{`` is decoded as one JSON object (standard JSON: no
``NaN``/``Infinity``); what comes before and after it may be prose, whitespace, a byte-order mark
or a Markdown code fence, but may hold none of ``{ } [ ]``. So ``[{...}]``, two objects, or a
note with braces after the object are not an answer.

So every symbol of the prompt ends as exactly one view or one abstention, and an entry that
names no symbol of the prompt adds an abstention without a symbol. Reasons are at most 300
characters and always valid Unicode (whatever the model wrote).
"""

from __future__ import annotations

import json
import re
from collections import Counter

from pydantic import ValidationError

from research_lib.llm._prompt import PromptRequest
from research_lib.llm._reply import refuse_constant
from research_lib.llm._schema import AnalystAnswer, SymbolView

COMPLETE = ("end_turn", "stop_sequence")
BAD_REPLY = "bad_api_reply"  # our stop reason for a reply that is not a Message; its text says what was wrong
NO_REPLY = "no_api_reply"  # our stop reason for a connection failure or time-out after the retries; its text says which
DUPLICATE = "more than one view for the symbol"
REASON_CHARS = 300
_SHOWN = 80  # characters of the model's text quoted in a reason
_BRACKETS = re.compile(r"[{}\[\]]")


class _DuplicatedKeys(dict):
    """A JSON object that gives a key more than once (plain ``json`` would keep the last silently)."""

    def __init__(self, pairs: list[tuple[str, object]]):
        super().__init__(pairs)
        self.pairs = pairs
        self.duplicated = sorted(k for k, n in Counter(k for k, _ in pairs).items() if n > 1)

    def problem(self) -> str:
        return f"schema violation: key {self.duplicated[0]!r} given more than once"


def _object(pairs: list[tuple[str, object]]) -> dict:
    obj = dict(pairs)
    return obj if len(obj) == len(pairs) else _DuplicatedKeys(pairs)


_DECODER = json.JSONDecoder(object_pairs_hook=_object, parse_constant=refuse_constant)


def parse_answer(text: str, stop_reason: str | None, request: PromptRequest,
                 horizon_days: int | None = None) -> tuple[list[dict], list[dict]]:
    """``(views, abstentions)``: views carry real symbols; abstentions are ``{symbol, reason}``.

    ``horizon_days``: the horizon asked for; an answer for another one abstains. Never raises,
    whatever ``text`` and ``stop_reason`` hold.
    """
    answer, problem = read_reply(text, stop_reason, horizon_days)
    if problem is not None:
        return [], [{"symbol": s, "reason": _shown(problem)} for s in request.symbols]
    views, abstentions = _views(answer["views"], request)
    return views, [{**a, "reason": _shown(a["reason"])} for a in abstentions]


def reply_problem(text, stop_reason, horizon_days: int | None) -> str | None:
    """Why the reply as a whole is not an answer (every symbol abstains, it is not cached and is
    asked again), or None: then it may be cached, whatever its entries hold."""
    return read_reply(text, stop_reason, horizon_days)[1]


def read_reply(text, stop_reason, horizon_days: int | None) -> tuple[dict | None, str | None]:
    """``(answer, None)`` for a reply that passes the reply level, else ``(None, reason)``."""
    problem = _stop_problem(stop_reason, text)
    if problem is not None:
        return None, problem
    if not isinstance(text, str):
        return None, f"malformed JSON: the answer is {type(text).__name__}, not text"
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as err:
        return None, f"the answer is not valid Unicode ({err.reason} at character {err.start})"
    answer, problem = _load_json(text)
    if problem is None:
        problem = _envelope_problem(answer, horizon_days)
    return (answer, None) if problem is None else (None, problem)


def _stop_problem(stop_reason, text) -> str | None:
    if stop_reason in COMPLETE:
        return None
    if stop_reason == "refusal":
        return "the model refused"
    if stop_reason == "max_tokens":
        return "answer cut off at max_tokens"
    if stop_reason == BAD_REPLY:
        return f"bad reply from the Anthropic API: {text}"
    if stop_reason == NO_REPLY:
        return f"no reply from the Anthropic API: {text}"
    if isinstance(stop_reason, str) and stop_reason.startswith("batch_"):
        return f"the batch did not answer ({stop_reason.removeprefix('batch_')})"
    return f"unexpected stop_reason {_clip(repr(stop_reason), 80)}"


def _load_json(text: str) -> tuple[object, str | None]:
    """The one JSON object in ``text`` (see the module docstring), or the reason there is none."""
    malformed = f"malformed JSON: {_clip(text, _SHOWN)!r}"
    start = text.find("{")
    if start < 0 or _BRACKETS.search(text, 0, start):
        return None, malformed
    try:
        answer, end = _DECODER.raw_decode(text, start)
    except (ValueError, RecursionError):  # JSONDecodeError, NaN/Infinity, an integer of thousands of digits, deep nesting
        return None, malformed
    if _BRACKETS.search(text, end):
        return None, f"malformed JSON: more than one JSON value, or brackets outside the object: {_clip(text, _SHOWN)!r}"
    return answer, None


def _envelope_problem(answer: dict, horizon_days: int | None) -> str | None:
    """Why ``answer`` is not ``{horizon_days, views: [...]}`` for ``horizon_days``, or None."""
    if isinstance(answer, _DuplicatedKeys):
        return answer.problem()
    if set(answer) != {"horizon_days", "views"} or not isinstance(answer["views"], list):
        return "schema violation: the answer must be {horizon_days, views: [...]} and nothing else"
    try:  # horizon_days checked by the schema's own model (the views are checked one by one)
        AnalystAnswer.model_validate({"horizon_days": answer["horizon_days"], "views": []}, strict=True)
    except ValidationError as err:
        return f"schema violation: {_first_error(err)}"
    if horizon_days is not None and answer["horizon_days"] != horizon_days:
        return f"answered horizon_days {answer['horizon_days']!r}, asked for {horizon_days}"
    return None


def _aliases_named(raw) -> list[str]:
    """The symbols (as written) an entry names: its ``symbol``, or each of them when it gives the key twice."""
    if isinstance(raw, _DuplicatedKeys):
        values = [v for k, v in raw.pairs if k == "symbol"]
    else:
        values = [raw.get("symbol")] if isinstance(raw, dict) else []
    return list(dict.fromkeys(v for v in values if isinstance(v, str)))


def _views(entries: list, request: PromptRequest) -> tuple[list[dict], list[dict]]:
    named = [[a for a in _aliases_named(raw) if a in request.aliases] for raw in entries]
    counts = Counter(alias for aliases in named for alias in aliases)
    views, abstentions, duplicated = [], [], set()
    for raw, aliases in zip(entries, named):
        if not aliases:  # names no symbol of the prompt
            abstentions.append({"symbol": None, "reason": _view(raw, None)[1]})
        for alias in aliases:
            symbol = request.aliases[alias]
            if counts[alias] > 1:
                if symbol not in duplicated:
                    duplicated.add(symbol)
                    abstentions.append({"symbol": symbol, "reason": DUPLICATE})
                continue
            view, reason = _view(raw, symbol)
            if view is not None:
                views.append(view)
            else:
                abstentions.append({"symbol": symbol, "reason": reason})
    answered = {v["symbol"] for v in views} | {a["symbol"] for a in abstentions}
    abstentions += [{"symbol": s, "reason": "no view given"} for s in request.symbols if s not in answered]
    return views, abstentions


def _view(raw, symbol: str | None) -> tuple[dict | None, str | None]:
    """One entry as a view of ``symbol`` (None: it names no symbol of the prompt), or the reason it abstains."""
    if isinstance(raw, _DuplicatedKeys):
        return None, raw.problem()
    try:
        view = SymbolView.model_validate(raw, strict=True)
    except ValidationError as err:
        return None, f"schema violation: {_first_error(err)}"
    if symbol is None:
        return None, f"unknown symbol {_clip(view.symbol, 40)!r} (not in the prompt)"
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


def _shown(reason: str) -> str:
    """``reason`` clipped to `REASON_CHARS`, with anything that is not valid Unicode escaped."""
    return _clip(reason.encode("utf-8", "backslashreplace").decode("utf-8"), REASON_CHARS)

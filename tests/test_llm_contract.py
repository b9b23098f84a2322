"""Claude's replies against the contract they must keep before they may become views.

The rule a user relies on: whatever Claude or the API answers, the run never crashes, no reply
becomes a view that the schema does not allow, and every symbol of the prompt ends as exactly
one view or one abstention with a reason. A reply is cached once it is an answer as a whole
(the reply level: it stopped normally, its text is valid Unicode, it is one JSON object
``{horizon_days, views}`` for the horizon asked); what its entries hold is judged again, the
same way, on every read, so a re-run costs nothing and a replay gives the same views and
abstentions. The oracle below states all of this from the schema's words and its own reading
of the text, independently of the code.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import math
import re
import tempfile
from pathlib import Path

import anthropic
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from research_lib.llm import (BudgetExceeded, ClaudeAnalyst, Completion, Price, PromptRequest, ReplayMiss, ResponseCache,
                              build_request, estimate_backfill, generate_views, parse_answer)
from research_lib.llm._cache import request_key
from research_lib.llm._cost import completion_cost
from research_lib.llm._schema import answer_schema
from research_lib.llm._validate import reply_problem
from tests.servers.anthropic_api import MALFORMATIONS, TRANSFER_BREAKS, WELL_FORMED, AnthropicServer, Reply
from tests.test_llm import DATES, KEY, PRICE, SYMBOLS, TABLES, asked_aliases, good_answer
from tests.test_llm import settings as analyst_settings

HORIZON = 21
DATE = DATES[0]
REQUEST = build_request(DATE, TABLES[DATE], HORIZON)  # what generate_views asks for DATE (masked: S01..S04)
UNMASKED = build_request(DATE, TABLES[DATE], HORIZON, mask=False)
FIELDS = ("symbol", "direction", "conviction", "expected_excess_return", "confidence", "rationale", "key_risks")
BOUNDS = {"conviction": (0.0, 1.0), "expected_excess_return": (-0.5, 0.5), "confidence": (0.0, 1.0)}
COMPLETE = ("end_turn", "stop_sequence")
MAX_USAGE = 10_000_000  # the most tokens one request may report in any usage field (documented in _reply)
CONTRACT = settings(max_examples=400, deadline=None, derandomize=True)


# ---------------------------------------------------------------------------------------
# The oracle: which views an answer must give (every other symbol abstains), and whether
# it may be cached
# ---------------------------------------------------------------------------------------

# Tolerated around the object: any text holding none of { } [ ] before its first "{" and after
# its last "}" (prose, whitespace, a byte-order mark, Markdown code fences). Between them there
# must be exactly one JSON object. So a list of objects, two objects, or a note with brackets
# after the object is no answer.
AROUND_THE_OBJECT = re.compile(r"\A[^{}\[\]]*(\{.*\})[^{}\[\]]*\Z", re.DOTALL)


class Twice(dict):
    """A JSON object that gives a key more than once; ``pairs`` keeps every (key, value)."""

    def __init__(self, pairs):
        super().__init__(pairs)
        self.pairs = pairs


def _keep_every_pair(pairs):
    return Twice(pairs) if len({k for k, _ in pairs}) < len(pairs) else dict(pairs)


def _refuse(name):
    raise ValueError(name)


def _is_text(value) -> bool:
    """A JSON string that is valid Unicode (a lone surrogate, escaped or not, is not)."""
    if type(value) is not str:
        return False
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def reply_object(text: str):
    """The one JSON object of ``text`` (duplicated keys kept as `Twice`), or None."""
    found = AROUND_THE_OBJECT.match(text)
    try:
        return json.loads(found.group(1), object_pairs_hook=_keep_every_pair, parse_constant=_refuse) if found else None
    except (ValueError, RecursionError):
        return None


def _is_number(value, low: float, high: float) -> bool:
    return type(value) in (int, float) and math.isfinite(value) and low <= value <= high


def _is_valid_entry(entry) -> bool:
    if type(entry) is not dict or set(entry) != set(FIELDS) or entry["direction"] not in ("up", "down", "neutral"):
        return False
    if not all(_is_number(entry[name], *bounds) for name, bounds in BOUNDS.items()):
        return False
    if not _is_text(entry["rationale"]) or len(entry["rationale"]) > 600:
        return False
    risks = entry["key_risks"]
    if type(risks) is not list or len(risks) > 3 or not all(_is_text(r) for r in risks):
        return False
    eer = entry["expected_excess_return"]
    return not (entry["direction"] == "up" and eer < 0 or entry["direction"] == "down" and eer > 0)


def _names(entry) -> set:
    """Every symbol an entry names: its ``symbol``, or all of them when it gives the key twice."""
    values = [v for k, v in entry.pairs if k == "symbol"] if isinstance(entry, Twice) else \
        [entry.get("symbol")] if isinstance(entry, dict) else []
    return {v for v in values if type(v) is str}


def expected_views(text, stop_reason, request: PromptRequest, horizon: int) -> tuple[dict[str, dict], bool]:
    """``({symbol: view}, cacheable)``: the views the reply must give, and whether it is an
    answer as a whole (then it is cached, whatever its entries hold)."""
    answer = reply_object(text) if stop_reason in COMPLETE and _is_text(text) else None
    if not (type(answer) is dict and set(answer) == {"horizon_days", "views"} and type(answer["views"]) is list
            and type(answer["horizon_days"]) is int and answer["horizon_days"] == horizon):
        return {}, False
    entries = answer["views"]
    views = {}
    for alias, symbol in request.aliases.items():
        naming = [e for e in entries if alias in _names(e)]
        if len(naming) == 1 and _is_valid_entry(naming[0]):
            views[symbol] = {**naming[0], "symbol": symbol}
    return views, True


# ---------------------------------------------------------------------------------------
# Hostile answers
# ---------------------------------------------------------------------------------------

class Pairs(list):
    """A JSON object written from these (key, value) pairs, so that a key can be given twice."""


def dumps(value, ascii_only: bool = True) -> str:
    """``value`` as JSON text (NaN/Infinity literals included); `Pairs` as objects; non-ASCII
    characters (lone surrogates too) escaped, or written as they are."""
    items = list(value) if isinstance(value, Pairs) else list(value.items()) if isinstance(value, dict) else None
    if items is not None:
        return "{" + ", ".join(f"{json.dumps(k, ensure_ascii=ascii_only)}: {dumps(v, ascii_only)}" for k, v in items) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(dumps(v, ascii_only) for v in value) + "]"
    return json.dumps(value, allow_nan=True, ensure_ascii=ascii_only)


HOSTILE = st.one_of(
    st.booleans(), st.none(), st.sampled_from(["0.9", "21", "", "up", "S01", "nan", "1e999", "\ud800", "a\x00b", "\u200b"]),
    st.integers(-10**30, 10**30), st.floats(allow_nan=True, allow_infinity=True),
    st.lists(st.sampled_from(["S01", 1, None]), max_size=3), st.dictionaries(st.sampled_from(["S01", "a"]), st.integers(), max_size=2),
    st.just("x" * 5000), st.just(["S01"]), st.just({"symbol": "S01"}))
UNKNOWN_SYMBOLS = st.sampled_from(["EVIL", "AAPL", "s01", "S1", "S05", "S01 ", "", "S\uff101", "S01\ud800"])
HOSTILE_TEXTS = st.sampled_from([
    "", "not json at all", "{", "[" * 5000 + "]" * 5000, '{"horizon_days": 21, "views": [' + "[" * 100_000,
    '{"horizon_days": ' + "9" * 5000 + ', "views": []}', '{"horizon_days": 21, "views": [], "horizon_days": 21}',
    '{"horizon_days": NaN, "views": []}', '{"horizon_days": 21, "views": [{"symbol": "S01", "conviction": Infinity}]}',
    "null", "[]", '"views"', "21", '{"horizon_days": 21.0, "views": []}', "\x00" * 1000, "\ud800" * 1000,
    "x" * 1_000_000, '[{"horizon_days": 21, "views": []}]', '{"horizon_days": 21, "views": [], "views": []}'])
SHAPES = ["prose", "fenced", "bom", "list", "two_objects", "note_with_brackets", "truncated", "raw", "lone_surrogate", "nul"]


@st.composite
def valid_entry(draw, alias: str) -> dict:
    direction = draw(st.sampled_from(["up", "down", "neutral"]))
    size = draw(st.one_of(st.floats(0, 0.5), st.sampled_from([0, 0.5])))
    eer = {"up": size, "down": -size, "neutral": draw(st.floats(-0.5, 0.5))}[direction]
    return {"symbol": alias, "direction": direction, "conviction": draw(st.one_of(st.floats(0, 1), st.sampled_from([0, 1]))),
            "expected_excess_return": eer, "confidence": draw(st.floats(0, 1)),
            "rationale": draw(st.text(max_size=20)), "key_risks": draw(st.lists(st.text(max_size=8), max_size=3))}


@st.composite
def edited_entries(draw, request: PromptRequest) -> list:
    """One valid entry per alias, then up to three hostile edits."""
    entries = [draw(valid_entry(alias)) for alias in request.aliases]
    for _ in range(draw(st.integers(0, 3))):
        edit = draw(st.sampled_from(["field", "drop_field", "extra_field", "duplicate", "drop", "unknown", "not_a_dict",
                                     "wrong_sign", "key_twice"]))
        if edit == "drop" and not entries:
            continue
        i = draw(st.integers(0, max(len(entries) - 1, 0)))
        if edit in ("field", "drop_field", "extra_field", "wrong_sign", "duplicate", "key_twice") and not (
                entries and isinstance(entries[i], dict)):
            continue
        if edit == "field":
            entries[i] = {**entries[i], draw(st.sampled_from(FIELDS)): draw(HOSTILE)}
        elif edit == "drop_field":
            dropped = draw(st.sampled_from(FIELDS))
            entries[i] = {k: v for k, v in entries[i].items() if k != dropped}
        elif edit == "extra_field":
            entries[i] = {**entries[i], draw(st.sampled_from(["trade", "weight", "Symbol"])): draw(HOSTILE)}
        elif edit == "duplicate":
            copy = dict(entries[i])
            if draw(st.booleans()):
                copy[draw(st.sampled_from(FIELDS[1:]))] = draw(HOSTILE)  # the copy valid or not
            entries.insert(draw(st.integers(0, len(entries))), copy)
        elif edit == "drop":
            entries.pop(i)
        elif edit == "unknown":
            entries.append(draw(valid_entry(draw(UNKNOWN_SYMBOLS))))
        elif edit == "not_a_dict":
            entries.insert(i, draw(HOSTILE))
        elif edit == "wrong_sign":
            entries[i] = {**entries[i], "direction": "up", "expected_excess_return": -0.01}
        elif edit == "key_twice":  # the same key again, with the same value, another value or another symbol
            key = draw(st.sampled_from(FIELDS))
            value = draw(st.one_of(st.just(entries[i].get(key)), HOSTILE, st.sampled_from(list(request.aliases))))
            entries[i] = Pairs([*entries[i].items(), (key, value)])
    return entries


@st.composite
def answers(draw, request: PromptRequest = REQUEST) -> tuple[str, str | None]:
    """(text, stop_reason) of a reply to ``request``: near-valid JSON, hostile envelopes, broken text."""
    def often() -> bool:  # most answers are near-valid, so that views happen too
        return draw(st.integers(0, 9)) < 8

    answer = Pairs([("horizon_days", HORIZON if often() else draw(st.one_of(HOSTILE, st.sampled_from([63, 1, 252])))),
                    ("views", draw(edited_entries(request)) if often() else draw(HOSTILE))])
    if not often():
        answer.append((draw(st.sampled_from(["trade", "note", "views", "horizon_days"])), draw(HOSTILE)))
    text = dumps(answer, ascii_only=draw(st.booleans()))
    shape = "json" if often() else draw(st.sampled_from(SHAPES))
    at = draw(st.integers(0, max(len(text) - 1, 0)))
    text = {"json": text, "prose": f"Here is the answer:\n{text}\nThat is all.", "fenced": f"```json\n{text}\n```",
            "bom": "\ufeff" + text, "list": f"[{text}]", "two_objects": f"{text}\n{text}",
            "note_with_brackets": f"{text}\nNote: S01 [see above]", "truncated": text[:at],
            "raw": draw(HOSTILE_TEXTS) if shape == "raw" else "", "lone_surrogate": text[:at] + "\udc00" + text[at:],
            "nul": text[:at] + "\x00" + text[at:]}[shape]
    stop = draw(st.sampled_from(["end_turn", "stop_sequence"])) if often() else draw(st.sampled_from(
        ["max_tokens", "refusal", "pause_turn", "tool_use", None, "batch_errored", "bad_api_reply", "no_api_reply"]))
    return text, stop


def check_outcome(views: list[dict], abstentions: list[dict], expected: dict[str, dict], request: PromptRequest) -> None:
    """Views are exactly the oracle's; every prompt symbol is one view or one abstention with a
    reason that is valid Unicode."""
    assert {v["symbol"]: v for v in views} == expected and len(views) == len(expected)
    named = [v["symbol"] for v in views] + [a["symbol"] for a in abstentions if a["symbol"] is not None]
    assert sorted(named) == sorted(request.symbols), "each prompt symbol once: a view or an abstention"
    for a in abstentions:
        assert a["symbol"] in request.symbols or a["symbol"] is None
        assert isinstance(a["reason"], str) and 0 < len(a["reason"]) <= 300 and _is_text(a["reason"])


SHOWN = ["symbol", "direction", "conviction", "expected_excess_return", "confidence", "rationale"]


def check_result(result, expected: dict[str, dict]) -> None:
    """`check_outcome` on what `generate_views` returned for ``REQUEST``; every text in it is valid Unicode."""
    abstentions = [{"symbol": None if pd.isna(a.symbol) else a.symbol, "reason": a.reason}
                   for a in result.abstentions.itertuples()]  # a missing symbol is null in the frame
    check_outcome(result.views[SHOWN].to_dict("records"), abstentions,
                  {s: {k: v[k] for k in SHOWN} for s, v in expected.items()}, REQUEST)
    for frame in (result.views, result.abstentions):
        assert all(_is_text(cell) for column in frame.select_dtypes("object") for cell in frame[column].dropna())


def same_outcome(first, second) -> None:
    """The same views and abstentions (where they came from aside)."""
    for name in ("views", "abstentions"):
        pd.testing.assert_frame_equal(getattr(first, name).drop(columns="source"), getattr(second, name).drop(columns="source"))


# ---------------------------------------------------------------------------------------
# Parsing: generated hostile answers
# ---------------------------------------------------------------------------------------

@CONTRACT
@given(reply=answers(), request=st.sampled_from([REQUEST, UNMASKED]))
def test_an_answer_becomes_exactly_the_valid_views_and_every_other_symbol_abstains(reply, request):
    text, stop = reply
    if request is UNMASKED:  # the same answer, naming the real tickers
        for alias, symbol in REQUEST.aliases.items():
            text = text.replace(f'"{alias}"', f'"{symbol}"')
    expected, cacheable = expected_views(text, stop, request, HORIZON)
    views, abstentions = parse_answer(text, stop, request, HORIZON)
    check_outcome(views, abstentions, expected, request)
    assert (reply_problem(text, stop, HORIZON) is None) == cacheable, "cached exactly when it is an answer as a whole"


@pytest.mark.parametrize("types", [
    {"conviction": True}, {"conviction": "0.9"}, {"confidence": "1"}, {"expected_excess_return": None},
    {"symbol": ["S01"]}, {"symbol": {"alias": "S01"}}, {"symbol": 1}, {"key_risks": "one risk"},
    {"key_risks": [1, 2]}, {"rationale": ["text"]}, {"direction": ["up"]}, {"direction": True},
])
def test_wrong_json_types_are_schema_violations_of_that_symbol_not_crashes(types):
    answer = good_answer({"messages": [{"content": REQUEST.user}]})
    first = answer["views"][0]["symbol"]
    answer["views"][0].update(types)
    views, abstentions = parse_answer(json.dumps(answer), "end_turn", REQUEST, HORIZON)
    reasons = {a["symbol"]: a["reason"] for a in abstentions}
    violation = f"schema violation: {next(iter(types))}"
    if "symbol" in types:  # no symbol to blame: an abstention without one, and the symbol has no view
        assert reasons.keys() == {None, REQUEST.aliases[first]} and reasons[REQUEST.aliases[first]] == "no view given"
        assert reasons[None].startswith(violation)
    else:
        assert reasons.keys() == {REQUEST.aliases[first]} and reasons[REQUEST.aliases[first]].startswith(violation)
    assert len(views) == 3 and REQUEST.aliases[first] not in {v["symbol"] for v in views}


@pytest.mark.parametrize("first_valid", [True, False])
@pytest.mark.parametrize("second_valid", [True, False])
def test_a_symbol_named_twice_abstains_whatever_either_copy_holds(first_valid, second_valid):
    answer = good_answer({"messages": [{"content": REQUEST.user}]})
    twice = dict(answer["views"][1])
    copies = [dict(twice, conviction=0.9) if first_valid else dict(twice, direction="sideways"),
              dict(twice, conviction=0.1) if second_valid else dict(twice, conviction=1.7)]
    answer["views"][1:2] = copies
    views, abstentions = parse_answer(json.dumps(answer), "end_turn", REQUEST, HORIZON)
    symbol = REQUEST.aliases[twice["symbol"]]
    assert symbol not in {v["symbol"] for v in views} and len(views) == 3
    assert abstentions == [{"symbol": symbol, "reason": "more than one view for the symbol"}]


@pytest.mark.parametrize("horizon", [True, 21.0, "21", None, 0, 253, [21]])
def test_horizon_days_must_be_a_whole_number_of_sessions(horizon):
    answer = {**good_answer({"messages": [{"content": REQUEST.user}]}), "horizon_days": horizon}
    for asked in (HORIZON, None):
        views, abstentions = parse_answer(json.dumps(answer), "end_turn", REQUEST, asked)
        assert views == [] and {a["reason"] for a in abstentions} == {abstentions[0]["reason"]}
        assert abstentions[0]["reason"].startswith("schema violation: horizon_days")


def _good_views() -> list[dict]:
    return good_answer({"messages": [{"content": REQUEST.user}]})["views"]


@pytest.mark.parametrize("text, abstains, reason", [
    (dumps(Pairs([("horizon_days", 21), ("views", [Pairs([*_good_views()[0].items(), ("direction", "down")]),
                                                   *_good_views()[1:]])])),
     ["S01"], "schema violation: key 'direction' given more than once"),
    (dumps(Pairs([("horizon_days", 21), ("views", [Pairs([*_good_views()[0].items(), ("symbol", "S02")]),
                                                   *_good_views()[2:]])])),
     ["S01", "S02"], "schema violation: key 'symbol' given more than once"),
    (dumps(Pairs([("horizon_days", 5), ("views", _good_views()), ("horizon_days", 21)])),
     ["S01", "S02", "S03", "S04"], "schema violation: key 'horizon_days' given more than once"),
    (dumps(Pairs([("horizon_days", 21), ("views", [{"symbol": "S01"}]), ("views", _good_views())])),
     ["S01", "S02", "S03", "S04"], "schema violation: key 'views' given more than once"),
    ("[" + json.dumps({"horizon_days": 21, "views": _good_views()}) + "]", ["S01", "S02", "S03", "S04"], "malformed JSON"),
    ("```json\n" + json.dumps({"horizon_days": 21, "views": _good_views()}) + "\n```", [], None),
])
def test_a_key_given_twice_is_never_last_wins_and_a_list_is_not_an_answer(text, abstains, reason):
    views, abstentions = parse_answer(text, "end_turn", REQUEST, HORIZON)
    assert sorted(a["symbol"] for a in abstentions) == sorted(REQUEST.aliases[a] for a in abstains)
    assert all(a["reason"].startswith(reason) for a in abstentions) and len(views) == 4 - len(abstains)
    whole = len(abstains) == 4
    assert (reply_problem(text, "end_turn", HORIZON) is not None) == whole, "a reply-level failure is never cached"


# ---------------------------------------------------------------------------------------
# What is cached: an answer as a whole, its entries judged again on every read
# ---------------------------------------------------------------------------------------

class OneReply:
    """A stand-in for `ClaudeAnalyst` that answers every request with the same reply."""

    def __init__(self, text, stop_reason):
        self.text, self.stop_reason, self.calls = text, stop_reason, 0

    def complete(self, request, schema, budget=None) -> Completion:
        self.calls += 1
        return Completion(self.text, self.stop_reason, input_tokens=900, output_tokens=90, cost_usd=0.0027)


def one_date(cache: ResponseCache, claude=None, provider: str = "anthropic", **kwargs):
    return generate_views({DATE: TABLES[DATE]}, analyst_settings(provider, **kwargs), cache, claude)


@settings(max_examples=150, deadline=None, derandomize=True)
@given(reply=answers())
def test_an_answer_is_cached_once_whole_and_every_rerun_and_replay_gives_the_same_views_for_nothing(reply):
    text, stop = reply
    expected, cacheable = expected_views(text, stop, REQUEST, HORIZON)
    claude = OneReply(text, stop)
    with tempfile.TemporaryDirectory() as folder:
        cache = ResponseCache(Path(folder) / "s.sqlite")
        first = one_date(cache, claude)
        check_result(first, expected)
        assert len(cache) == int(cacheable), "cached exactly when it is an answer as a whole"
        again = one_date(cache, claude)
        assert claude.calls == 1 + (not cacheable), "a cached answer is not asked again; anything else is"
        same_outcome(first, again)
        if cacheable:
            replayed = one_date(cache, provider="replay")
            same_outcome(first, replayed)
            assert replayed.summary["cost_usd"] == replayed.summary["input_tokens"] == 0
            assert replayed.summary["cached_answers"] == 1
        else:
            with pytest.raises(ReplayMiss, match="no cached answer for 2021-01-29"):
                one_date(cache, provider="replay")


@pytest.fixture(scope="module")
def api_server():
    with AnthropicServer(api_key=KEY, responder=good_answer) as server:
        yield server


@pytest.fixture
def api(api_server):
    """The module's local API, with no fault or script left by an earlier test."""
    api_server.reset()
    yield api_server


def claude_for(server, max_retries: int = 4, timeout: float = 5.0, **kwargs) -> tuple[ClaudeAnalyst, list[float]]:
    slept = []
    client = anthropic.Anthropic(api_key=KEY, base_url=server.base_url, max_retries=0, timeout=timeout)
    return ClaudeAnalyst(client, analyst_settings(**kwargs), max_retries=max_retries, sleep=slept.append), slept


def sent_reply(request) -> tuple[str, str | None]:
    """The text and stop reason of the message the server answered."""
    message = request.response
    return "".join(b.get("text", "") for b in message["content"] if b.get("type") == "text"), message["stop_reason"]


@settings(max_examples=25, deadline=None, derandomize=True)
@given(reply=answers())
def test_live_hostile_replies_never_crash_and_only_whole_answers_are_cached(api_server, reply):
    api = api_server
    text, stop = reply
    api.responder = lambda body: Reply(text, stop_reason=stop)
    claude, _ = claude_for(api, max_retries=0)  # a reply with no stop_reason is a bad reply: not retried here
    with tempfile.TemporaryDirectory() as folder:
        cache = ResponseCache(Path(folder) / "s.sqlite")
        first = one_date(cache, claude)
        expected, cacheable = expected_views(*sent_reply(api.requests[-1]), REQUEST, HORIZON)
        check_result(first, expected)
        assert len(cache) == int(cacheable), "only an answer as a whole is cached"
        sent = len(api.requests)
        again = one_date(cache, claude)
        assert len(api.requests) == sent + (not cacheable), "a cached answer is not asked again; anything else is"
        if cacheable:
            same_outcome(first, again)


@pytest.mark.parametrize("text, stop_reason, problem", [
    ('{"horizon_days": 21, "views": [', "end_turn", "malformed JSON"),
    (json.dumps({"horizon_days": 21, "views": [{"symbol": "S01", "conviction": float("nan")}]}), "end_turn", "malformed JSON"),
    (json.dumps({"horizon_days": 63, "views": []}), "end_turn", "answered horizon_days 63"),
    ('{"horizon_days": 21, "views": []}', "max_tokens", "answer cut off at max_tokens"),
])
def test_a_cached_row_that_is_not_an_answer_is_validated_on_read_and_asked_again(api, tmp_path, text, stop_reason, problem):
    api.responder = good_answer
    cache = ResponseCache(tmp_path / "s.sqlite")
    key = analyst_settings().key(REQUEST, answer_schema())
    cache.put(key, "claude-sonnet-5-5", {"date": "2021-01-29"}, Completion(text, stop_reason, 10, 10))
    assert estimate_backfill({DATE: TABLES[DATE]}, analyst_settings(), cache)["to_send"] == 1
    with pytest.raises(ReplayMiss, match=r"the cached answer for 2021-01-29 with model claude-sonnet-5-5 \(key \w{12}\) "
                                         rf"is not valid \({re.escape(problem)}") as missed:
        one_date(cache, provider="replay")
    assert "no cached answer" not in str(missed.value) and "no valid" not in str(missed.value)
    claude, _ = claude_for(api)
    sent = len(api.requests)
    assert len(one_date(cache, claude).views) == 4 and len(api.requests) == sent + 1, "asked again, not replayed"
    assert len(one_date(cache, claude).views) == 4 and len(api.requests) == sent + 1, "the answer replaced the row"


def test_a_cached_answer_with_a_bad_entry_is_kept_and_abstains_the_same_on_every_read(api, tmp_path):
    """An answer valid for every prompt symbol plus an entry for a symbol outside the prompt (an
    obeyed headline injection), or with one view contradicting itself, is paid once."""
    for responder, reason in ((lambda body: good_answer(body, extra_symbol="EVIL"), "unknown symbol 'EVIL'"),
                              (lambda body: {**good_answer(body), "views": [dict(v, direction="up", expected_excess_return=-0.001)
                                                                            if i == 1 else v for i, v in
                                                                            enumerate(good_answer(body)["views"])]},
                               "contradiction")):
        api.responder = responder
        claude, _ = claude_for(api)
        cache = ResponseCache(tmp_path / f"{reason[:5]}.sqlite")
        sent = len(api.requests)
        runs = [generate_views(TABLES, analyst_settings(), cache, claude) for _ in range(2)]
        runs.append(generate_views(TABLES, analyst_settings("replay"), cache))
        assert len(api.requests) == sent + 3 and len(cache) == 3, "asked once per date, then from the cache"
        assert runs[0].abstentions["reason"].str.startswith(reason).sum() == 3
        for later in runs[1:]:
            same_outcome(runs[0], later)
            assert later.summary["cost_usd"] == 0.0 and later.summary["cached_answers"] == 3
        assert estimate_backfill(TABLES, analyst_settings(), cache)["to_send"] == 0


# ---------------------------------------------------------------------------------------
# The cache key: never the cache_control markers; the caches of earlier versions still found
# ---------------------------------------------------------------------------------------

ANALYSIS_PROMPT_BEFORE = "First write a brief analysis of the inputs (150 words at most, no JSON)."
ANSWER_PROMPT_BEFORE = "Now give the JSON answer for every symbol."


def key_before_issue_13(request: PromptRequest, analyst) -> str:
    """The cache key as the code before issue 13 made it (d075040), rebuilt here by hand: the
    sha256 of the payload as sent then, its system prompt always marked for prompt caching."""
    payload = {"model": analyst.model, "max_tokens": analyst.max_tokens,
               "system": [{"type": "text", "text": request.system, "cache_control": {"type": "ephemeral"}}],
               "messages": [{"role": "user", "content": request.user}],
               "output_config": {"format": {"type": "json_schema", "schema": answer_schema()}}}
    if analyst.temperature is not None:
        payload["temperature"] = analyst.temperature
    if analyst.reasoning:
        payload["reasoning"] = [ANALYSIS_PROMPT_BEFORE, ANSWER_PROMPT_BEFORE]
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


@pytest.mark.parametrize("changes", [{}, {"temperature": 0.2}, {"reasoning": True}, {"max_tokens": 1000, "mask": False},
                                     {"model": "claude-opus-5-5"}])
def test_answers_cached_by_the_previous_version_are_still_found(api, tmp_path, changes):
    analyst = analyst_settings("replay", **changes)
    cache = ResponseCache(tmp_path / "s.sqlite")
    for date, table in TABLES.items():
        request = build_request(date, table, HORIZON, mask=analyst.mask, reasoning=analyst.reasoning)
        text = json.dumps(good_answer({"messages": [{"content": request.user}]}))
        cache.put(key_before_issue_13(request, analyst), analyst.model, {}, Completion(text, "end_turn", 100, 50, 0, 0, 0.001))
    assert estimate_backfill(TABLES, analyst, cache)["to_send"] == 0
    replayed = generate_views(TABLES, analyst, cache)
    assert len(replayed.views) == 12 and replayed.summary["cached_answers"] == 3
    claude, _ = claude_for(api, **changes)
    sent = len(api.requests)
    assert len(generate_views(TABLES, analyst_settings(**changes), cache, claude).views) == 12
    assert len(api.requests) == sent, "no request: the old rows answer"


MARKERS = st.sampled_from([{"type": "ephemeral"}, {"type": "ephemeral", "ttl": "1h"}, {"type": "ephemeral", "ttl": "5m"}])


@settings(max_examples=200, deadline=None, derandomize=True)
@given(where=st.sets(st.sampled_from(["system", "message", "top", "schema_neighbour"])), marker=MARKERS,
       reasoning=st.booleans(), temperature=st.sampled_from([None, 0.0, 0.7]))
def test_the_cache_key_never_depends_on_cache_control_markers(where, marker, reasoning, temperature):
    from research_lib.llm._anthropic import request_payload

    analyst = analyst_settings(reasoning=reasoning, temperature=temperature)
    request = build_request(DATE, TABLES[DATE], HORIZON, reasoning=reasoning)
    payload = request_payload(request, answer_schema(), analyst)
    marked = json.loads(json.dumps(payload))
    marked["system"][0].pop("cache_control", None)
    unmarked = json.loads(json.dumps(marked))
    if "system" in where:
        marked["system"][0]["cache_control"] = marker
    if "message" in where:
        marked["messages"][0]["content"] = [{"type": "text", "text": request.user, "cache_control": marker}]
        unmarked["messages"][0]["content"] = [{"type": "text", "text": request.user}]
    if "top" in where:
        marked["cache_control"] = marker
    if "schema_neighbour" in where:
        marked["output_config"]["cache_control"] = marker
    assert request_key(marked) == request_key(unmarked) == request_key(json.loads(json.dumps(unmarked)))
    assert request_key({**unmarked, "max_tokens": unmarked["max_tokens"] + 1}) != request_key(unmarked)


def test_marking_the_system_prompt_for_caching_keeps_its_cache_key(monkeypatch):
    from research_lib.llm._anthropic import MIN_CACHEABLE_TOKENS, request_payload

    analyst = analyst_settings()
    assert all("cache_control" not in request_payload(REQUEST, {}, analyst_settings(model=model))["system"][0]
               for model in MIN_CACHEABLE_TOKENS), "the system prompt reaches no listed minimum"
    before = analyst.key(REQUEST, answer_schema())
    monkeypatch.setitem(MIN_CACHEABLE_TOKENS, analyst.model, 1)
    assert "cache_control" in request_payload(REQUEST, answer_schema(), analyst)["system"][0]
    assert analyst.key(REQUEST, answer_schema()) == before


def test_replay_says_whether_the_answer_is_missing_or_not_valid(tmp_path):
    cache = ResponseCache(tmp_path / "s.sqlite")
    with pytest.raises(ReplayMiss, match=r"replay.: no cached answer for 2021-01-29 with model claude-sonnet-5-5 "
                                         r"\(key \w{12}\); run once with llm.provider: anthropic") as missed:
        one_date(cache, provider="replay")
    assert "not valid" not in str(missed.value)
    cache.put(analyst_settings().key(REQUEST, answer_schema()), "claude-sonnet-5-5", {}, Completion("", "refusal"))
    with pytest.raises(ReplayMiss, match=r"the cached answer for 2021-01-29 .* is not valid \(the model refused\); run "
                                         r"once with llm.provider: anthropic \(and a key\) to ask again"):
        one_date(cache, provider="replay")


# ---------------------------------------------------------------------------------------
# Bad replies from the API: named, retried, abstained, and paid for when they were billed
# ---------------------------------------------------------------------------------------

def billed(recorded) -> tuple[float, int]:
    """Dollars and input tokens of the answers whose usage can be read (the oracle's reading:
    every count a whole number from 0 to 10 million, the cache counts possibly absent or null)."""
    dollars = tokens = 0
    for request in recorded:
        usage = request.response.get("usage") if isinstance(request.response, dict) else None
        if not isinstance(usage, dict):
            continue
        counts = [usage.get(name) for name in ("input_tokens", "output_tokens")] + [
            0 if usage.get(name) is None else usage[name] for name in ("cache_read_input_tokens", "cache_creation_input_tokens")]
        if all(type(c) is int and 0 <= c <= MAX_USAGE for c in counts):
            dollars += completion_cost(analyst_settings().price, *counts[:2], *counts[2:])
            tokens += counts[0]
    return dollars, tokens


@pytest.mark.parametrize("kind", sorted(MALFORMATIONS))
def test_a_reply_that_breaks_the_messages_format_is_a_bad_reply_retried_then_abstained_and_paid(api, tmp_path, kind):
    api.responder = good_answer
    claude, slept = claude_for(api, max_retries=2)
    cache = ResponseCache(tmp_path / "s.sqlite")
    api.malform_next(kind, times=3)
    sent = len(api.requests)
    result = one_date(cache, claude)
    assert len(api.requests) == sent + 3 and len(slept) == 2, "retried within the bounds, like a server error"
    assert result.views.empty and len(cache) == 0
    assert sorted(result.abstentions["symbol"]) == sorted(SYMBOLS)
    assert result.abstentions["reason"].str.startswith("bad reply from the Anthropic API: ").all()
    dollars, tokens = billed(api.requests[sent:])
    assert result.summary["cost_usd"] == pytest.approx(dollars, abs=1e-6) and result.summary["input_tokens"] == tokens

    api.malform_next(kind)  # once: the retry gets a good answer
    sent = len(api.requests)
    result = one_date(cache, claude)
    assert len(result.views) == 4 and len(cache) == 1 and len(slept) == 3
    assert result.summary["cost_usd"] == pytest.approx(billed(api.requests[sent:])[0], abs=1e-6)


@pytest.mark.parametrize("kind", sorted(WELL_FORMED))
def test_an_odd_but_well_formed_message_is_read_with_the_usage_it_reports(api, tmp_path, kind):
    api.responder = good_answer
    claude, slept = claude_for(api)
    api.malform_next(kind)
    sent = len(api.requests)
    result = one_date(ResponseCache(tmp_path / "s.sqlite"), claude)
    assert len(api.requests) == sent + 1 and slept == [] and len(result.views) == 4
    usage = api.requests[-1].response["usage"]
    row = result.requests.iloc[0]
    assert (row.input_tokens, row.output_tokens, row.cache_read_tokens, row.cache_write_tokens) == (
        usage["input_tokens"], usage["output_tokens"], usage.get("cache_read_input_tokens") or 0,
        usage.get("cache_creation_input_tokens") or 0)


@pytest.mark.parametrize("bad_call", ["analysis", "answer"])
def test_every_billed_call_of_two_step_reasoning_is_paid_even_when_the_date_abstains(api, tmp_path, bad_call):
    def responder(body):
        answering = "output_config" in body
        if (bad_call == "answer") == answering:
            return Reply(content=[{"type": "text", "text": None}])  # billed (usage is fine) but no text
        return good_answer(body) if answering else "The leaders look extended."

    api.responder = responder
    claude, _ = claude_for(api, max_retries=1, reasoning=True)
    sent = len(api.requests)
    result = one_date(ResponseCache(tmp_path / "s.sqlite"), claude, reasoning=True)
    assert result.views.empty and result.abstentions["reason"].str.contains("the message's content").all()
    assert len(api.requests) == sent + (3 if bad_call == "answer" else 2)
    paid = billed(api.requests[sent:])[0]
    assert paid > 0 and result.summary["cost_usd"] == pytest.approx(paid, abs=1e-6)


def test_billed_bad_replies_never_take_spending_past_the_budget(api, tmp_path):
    """Each attempt is checked against the budget with what was really spent (bad replies
    included): the run stops before the attempt that could pass it."""
    price = Price(input=20.0, output=10.0, cache_write=25.0, cache_read=2.0)
    api.responder = lambda body: Reply(content=[{"type": "text", "text": None}])
    claude, _ = claude_for(api, max_retries=4, price=price)
    sent = len(api.requests)
    with pytest.raises(BudgetExceeded, match="would pass llm.budget_usd"):
        generate_views(TABLES, analyst_settings(price=price, budget_usd=0.1), ResponseCache(tmp_path / "s.sqlite"), claude)
    spent = sum(completion_cost(price, u["input_tokens"], u["output_tokens"]) for u in
                (r.response["usage"] for r in api.requests[sent:]))
    assert len(api.requests) > sent and spent <= 0.1


def test_a_batch_result_that_is_not_a_readable_message_abstains_and_is_not_cached(api, tmp_path):
    api.responder = lambda body: Reply(content=[{"type": "text", "text": None}])
    claude, _ = claude_for(api)
    cache = ResponseCache(tmp_path / "s.sqlite")
    result = generate_views(TABLES, analyst_settings(batch=True), cache, claude)
    assert result.views.empty and len(cache) == 0 and len(result.abstentions) == 12
    assert result.abstentions["reason"].str.startswith("bad reply from the Anthropic API: the message's content").all()
    messages = [item["result"]["message"] for r in api.requests if r.path.endswith("/results")
                for item in map(json.loads, r.response.splitlines())]
    paid = sum(completion_cost(PRICE, m["usage"]["input_tokens"], m["usage"]["output_tokens"], batch=True) for m in messages)
    assert paid > 0 and result.summary["cost_usd"] == pytest.approx(paid, abs=1e-6)


# ---------------------------------------------------------------------------------------
# No reply at all: the date abstains and the run completes; a wrong key stops it loudly
# ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("failure", [*TRANSFER_BREAKS, "disconnect", "timeout"])
def test_a_connection_that_keeps_failing_abstains_the_date_and_the_run_completes(tmp_path, failure):
    with AnthropicServer(api_key=KEY, responder=good_answer) as server:
        claude, slept = claude_for(server, max_retries=1, timeout=0.5)
        for _ in range(2):
            if failure in TRANSFER_BREAKS:
                server.break_transfer_next(failure)
            elif failure == "disconnect":
                server.disconnect_next()
            else:
                server.delay_next(3.0)  # the retry arrives while the first answer still waits
        cache = ResponseCache(tmp_path / "s.sqlite")
        result = one_date(cache, claude)
        assert len(server.requests) == 2 and len(slept) == 1, "retried within the bounds first"
        assert result.views.empty and len(cache) == 0 and sorted(result.abstentions["symbol"]) == sorted(SYMBOLS)
        assert result.abstentions["reason"].str.match(r"no reply from the Anthropic API: API(Connection|Timeout)Error").all()
        assert result.summary["status"].startswith("no views: every symbol of every date abstained")
        assert len(one_date(cache, claude).views) == 4 and len(cache) == 1, "asked again next run"


@pytest.mark.parametrize("status, error", [(401, anthropic.AuthenticationError), (403, anthropic.PermissionDeniedError)])
def test_a_wrong_key_or_a_refused_permission_stops_the_run_at_once(api, tmp_path, status, error):
    api.responder = good_answer
    claude, slept = claude_for(api)
    api.fail_next(status)
    sent = len(api.requests)
    with pytest.raises(error):
        one_date(ResponseCache(tmp_path / "s.sqlite"), claude)
    assert len(api.requests) == sent + 1 and slept == []


# ---------------------------------------------------------------------------------------
# Text that is not valid Unicode: a reply-level failure, never an exception
# ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("reply", [
    lambda body: Reply("Note \ud83d: " + json.dumps(good_answer(body))),
    lambda body: Reply(content=[{"type": "text", "text": "\udc00"}, {"type": "text", "text": json.dumps(good_answer(body))}]),
    lambda body: Reply(json.dumps(good_answer(body), ensure_ascii=False).replace("momentum", "mo\ud800mentum", 1)),
], ids=["prose", "a_second_block", "inside_a_rationale"])
def test_a_reply_with_a_lone_surrogate_abstains_and_is_not_cached(api, tmp_path, reply):
    api.responder = reply
    claude, _ = claude_for(api)
    cache = ResponseCache(tmp_path / "s.sqlite")
    result = one_date(cache, claude)
    assert result.views.empty and len(cache) == 0
    assert result.abstentions["reason"].str.startswith("the answer is not valid Unicode").all()


# ---------------------------------------------------------------------------------------
# Every symbol of every date abstains: stage 04 still completes
# ---------------------------------------------------------------------------------------

def test_when_every_answer_is_cut_off_or_refused_stage_04_writes_no_views_and_every_abstention(workspace, tmp_path, monkeypatch):
    from research_lib import paths
    from research_lib.config import load_config
    from research_lib.paths import STATE_DB_NAME as STATE_DB
    from research_lib.stages import RunFolder, analyst_scores, fit_llm_signals, tearsheet_title
    from tests.conftest import REPO

    stops = iter(["max_tokens", "refusal"] * 100)
    with AnthropicServer(api_key=KEY, responder=lambda body: Reply('{"horizon_days": 21, "views": [', next(stops))) as server:
        monkeypatch.setenv("ANTHROPIC_API_KEY", KEY)
        monkeypatch.setenv("ANTHROPIC_BASE_URL", server.base_url)
        config = load_config(REPO / "params" / "smoke.yaml", ["data.start=2017-01-01", "llm.provider=anthropic",
                                                              "features.names=[ret_21d, momentum_12_1]",
                                                              "llm.inputs=[ret_21d, momentum_12_1]"])
        run_dir = tmp_path / "run"
        report = fit_llm_signals(RunFolder(config, run_dir))["report"]
        asked = len(server.requests)
        views = RunFolder(config, run_dir).views
        assert len(server.requests) == asked, "the saved (empty) views are read back, not asked for again"
    assert report["views"] == 0 and report["status"].startswith("no views")
    assert json.loads((run_dir / "llm_report.json").read_text())["status"] == report["status"]
    assert views.empty and "expected_excess_return" in views and analyst_scores(RunFolder(config, run_dir)).empty
    prompted = sum(len(asked_aliases(r.body)) for r in server.requests)
    abstained = pd.read_parquet(run_dir / "llm_abstentions.parquet")
    assert len(abstained) == prompted and not abstained.duplicated(["date", "symbol"]).any(), "every symbol of every date"
    assert set(abstained["reason"]) == {"answer cut off at max_tokens", "the model refused"}
    assert len(ResponseCache(paths.data_dir() / STATE_DB)) == 0, "nothing invalid is cached"
    title = tearsheet_title(config, report, "blend")
    assert title.startswith(f"Spartan | blend ({config.scenario}) | analyst: ") and "no views" in title


# ---------------------------------------------------------------------------------------
# Money shown true, this run's tokens only, and prompt caching claimed only where the API caches
# ---------------------------------------------------------------------------------------

AMOUNTS = st.one_of(st.floats(1e-12, 1e9), st.sampled_from([0.001, 0.004, 0.005, 0.0099999, 1e-6, 0.01, 5.0]))


def shown_close_to(shown: str, amount: float) -> bool:
    value = float(shown.removeprefix("$").replace(",", ""))
    return value > 0 and abs(value - amount) <= 0.005 * amount


@settings(max_examples=300, deadline=None, derandomize=True)
@given(amount=AMOUNTS)
def test_dollars_are_shown_with_enough_precision_to_be_true(amount):
    from research_lib.units import format_usd
    from research_lib.reports._charts import dollars

    for shown in (format_usd(amount), dollars(amount)):
        assert shown_close_to(shown, amount) and len(shown.rsplit(".", 1)[1]) >= 2, shown


@settings(max_examples=20, deadline=None, derandomize=True)
@given(amount=st.one_of(st.floats(1e-3, 1e4), st.sampled_from([0.001, 0.004, 0.0042])))
def test_the_validation_page_and_the_dashboard_show_llm_costs_true(amount, tmp_path_factory):
    from research_lib.reports.index import build_index
    from research_lib.reports.validation_page import write_validation_page

    folder = tmp_path_factory.mktemp("pages")
    (folder / "params" / "promoted").mkdir(parents=True)
    empty = {name: {} for name in ("verdict", "gate_stats", "bootstrap", "moments", "trials", "pbo", "walk_forward",
                                   "cost_stress", "by_regime")}
    llm = {"analyst": "Claude (claude-sonnet-5-5)", "cost_usd": amount, "usd_per_signal": amount / 4, "views": 4,
           "abstentions": 0, "sources": {"claude": 1}}
    page = write_validation_page({**empty, "by_year": [], "provenance": {"code": {}}, "llm": llm}, folder / "v.html")
    cost = re.search(r"<th>Cost</th><td[^>]*>(\S+) \((\S+) per signal", page.read_text())
    assert shown_close_to(cost.group(1), amount) and shown_close_to(cost.group(2), amount / 4), cost.group(0)
    run = folder / "reports" / "runs" / "r1"
    run.mkdir(parents=True)
    (run / "manifest.json").write_text(json.dumps({"run_id": "r1", "scenario": "s", "status": "succeeded", "stages": [],
                                                   "created_at": "2026-11-24T08:00:00+00:00", "llm": llm}))
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SPARTAN_HOME", str(folder))
        html = build_index(folder / "reports", now=dt.datetime(2026, 11, 25, tzinfo=dt.timezone.utc)).read_text()
    spend = re.search(r'LLM spend</div><div class="v">(\S+)</div>', html).group(1)
    total = re.search(r"<p>Total <strong>(\S+)</strong>", html).group(1)
    listed = re.search(r"4 views, 0 abstentions, (\S+)</span>", html).group(1)
    assert all(shown_close_to(shown, amount) for shown in (spend, total, listed)), (spend, total, listed)


def test_the_budget_message_shows_a_tenth_of_a_cent():
    from research_lib.llm._cost import Budget

    with pytest.raises(BudgetExceeded, match=r"spent \$0\.0004, the next call could cost up to \$0\.00123, which would "
                                             r"pass llm\.budget_usd \(\$0\.001\)"):
        Budget(cap_usd=0.001, spent_usd=0.0004).check(0.00123)


def test_a_run_served_from_the_cache_reports_its_own_tokens_not_the_original_calls(monkeypatch, tmp_path):
    from research_lib.llm._anthropic import MIN_CACHEABLE_TOKENS

    monkeypatch.setitem(MIN_CACHEABLE_TOKENS, "claude-sonnet-5-5", 100)
    with AnthropicServer(api_key=KEY, responder=good_answer, min_cacheable_tokens=100) as server:
        claude, _ = claude_for(server)
        cache = ResponseCache(tmp_path / "s.sqlite")
        first = generate_views(TABLES, analyst_settings(), cache, claude)
        for again in (generate_views(TABLES, analyst_settings(), cache, claude),
                      generate_views(TABLES, analyst_settings("replay"), cache)):
            counts = {k: again.summary[k] for k in ("input_tokens", "output_tokens", "cache_read_tokens",
                                                    "cache_write_tokens", "cost_usd")}
            assert counts == dict.fromkeys(counts, 0) and again.summary["cached_answers"] == 3
            assert (again.requests[["input_tokens", "cost_usd"]] == 0).all().all()
        assert len(server.requests) == 3 and first.summary["cache_write_tokens"] > 0 and first.summary["cached_answers"] == 0


def test_every_configured_model_has_a_minimum_cacheable_length():
    from research_lib.config import load_config
    from research_lib.llm._anthropic import MIN_CACHEABLE_TOKENS
    from tests.conftest import REPO

    llm = load_config(REPO / "params" / "daily.yaml").llm
    assert {llm.model, *llm.prices, *llm.knowledge_cutoff} <= set(MIN_CACHEABLE_TOKENS)


@pytest.mark.parametrize("model", ["claude-sonnet-5-5", "claude-opus-5-5", "claude-haiku-4-5"])
@pytest.mark.parametrize("extra_tokens", [-50, -1, 0, 1, 300])
def test_a_prefix_is_marked_for_caching_only_when_the_api_would_cache_it(model, extra_tokens):
    """The server skips prefixes below the model's minimum, as the API does: whatever is marked is
    written then read, and the completion carries the usage the API reported."""
    from research_lib.llm._anthropic import CHARS_PER_TOKEN, MIN_CACHEABLE_TOKENS

    minimum = MIN_CACHEABLE_TOKENS[model]
    system = ("Rubric and rules of the analyst. " * 1000)[: (minimum + extra_tokens) * CHARS_PER_TOKEN]
    request = PromptRequest(DATE, system, REQUEST.user, REQUEST.aliases)
    with AnthropicServer(api_key=KEY, responder=good_answer, min_cacheable_tokens=minimum) as server:
        claude, _ = claude_for(server, model=model)
        first, second = claude.complete(request, {}), claude.complete(request, {})
        usage = [r.response["usage"] for r in server.requests]
    marked = "cache_control" in server.requests[0].body["system"][0]
    assert marked == (extra_tokens >= 0), "long enough: marked; shorter: not claimed"
    assert [(c.cache_write_tokens, c.cache_read_tokens) for c in (first, second)] == [
        (u["cache_creation_input_tokens"], u["cache_read_input_tokens"]) for u in usage]
    if marked:
        assert first.cache_write_tokens > 0 and second.cache_read_tokens == first.cache_write_tokens


def test_the_cost_report_counts_cache_writes_and_reads_from_usage(monkeypatch, tmp_path):
    """With a minimum the system prompt reaches, the report's cache tokens and dollars are the API's."""
    from research_lib.llm._anthropic import MIN_CACHEABLE_TOKENS

    monkeypatch.setitem(MIN_CACHEABLE_TOKENS, "claude-sonnet-5-5", 100)
    with AnthropicServer(api_key=KEY, responder=good_answer, min_cacheable_tokens=100) as server:
        claude, _ = claude_for(server)
        result = generate_views(TABLES, analyst_settings(), ResponseCache(tmp_path / "s.sqlite"), claude)
        usage = [r.response["usage"] for r in server.requests]
    summary = result.summary
    assert summary["cache_write_tokens"] == sum(u["cache_creation_input_tokens"] for u in usage) > 0
    assert summary["cache_read_tokens"] == sum(u["cache_read_input_tokens"] for u in usage) > 0
    assert summary["cost_usd"] == pytest.approx(sum(completion_cost(
        PRICE, u["input_tokens"], u["output_tokens"], u["cache_read_input_tokens"], u["cache_creation_input_tokens"])
        for u in usage), abs=1e-6)

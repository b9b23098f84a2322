"""Claude's replies against the contract they must keep before they may become views.

The rule a user relies on: whatever Claude or the API answers, the run never crashes, no
invalid reply is cached or becomes a view, and every symbol of the prompt ends as exactly one
view or one abstention with a reason. The oracle below states what a valid view is from the
schema's words (JSON types, bounds, one entry per symbol), independently of the code.
"""

from __future__ import annotations

import json
import math
import tempfile
from pathlib import Path

import anthropic
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from research_lib.llm import (ClaudeAnalyst, Completion, PromptRequest, ReplayMiss, ResponseCache, build_request,
                              estimate_backfill, generate_views, parse_answer)
from research_lib.llm._schema import answer_schema
from tests.servers.anthropic_api import MALFORMATIONS, AnthropicServer, Reply
from tests.test_llm import DATES, KEY, PRICE, SYMBOLS, TABLES, asked_aliases, good_answer
from tests.test_llm import settings as analyst_settings

HORIZON = 21
DATE = DATES[0]
REQUEST = build_request(DATE, TABLES[DATE], HORIZON)  # what generate_views asks for DATE (masked: S01..S04)
UNMASKED = build_request(DATE, TABLES[DATE], HORIZON, mask=False)
FIELDS = ("symbol", "direction", "conviction", "expected_excess_return", "confidence", "rationale", "key_risks")
BOUNDS = {"conviction": (0.0, 1.0), "expected_excess_return": (-0.5, 0.5), "confidence": (0.0, 1.0)}
COMPLETE = ("end_turn", "stop_sequence")
CONTRACT = settings(max_examples=400, deadline=None, derandomize=True)


# ---------------------------------------------------------------------------------------
# The oracle: which views an answer must give (every other symbol abstains)
# ---------------------------------------------------------------------------------------

def _refuse(name):
    raise ValueError(name)


def _json_object(text: str):
    """The outermost {...} of ``text`` as standard JSON (no NaN/Infinity), or None."""
    start, end = text.find("{"), text.rfind("}")
    try:
        return json.loads(text[start:end + 1] if 0 <= start < end else text, parse_constant=_refuse)
    except (ValueError, RecursionError):
        return None


def _is_number(value, low: float, high: float) -> bool:
    return type(value) in (int, float) and math.isfinite(value) and low <= value <= high


def _is_valid_entry(entry: dict) -> bool:
    if set(entry) != set(FIELDS) or entry["direction"] not in ("up", "down", "neutral"):
        return False
    if not all(_is_number(entry[name], *bounds) for name, bounds in BOUNDS.items()):
        return False
    if type(entry["rationale"]) is not str or len(entry["rationale"]) > 600:
        return False
    risks = entry["key_risks"]
    if type(risks) is not list or len(risks) > 3 or any(type(r) is not str for r in risks):
        return False
    eer = entry["expected_excess_return"]
    return not (entry["direction"] == "up" and eer < 0 or entry["direction"] == "down" and eer > 0)


def expected_views(text, stop_reason, request: PromptRequest, horizon: int) -> tuple[dict[str, dict], bool]:
    """``({symbol: view}, valid)``: the views the answer must give and whether it is valid as a
    whole (a view for every symbol and no other entry)."""
    answer = _json_object(text) if stop_reason in COMPLETE and isinstance(text, str) else None
    if not (isinstance(answer, dict) and set(answer) == {"horizon_days", "views"} and type(answer["views"]) is list
            and type(answer["horizon_days"]) is int and answer["horizon_days"] == horizon):
        return {}, False
    entries = answer["views"]
    views = {}
    for alias, symbol in request.aliases.items():
        naming = [e for e in entries if isinstance(e, dict) and type(e.get("symbol")) is str and e["symbol"] == alias]
        if len(naming) == 1 and _is_valid_entry(naming[0]):
            views[symbol] = {**naming[0], "symbol": symbol}
    return views, len(views) == len(request.aliases) == len(entries)


# ---------------------------------------------------------------------------------------
# Hostile answers
# ---------------------------------------------------------------------------------------

HOSTILE = st.one_of(
    st.booleans(), st.none(), st.sampled_from(["0.9", "21", "", "up", "S01", "nan", "1e999"]),
    st.integers(-10**30, 10**30), st.floats(allow_nan=True, allow_infinity=True),
    st.lists(st.sampled_from(["S01", 1, None]), max_size=3), st.dictionaries(st.sampled_from(["S01", "a"]), st.integers(), max_size=2),
    st.just("x" * 5000), st.just(["S01"]), st.just({"symbol": "S01"}))
UNKNOWN_SYMBOLS = st.sampled_from(["EVIL", "AAPL", "s01", "S1", "S05", "S01 ", ""])
HOSTILE_TEXTS = st.sampled_from([
    "", "not json at all", "{", "[" * 5000 + "]" * 5000, '{"horizon_days": 21, "views": [' + "[" * 100_000,
    '{"horizon_days": ' + "9" * 5000 + ', "views": []}', '{"horizon_days": 21, "views": [], "horizon_days": 21}',
    '{"horizon_days": NaN, "views": []}', '{"horizon_days": 21, "views": [{"symbol": "S01", "conviction": Infinity}]}',
    "null", "[]", '"views"', "21", '{"horizon_days": 21.0, "views": []}'])


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
                                     "wrong_sign"]))
        if edit == "drop" and not entries:
            continue
        i = draw(st.integers(0, max(len(entries) - 1, 0)))
        if edit in ("field", "drop_field", "extra_field", "wrong_sign", "duplicate") and not (
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
    return entries


@st.composite
def answers(draw, request: PromptRequest = REQUEST) -> tuple[str, str | None]:
    """(text, stop_reason) of a reply to ``request``: near-valid JSON, hostile envelopes, broken text."""
    def often() -> bool:  # most answers are near-valid, so that views happen too
        return draw(st.integers(0, 9)) < 8

    answer = {"horizon_days": HORIZON if often() else draw(st.one_of(HOSTILE, st.sampled_from([63, 1, 252]))),
              "views": draw(edited_entries(request)) if often() else draw(HOSTILE)}
    if not often():
        answer[draw(st.sampled_from(["trade", "note"]))] = draw(HOSTILE)
    shape = "json" if often() else draw(st.sampled_from(["prose", "truncated", "raw"]))
    text = json.dumps(answer, allow_nan=True)  # NaN and Infinity literals: not JSON
    if shape == "prose":
        text = f"Here is the answer:\n{text}\nThat is all."
    elif shape == "truncated":
        text = text[: draw(st.integers(0, max(len(text) - 1, 0)))]
    elif shape == "raw":
        text = draw(HOSTILE_TEXTS)
    stop = draw(st.sampled_from(["end_turn", "stop_sequence"])) if often() else draw(st.sampled_from(
        ["max_tokens", "refusal", "pause_turn", "tool_use", None, "batch_errored"]))
    return text, stop


def check_outcome(views: list[dict], abstentions: list[dict], expected: dict[str, dict], request: PromptRequest) -> None:
    """Views are exactly the oracle's; every prompt symbol is one view or one abstention with a reason."""
    assert {v["symbol"]: v for v in views} == expected and len(views) == len(expected)
    named = [v["symbol"] for v in views] + [a["symbol"] for a in abstentions if a["symbol"] is not None]
    assert sorted(named) == sorted(request.symbols), "each prompt symbol once: a view or an abstention"
    for a in abstentions:
        assert a["symbol"] in request.symbols or a["symbol"] is None
        assert isinstance(a["reason"], str) and 0 < len(a["reason"]) <= 300


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
    expected, _ = expected_views(text, stop, request, HORIZON)
    views, abstentions = parse_answer(text, stop, request, HORIZON)
    check_outcome(views, abstentions, expected, request)


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


# ---------------------------------------------------------------------------------------
# The real client against the local API: hostile replies, nothing invalid cached
# ---------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def api():
    with AnthropicServer(api_key=KEY, responder=good_answer) as server:
        yield server


def claude_for(server, max_retries: int = 4, **kwargs) -> tuple[ClaudeAnalyst, list[float]]:
    slept = []
    client = anthropic.Anthropic(api_key=KEY, base_url=server.base_url, max_retries=0, timeout=5)
    return ClaudeAnalyst(client, analyst_settings(**kwargs), max_retries=max_retries, sleep=slept.append), slept


def one_date(cache: ResponseCache, claude=None, provider: str = "anthropic"):
    return generate_views({DATE: TABLES[DATE]}, analyst_settings(provider), cache, claude)


def sent_reply(request) -> tuple[str, str | None]:
    """The text and stop reason of the message the server answered."""
    message = request.response
    return "".join(b.get("text", "") for b in message["content"] if b.get("type") == "text"), message["stop_reason"]


@settings(max_examples=30, deadline=None, derandomize=True)
@given(reply=answers())
def test_live_hostile_replies_never_crash_and_only_valid_ones_are_cached(api, reply):
    text, stop = reply
    api.responder = lambda body: Reply(text, stop_reason=stop)
    claude, _ = claude_for(api)
    with tempfile.TemporaryDirectory() as folder:
        cache = ResponseCache(Path(folder) / "s.sqlite")
        first = one_date(cache, claude)
        expected, valid = expected_views(*sent_reply(api.requests[-1]), REQUEST, HORIZON)
        shown = ["symbol", "direction", "conviction", "expected_excess_return", "confidence", "rationale"]
        abstentions = [{"symbol": None if pd.isna(a.symbol) else a.symbol, "reason": a.reason}
                       for a in first.abstentions.itertuples()]  # a missing symbol is null in the frame
        check_outcome(first.views[shown].to_dict("records"), abstentions,
                      {s: {k: v[k] for k in shown} for s, v in expected.items()}, REQUEST)
        assert len(cache) == int(valid), "only a valid answer is cached"
        sent = len(api.requests)
        again = one_date(cache, claude)
        assert len(api.requests) == sent + (0 if valid else 1), "an invalid answer is asked again, a valid one is not"
        if valid:
            pd.testing.assert_frame_equal(first.views.drop(columns="source"), again.views.drop(columns="source"))


@pytest.mark.parametrize("text", [
    json.dumps({"horizon_days": 21, "views": [{"symbol": ["S01"], "direction": "up"}]}),  # crashed: unhashable list
    '{"horizon_days": 21, "views": [',
    json.dumps({"horizon_days": 21, "views": [{"symbol": "S01", "conviction": float("nan")}]}),
])
def test_an_invalid_answer_cached_by_an_older_version_is_validated_on_read_and_asked_again(api, tmp_path, text):
    api.responder = good_answer
    cache = ResponseCache(tmp_path / "s.sqlite")
    key = analyst_settings().key(REQUEST, answer_schema())
    cache.put(key, "claude-sonnet-5-5", {"date": "2021-01-29"}, Completion(text, "end_turn", 10, 10))
    assert estimate_backfill({DATE: TABLES[DATE]}, analyst_settings(), cache)["to_send"] == 1
    with pytest.raises(ReplayMiss, match="no valid cached answer for 2021-01-29"):
        one_date(cache, provider="replay")
    claude, _ = claude_for(api)
    sent = len(api.requests)
    assert len(one_date(cache, claude).views) == 4 and len(api.requests) == sent + 1, "asked again, not replayed"
    assert len(one_date(cache, claude).views) == 4 and len(api.requests) == sent + 1, "the valid answer replaced the row"


@pytest.mark.parametrize("kind", sorted(MALFORMATIONS))
def test_a_reply_that_breaks_the_messages_format_is_a_bad_reply_retried_then_abstained(api, tmp_path, kind):
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

    api.malform_next(kind)  # once: the retry gets a good answer
    result = one_date(cache, claude)
    assert len(result.views) == 4 and len(cache) == 1 and len(slept) == 3


def test_a_bad_reply_to_the_analysis_call_of_two_step_reasoning_abstains(api, tmp_path):
    api.responder = lambda body: good_answer(body) if "output_config" in body else "The leaders look extended."
    claude, _ = claude_for(api, max_retries=0, reasoning=True)
    api.malform_next("no_usage")
    cache = ResponseCache(tmp_path / "s.sqlite")
    result = generate_views({DATE: TABLES[DATE]}, analyst_settings(reasoning=True), cache, claude)
    assert result.views.empty and len(cache) == 0
    assert result.abstentions["reason"].str.contains("has no usage").all()


def test_a_batch_result_that_is_not_a_readable_message_abstains_and_is_not_cached(api, tmp_path):
    api.responder = lambda body: Reply(content=[{"type": "text", "text": None}])
    claude, _ = claude_for(api)
    cache = ResponseCache(tmp_path / "s.sqlite")
    result = generate_views(TABLES, analyst_settings(batch=True), cache, claude)
    assert result.views.empty and len(cache) == 0 and len(result.abstentions) == 12
    assert result.abstentions["reason"].str.startswith("bad reply from the Anthropic API: the message's content").all()


# ---------------------------------------------------------------------------------------
# Every symbol of every date abstains: stage 04 still completes
# ---------------------------------------------------------------------------------------

def test_when_every_answer_is_cut_off_or_refused_stage_04_writes_no_views_and_every_abstention(workspace, tmp_path, monkeypatch):
    from research_lib import paths
    from research_lib.config import load_config
    from research_lib.run import STATE_DB, fit_llm_signals, run_llm_scores, run_llm_views, tearsheet_title
    from tests.conftest import REPO

    stops = iter(["max_tokens", "refusal"] * 100)
    with AnthropicServer(api_key=KEY, responder=lambda body: Reply('{"horizon_days": 21, "views": [', next(stops))) as server:
        monkeypatch.setenv("ANTHROPIC_API_KEY", KEY)
        monkeypatch.setenv("ANTHROPIC_BASE_URL", server.base_url)
        config = load_config(REPO / "params" / "smoke.yaml", ["data.start=2017-01-01", "llm.provider=anthropic",
                                                              "features.names=[ret_21d, momentum_12_1]",
                                                              "llm.inputs=[ret_21d, momentum_12_1]"])
        run_dir = tmp_path / "run"
        report = fit_llm_signals(config, run_dir)["report"]
        asked = len(server.requests)
        views = run_llm_views(config, run_dir)
        assert len(server.requests) == asked, "the saved (empty) views are read back, not asked for again"
    assert report["views"] == 0 and report["status"].startswith("no views")
    assert json.loads((run_dir / "llm_report.json").read_text())["status"] == report["status"]
    assert views.empty and "expected_excess_return" in views and run_llm_scores(config, run_dir).empty
    prompted = sum(len(asked_aliases(r.body)) for r in server.requests)
    abstained = pd.read_parquet(run_dir / "llm_abstentions.parquet")
    assert len(abstained) == prompted and not abstained.duplicated(["date", "symbol"]).any(), "every symbol of every date"
    assert set(abstained["reason"]) == {"answer cut off at max_tokens", "the model refused"}
    assert len(ResponseCache(paths.data_dir() / STATE_DB)) == 0, "nothing invalid is cached"
    assert "no views" in tearsheet_title(config, report)


# ---------------------------------------------------------------------------------------
# Money shown true, and prompt caching claimed only where the API caches
# ---------------------------------------------------------------------------------------

@settings(max_examples=300, deadline=None, derandomize=True)
@given(amount=st.one_of(st.floats(1e-12, 1e9), st.sampled_from([0.001, 0.004, 0.005, 0.0099999, 1e-6, 0.01, 5.0])))
def test_dollars_are_shown_with_enough_precision_to_be_true(amount):
    from research_lib.llm._cost import format_usd

    shown = format_usd(amount)
    value = float(shown.removeprefix("$").replace(",", ""))
    assert value > 0 and abs(value - amount) <= 0.005 * amount, shown
    assert len(shown.rsplit(".", 1)[1]) >= 2


def test_the_budget_message_shows_a_tenth_of_a_cent():
    from research_lib.llm import BudgetExceeded
    from research_lib.llm._cost import Budget

    with pytest.raises(BudgetExceeded, match=r"spent \$0\.0004, the next call could cost up to \$0\.00123, which would "
                                             r"pass llm\.budget_usd \(\$0\.001\)"):
        Budget(cap_usd=0.001, spent_usd=0.0004).check(0.00123)


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
    from research_lib.llm._cost import completion_cost

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

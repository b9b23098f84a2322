"""The analyst at the scale of a large universe: chunked prompts, a liquidity-ranked subset
(``llm.max_symbols``), the up-front estimate, and the offline analyst at 500 symbols.

Live requests go through the real ``anthropic`` SDK to the local Messages API
(``tests/servers/anthropic_api.py``), keyed with a canary that must appear in no output.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
import time

import anthropic
import numpy as np
import pandas as pd
import pytest

from research_lib.llm import (
    AnalystSettings,
    ClaudeAnalyst,
    Headline,
    Price,
    ReplayMiss,
    ResponseCache,
    build_chunks,
    build_request,
    describe_estimate,
    estimate_backfill,
    generate_views,
    liquid_subset,
)
from research_lib.llm._chunks import OTHER_SYMBOL
from research_lib.llm._estimate import OUTPUT_TOKENS_PER_SYMBOL
from research_lib.llm._schema import answer_schema
from tests.servers.anthropic_api import AnthropicServer

CANARY = "sk-ant-canary-" + "sc4l3" * 8  # split so scanners see no key
PRICE = Price(input=2.0, output=10.0, cache_write=2.5, cache_read=0.2)
COLUMNS = ["momentum_12_1", "reversal_5d", "vol_63d"]
DATES = pd.to_datetime(["2021-01-29", "2021-02-26"])


def universe(n: int) -> list[str]:
    return [f"Q{i:03d}X" for i in range(n)]


def table(n: int, seed: int = 0) -> pd.DataFrame:
    """``n`` symbols (sorted, as the features are) x three z-score inputs."""
    values = np.sin(np.arange(3.0 * n) + seed).reshape(n, 3)
    return pd.DataFrame(values, index=universe(n), columns=COLUMNS)


def tables(n: int, dates=DATES) -> dict[pd.Timestamp, pd.DataFrame]:
    return {date: table(n, seed) for seed, date in enumerate(dates)}


def settings(provider: str = "anthropic", **changes) -> AnalystSettings:
    base = {"provider": provider, "model": "claude-sonnet-5-5", "horizon_days": 21, "price": PRICE,
            "knowledge_cutoff": dt.date(2020, 12, 31), "budget_usd": 5.0, "chunk_symbols": 50}
    return AnalystSettings(**{**base, **changes})


def asked(body: dict) -> list[str]:
    return re.search(r"Give one view for each of: (.*)\.", body["messages"][0]["content"]).group(1).split(", ")


def good_answer(body: dict) -> dict:
    return {"horizon_days": 21, "views": [
        {"symbol": alias, "direction": "up", "conviction": 0.5, "expected_excess_return": 0.01, "confidence": 0.6,
         "rationale": "inputs", "key_risks": []} for alias in asked(body)]}


@pytest.fixture
def server():
    with AnthropicServer(api_key=CANARY, responder=good_answer) as running:
        yield running


def claude_for(server, **changes) -> ClaudeAnalyst:
    client = anthropic.Anthropic(api_key=CANARY, base_url=server.base_url, max_retries=0, timeout=5)
    return ClaudeAnalyst(client, settings(**changes), max_retries=1, sleep=lambda _: None)


def assert_no_canary(*texts: str, folder=None) -> None:
    for text in texts:
        assert CANARY not in text
    for path in (folder.rglob("*") if folder else ()):
        if path.is_file():
            assert CANARY.encode() not in path.read_bytes(), f"the API key leaked into {path}"


# ---------------------------------------------------------------------------------------
# Chunks: one request each, validated for its own symbols
# ---------------------------------------------------------------------------------------

def test_120_symbols_are_asked_in_three_chunks_a_date_each_answer_covering_its_own(server, tmp_path, capsys):
    cache = ResponseCache(tmp_path / "state.sqlite")
    result = generate_views(tables(120), settings(), cache, claude_for(server))
    bodies = [r.body for r in server.requests]
    assert [len(asked(body)) for body in bodies] == [50, 50, 20] * 2
    for body in bodies:  # masked: aliases S01.. per chunk, no real ticker, no date
        user = body["messages"][0]["content"]
        assert sorted(asked(body)) == [f"S{i:02d}" for i in range(1, len(asked(body)) + 1)]
        assert not re.search(r"Q\d{3}X", user) and "2021" not in user
    assert len(result.views) == 240 and result.abstentions.empty
    assert result.views.groupby("date")["symbol"].apply(lambda s: sorted(s) == universe(120)).all()
    assert result.requests["chunk"].tolist() == [0, 1, 2] * 2 and result.requests["symbols"].tolist() == [50, 50, 20] * 2
    assert result.summary["requests"] == 6 and result.summary["dates"] == 2 and len(cache) == 6

    again = generate_views(tables(120), settings(), cache, claude_for(server))
    assert len(server.requests) == 6 and again.summary["cached_answers"] == 6, "each chunk is its own cache entry"
    pd.testing.assert_frame_equal(result.views.drop(columns="source"), again.views.drop(columns="source"))
    shown = capsys.readouterr()
    assert_no_canary(shown.out, shown.err, result.views.to_csv(), result.requests.to_csv(), folder=tmp_path)


def test_a_bad_reply_for_one_chunk_abstains_that_chunk_only_and_is_asked_again(server, tmp_path):
    calls = []

    def second_chunk_breaks(body):
        calls.append(body)
        return "not json at all" if len(calls) == 2 else good_answer(body)

    server.responder = second_chunk_breaks
    cache = ResponseCache(tmp_path / "state.sqlite")
    result = generate_views(tables(120), settings(), cache, claude_for(server))
    broken = build_chunks(tables(120), settings())[1]
    assert set(result.abstentions["symbol"]) == set(broken.table.index) and len(result.abstentions) == 50
    assert result.abstentions["reason"].str.startswith("malformed JSON").all()
    assert (result.abstentions["date"] == DATES[0]).all() and len(result.views) == 190
    assert len(cache) == 5, "the bad reply is not cached"
    again = generate_views(tables(120), settings(), cache, claude_for(server))
    assert len(server.requests) == 7 and len(again.views) == 240, "only the bad chunk is asked again"


def test_a_reply_naming_another_chunks_aliases_gives_them_no_view(tmp_path):
    """The last chunk (20 symbols) answered with 50 views, S01..S50: S21..S50 are not in its
    prompt, so they abstain as unknown; nothing lands on another chunk's symbols."""
    def fifty_views(body):
        return {**good_answer(body), "views": [{**good_answer(body)["views"][0], "symbol": f"S{i:02d}"} for i in range(1, 51)]}

    with AnthropicServer(api_key=CANARY, responder=fifty_views) as api:
        result = generate_views(tables(120, DATES[:1]), settings(), ResponseCache(tmp_path / "s.sqlite"), claude_for(api))
    unknown = result.abstentions[result.abstentions["symbol"].isna()]
    assert len(unknown) == 30 and unknown["reason"].str.startswith("unknown symbol 'S").all()
    assert len(result.views) == 120 and result.views["symbol"].is_unique


def test_masking_per_chunk_shuffles_each_chunk_and_hides_other_chunks_tickers_in_headlines():
    news = {DATES[0]: [Headline(dt.datetime(2021, 1, 28), "Q007X", "Q007X to buy Q077X; Q007X shares up"),
                       Headline(dt.datetime(2021, 1, 28), "Q077X", "Q077X agrees to be bought")]}
    first, second, third = build_chunks(tables(120, DATES[:1]), settings(), headlines=news)
    def shuffle(chunk):  # the row of the chunk's table each alias S01, S02, ... stands for
        return [chunk.table.index.get_loc(symbol) for symbol in chunk.request.aliases.values()]

    assert shuffle(first) != shuffle(second), "each chunk has its own shuffle"
    assert first.request.part == 0 and second.request.part == 1
    alias = {s: a for a, s in first.request.aliases.items()}["Q007X"]
    assert f"[{alias}] {alias} to buy {OTHER_SYMBOL}; {alias} shares up" in first.request.user
    assert "agrees to be bought" in second.request.user and "to buy" not in second.request.user
    assert "<headlines>" not in third.request.user
    assert not any(re.search(r"Q\d{3}X", c.request.user) for c in (first, second, third))


def test_a_universe_that_fits_in_one_chunk_is_asked_exactly_as_before(tmp_path):
    """20 symbols (the default universe) at chunk_symbols 50: the prompt and cache keys of the
    code before chunks (its prompt pinned by hash), so cached answers and replays still match."""
    pinned = {True: "72b2406094aa1394698f22e32543089de837645161bc3deffc10fc985bec44b7",
              False: "b875cc94dd0704b8c943641c248f98fdea0527f3f77ae1a88a79927393fc2d19"}
    for mask in (True, False):
        (chunk,) = build_chunks({DATES[0]: table(20)}, settings(mask=mask))
        assert hashlib.sha256((chunk.request.system + chunk.request.user).encode()).hexdigest() == pinned[mask]
        assert chunk.request == build_request(DATES[0], table(20), 21, mask=mask)

    class Recording(ResponseCache):
        looked: list

        def get(self, key):
            self.looked.append(key)
            return super().get(key)

    cache = Recording(tmp_path / "s.sqlite")
    cache.looked = []
    with pytest.raises(ReplayMiss, match=r"no cached answer for 2021-01-29 with model"):
        generate_views(tables(20), settings("replay"), cache)
    assert cache.looked == list(settings().keys(build_request(DATES[0], table(20), 21), answer_schema()))


def test_a_replay_miss_names_the_chunk(tmp_path):
    with pytest.raises(ReplayMiss, match=r"no cached answer for 2021-01-29 \(chunk 1 of 3\) with model"):
        generate_views(tables(120), settings("replay"), ResponseCache(tmp_path / "s.sqlite"))


def test_a_chunked_backfill_goes_as_one_message_batch(server, tmp_path):
    result = generate_views(tables(120), settings(batch=True), ResponseCache(tmp_path / "s.sqlite"),
                            claude_for(server, batch=True))
    created = [r for r in server.requests if r.path == "/v1/messages/batches" and r.method == "POST"]
    assert len(created) == 1 and len(created[0].body["requests"]) == 6
    assert len(result.views) == 240


def test_progress_counts_chunks(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("SPARTAN_PROGRESS", "1")
    generate_views(tables(120), settings("offline"), ResponseCache(tmp_path / "s.sqlite"))
    bar = capsys.readouterr().err
    assert "analyst requests" in bar and "6/6" in bar


# ---------------------------------------------------------------------------------------
# The offline analyst at 500 symbols
# ---------------------------------------------------------------------------------------

def test_the_offline_analyst_takes_500_symbols_quickly_and_its_views_do_not_depend_on_chunks(tmp_path):
    dates = pd.bdate_range("2020-01-31", periods=12, freq="BME")
    big = tables(500, dates)
    started = time.perf_counter()
    chunked = generate_views(big, settings("offline"), ResponseCache(tmp_path / "a.sqlite"))
    elapsed = time.perf_counter() - started
    whole = generate_views(big, settings("offline", chunk_symbols=500), ResponseCache(tmp_path / "b.sqlite"))
    assert chunked.summary["requests"] == 120 and whole.summary["requests"] == 12
    order = ["date", "symbol"]
    pd.testing.assert_frame_equal(chunked.views.sort_values(order).reset_index(drop=True),
                                  whole.views.sort_values(order).reset_index(drop=True))
    assert len(chunked.views) == 6000 and elapsed < 30, f"{elapsed:.1f} s for 6,000 views"


# ---------------------------------------------------------------------------------------
# llm.max_symbols: the most liquid, point in time
# ---------------------------------------------------------------------------------------

def market(n_symbols: int = 30, n_sessions: int = 200, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    rng = np.random.default_rng(seed)
    index = pd.bdate_range("2020-01-01", periods=n_sessions)
    close = pd.DataFrame(rng.uniform(10, 200, (n_sessions, n_symbols)), index=index, columns=universe(n_symbols))
    volume = pd.DataFrame(rng.uniform(1e5, 1e7, (n_sessions, n_symbols)), index=index, columns=universe(n_symbols))
    return close, volume


def test_max_symbols_keeps_the_highest_past_dollar_volume_and_never_looks_ahead():
    close, volume = market()
    dates = close.index[[80, 120, 160]]
    asked = {d: table(30) for d in dates}
    kept, report = liquid_subset(asked, close, volume, max_symbols=10)
    for date in dates:  # the oracle: mean close x volume over the 63 sessions to the date
        past = (close * volume).loc[:date].tail(63).mean()
        assert set(kept[date].index) == set(past.nlargest(10).index)
        assert list(kept[date].index) == sorted(kept[date].index), "rows keep the table's (sorted) order"
    assert report["dates_cut"] == 3 and report["symbol_dates_not_asked"] == 60 and report["dates_ranked_without_volume"] == 0

    rng = np.random.default_rng(1)
    for cut in range(3):  # every later session's volume changed, symbol by symbol and day by day
        future = volume.copy()
        after = future.index > dates[cut]
        future.loc[after] = rng.uniform(0, 1e9, (after.sum(), 30))
        moved, _ = liquid_subset(asked, close, future, max_symbols=10)
        for date in dates[: cut + 1]:
            pd.testing.assert_frame_equal(moved[date], kept[date])
        if cut < 2:
            assert any(not moved[d].equals(kept[d]) for d in dates[cut + 1:]), "later dates do see it"


def test_without_volume_the_fallback_ranks_by_price_history_then_symbol_and_says_so():
    close, _ = market(n_symbols=6)
    close.iloc[:150, 0] = np.nan  # Q000X listed late: fewer priced sessions in the window
    date = close.index[170]
    kept, report = liquid_subset({date: table(6)}, close, None, max_symbols=3)
    assert list(kept[date].index) == ["Q001X", "Q002X", "Q003X"]
    assert report["dates_ranked_without_volume"] == 1 and "number of sessions with a close" in report["fallback"]


def test_symbols_left_out_get_no_view_not_a_zero_view(tmp_path):
    close, volume = market(n_symbols=30)
    volume.loc[close.index[100]:, "Q029X"] = 1e12  # the most liquid from session 100 on
    dates = close.index[[80, 160]]
    kept, _ = liquid_subset({d: table(30) for d in dates}, close, volume, max_symbols=10)
    scores = generate_views(kept, settings("offline"), ResponseCache(tmp_path / "s.sqlite")).scores()
    assert np.isnan(scores.loc[dates[0], "Q029X"]) and np.isfinite(scores.loc[dates[1], "Q029X"])
    assert scores.notna().sum(axis=1).tolist() == [10, 10]


# ---------------------------------------------------------------------------------------
# The estimate: the whole universe, before anything is sent
# ---------------------------------------------------------------------------------------

def test_the_estimate_scales_with_dates_and_chunks(tmp_path):
    cache = ResponseCache(tmp_path / "s.sqlite")
    two_dates = estimate_backfill(tables(120), settings(), cache)
    four_dates = estimate_backfill(tables(120, pd.to_datetime(["2021-01-29", "2021-02-26", "2021-03-31", "2021-04-30"])),
                                   settings(), cache)
    one_chunk = estimate_backfill(tables(120), settings(chunk_symbols=120), cache)
    assert (two_dates["requests"], four_dates["requests"], one_chunk["requests"]) == (6, 12, 2)
    assert two_dates["max_chunks_per_date"] == 3 and two_dates["to_send"] == 6 and two_dates["symbols"] == 240
    assert two_dates["output_tokens_est"] == OUTPUT_TOKENS_PER_SYMBOL * 240
    assert four_dates["input_tokens_est"] > 1.9 * two_dates["input_tokens_est"]
    assert two_dates["input_tokens_est"] > one_chunk["input_tokens_est"], "each chunk repeats the system prompt"
    batch = estimate_backfill(tables(120), settings(batch=True), cache)
    assert batch["usd_est"] == pytest.approx(two_dates["usd_est"] / 2, abs=1e-4)
    assert "6 requests (2 dates x up to 3 chunks of <= 50 symbols" in describe_estimate(two_dates)


def test_the_estimate_counts_prompt_cache_reads_when_the_prefix_is_long_enough(tmp_path, monkeypatch):
    from research_lib.llm._payload import MIN_CACHEABLE_TOKENS

    monkeypatch.setitem(MIN_CACHEABLE_TOKENS, "claude-sonnet-5-5", 10)
    estimate = estimate_backfill(tables(120), settings(), ResponseCache(tmp_path / "s.sqlite"))
    assert estimate["cache_write_tokens_est"] > 0
    assert estimate["cache_read_tokens_est"] == 5 * estimate["cache_write_tokens_est"], "one write, then five reads"


def test_a_chunked_liquid_dry_run_sends_nothing_and_prints_its_estimate(workspace, tmp_path, monkeypatch, server, capsys):
    from research_lib.config import load_config
    from research_lib.stages import RunFolder, fit_llm_signals
    from tests.conftest import REPO

    monkeypatch.setenv("ANTHROPIC_API_KEY", CANARY)
    monkeypatch.setenv("ANTHROPIC_BASE_URL", server.base_url)
    config = load_config(REPO / "params" / "smoke.yaml", [
        "data.start=2017-01-01", "llm.provider=anthropic", "llm.dry_run=true", "llm.max_symbols=4", "llm.chunk_symbols=2",
        "features.names=[ret_21d, momentum_12_1]", "llm.inputs=[ret_21d, momentum_12_1]"])
    report = fit_llm_signals(RunFolder(config, tmp_path / "run"))["report"]
    assert server.requests == [], "a dry run sends nothing"
    estimate, universe_report = report["dry_run"], report["universe"]
    assert estimate["requests"] == 2 * estimate["dates"] > 0, "4 of 6 symbols, 2 per prompt"
    assert universe_report["dates_ranked_without_volume"] == universe_report["dates_cut"] == estimate["dates"]
    shown = capsys.readouterr()
    assert f"LLM estimate: {estimate['requests']} requests" in shown.out
    assert "llm.max_symbols: volume is missing" in shown.out
    assert_no_canary(shown.out, shown.err, json.dumps(report), folder=tmp_path)


def test_a_live_run_prints_its_estimate_before_the_first_request(workspace, tmp_path, monkeypatch, capsys):
    from research_lib.config import load_config
    from research_lib.stages import RunFolder, fit_llm_signals
    from tests.conftest import REPO

    printed_before_first = []

    def answer(body):
        printed_before_first.append("LLM estimate:" in capsys.readouterr().out)
        return good_answer(body)

    with AnthropicServer(api_key=CANARY, responder=answer) as api:
        monkeypatch.setenv("ANTHROPIC_API_KEY", CANARY)
        monkeypatch.setenv("ANTHROPIC_BASE_URL", api.base_url)
        config = load_config(REPO / "params" / "smoke.yaml", [
            "data.start=2017-01-01", "data.end=2017-06-30", "llm.provider=anthropic", "llm.chunk_symbols=4",
            "features.names=[ret_21d, momentum_12_1]", "llm.inputs=[ret_21d, momentum_12_1]"])
        report = fit_llm_signals(RunFolder(config, tmp_path / "run"))["report"]
        sent = len(api.requests)
    assert printed_before_first[0] and sent == report["estimate"]["to_send"] == report["requests"]
    assert report["views"] == 6 * report["dates"]
    assert_no_canary(json.dumps(report, default=str), folder=tmp_path)


def test_the_ic_table_shows_the_parts_that_have_an_ic_and_never_fails_on_none():
    """04's cell raised on a run whose views never differed (no IC before or after the cutoff)."""
    from research_lib.stages import ic_table

    assert ic_table({"ic_before_cutoff": None, "ic_after_cutoff": None}).empty
    table = ic_table({"ic_before_cutoff": {"mean": 0.0123456, "t_stat": 2.0}, "ic_after_cutoff": None})
    assert list(table.columns) == ["ic_before_cutoff"] and table.loc["mean", "ic_before_cutoff"] == 0.0123


def test_analyst_inputs_that_are_not_computed_features_are_a_clear_error(workspace):
    """Narrowing features.names without llm.inputs failed in 04 with a raw KeyError."""
    from research_lib.config import load_config
    from research_lib.errors import ConfigError
    from research_lib.stages import RunFolder, fit_llm_signals
    from tests.conftest import REPO

    config = load_config(REPO / "params" / "smoke.yaml", ["features.names=[ret_21d, vol_63d]", "llm.provider=offline"])
    with pytest.raises(ConfigError, match=r"llm.inputs \['ret_63d', .* add them to features.names or remove them"):
        fit_llm_signals(RunFolder(config, workspace / "run"))

"""Claude as an analyst: structured, cached, costed, look-ahead-aware views per symbol.

For each rebalance date a prompt is built from point-in-time inputs (masked by default);
the answer comes from, in order: the response cache; Claude (``anthropic``) when a key is
set and the provider allows it; or the offline analyst (rule-based, labelled "offline
analyst, not Claude" everywhere it appears). Answers are validated into views or
abstentions with reasons (``research_lib.llm._validate``). An answer is cached once it passes
the reply level (it stopped normally, is valid Unicode, and is one JSON object of the answer's
shape); what its entries hold (an unknown symbol, a wrong type, a symbol named twice) becomes
the same abstentions when it is first received and each time it is read again, so a re-run of
the same requests costs nothing and gives the same views and abstentions, and so does a replay.
A reply that fails the reply level (cut off, refused, not JSON, a bad or no reply from the API)
is not cached and is asked again next run. Nothing in `generate_views` raises on what a reply
holds. Every API attempt whose usage is readable is costed and charged to the budget, which
is checked before each attempt (``research_lib.llm._anthropic``); the cost and token counts of a
run are those of its own API calls (answers served from the cache count as ``cached_answers``).
Views dated at or before the model's knowledge cutoff are flagged ``contaminated``: the model
may know what happened next.

A large universe is asked in chunks of at most ``chunk_symbols`` symbols per date
(``research_lib.llm._chunks``): each chunk is one request, with its own prompt, cache entry and
validation, so a bad reply abstains for its chunk only. A date that fits in one chunk is asked
exactly as before chunks existed. ``liquid_subset`` keeps the most liquid symbols of each date
(``llm.max_symbols``); ``estimate_backfill`` prices a run before anything is sent.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import pandas as pd

from research_lib._lazy import lazy_exports
from research_lib.errors import SpartanError
from research_lib.llm._ask import ReplayMiss, ask_chunk, prefetch_batch
from research_lib.llm._cache import Completion, ResponseCache, request_key
from research_lib.llm._chunks import build_chunks
from research_lib.llm._cost import Budget, BudgetExceeded, Price
from research_lib.llm._estimate import OUTPUT_TOKENS_PER_SYMBOL, describe_estimate, estimate_backfill
from research_lib.llm._news import fetch_alpaca_headlines, headlines_by_date
from research_lib.llm._offline import LABEL as OFFLINE_LABEL
from research_lib.llm._offline import OFFLINE_MODEL
from research_lib.llm._payload import API_KEY_ENV, legacy_request_key, request_payload
from research_lib.llm._prompt import Headline, PromptRequest, build_request
from research_lib.llm._reply import BadAPIReply
from research_lib.llm._schema import AnalystAnswer, SymbolView, answer_schema
from research_lib.llm._universe import LIQUIDITY_WINDOW_SESSIONS, liquid_subset
from research_lib.llm._validate import parse_answer
from research_lib.progress import progress

if TYPE_CHECKING:
    from research_lib.llm._anthropic import ClaudeAnalyst

__all__ = ["API_KEY_ENV", "AnalystAnswer", "AnalystSettings", "BadAPIReply", "BudgetExceeded", "ClaudeAnalyst",
           "Headline", "LIQUIDITY_WINDOW_SESSIONS", "LLMResult", "OFFLINE_LABEL", "OUTPUT_TOKENS_PER_SYMBOL", "Price",
           "ReplayMiss", "ResponseCache", "SpendLimitReached", "SymbolView", "analyst_source", "build_chunks",
           "build_request", "describe_estimate", "estimate_backfill", "fetch_alpaca_headlines", "generate_views",
           "headlines_by_date", "liquid_subset", "make_client", "parse_answer", "prompt_tables"]

# The client's names load the anthropic SDK (about a second) on first use: the offline analyst,
# replays and dry runs never need it.
__getattr__, __dir__ = lazy_exports(__name__, {name: "_anthropic" for name in
                                               ("ClaudeAnalyst", "SpendLimitReached", "make_client")})

@dataclass(frozen=True)
class AnalystSettings:
    """What shapes the requests (and so the cache keys) and how they are paid for."""

    provider: str  # auto | anthropic | replay | offline
    model: str
    horizon_days: int
    price: Price
    knowledge_cutoff: dt.date
    budget_usd: float = 5.0
    mask: bool = True
    reasoning: bool = False
    max_tokens: int = 4096
    temperature: float | None = None
    batch: bool = False
    chunk_symbols: int = 50  # symbols per prompt: a date with more is asked in chunks

    def key(self, request: PromptRequest, schema: dict) -> str:
        """The cache key: the hash of exactly what would be sent for ``request`` (less ``cache_control``)."""
        return request_key(request_payload(request, schema, self))

    def keys(self, request: PromptRequest, schema: dict) -> tuple[str, str]:
        """Where an answer to ``request`` may be cached: `key`, then the key older versions used."""
        payload = request_payload(request, schema, self)
        return request_key(payload), legacy_request_key(payload)


@dataclass
class LLMResult:
    """Views (date, symbol, ...), abstentions (date, symbol, reason), requests with costs, a summary."""

    views: pd.DataFrame
    abstentions: pd.DataFrame
    requests: pd.DataFrame
    summary: dict = field(default_factory=dict)

    def scores(self) -> pd.DataFrame:
        """Expected excess returns as dates x symbols (NaN where the analyst abstained; no views: empty,
        still indexed by date)."""
        return self.views.pivot(index="date", columns="symbol", values="expected_excess_return")


def prompt_tables(features: pd.DataFrame, dates, columns: list[str]) -> dict[pd.Timestamp, pd.DataFrame]:
    """For each date, the symbols x ``columns`` table of features known at its close."""
    available = features.index.get_level_values("date").unique()
    tables = {}
    for date in pd.DatetimeIndex(dates):
        if date in available:
            table = features.xs(date, level="date")[columns].dropna(how="all")
            if len(table):
                tables[date] = table
    return tables


def analyst_source(settings: AnalystSettings, has_key: bool) -> str:
    """The analyst ``settings`` resolve to: ``anthropic``, ``offline`` or ``replay`` (``provider:
    auto`` is Claude when the API key is set, ``has_key``, and the offline analyst otherwise)."""
    if settings.provider == "auto":
        return "anthropic" if has_key else "offline"
    return settings.provider


def generate_views(tables: dict[pd.Timestamp, pd.DataFrame], settings: AnalystSettings, cache: ResponseCache,
                   claude: ClaudeAnalyst | None = None, headlines: dict | None = None) -> LLMResult:
    """Views for every date of ``tables`` (see the module docstring for where answers come from).

    ``claude`` is the live analyst (None: no live calls). ``headlines`` maps a date to the
    ``Headline`` list known at it.

    Raises
    ------
    ReplayMiss, BudgetExceeded, SpendLimitReached
        stopping before anything is spent past the problem; what was answered is cached.
    anthropic.APIStatusError
        a wrong key (401), a 403, an invalid request, or a 429/5xx still failing after the retries.
    """
    budget = Budget(settings.budget_usd)
    source = analyst_source(settings, has_key=claude is not None)
    if source == "anthropic" and claude is None:
        raise SpartanError(f"llm.provider 'anthropic' needs {API_KEY_ENV}; set it, or use llm.provider: offline or replay.")
    # the schema is the SDK's transform (importing it takes a second); the offline analyst never sends one
    schema = None if source == "offline" else answer_schema()
    chunks = build_chunks(tables, settings, headlines)
    batched = prefetch_batch(chunks, schema, settings, cache, claude, budget) if settings.batch and source == "anthropic" else {}
    views, abstentions, requests = [], [], []
    for index, chunk in enumerate(progress(chunks, total=len(chunks), desc="analyst requests", unit="request")):
        if index in batched:
            completion, origin, model = batched[index], "claude", settings.model
        else:
            completion, origin, model = ask_chunk(chunk, schema, settings, cache, claude, source, budget)
        chunk_views, chunk_abstentions = parse_answer(completion.text, completion.stop_reason, chunk.request,
                                                      settings.horizon_days)
        date = chunk.date
        contaminated = date.date() <= settings.knowledge_cutoff and origin != "offline"
        for view in chunk_views:
            views.append({"date": date, **view, "key_risks": "; ".join(view["key_risks"]), "source": origin,
                          "model": model, "contaminated": contaminated})
        abstentions += [{"date": date, **a, "source": origin} for a in chunk_abstentions]
        requests.append({"date": date, "chunk": chunk.part, "symbols": len(chunk.table), "source": origin,
                         "model": model, **_spent_now(completion, origin), "views": len(chunk_views),
                         "abstentions": len(chunk_abstentions)})
    return _result(views, abstentions, requests, settings)


def _spent_now(completion: Completion, origin: str) -> dict:
    """The tokens and dollars this run spent on ``completion``: its usage when Claude was asked now,
    nothing when it came from the cache (or the offline analyst)."""
    now = origin == "claude"
    tokens = ("input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens")
    return {**{name: getattr(completion, name) if now else 0 for name in tokens},
            "cost_usd": completion.cost_usd if now else 0.0}


VIEW_COLUMNS = {"date": "datetime64[ns]", "symbol": "object", "direction": "object", "conviction": "float64",
                "expected_excess_return": "float64", "confidence": "float64", "rationale": "object",
                "key_risks": "object", "source": "object", "model": "object", "contaminated": "bool"}
ABSTENTION_COLUMNS = {"date": "datetime64[ns]", "symbol": "object", "reason": "object", "source": "object"}


def _frame(rows: list[dict], columns: dict[str, str]) -> pd.DataFrame:
    """``rows`` as a frame with these columns and dtypes, empty or not."""
    return pd.DataFrame(rows, columns=list(columns)).astype(columns)


def _status(views: pd.DataFrame, abstentions: pd.DataFrame) -> str:
    """One line for the report: how many views, or "no views" and the commonest reasons."""
    if len(views):
        return f"{len(views)} views, {len(abstentions)} abstentions"
    if abstentions.empty:
        return "no views: no date had inputs to ask about"
    reasons = "; ".join(f"{reason} ({n})" for reason, n in abstentions["reason"].value_counts().head(3).items())
    return f"no views: every symbol of every date abstained ({len(abstentions)} abstentions; most common: {reasons})"


def _result(views: list, abstentions: list, requests: list, settings: AnalystSettings) -> LLMResult:
    views = _frame(views, VIEW_COLUMNS)
    abstentions = _frame(abstentions, ABSTENTION_COLUMNS)
    requests = pd.DataFrame(requests)
    sources = sorted(set(requests["source"])) if len(requests) else []
    label = OFFLINE_LABEL if sources == ["offline"] else (
        f"Claude ({settings.model})" if "offline" not in sources else f"mixed: Claude ({settings.model}) and {OFFLINE_LABEL}")
    cost = float(requests["cost_usd"].sum()) if len(requests) else 0.0
    summary = {
        "analyst": label, "sources": {s: int((requests["source"] == s).sum()) for s in sources},
        "model": OFFLINE_MODEL if sources == ["offline"] else settings.model,
        "knowledge_cutoff": str(settings.knowledge_cutoff), "masked": settings.mask,
        "requests": len(requests), "dates": int(requests["date"].nunique()) if len(requests) else 0,
        "cached_answers": int((requests["source"] == "cache").sum()) if len(requests) else 0,
        "status": _status(views, abstentions), "views": len(views), "abstentions": len(abstentions),
        "contaminated_views": int(views["contaminated"].sum()) if len(views) else 0,
        "input_tokens": int(requests["input_tokens"].sum()) if len(requests) else 0,
        "output_tokens": int(requests["output_tokens"].sum()) if len(requests) else 0,
        "cache_read_tokens": int(requests["cache_read_tokens"].sum()) if len(requests) else 0,
        "cache_write_tokens": int(requests["cache_write_tokens"].sum()) if len(requests) else 0,
        "cost_usd": round(cost, 6), "usd_per_signal": round(cost / len(views), 6) if len(views) else 0.0,
    }
    return LLMResult(views, abstentions, requests, summary)

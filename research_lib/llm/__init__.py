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
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import pandas as pd

from research_lib._lazy import lazy_exports
from research_lib.errors import SpartanError
from research_lib.llm._cache import Completion, ResponseCache, request_key
from research_lib.llm._cost import Budget, BudgetExceeded, Price, completion_cost, estimate_tokens
from research_lib.llm._offline import LABEL as OFFLINE_LABEL
from research_lib.llm._news import fetch_alpaca_headlines, headlines_by_date
from research_lib.llm._offline import OFFLINE_MODEL, offline_answer
from research_lib.llm._payload import API_KEY_ENV, legacy_request_key, request_payload
from research_lib.llm._prompt import Headline, PromptRequest, build_request
from research_lib.llm._reply import BadAPIReply
from research_lib.llm._schema import AnalystAnswer, SymbolView, answer_schema
from research_lib.llm._validate import parse_answer, reply_problem
from research_lib.progress import progress

if TYPE_CHECKING:
    from research_lib.llm._anthropic import ClaudeAnalyst

__all__ = ["API_KEY_ENV", "AnalystAnswer", "AnalystSettings", "BadAPIReply", "BudgetExceeded", "ClaudeAnalyst",
           "Headline", "LLMResult", "OFFLINE_LABEL", "Price", "ReplayMiss", "ResponseCache", "SpendLimitReached",
           "SymbolView", "analyst_source", "build_request", "estimate_backfill", "fetch_alpaca_headlines",
           "generate_views", "headlines_by_date", "make_client", "parse_answer", "prompt_tables"]

# The client's names load the anthropic SDK (about a second) on first use: the offline analyst,
# replays and dry runs never need it.
__getattr__, __dir__ = lazy_exports(__name__, {name: "_anthropic" for name in
                                               ("ClaudeAnalyst", "SpendLimitReached", "make_client")})

OUTPUT_TOKENS_PER_SYMBOL = 90  # for estimates: a view is about 60-90 tokens of JSON


class ReplayMiss(SpartanError):
    """``llm.provider: replay`` found no cached answer for a request, or one that is not valid."""


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


def estimate_backfill(tables: dict, settings: AnalystSettings, cache: ResponseCache) -> dict:
    """Dry run: how many requests would be sent, their tokens and dollars (an upper estimate)."""
    schema = answer_schema()
    to_send = cached = input_tokens = output_tokens = 0
    for date, table in tables.items():
        request = build_request(date, table, settings.horizon_days, mask=settings.mask, reasoning=settings.reasoning)
        if _cached(cache, request, schema, settings)[0] is not None:
            cached += 1
            continue
        to_send += 1
        calls = 2 if settings.reasoning else 1
        input_tokens += calls * (estimate_tokens(request.system + request.user) + estimate_tokens(str(schema)))
        output_tokens += OUTPUT_TOKENS_PER_SYMBOL * len(table) + (250 if settings.reasoning else 0)
    usd = completion_cost(settings.price, input_tokens, output_tokens)
    return {"requests": len(tables), "cached": cached, "to_send": to_send, "input_tokens_est": input_tokens,
            "output_tokens_est": output_tokens, "usd_est": round(usd, 4), "budget_usd": settings.budget_usd,
            "within_budget": usd <= settings.budget_usd}


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
    built = {date: build_request(date, table, settings.horizon_days, mask=settings.mask, reasoning=settings.reasoning,
                                 headlines=(headlines or {}).get(date, ())) for date, table in sorted(tables.items())}
    batched = _prefetch_batch(built, schema, settings, cache, claude, budget) if settings.batch and source == "anthropic" else {}
    views, abstentions, requests = [], [], []
    for date, request in progress(built.items(), total=len(built), desc="analyst requests", unit="request"):
        table = tables[date]
        if date in batched:
            completion, origin, model = batched[date], "claude", settings.model
        else:
            completion, origin, model = _answer(request, table, schema, settings, cache, claude, source, budget)
        date_views, date_abstentions = parse_answer(completion.text, completion.stop_reason, request, settings.horizon_days)
        contaminated = date.date() <= settings.knowledge_cutoff and origin != "offline"
        for view in date_views:
            views.append({"date": date, **view, "key_risks": "; ".join(view["key_risks"]), "source": origin,
                          "model": model, "contaminated": contaminated})
        abstentions += [{"date": date, **a, "source": origin} for a in date_abstentions]
        requests.append({"date": date, "source": origin, "model": model, **_spent_now(completion, origin),
                         "views": len(date_views), "abstentions": len(date_abstentions)})
    return _result(views, abstentions, requests, settings)


def _answer(request: PromptRequest, table: pd.DataFrame, schema: dict, settings: AnalystSettings,
            cache: ResponseCache, claude: ClaudeAnalyst | None, source: str, budget: Budget) -> tuple[Completion, str, str]:
    if source == "offline":
        return Completion(offline_answer(request, table, settings.horizon_days), "end_turn"), "offline", OFFLINE_MODEL
    cached, problem = _cached(cache, request, schema, settings)
    if cached is not None:
        return cached, "cache", settings.model
    key = settings.key(request, schema)
    if source == "replay":
        raise ReplayMiss(_replay_miss(request, settings, key, problem))
    completion = claude.complete(request, schema, budget)
    _keep_if_answer(cache, key, request, completion, settings)
    return completion, "claude", settings.model


def _cached(cache: ResponseCache, request: PromptRequest, schema: dict,
            settings: AnalystSettings) -> tuple[Completion | None, str | None]:
    """``(answer, None)``: the cached answer to ``request`` (under its key, else the key of older
    versions) that passes the reply level again; else ``(None, why the cached row is not an
    answer)``, or ``(None, None)`` when nothing is cached. A row that is not an answer (left by
    an older version) counts as none: it is asked again and replaced."""
    problem = None
    for key in settings.keys(request, schema):
        cached = cache.get(key)
        if cached is None:
            continue
        problem = reply_problem(cached.text, cached.stop_reason, settings.horizon_days)
        if problem is None:
            return cached, None
    return None, problem


def _replay_miss(request: PromptRequest, settings: AnalystSettings, key: str, problem: str | None) -> str:
    where = f"for {request.date:%Y-%m-%d} with model {settings.model} (key {key[:12]})"
    if problem is None:
        return (f"llm.provider 'replay': no cached answer {where}; run once with llm.provider: anthropic "
                "(and a key), or use llm.provider: offline.")
    return (f"llm.provider 'replay': the cached answer {where} is not valid ({problem[:120]}); run once with "
            "llm.provider: anthropic (and a key) to ask again, or use llm.provider: offline.")


def _keep_if_answer(cache: ResponseCache, key: str, request: PromptRequest, completion: Completion,
                    settings: AnalystSettings, **extra) -> None:
    """Cache ``completion`` when it passes the reply level (its entries may still abstain: they are
    derived again on every read); a refusal, a cut-off or a reply that is no JSON object of the
    answer's shape may not happen again, so it is asked again next run."""
    if reply_problem(completion.text, completion.stop_reason, settings.horizon_days) is None:
        cache.put(key, settings.model, {"date": str(request.date.date()), "system": request.system,
                                        "user": request.user, **extra}, completion)


def _spent_now(completion: Completion, origin: str) -> dict:
    """The tokens and dollars this run spent on ``completion``: its usage when Claude was asked now,
    nothing when it came from the cache (or the offline analyst)."""
    now = origin == "claude"
    tokens = ("input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens")
    return {**{name: getattr(completion, name) if now else 0 for name in tokens},
            "cost_usd": completion.cost_usd if now else 0.0}


def _prefetch_batch(built: dict, schema: dict, settings: AnalystSettings, cache: ResponseCache,
                    claude: ClaudeAnalyst, budget: Budget) -> dict[pd.Timestamp, Completion]:
    """Send every uncached request as one Message Batch (half price); cache what it answers."""
    keys = {date: settings.key(r, schema) for date, r in built.items()}
    missing = {keys[d]: r for d, r in built.items() if _cached(cache, r, schema, settings)[0] is None}
    if not missing:
        return {}
    answers = claude.complete_batch(missing, schema, budget)
    fetched = {}
    for date, key in keys.items():
        if key in answers:
            fetched[date] = answers[key]
            _keep_if_answer(cache, key, built[date], answers[key], settings, batch=True)
    return fetched


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
        "requests": len(requests), "cached_answers": int((requests["source"] == "cache").sum()) if len(requests) else 0,
        "status": _status(views, abstentions), "views": len(views), "abstentions": len(abstentions),
        "contaminated_views": int(views["contaminated"].sum()) if len(views) else 0,
        "input_tokens": int(requests["input_tokens"].sum()) if len(requests) else 0,
        "output_tokens": int(requests["output_tokens"].sum()) if len(requests) else 0,
        "cache_read_tokens": int(requests["cache_read_tokens"].sum()) if len(requests) else 0,
        "cache_write_tokens": int(requests["cache_write_tokens"].sum()) if len(requests) else 0,
        "cost_usd": round(cost, 6), "usd_per_signal": round(cost / len(views), 6) if len(views) else 0.0,
    }
    return LLMResult(views, abstentions, requests, summary)

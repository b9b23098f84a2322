"""Claude as an analyst: structured, cached, costed, look-ahead-aware views per symbol.

For each rebalance date a prompt is built from point-in-time inputs (masked by default);
the answer comes from, in order: the response cache; Claude (``anthropic``) when a key is
set and the provider allows it; or the offline analyst (rule-based, labelled "offline
analyst, not Claude" everywhere it appears). Answers are validated into views or
abstentions with reasons; only a valid answer (a view for every symbol, no abstention) is
cached, and a cached answer is validated again when read, so a bad one is asked again
rather than replayed. Every request is costed, and a budget cap stops spending before
it is passed. Views dated at or before the model's knowledge cutoff are flagged
``contaminated``: the model may know what happened next.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

import pandas as pd

from research_lib.errors import SpartanError
from research_lib.llm._anthropic import (API_KEY_ENV, BadAPIReply, ClaudeAnalyst, SpendLimitReached, make_client,
                                         request_payload)
from research_lib.llm._cache import Completion, ResponseCache, request_key
from research_lib.llm._cost import Budget, BudgetExceeded, Price, completion_cost, estimate_tokens
from research_lib.llm._offline import LABEL as OFFLINE_LABEL
from research_lib.llm._offline import OFFLINE_MODEL, offline_answer
from research_lib.llm._prompt import Headline, PromptRequest, build_request
from research_lib.llm._schema import AnalystAnswer, SymbolView, answer_schema
from research_lib.llm._validate import BAD_REPLY, is_valid_answer, parse_answer

__all__ = ["API_KEY_ENV", "AnalystAnswer", "AnalystSettings", "BadAPIReply", "BudgetExceeded", "ClaudeAnalyst",
           "Headline", "LLMResult", "OFFLINE_LABEL", "Price", "ReplayMiss", "ResponseCache", "SpendLimitReached", "SymbolView",
           "build_request", "estimate_backfill", "generate_views", "make_client", "parse_answer", "prompt_tables"]

OUTPUT_TOKENS_PER_SYMBOL = 90  # for estimates: a view is about 60-90 tokens of JSON


class ReplayMiss(SpartanError):
    """``llm.provider: replay`` found no cached answer for a request."""


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
        """The cache key: the hash of exactly what would be sent for ``request``."""
        return request_key(request_payload(request, schema, self))


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


def _source_for(settings: AnalystSettings, has_key: bool) -> str:
    if settings.provider == "auto":
        return "anthropic" if has_key else "offline"
    return settings.provider


def estimate_backfill(tables: dict, settings: AnalystSettings, cache: ResponseCache) -> dict:
    """Dry run: how many requests would be sent, their tokens and dollars (an upper estimate)."""
    schema = answer_schema()
    to_send = cached = input_tokens = output_tokens = 0
    for date, table in tables.items():
        request = build_request(date, table, settings.horizon_days, mask=settings.mask, reasoning=settings.reasoning)
        if _valid_cached(cache, settings.key(request, schema), request, settings) is not None:
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
    """
    schema = answer_schema()
    budget = Budget(settings.budget_usd)
    source = _source_for(settings, has_key=claude is not None)
    if source == "anthropic" and claude is None:
        raise SpartanError(f"llm.provider 'anthropic' needs {API_KEY_ENV}; set it, or use llm.provider: offline or replay.")
    built = {date: build_request(date, table, settings.horizon_days, mask=settings.mask, reasoning=settings.reasoning,
                                 headlines=(headlines or {}).get(date, ())) for date, table in sorted(tables.items())}
    batched = _prefetch_batch(built, schema, settings, cache, claude, budget) if settings.batch and source == "anthropic" else {}
    views, abstentions, requests = [], [], []
    for date, request in built.items():
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
        requests.append({"date": date, "source": origin, "model": model, "input_tokens": completion.input_tokens,
                         "output_tokens": completion.output_tokens, "cache_read_tokens": completion.cache_read_tokens,
                         "cache_write_tokens": completion.cache_write_tokens,
                         "cost_usd": completion.cost_usd if origin == "claude" else 0.0,
                         "views": len(date_views), "abstentions": len(date_abstentions)})
    return _result(views, abstentions, requests, settings)


def _answer(request: PromptRequest, table: pd.DataFrame, schema: dict, settings: AnalystSettings,
            cache: ResponseCache, claude: ClaudeAnalyst | None, source: str, budget: Budget) -> tuple[Completion, str, str]:
    if source == "offline":
        return Completion(offline_answer(request, table, settings.horizon_days), "end_turn"), "offline", OFFLINE_MODEL
    key = settings.key(request, schema)
    cached = _valid_cached(cache, key, request, settings)
    if cached is not None:
        return cached, "cache", settings.model
    if source == "replay":
        raise ReplayMiss(f"llm.provider 'replay': no valid cached answer for {request.date:%Y-%m-%d} with model "
                         f"{settings.model} (key {key[:12]}); run once with llm.provider: anthropic (and a key), "
                         "or use llm.provider: offline.")
    calls = 2 if settings.reasoning else 1
    budget.check(completion_cost(settings.price, calls * estimate_tokens(request.system + request.user + str(schema)),
                                 settings.max_tokens * calls))
    completion = claude.complete(request, schema)
    cost = completion_cost(settings.price, completion.input_tokens, completion.output_tokens,
                           completion.cache_read_tokens, completion.cache_write_tokens)
    completion = Completion(**{**completion.__dict__, "cost_usd": cost})
    budget.add(cost)
    _keep_if_valid(cache, key, request, completion, settings)
    return completion, "claude", settings.model


def _valid_cached(cache: ResponseCache, key: str, request: PromptRequest, settings: AnalystSettings) -> Completion | None:
    """The cached answer for ``key`` if it is still a valid answer to ``request`` (an invalid row,
    e.g. left by an older version, counts as no answer: it is asked again and replaced)."""
    cached = cache.get(key)
    if cached is None or not is_valid_answer(cached.text, cached.stop_reason, request, settings.horizon_days):
        return None
    return cached


def _keep_if_valid(cache: ResponseCache, key: str, request: PromptRequest, completion: Completion,
                   settings: AnalystSettings, **extra) -> None:
    """Cache ``completion`` only when it is a valid answer to ``request``: a refusal, a cut-off or
    off-schema answer may not happen again, so it is asked again next run."""
    if is_valid_answer(completion.text, completion.stop_reason, request, settings.horizon_days):
        cache.put(key, settings.model, {"date": str(request.date.date()), "system": request.system,
                                        "user": request.user, **extra}, completion)


def _prefetch_batch(built: dict, schema: dict, settings: AnalystSettings, cache: ResponseCache,
                    claude: ClaudeAnalyst, budget: Budget) -> dict[pd.Timestamp, Completion]:
    """Send every uncached request as one Message Batch (half price); cache what it answers."""
    keys = {date: settings.key(r, schema) for date, r in built.items()}
    missing = {keys[d]: r for d, r in built.items() if _valid_cached(cache, keys[d], r, settings) is None}
    if not missing:
        return {}
    worst = sum(completion_cost(settings.price, estimate_tokens(r.system + r.user + str(schema)), settings.max_tokens,
                                batch=True) for r in missing.values())
    budget.check(worst)
    try:
        answers = claude.complete_batch(missing, schema)
    except BadAPIReply as err:  # the batch endpoints kept answering nonsense: every date it held abstains
        answers = {key: Completion(text=str(err), stop_reason=BAD_REPLY) for key in missing}
    fetched = {}
    for date, key in keys.items():
        if key not in answers:
            continue
        answer = answers[key]
        cost = completion_cost(settings.price, answer.input_tokens, answer.output_tokens, answer.cache_read_tokens,
                               answer.cache_write_tokens, batch=True)
        fetched[date] = Completion(**{**answer.__dict__, "cost_usd": cost})
        budget.add(cost)
        _keep_if_valid(cache, key, built[date], fetched[date], settings, batch=True)
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
        "requests": len(requests), "status": _status(views, abstentions), "views": len(views),
        "abstentions": len(abstentions),
        "contaminated_views": int(views["contaminated"].sum()) if len(views) else 0,
        "input_tokens": int(requests["input_tokens"].sum()) if len(requests) else 0,
        "output_tokens": int(requests["output_tokens"].sum()) if len(requests) else 0,
        "cache_read_tokens": int(requests["cache_read_tokens"].sum()) if len(requests) else 0,
        "cache_write_tokens": int(requests["cache_write_tokens"].sum()) if len(requests) else 0,
        "cost_usd": round(cost, 6), "usd_per_signal": round(cost / len(views), 6) if len(views) else 0.0,
    }
    return LLMResult(views, abstentions, requests, summary)

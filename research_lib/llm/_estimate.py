"""The up-front estimate of a run: requests, tokens and dollars for the whole universe, chunks
included, before anything is sent (a dry run stops there; a live run prints it first).

It is an upper estimate of what is not cached yet: input tokens at about 3.5 characters a token
(`research_lib.llm._cost.estimate_tokens`), the schema counted with each call, and
`OUTPUT_TOKENS_PER_SYMBOL` of answer per symbol (plus `ANALYSIS_TOKENS` when a reasoning call
comes first). When the system prompt is long enough for the model's prompt cache
(`research_lib.llm._payload.cacheable`), the first call writes it and the others read it (they
are sent one after another, well within the cache's five minutes). A Message Batch
(``llm.batch``) is priced at its discount. Answers already in the response cache cost nothing.
"""

from __future__ import annotations

from collections import Counter

from research_lib.llm._ask import cached_answer
from research_lib.llm._cache import ResponseCache
from research_lib.llm._chunks import build_chunks
from research_lib.llm._cost import completion_cost, estimate_tokens
from research_lib.llm._payload import cacheable
from research_lib.llm._schema import answer_schema
from research_lib.units import format_usd

OUTPUT_TOKENS_PER_SYMBOL = 90  # a view is about 60-90 tokens of JSON
ANALYSIS_TOKENS = 250  # the brief analysis of two-step reasoning


def estimate_backfill(tables: dict, settings, cache: ResponseCache, headlines: dict | None = None) -> dict:
    """How many requests a run of ``tables`` makes (dates x chunks), how many are cached, and the
    tokens and dollars of the others (an upper estimate). Sends nothing."""
    schema = answer_schema()
    chunks = build_chunks(tables, settings, headlines)
    schema_tokens = estimate_tokens(str(schema))
    calls = 2 if settings.reasoning else 1
    to_send = input_tokens = output_tokens = cache_read = cache_write = 0
    for chunk in chunks:
        if cached_answer(cache, chunk.request, schema, settings)[0] is not None:
            continue
        request = chunk.request
        for call in range(calls):
            if cacheable(request.system, settings.model):  # the first call writes the prefix, the others read it
                if to_send == 0 and call == 0:
                    cache_write += estimate_tokens(request.system)
                else:
                    cache_read += estimate_tokens(request.system)
                input_tokens += estimate_tokens(request.user) + schema_tokens
            else:
                input_tokens += estimate_tokens(request.system + request.user) + schema_tokens
        output_tokens += OUTPUT_TOKENS_PER_SYMBOL * len(chunk.table) + (ANALYSIS_TOKENS if settings.reasoning else 0)
        to_send += 1
    usd = completion_cost(settings.price, input_tokens, output_tokens, cache_read, cache_write, batch=settings.batch)
    per_date = Counter(chunk.date for chunk in chunks).values()
    return {"requests": len(chunks), "dates": len(tables), "symbols": sum(len(t) for t in tables.values()),
            "chunk_symbols": settings.chunk_symbols, "max_chunks_per_date": max(per_date, default=0),
            "cached": len(chunks) - to_send, "to_send": to_send, "input_tokens_est": input_tokens,
            "output_tokens_est": output_tokens, "cache_read_tokens_est": cache_read, "cache_write_tokens_est": cache_write,
            "batch": settings.batch, "usd_est": round(usd, 4), "budget_usd": settings.budget_usd,
            "within_budget": usd <= settings.budget_usd}


def describe_estimate(estimate: dict) -> str:
    """The estimate in two lines, for the log before anything is sent."""
    chunks = (f" x up to {estimate['max_chunks_per_date']} chunks of <= {estimate['chunk_symbols']} symbols"
              if estimate["max_chunks_per_date"] > 1 else "")
    lines = [f"LLM estimate: {estimate['requests']} requests ({estimate['dates']} dates{chunks}; "
             f"{estimate['symbols']} symbol-dates), {estimate['cached']} cached, {estimate['to_send']} to send",
             f"  about {estimate['input_tokens_est']:,} input and {estimate['output_tokens_est']:,} output tokens "
             f"({estimate['cache_read_tokens_est']:,} cache reads), {format_usd(estimate['usd_est'])}"
             f"{' at the batch discount' if estimate['batch'] else ''}, budget {format_usd(estimate['budget_usd'])}"]
    if not estimate["within_budget"]:
        lines.append("  more than llm.budget_usd: the run stops before the call that would pass it "
                     "(what was answered by then is cached)")
    return "\n".join(lines)

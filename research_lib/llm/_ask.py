"""One request's answer: from the response cache, from Claude, or from the offline analyst.

`ask_chunk` is the unit of work of a run: one chunk of one date (`research_lib.llm._chunks`), one
plain function call, so the requests of a run can be mapped by a compute backend later (the
``budget`` it is charged to is shared: a backend that runs chunks in parallel must share it too).
`prefetch_batch` sends every uncached chunk as one Message Batch instead.

What is cached: an answer that passes the reply level (`research_lib.llm._validate`); its
entries may still abstain, and are derived again on every read.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

from research_lib.errors import SpartanError
from research_lib.llm._cache import Completion, ResponseCache
from research_lib.llm._chunks import Chunk
from research_lib.llm._cost import Budget
from research_lib.llm._offline import OFFLINE_MODEL, offline_answer
from research_lib.llm._prompt import PromptRequest
from research_lib.llm._validate import reply_problem

if TYPE_CHECKING:
    from research_lib.llm._anthropic import ClaudeAnalyst


class ReplayMiss(SpartanError):
    """``llm.provider: replay`` found no cached answer for a request, or one that is not valid."""


class Answer(NamedTuple):
    """A chunk's completion, where it came from (``cache``, ``claude``, ``offline``) and the model."""

    completion: Completion
    origin: str
    model: str


def ask_chunk(chunk: Chunk, schema: dict | None, settings, cache: ResponseCache, claude: ClaudeAnalyst | None,
              source: str, budget: Budget) -> Answer:
    """The answer to ``chunk``'s request: the offline analyst when ``source`` is ``offline``; else
    the cached answer; else (``source`` ``anthropic``) Claude's, cached when it is an answer.

    Raises ``ReplayMiss`` (``source`` ``replay`` and nothing valid cached), and what
    ``ClaudeAnalyst.complete`` raises (``BudgetExceeded`` before a call that would pass the budget).
    """
    if source == "offline":
        text = offline_answer(chunk.request, chunk.table, settings.horizon_days)
        return Answer(Completion(text, "end_turn"), "offline", OFFLINE_MODEL)
    cached, problem = cached_answer(cache, chunk.request, schema, settings)
    if cached is not None:
        return Answer(cached, "cache", settings.model)
    key = settings.key(chunk.request, schema)
    if source == "replay":
        raise ReplayMiss(_replay_miss(chunk, settings, key, problem))
    completion = claude.complete(chunk.request, schema, budget)
    keep_if_answer(cache, key, chunk.request, completion, settings)
    return Answer(completion, "claude", settings.model)


def prefetch_batch(chunks: list[Chunk], schema: dict, settings, cache: ResponseCache, claude: ClaudeAnalyst,
                   budget: Budget) -> dict[int, Completion]:
    """Send every uncached chunk as one Message Batch (half price); cache what it answers.
    Returns ``{index in chunks: completion}`` for the chunks the batch answered."""
    keys = [settings.key(chunk.request, schema) for chunk in chunks]
    missing = {key: chunk.request for key, chunk in zip(keys, chunks)
               if cached_answer(cache, chunk.request, schema, settings)[0] is None}
    if not missing:
        return {}
    answers = claude.complete_batch(missing, schema, budget)
    fetched = {}
    for index, (key, chunk) in enumerate(zip(keys, chunks)):
        if key in answers:
            fetched[index] = answers[key]
            keep_if_answer(cache, key, chunk.request, answers[key], settings, batch=True)
    return fetched


def cached_answer(cache: ResponseCache, request: PromptRequest, schema: dict,
                  settings) -> tuple[Completion | None, str | None]:
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


def keep_if_answer(cache: ResponseCache, key: str, request: PromptRequest, completion: Completion,
                   settings, **extra) -> None:
    """Cache ``completion`` when it passes the reply level (its entries may still abstain: they are
    derived again on every read); a refusal, a cut-off or a reply that is no JSON object of the
    answer's shape may not happen again, so it is asked again next run."""
    if reply_problem(completion.text, completion.stop_reason, settings.horizon_days) is None:
        cache.put(key, settings.model, {"date": str(request.date.date()), "system": request.system,
                                        "user": request.user, **extra}, completion)


def _replay_miss(chunk: Chunk, settings, key: str, problem: str | None) -> str:
    where = f"for {chunk.label} with model {settings.model} (key {key[:12]})"
    if problem is None:
        return (f"llm.provider 'replay': no cached answer {where}; run once with llm.provider: anthropic "
                "(and a key), or use llm.provider: offline.")
    return (f"llm.provider 'replay': the cached answer {where} is not valid ({problem[:120]}); run once with "
            "llm.provider: anthropic (and a key) to ask again, or use llm.provider: offline.")

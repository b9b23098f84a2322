"""Claude through the ``anthropic`` SDK: structured output, bounded retries, prompt caching
only where the API would cache.

The client is built once at the edge (key from the environment) and passed in. Retries are
ours, not the SDK's (it is created with ``max_retries=0``) so that the rules are explicit:
408, 409, 429 (rate limit), 5xx including 529 (overloaded), timeouts, dropped connections and
bad replies (status 200 with a body that is not a Message: not JSON, no ``usage``, no
``content`` list) are retried with backoff, honouring ``retry-after``, up to ``max_retries``
times and ``max_wait_s`` seconds in total; a spend limit (a 429 with error code
``enforced_spend_limit_reached``, or a 400 about "API usage limits") is never retried,
since waiting does not lift it; anything else is raised at once. A bad reply that is still
bad after the retries becomes a completion with stop reason ``bad_api_reply`` (its text says
what was wrong): its date abstains, nothing is cached, and with no usage to read it adds
nothing to the cost report.

Prompt caching: the API silently skips a cache prefix shorter than a per-model minimum, so the
system prompt is marked ``cache_control`` only when it is at least that long
(``MIN_CACHEABLE_TOKENS``), and a shorter one is sent unmarked. Whatever the API did is read
from ``usage`` (cache writes and reads) into the cost report either way.
"""

from __future__ import annotations

import json
import os
import time
from typing import Callable

import anthropic

from research_lib.errors import SpartanError
from research_lib.llm._cache import Completion
from research_lib.llm._prompt import PromptRequest
from research_lib.llm._validate import BAD_REPLY

API_KEY_ENV = "ANTHROPIC_API_KEY"
BASE_URL_ENV = "ANTHROPIC_BASE_URL"
SPEND_LIMIT_MARKERS = ("spend limit", "api usage limits")
RETRYABLE_STATUSES = (408, 409, 429)  # and every 5xx, 529 (overloaded) included
ANALYSIS_PROMPT = "First write a brief analysis of the inputs (150 words at most, no JSON)."
ANSWER_PROMPT = "Now give the JSON answer for every symbol."

# The shortest prefix the API caches, in tokens, for each model of params/base.yaml (below it,
# cache_control is silently ignored). Anthropic's prompt-caching docs as mirrored by litellm
# (2026-10): Opus 5 512, Sonnet 5 1,024 (the 5.5 models have no row of their own: their family's),
# Sonnet 4.6 2,048, Haiku 4.5 4,096.
MIN_CACHEABLE_TOKENS = {"claude-sonnet-5-5": 1024, "claude-opus-5-5": 512, "claude-sonnet-5": 1024,
                        "claude-sonnet-4-6": 2048, "claude-haiku-4-5": 4096}
CHARS_PER_TOKEN = 4  # the long end for English text, so a prefix counted long enough is long enough


class SpendLimitReached(SpartanError):
    """The API refused with a spend limit: retrying cannot help."""


class BadAPIReply(SpartanError):
    """The API answered (status 200) with something that is not a Message."""


def cacheable(text: str, model: str) -> bool:
    """Whether a prefix of ``text`` is long enough for ``model``'s prompt cache (unknown model: no)."""
    minimum = MIN_CACHEABLE_TOKENS.get(model)
    return minimum is not None and len(text) // CHARS_PER_TOKEN >= minimum


def make_client(timeout_s: float = 60.0) -> anthropic.Anthropic:
    """The SDK client, keyed from ``ANTHROPIC_API_KEY`` (``ANTHROPIC_BASE_URL`` overrides the host)."""
    key = os.environ.get(API_KEY_ENV)
    if not key:
        raise SpartanError(f"llm.provider 'anthropic' needs {API_KEY_ENV} in the environment (or .env); "
                           "without it use llm.provider: offline or replay.")
    return anthropic.Anthropic(api_key=key, base_url=os.environ.get(BASE_URL_ENV) or None, max_retries=0,
                               timeout=timeout_s)


def request_payload(request: PromptRequest, schema: dict, settings) -> dict:
    """Exactly what is sent for ``request`` (first call), plus how the answer is produced.

    The response cache is keyed by a hash of this, so a cached answer is always the answer
    to this very request.
    """
    system = {"type": "text", "text": request.system}
    if cacheable(request.system, settings.model):
        system["cache_control"] = {"type": "ephemeral"}
    payload = {"model": settings.model, "max_tokens": settings.max_tokens, "system": [system],
               "messages": [{"role": "user", "content": request.user}],
               "output_config": {"format": {"type": "json_schema", "schema": schema}}}
    if settings.temperature is not None:
        payload["temperature"] = settings.temperature
    if settings.reasoning:  # two calls: an analysis, then the answer (fixed prompts)
        payload["reasoning"] = [ANALYSIS_PROMPT, ANSWER_PROMPT]
    return payload


class ClaudeAnalyst:
    """Sends requests built from ``AnalystSettings``; returns final text, stop reason and usage."""

    def __init__(self, client: anthropic.Anthropic, settings, max_retries: int = 4, max_wait_s: float = 120.0,
                 sleep: Callable[[float], None] = time.sleep):
        self.client = client
        self.settings = settings
        self.max_retries = max_retries
        self.max_wait_s = max_wait_s
        self.sleep = sleep

    def complete(self, request: PromptRequest, schema: dict) -> Completion:
        """The answer to ``request``; a reply still bad after the retries is a ``bad_api_reply`` completion."""
        try:
            return self._complete(request, schema)
        except BadAPIReply as err:
            return Completion(text=str(err), stop_reason=BAD_REPLY)

    def _complete(self, request: PromptRequest, schema: dict) -> Completion:
        payload = request_payload(request, schema, self.settings)
        if not self.settings.reasoning:
            return _completion([self._send(payload)])
        first = {k: v for k, v in payload.items() if k not in ("output_config", "reasoning")}
        first["messages"] = [{"role": "user", "content": request.user + "\n\n" + ANALYSIS_PROMPT}]
        analysis = self._send(first)
        second = {k: v for k, v in payload.items() if k != "reasoning"}
        second["messages"] = [*payload["messages"], {"role": "assistant", "content": _text(analysis)},
                              {"role": "user", "content": ANSWER_PROMPT}]
        return _completion([analysis, self._send(second)])

    def complete_batch(self, requests: dict[str, PromptRequest], schema: dict, poll_s: float = 30.0,
                       max_wait_s: float = 24 * 3600.0) -> dict[str, Completion]:
        """Send ``{custom_id: request}`` as one Message Batch (half price), wait, collect.

        A request the batch did not answer (errored, expired, canceled) comes back as a
        completion with ``stop_reason`` ``batch_<type>``, so it abstains and is not cached.
        """
        if self.settings.reasoning:
            raise SpartanError("llm.batch cannot be combined with llm.reasoning (two dependent calls per date).")
        items = [{"custom_id": key, "params": _wire(request_payload(request, schema, self.settings))}
                 for key, request in requests.items()]
        batches = self.client.messages.batches
        batch = self._with_retries(lambda: batches.create(requests=items), _batch_problem)
        waited = 0.0
        while batch.processing_status != "ended":
            if waited >= max_wait_s:
                raise SpartanError(f"Message batch {batch.id} did not end within {max_wait_s:.0f} s; its answers "
                                   "can be collected later with the same parameters (they will be cached).")
            self.sleep(poll_s)
            waited += poll_s
            batch = self._with_retries(lambda: batches.retrieve(batch.id), _batch_problem)
        answers = {}
        for entry in self._with_retries(lambda: list(batches.results(batch.id)), _results_problem):
            if entry.result.type != "succeeded":
                answers[entry.custom_id] = Completion(text="", stop_reason=f"batch_{entry.result.type}")
            elif problem := message_problem(entry.result.message):
                answers[entry.custom_id] = Completion(text=problem, stop_reason=BAD_REPLY)
            else:
                answers[entry.custom_id] = _completion([entry.result.message])
        return answers

    def _send(self, payload: dict):
        return self._with_retries(lambda: self.client.messages.create(**_wire(payload)), message_problem)

    def _with_retries(self, send: Callable, problem_of: Callable[[object], str | None]):
        """``send()``'s answer once ``problem_of`` finds nothing wrong with it, retrying as the module says."""
        waited = 0.0
        for attempt in range(self.max_retries + 1):
            try:
                answer = send()
                problem = problem_of(answer)
                if problem is None:
                    return answer
                error = BadAPIReply(problem)
            except (json.JSONDecodeError, anthropic.APIResponseValidationError) as err:
                error = BadAPIReply(f"the body of a 200 answer is not the JSON expected ({type(err).__name__}: {err})")
            except anthropic.APIStatusError as err:
                if _is_spend_limit(err):
                    raise SpendLimitReached(f"Anthropic API spend limit reached ({err}); not retried. "
                                            "Raise the limit in the Anthropic console or use llm.provider: replay.") from err
                if err.status_code not in RETRYABLE_STATUSES and err.status_code < 500:
                    raise
                error = err
            except (anthropic.APITimeoutError, anthropic.APIConnectionError) as err:
                error = err
            delay = _retry_after(error) if _retry_after(error) is not None else min(2.0 ** attempt, 30.0)
            if attempt == self.max_retries or waited + delay > self.max_wait_s:
                raise error
            self.sleep(delay)
            waited += delay
        raise AssertionError("unreachable")  # pragma: no cover


def _is_spend_limit(error: anthropic.APIStatusError) -> bool:
    """A usage-tier or contract spend cap (429 with its error code; the SDK has classes for
    them) or a limit the customer set (400 "...API usage limits", known only by its text):
    waiting will not lift either."""
    if isinstance(error, (anthropic.EnforcedSpendLimitReachedError, anthropic.ContractSpendLimitReachedError)):
        return True
    return isinstance(error, anthropic.BadRequestError) and any(m in str(error).lower() for m in SPEND_LIMIT_MARKERS)


def _retry_after(error: Exception) -> float | None:
    response = getattr(error, "response", None)
    if response is None:
        return None
    for header, scale in (("retry-after-ms", 1e-3), ("retry-after", 1.0)):
        value = response.headers.get(header)
        if value:
            try:
                return float(value) * scale
            except ValueError:
                return None
    return None


def _wire(payload: dict) -> dict:
    """``request_payload`` as ``messages.create`` keyword arguments (temperature goes in the
    body: it is not a ``create()`` argument in this SDK)."""
    kwargs = {k: v for k, v in payload.items() if k not in ("temperature", "reasoning")}
    if "temperature" in payload:
        kwargs["extra_body"] = {"temperature": payload["temperature"]}
    return kwargs


def _batch_problem(batch) -> str | None:
    if not isinstance(batch, anthropic.types.messages.MessageBatch) or not isinstance(batch.id, str) \
            or not isinstance(batch.processing_status, str):
        return f"the body of a 200 answer is not a message batch: {str(batch)[:80]!r}"
    return None


def _results_problem(entries: list) -> str | None:
    for entry in entries:
        if not isinstance(getattr(entry, "custom_id", None), str) or not isinstance(
                getattr(getattr(entry, "result", None), "type", None), str):
            return f"a line of the batch results is not a result: {str(entry)[:80]!r}"
    return None


def _is_count(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def message_problem(message) -> str | None:
    """What makes ``message`` (as the SDK returned it, unvalidated) not a Message we can read, or None."""
    if not isinstance(message, anthropic.types.Message):
        return f"the body of a 200 answer is not a Message but {type(message).__name__}: {str(message)[:80]!r}"
    content, usage = message.content, message.usage
    if not isinstance(content, list) or not all(
            isinstance(getattr(block, "text", None), str) for block in content if getattr(block, "type", None) == "text"):
        return f"the message's content is not a list of blocks with text: {str(content)[:80]!r}"
    if usage is None:
        return "the message has no usage (its tokens, so its cost, are unknown)"
    for name in ("input_tokens", "output_tokens", "cache_read_input_tokens", "cache_creation_input_tokens"):
        value = getattr(usage, name, None)
        if (value is not None or not name.startswith("cache")) and not _is_count(value):
            return f"the message's usage.{name} is not a whole number of tokens: {str(value)[:40]!r}"
    return None


def _completion(messages: list) -> Completion:
    """The last message's text and stop reason, with the usage of all of them."""
    usage = [m.usage for m in messages]
    return Completion(
        text=_text(messages[-1]), stop_reason=messages[-1].stop_reason,
        input_tokens=sum(u.input_tokens for u in usage), output_tokens=sum(u.output_tokens for u in usage),
        cache_read_tokens=sum(getattr(u, "cache_read_input_tokens", None) or 0 for u in usage),
        cache_write_tokens=sum(getattr(u, "cache_creation_input_tokens", None) or 0 for u in usage))


def _text(message) -> str:
    return "".join(block.text for block in message.content if getattr(block, "type", "") == "text")

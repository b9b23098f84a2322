"""Claude through the ``anthropic`` SDK: structured output, prompt caching, bounded retries.

The client is built once at the edge (key from the environment) and passed in. Retries are
ours, not the SDK's (it is created with ``max_retries=0``) so that the rules are explicit:
408, 409, 429 (rate limit), 5xx including 529 (overloaded), timeouts and dropped connections are
retried with backoff, honouring ``retry-after``, up to ``max_retries`` times and
``max_wait_s`` seconds in total; a spend limit (a 429 with error code
``enforced_spend_limit_reached``, or a 400 about "API usage limits") is never retried,
since waiting does not lift it; anything else is raised at once.
"""

from __future__ import annotations

import os
import time
from typing import Callable

import anthropic

from research_lib.errors import SpartanError
from research_lib.llm._cache import Completion
from research_lib.llm._prompt import PromptRequest

API_KEY_ENV = "ANTHROPIC_API_KEY"
BASE_URL_ENV = "ANTHROPIC_BASE_URL"
SPEND_LIMIT_MARKERS = ("spend limit", "api usage limits")
RETRYABLE_STATUSES = (408, 409, 429)  # and every 5xx, 529 (overloaded) included
ANALYSIS_PROMPT = "First write a brief analysis of the inputs (150 words at most, no JSON)."
ANSWER_PROMPT = "Now give the JSON answer for every symbol."


class SpendLimitReached(SpartanError):
    """The API refused with a spend limit: retrying cannot help."""


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
    payload = {"model": settings.model, "max_tokens": settings.max_tokens,
               "system": [{"type": "text", "text": request.system, "cache_control": {"type": "ephemeral"}}],
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
        batch = self._with_retries(lambda: self.client.messages.batches.create(requests=items))
        waited = 0.0
        while batch.processing_status != "ended":
            if waited >= max_wait_s:
                raise SpartanError(f"Message batch {batch.id} did not end within {max_wait_s:.0f} s; its answers "
                                   "can be collected later with the same parameters (they will be cached).")
            self.sleep(poll_s)
            waited += poll_s
            batch = self._with_retries(lambda: self.client.messages.batches.retrieve(batch.id))
        answers = {}
        for entry in self._with_retries(lambda: list(self.client.messages.batches.results(batch.id))):
            if entry.result.type == "succeeded":
                answers[entry.custom_id] = _completion([entry.result.message])
            else:
                answers[entry.custom_id] = Completion(text="", stop_reason=f"batch_{entry.result.type}")
        return answers

    def _send(self, payload: dict):
        return self._with_retries(lambda: self.client.messages.create(**_wire(payload)))

    def _with_retries(self, send: Callable):
        waited = 0.0
        for attempt in range(self.max_retries + 1):
            try:
                return send()
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


def _completion(messages: list) -> Completion:
    """The last message's text and stop reason, with the usage of all of them."""
    usage = [m.usage for m in messages]
    return Completion(
        text=_text(messages[-1]), stop_reason=messages[-1].stop_reason,
        input_tokens=sum(u.input_tokens or 0 for u in usage), output_tokens=sum(u.output_tokens or 0 for u in usage),
        cache_read_tokens=sum(getattr(u, "cache_read_input_tokens", 0) or 0 for u in usage),
        cache_write_tokens=sum(getattr(u, "cache_creation_input_tokens", 0) or 0 for u in usage))


def _text(message) -> str:
    return "".join(block.text for block in message.content if getattr(block, "type", "") == "text")

"""Claude through the ``anthropic`` SDK: structured output, prompt caching, bounded retries.

The client is built once at the edge (key from the environment) and passed in. Retries are
ours, not the SDK's (it is created with ``max_retries=0``) so that the rules are explicit:
429 (rate limit), 5xx including 529 (overloaded), timeouts and dropped connections are
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


class ClaudeAnalyst:
    """Sends one request, returns the final text, stop reason and usage."""

    def __init__(self, client: anthropic.Anthropic, model: str, max_tokens: int = 4096,
                 temperature: float | None = None, reasoning: bool = False, max_retries: int = 4,
                 max_wait_s: float = 120.0, sleep: Callable[[float], None] = time.sleep):
        self.client = client
        self.model = model
        self.max_tokens = max_tokens
        self.temperature = temperature
        self.reasoning = reasoning
        self.max_retries = max_retries
        self.max_wait_s = max_wait_s
        self.sleep = sleep

    def complete(self, request: PromptRequest, schema: dict) -> Completion:
        system = [{"type": "text", "text": request.system, "cache_control": {"type": "ephemeral"}}]
        messages = [{"role": "user", "content": request.user}]
        usage = []
        if self.reasoning:
            analysis = self._call(system, [{"role": "user", "content": request.user + "\n\n" + ANALYSIS_PROMPT}], None)
            usage.append(analysis.usage)
            messages += [{"role": "assistant", "content": _text(analysis)}, {"role": "user", "content": ANSWER_PROMPT}]
        answer = self._call(system, messages, schema)
        usage.append(answer.usage)
        return Completion(
            text=_text(answer), stop_reason=answer.stop_reason,
            input_tokens=sum(u.input_tokens or 0 for u in usage), output_tokens=sum(u.output_tokens or 0 for u in usage),
            cache_read_tokens=sum(getattr(u, "cache_read_input_tokens", 0) or 0 for u in usage),
            cache_write_tokens=sum(getattr(u, "cache_creation_input_tokens", 0) or 0 for u in usage))

    def _call(self, system: list, messages: list, schema: dict | None):
        kwargs = {"model": self.model, "max_tokens": self.max_tokens, "system": system, "messages": messages}
        if schema is not None:
            kwargs["output_config"] = {"format": {"type": "json_schema", "schema": schema}}
        if self.temperature is not None:  # not a create() argument in this SDK; the API takes it in the body
            kwargs["extra_body"] = {"temperature": self.temperature}
        waited = 0.0
        for attempt in range(self.max_retries + 1):
            try:
                return self.client.messages.create(**kwargs)
            except (anthropic.RateLimitError, anthropic.BadRequestError) as err:
                if _is_spend_limit(err):
                    raise SpendLimitReached(f"Anthropic API spend limit reached ({err}); not retried. "
                                            "Raise the limit in the Anthropic console or use llm.provider: replay.") from err
                if isinstance(err, anthropic.BadRequestError):
                    raise
                error = err
            except (anthropic.InternalServerError, anthropic.APITimeoutError, anthropic.APIConnectionError) as err:
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


def _text(message) -> str:
    return "".join(block.text for block in message.content if getattr(block, "type", "") == "text")

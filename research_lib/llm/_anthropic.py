"""Claude through the ``anthropic`` SDK: structured output, bounded retries, every attempt costed.

The client is built once at the edge (key from the environment) and passed in. Retries are
ours, not the SDK's (it is created with ``max_retries=0``) so that the rules are explicit:
408, 409, 429 (rate limit), 5xx including 529 (overloaded), timeouts, dropped connections and
bad replies are retried with backoff, honouring ``retry-after``, up to ``max_retries`` times
and ``max_wait_s`` seconds in total. A spend limit (a 429 with error code
``enforced_spend_limit_reached``, or a 400 about "API usage limits") is never retried, since
waiting does not lift it; any other 4xx (a wrong key's 401, a 403, an invalid request) is raised
at once, and a 429 or 5xx still failing after the retries is raised too: they stop the stage.

A reply is read from its raw JSON body, never from the SDK's objects (which turn ``true`` into
1 and ``"3.0"`` into 3); a *bad reply* is a status 200 whose body is not a Message
(`research_lib.llm._reply` says exactly when). After the retries, a reply still bad becomes a
completion with stop reason ``bad_api_reply``, and a connection still failing or timing out one
with ``no_api_reply``; their text says what was wrong, every symbol of the date abstains and
nothing is cached.

Cost: every attempt whose ``usage`` is readable is counted in the cost report and the budget
(`research_lib.llm._cost.Meter`), bad replies that were retried and the first (analysis) call
of two-step reasoning included; the budget is checked before each attempt.

Prompt caching and cache keys: `research_lib.llm._payload`.
"""

from __future__ import annotations

import json
import math
import os
import time
from typing import Callable

import anthropic

from research_lib.errors import SpartanError
from research_lib.llm._cache import Completion
from research_lib.llm._cost import Budget, Meter, completion_cost, estimate_tokens
# the payload's names stay importable from here, where they were first defined
from research_lib.llm._payload import (ANALYSIS_PROMPT, ANSWER_PROMPT, API_KEY_ENV, CHARS_PER_TOKEN,  # noqa: F401
                                       MIN_CACHEABLE_TOKENS, cacheable, legacy_request_key, request_payload)
from research_lib.llm._prompt import PromptRequest
from research_lib.llm._reply import BadAPIReply, json_body, quote, read_reply, result_lines
from research_lib.llm._validate import BAD_REPLY, NO_REPLY
from research_lib.progress import progress

BASE_URL_ENV = "ANTHROPIC_BASE_URL"
SPEND_LIMIT_MARKERS = ("spend limit", "api usage limits")
RETRYABLE_STATUSES = (408, 409, 429)  # and every 5xx, 529 (overloaded) included


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
    """Sends requests built from ``AnalystSettings``; returns final text, stop reason and usage."""

    def __init__(self, client: anthropic.Anthropic, settings, max_retries: int = 4, max_wait_s: float = 120.0,
                 sleep: Callable[[float], None] = time.sleep):
        self.client = client
        self.settings = settings
        self.max_retries = max_retries
        self.max_wait_s = max_wait_s
        self.sleep = sleep

    def complete(self, request: PromptRequest, schema: dict, budget: Budget | None = None) -> Completion:
        """The answer to ``request`` with the usage and cost of every attempt it took.

        ``budget`` (default: none) is checked before each attempt and charged with each one
        whose usage is readable. A reply still bad after the retries is a ``bad_api_reply``
        completion, a connection still failing a ``no_api_reply`` one.
        """
        meter = Meter(self.settings.price, budget or Budget(math.inf))
        try:
            text, stop_reason = self._complete(request, schema, meter)
        except BadAPIReply as err:
            text, stop_reason = str(err), BAD_REPLY
        except anthropic.APIConnectionError as err:  # time-outs included
            text, stop_reason = _connection_problem(err), NO_REPLY
        return _completion(text, stop_reason, meter)

    def _complete(self, request: PromptRequest, schema: dict, meter: Meter) -> tuple[str, str]:
        payload = request_payload(request, schema, self.settings)
        if not self.settings.reasoning:
            return self._send(payload, meter)
        first = {k: v for k, v in payload.items() if k not in ("output_config", "reasoning")}
        first["messages"] = [{"role": "user", "content": request.user + "\n\n" + ANALYSIS_PROMPT}]
        analysis, _ = self._send(first, meter)
        second = {k: v for k, v in payload.items() if k != "reasoning"}
        second["messages"] = [*payload["messages"], {"role": "assistant", "content": analysis},
                              {"role": "user", "content": ANSWER_PROMPT}]
        return self._send(second, meter)

    def _send(self, payload: dict, meter: Meter) -> tuple[str, str]:
        """``(text, stop_reason)`` of ``payload``'s reply, each attempt checked against and charged to ``meter``."""
        def attempt():
            meter.check(_input_estimate(payload), payload["max_tokens"])
            raw = self.client.messages.with_raw_response.create(**_wire(payload))
            return read_reply(json_body(raw.read()), meter)

        return self._with_retries(attempt)

    def complete_batch(self, requests: dict[str, PromptRequest], schema: dict, budget: Budget | None = None,
                       poll_s: float = 30.0, max_wait_s: float = 24 * 3600.0) -> dict[str, Completion]:
        """Send ``{custom_id: request}`` as one Message Batch (half price), wait, collect.

        ``budget`` is checked once, before the batch is created, with the worst case of all its
        requests, and charged with each result whose usage is readable (half price). A request
        the batch did not answer (errored, expired, canceled) comes back as a completion with
        ``stop_reason`` ``batch_<type>``, one whose message is not readable as ``bad_api_reply``,
        and all of them as ``bad_api_reply`` or ``no_api_reply`` when the batch endpoints still
        answer nonsense or nothing after the retries: they abstain and are not cached.
        """
        if self.settings.reasoning:
            raise SpartanError("llm.batch cannot be combined with llm.reasoning (two dependent calls per date).")
        budget = budget or Budget(math.inf)
        items = [{"custom_id": key, "params": _wire(request_payload(request, schema, self.settings))}
                 for key, request in requests.items()]
        budget.check(sum(completion_cost(self.settings.price, _input_estimate(item["params"]), self.settings.max_tokens,
                                         batch=True) for item in items))
        try:
            results = self._batch_results(items, poll_s, max_wait_s)
        except BadAPIReply as err:
            return {key: Completion(text=str(err), stop_reason=BAD_REPLY) for key in requests}
        except anthropic.APIConnectionError as err:
            return {key: Completion(text=_connection_problem(err), stop_reason=NO_REPLY) for key in requests}
        return {custom_id: self._batch_item(result, budget) for custom_id, result in results}

    def _batch_results(self, items: list[dict], poll_s: float, max_wait_s: float) -> list[tuple[str, dict]]:
        """Create the batch, poll until it ends, and read its results as ``(custom_id, result)``."""
        batches = self.client.messages.batches
        batch = self._with_retries(lambda: _checked(batches.create(requests=items), _batch_problem))
        for batch in progress(self._polls(batch, poll_s, max_wait_s), desc="analyst batch polls", unit="poll"):
            pass  # the batch as last retrieved: it has ended
        if not isinstance(batch.results_url, str):
            raise BadAPIReply(f"the ended message batch {batch.id} has no results_url: {quote(batch.results_url)}")
        return self._with_retries(lambda: result_lines(self.client.get(
            batch.results_url, cast_to=bytes, options={"headers": {"Accept": "application/binary"}})))

    def _polls(self, batch, poll_s: float, max_wait_s: float):
        """Yield ``batch`` as retrieved every ``poll_s`` seconds until it has ended (nothing if it already has)."""
        waited = 0.0
        while batch.processing_status != "ended":
            if waited >= max_wait_s:
                raise SpartanError(f"Message batch {batch.id} did not end within {max_wait_s:.0f} s; its answers "
                                   "can be collected later with the same parameters (they will be cached).")
            self.sleep(poll_s)
            waited += poll_s
            batches = self.client.messages.batches
            batch = self._with_retries(lambda: _checked(batches.retrieve(batch.id), _batch_problem))
            yield batch

    def _batch_item(self, result: dict, budget: Budget) -> Completion:
        meter = Meter(self.settings.price, budget, batch=True)
        if result["type"] != "succeeded":
            return _completion("", f"batch_{result['type']}", meter)
        try:
            text, stop_reason = read_reply(result.get("message"), meter)
        except BadAPIReply as err:
            text, stop_reason = str(err), BAD_REPLY
        return _completion(text, stop_reason, meter)

    def _with_retries(self, attempt: Callable):
        """``attempt()``'s answer, retrying as the module says (what is not retried, ``BudgetExceeded``
        included, passes through)."""
        waited = 0.0
        for number in range(self.max_retries + 1):
            try:
                return attempt()
            except BadAPIReply as err:
                error = err
            except (json.JSONDecodeError, anthropic.APIResponseValidationError) as err:  # the SDK's own reading
                error = BadAPIReply(f"the body of a 200 answer is not the JSON expected ({type(err).__name__}: {err})")
            except anthropic.APIStatusError as err:
                if _is_spend_limit(err):
                    raise SpendLimitReached(f"Anthropic API spend limit reached ({err}); not retried. "
                                            "Raise the limit in the Anthropic console or use llm.provider: replay.") from err
                if err.status_code not in RETRYABLE_STATUSES and err.status_code < 500:
                    raise
                error = err
            except anthropic.APIConnectionError as err:  # time-outs included
                error = err
            delay = _retry_after(error) if _retry_after(error) is not None else min(2.0 ** number, 30.0)
            if number == self.max_retries or waited + delay > self.max_wait_s:
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


def _input_estimate(payload: dict) -> int:
    """A conservative count of the input tokens ``payload`` sends (its JSON, schema included)."""
    return estimate_tokens(json.dumps(payload))


def _connection_problem(error: anthropic.APIConnectionError) -> str:
    cause = error.__cause__
    detail = f" ({type(cause).__name__}: {cause})" if cause is not None else ""
    return f"{type(error).__name__}: {error}{detail}, after the retries"


def _checked(answer, problem_of: Callable[[object], str | None]):
    problem = problem_of(answer)
    if problem is not None:
        raise BadAPIReply(problem)
    return answer


def _batch_problem(batch) -> str | None:
    if not isinstance(batch, anthropic.types.messages.MessageBatch) or not isinstance(batch.id, str) \
            or not isinstance(batch.processing_status, str):
        return f"the body of a 200 answer is not a message batch: {quote(batch)}"
    return None


def _completion(text: str, stop_reason: str, meter: Meter) -> Completion:
    return Completion(text=text, stop_reason=stop_reason, input_tokens=meter.input_tokens,
                      output_tokens=meter.output_tokens, cache_read_tokens=meter.cache_read_tokens,
                      cache_write_tokens=meter.cache_write_tokens, cost_usd=meter.cost_usd)

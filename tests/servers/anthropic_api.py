"""A local stand-in for the part of the Anthropic Messages API that Spartan's AI analyst uses,
for tests that drive the real ``anthropic`` SDK without touching the network.

What the SDK (anthropic 2.13.0, read from its source) puts on the wire::

    POST {base_url}/v1/messages
    Authorization: Bearer <api_key>        (2.13.0 sends the key as a bearer token, not x-api-key)
    anthropic-version: 2026-10-21
    x-stainless-retry-count: 0, 1, 2 ...    (the attempt number; retries resend the same body)
    x-stainless-helper: messages.parse      (only from ``client.messages.parse``)
    {"model", "max_tokens", "messages", ["system"], ["output_config": {"format": {"type":
     "json_schema", "schema": {...}}}], ["tools"], ["stop_sequences"], ["cache_control"], ...}

and expects a Message::

    {"id": "msg_...", "type": "message", "role": "assistant", "model": <model>,
     "content": [{"type": "text", "text": ...}], "stop_reason": "end_turn" | "max_tokens" |
     "stop_sequence" | "refusal" | ..., "stop_sequence": null | <sequence>,
     "usage": {"input_tokens", "output_tokens", "cache_creation_input_tokens",
               "cache_read_input_tokens", "cache_creation": {...}, "service_tier"}}

Errors are ``{"type": "error", "error": {"type", "message"[, "details": {"error_code"}]},
"request_id"}`` with a ``request-id`` header; the SDK picks its exception class from the
status and ``error.details.error_code`` (``anthropic/_error_classes.py``).

The server accepts the key either as ``x-api-key`` (what the real API documents) or as
``Authorization: Bearer`` (what this SDK sends), answers 401 ``authentication_error`` to
anything else, and 400 when ``anthropic-version`` is missing.

Test hooks (all thread-safe; ``reset()`` forgets the pending ones):

* ``responder(body) -> str | dict | Reply``: the reply text for a request body (a dict is sent
  as its JSON). The default answers requests with a JSON schema with a minimal valid
  instance of that schema, and anything else with a fixed sentence.
* ``fail_next(status, error_type, message, times=1, headers=None, error_code=None)``: the
  next request(s) fail with the real error envelope. 408/409/429/5xx faults carry a
  ``retry-after-ms`` header (``retry_after_ms``, 10 ms by default) so that SDK retries are
  fast; 429s also carry ``retry-after: 1`` as the real API does. The SDK reads
  ``retry-after-ms`` first. Pass ``retry_after_ms=None`` to the server to leave those
  headers out and see the SDK's own backoff, or give a header the value ``None`` in
  ``headers`` to drop it.
* ``fail_spend_limit(scope)``: what the real API answers when a spend limit is reached.
* ``disconnect_next()`` / ``delay_next(seconds)``: the connection closes without an answer
  (``APIConnectionError``), or the answer comes late (``APITimeoutError`` with a short
  client timeout).
* ``malform_next(kind)``: the next message answer(s) break the Messages API format while the
  status stays 200: a proxy's HTML page, a body that is not JSON (or not UTF-8), a message
  without ``usage``, ``content`` or ``stop_reason``, token counts that are not whole numbers
  from 0 to 10 million, and so on (``MALFORMATIONS`` lists the kinds). ``WELL_FORMED`` lists
  200 answers that look odd but are Messages (null cache counts, a thinking block first, a
  ``tool_use`` stop, extra fields).
* ``break_transfer_next(kind)``: the next answer(s) start as a 200 but the transfer breaks:
  ``"cut"`` closes the connection before the ``Content-Length`` promised is sent,
  ``"false_gzip"`` declares ``Content-Encoding: gzip`` on a body that is not (the SDK raises
  ``APIConnectionError`` for both).
* ``script_stop_reason(stop_reason, text=None)``: the next generated message(s) stop for
  that reason: ``"max_tokens"`` cuts the text, ``"refusal"`` keeps a few characters and adds
  ``stop_details``, ``"end_turn"`` is a normal answer.

Without a script, a reply longer than ``max_tokens`` (at ~4 characters a token) is cut and
stops with ``"max_tokens"``, a reply containing one of the request's ``stop_sequences`` stops
there, and a prompt with Anthropic's documented refusal test string is refused.

Prompt caching: the blocks carrying ``cache_control`` (in ``tools``, ``system`` and message
content, in that order, or the last block when ``cache_control`` is given at the top level)
mark cache prefixes. The first request with a prefix reports its tokens as
``cache_creation_input_tokens``; later requests with the same prefix (and model) within the
TTL (5 minutes, or 1 hour for ``"ttl": "1h"``) report them as ``cache_read_input_tokens``.
``input_tokens`` counts the rest. Token counts are ``len(json) // 4``. The real API does not
cache prefixes below a per-model minimum length; set ``min_cacheable_tokens`` to mimic that.

Message Batches: ``POST /v1/messages/batches`` answers a batch ``in_progress``; each
``GET /v1/messages/batches/{id}`` counts as a poll and the ``batch_polls``-th poll (the second
by default) finds it ``ended`` with a ``results_url`` on this server; ``GET
.../results`` streams JSONL ``{"custom_id", "result": {"type": "succeeded", "message"}}``
(or ``"errored"`` for invalid params or a responder that raises ``ItemError``).
``client.messages.batches.results(id)`` itself retrieves the batch first, which is a poll.
``GET /v1/messages/batches`` lists batches; ``POST .../cancel`` answers ``canceling``, and the
next poll finds the batch ``ended`` with every result ``canceled``.
"""

from __future__ import annotations

import calendar
import collections
import datetime as dt
import hashlib
import json
import random
import string
import sys
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable
from urllib.parse import parse_qs, urlsplit

from tests.servers._local import LocalHTTPServer

MESSAGES_PATH = "/v1/messages"
BATCHES_PATH = "/v1/messages/batches"

# Anthropic's documented test prompt that makes the API refuse (streaming refusals guide).
REFUSAL_TEST_STRING = "ANTHROPIC_MAGIC_STRING_TRIGGER_REFUSAL_1FAEFB6177B4672DEE07F9D3AFC62588CCD2631EDCF22E8CCC1FB35B501C9C86"

DEFAULT_TEXT = "Hello! This is a reply from the local Anthropic test server."

# The error type the API uses for each status (platform.claude.com/docs/en/api/errors).
ERROR_TYPES = {
    400: "invalid_request_error", 401: "authentication_error", 402: "billing_error",
    403: "permission_error", 404: "not_found_error", 409: "conflict_error", 413: "request_too_large",
    429: "rate_limit_error", 500: "api_error", 504: "timeout_error", 529: "overloaded_error",
}
DEFAULT_MESSAGES = {
    "invalid_request_error": "There was an issue with the format or content of your request.",
    "authentication_error": "invalid x-api-key",
    "billing_error": "There is an issue with your billing or payment information.",
    "permission_error": "Your API key does not have permission to use the specified resource.",
    "not_found_error": "Not found",
    "conflict_error": "The request conflicts with the current state of the resource.",
    "request_too_large": "Request exceeds the maximum allowed number of bytes.",
    "rate_limit_error": "This request would exceed your organization's rate limit. Please try again later.",
    "api_error": "Internal server error",
    "timeout_error": "Request timed out",
    "overloaded_error": "Overloaded",
}
RETRYABLE_STATUSES = {408, 409, 429}  # and every status >= 500, as the SDK's _should_retry has it

# What the real API answers when a spend limit is reached (see ``fail_spend_limit``).
SPEND_LIMIT_TIER_CODE = "enforced_spend_limit_reached"
SPEND_LIMIT_TIER_MESSAGE = "This request would exceed your account's monthly spend limit. Please try again later."
SPEND_LIMIT_ORGANIZATION_MESSAGE = "You have reached your specified API usage limits. You will regain access on {date} at 00:00 UTC."
SPEND_LIMIT_WORKSPACE_MESSAGE = ("You have reached your specified workspace API usage limits. "
                                 "You will regain access on {date} at 00:00 UTC.")


@dataclass
class Reply:
    """A responder's full answer: the text, and optionally how the message stops.

    ``content`` (raw content blocks) replaces ``text`` when given; ``stop_details`` goes on the
    message as is.
    """

    text: str = ""
    stop_reason: str = "end_turn"
    stop_sequence: str | None = None
    content: list[dict] | None = None
    stop_details: dict | None = None
    output_tokens: int | None = None


class ItemError(Exception):
    """Raised by a responder: the request fails with this error (an ``errored`` batch result,
    or an HTTP error for ``/v1/messages``)."""

    def __init__(self, error_type: str = "invalid_request_error", message: str = "invalid request", status: int = 400):
        super().__init__(message)
        self.error_type, self.message, self.status = error_type, message, status


@dataclass
class RecordedRequest:
    """One request as the server saw it (header names lower-cased, body parsed from JSON)
    and its answer (``response`` is the parsed JSON, or the text of a JSONL answer)."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: Any
    at: float = field(default_factory=time.monotonic)
    status: int | None = None
    response: Any = None


def _drop(name: str) -> Callable[[dict], dict]:
    return lambda message: {k: v for k, v in message.items() if k != name}


def _with(**fields) -> Callable[[dict], dict]:
    return lambda message: {**message, **fields}


def _with_usage(**fields) -> Callable[[dict], dict]:
    return lambda message: {**message, "usage": {**message["usage"], **fields}}


# Ways a 200 answer to POST /v1/messages can break the Messages API format: kind -> (the
# message -> the body sent, content type).
MALFORMATIONS: dict[str, tuple[Callable[[dict], Any], str]] = {
    "html": (lambda message: "<html><body><h1>502 Bad Gateway</h1></body></html>", "text/html"),
    "not_json": (lambda message: '{"id": "msg_01", "type": "message", "content": [', "application/json"),
    "empty_body": (lambda message: "", "application/json"),
    "json_list": (lambda message: [message], "application/json"),
    "no_usage": (_drop("usage"), "application/json"),
    "null_usage": (_with(usage=None), "application/json"),
    "string_tokens": (_with_usage(input_tokens="812", output_tokens="95"), "application/json"),
    "bool_tokens": (_with_usage(output_tokens=True), "application/json"),
    "negative_tokens": (_with_usage(input_tokens=-5), "application/json"),
    "negative_cache_tokens": (_with_usage(cache_read_input_tokens=-3), "application/json"),
    "no_content": (_drop("content"), "application/json"),
    "content_not_list": (_with(content="the answer"), "application/json"),
    "text_not_string": (_with(content=[{"type": "text", "text": {"views": []}}]), "application/json"),
    "text_missing": (_with(content=[{"type": "text"}]), "application/json"),
    "empty_object": (lambda message: {}, "application/json"),
    "null_body": (lambda message: None, "application/json"),
    "string_body": (lambda message: '"hi"', "application/json"),
    "not_utf8": (lambda message: b'{"type": "message", "content": "\xff\xfe"}', "application/json"),
    "nan_tokens": (lambda message: json.dumps(message).replace('"output_tokens": ', '"output_tokens": NaN, "x": ', 1),
                   "application/json"),
    "trailing_garbage": (lambda message: json.dumps(message) + "}", "application/json"),
    "two_messages": (lambda message: json.dumps(message) * 2, "application/json"),
    "error_envelope": (lambda message: _envelope("overloaded_error", "Overloaded"), "application/json"),
    "no_type": (_drop("type"), "application/json"),
    "no_stop_reason": (_drop("stop_reason"), "application/json"),
    "null_stop_reason": (_with(stop_reason=None), "application/json"),
    "int_stop_reason": (_with(stop_reason=123), "application/json"),
    "list_stop_reason": (_with(stop_reason=["end_turn"]), "application/json"),
    "content_has_string": (lambda message: {**message, "content": ["oops", *message["content"]]}, "application/json"),
    "content_has_null": (lambda message: {**message, "content": [None, *message["content"]]}, "application/json"),
    "block_without_type": (lambda message: {**message, "content": [{"text": "x"}, *message["content"]]},
                           "application/json"),
    "usage_list": (_with(usage=[1, 2]), "application/json"),
    "usage_string": (_with(usage="lots"), "application/json"),
    "no_output_tokens": (lambda message: {**message, "usage": {k: v for k, v in message["usage"].items()
                                                                if k != "output_tokens"}}, "application/json"),
    "float_tokens": (_with_usage(input_tokens=812.0), "application/json"),
    "huge_tokens": (_with_usage(input_tokens=10**30), "application/json"),
    "tokens_past_the_bound": (_with_usage(output_tokens=10_000_001), "application/json"),
    "bool_cache_tokens": (_with_usage(cache_read_input_tokens=True), "application/json"),
    "string_cache_tokens": (_with_usage(cache_read_input_tokens="3"), "application/json"),
    "padded_string_cache_tokens": (_with_usage(cache_read_input_tokens="  7 "), "application/json"),
    "float_cache_tokens": (_with_usage(cache_creation_input_tokens=3.0), "application/json"),
    "list_cache_tokens": (_with_usage(cache_creation_input_tokens=[]), "application/json"),
}

# 200 answers that look odd but are Messages, read as such: kind -> (the message -> the body sent).
WELL_FORMED: dict[str, Callable[[dict], Any]] = {
    "null_cache_tokens": _with_usage(cache_read_input_tokens=None, cache_creation_input_tokens=None),
    "no_cache_tokens": lambda message: {**message, "usage": {k: v for k, v in message["usage"].items()
                                                             if not k.startswith("cache")}},
    "tokens_at_the_bound": _with_usage(input_tokens=10_000_000),
    "zero_tokens": _with_usage(input_tokens=0, output_tokens=0),
    "thinking_block_first": lambda message: {**message, "content": [
        {"type": "thinking", "thinking": "{not the answer}", "signature": "s"}, *message["content"]]},
    "text_in_two_blocks": lambda message: {**message, "content": [
        {"type": "text", "text": block["text"][:5]} if i == 0 else {"type": "text", "text": block["text"][5:]}
        for block in message["content"] for i in range(2)]},
    "extra_fields": lambda message: {**message, "container": None, "usage": {**message["usage"], "server_tool_use": None}},
    "odd_cache_creation": _with_usage(cache_creation="x"),
}
TRANSFER_BREAKS = ("cut", "false_gzip")


@dataclass
class _Fault:
    kind: str  # "http", "disconnect", "delay", "malform" or "transfer"
    path: str | None = None
    status: int = 0
    error_type: str = ""
    message: str = ""
    headers: dict[str, str | None] = field(default_factory=dict)
    error_code: str | None = None
    delay: float = 0.0
    malformation: str = ""


@dataclass
class _Answer:
    status: int
    body: Any
    headers: dict[str, str] = field(default_factory=dict)
    content_type: str = "application/json"
    disconnect: bool = False
    transfer_break: str = ""  # one of TRANSFER_BREAKS


@dataclass
class _Batch:
    id: str
    created_at: dt.datetime
    results: list[dict]
    polls: int = 0
    processing_status: str = "in_progress"
    ended_at: dt.datetime | None = None
    cancel_initiated_at: dt.datetime | None = None


class AnthropicServer(LocalHTTPServer):
    """Speak the Anthropic Messages API on 127.0.0.1, in a background thread.

    Use as a context manager; ``base_url`` is the value for ``anthropic.Anthropic(base_url=...)``.
    """

    def __init__(self, api_key: str = "test-anthropic-key", *, responder: Callable[[dict], Any] | None = None,
                 retry_after_ms: int | None = 10, batch_polls: int = 2, min_cacheable_tokens: int = 0,
                 enforce_max_tokens: bool = True) -> None:
        self.api_key = api_key
        self.responder = responder or default_responder
        self.retry_after_ms = retry_after_ms
        self.batch_polls = batch_polls
        self.min_cacheable_tokens = min_cacheable_tokens
        self.enforce_max_tokens = enforce_max_tokens
        self.requests: list[RecordedRequest] = []
        self.responder_errors: list[BaseException] = []
        self._faults: collections.deque[_Fault] = collections.deque()
        self._scripts: collections.deque[tuple[str, str | None]] = collections.deque()
        self._cache: dict[str, float] = {}  # cache prefix key -> when it expires (time.monotonic)
        self._batches: dict[str, _Batch] = {}
        self._lock = threading.RLock()
        self._stopping = threading.Event()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- control ------------------------------------------------------------------------
    @property
    def base_url(self) -> str:
        return self.root_url

    url = base_url

    def fail_next(self, status: int, error_type: str | None = None, message: str | None = None, times: int = 1,
                  headers: dict[str, str | None] | None = None, *, error_code: str | None = None,
                  path: str | None = None) -> None:
        """Answer the next ``times`` requests (to ``path`` only, if given) with ``status`` and the
        error envelope. ``error_code`` goes in ``error.details.error_code``."""
        error_type = error_type or ERROR_TYPES.get(status, "api_error" if status >= 500 else "invalid_request_error")
        fault_headers: dict[str, str | None] = {}
        if self.retry_after_ms is not None and (status in RETRYABLE_STATUSES or status >= 500):
            fault_headers["retry-after-ms"] = str(self.retry_after_ms)
        if status == 429 and self.retry_after_ms is not None:
            fault_headers["retry-after"] = "1"
        fault_headers.update(headers or {})
        fault = _Fault("http", path, status, error_type, message or DEFAULT_MESSAGES.get(error_type, "error"),
                       fault_headers, error_code)
        with self._lock:
            self._faults.extend([fault] * times)

    def fail_spend_limit(self, scope: str = "tier", *, times: int = 1, headers: dict[str, str | None] | None = None) -> None:
        """Fail the next request(s) as the real API does when a spend limit is reached.

        ``"tier"``: the organization reached its usage tier's monthly spend cap: 429
        ``rate_limit_error`` with ``error.details.error_code == "enforced_spend_limit_reached"``
        and no ``retry-after`` (the SDK raises ``EnforcedSpendLimitReachedError``, a
        ``RateLimitError``, and still retries it as a 429 unless told ``x-should-retry: false``).
        ``"organization"`` / ``"workspace"``: a spend limit the customer set: 400
        ``invalid_request_error`` "You have reached your specified [workspace ]API usage limits.
        You will regain access on <first of next month> at 00:00 UTC." (``BadRequestError``).
        """
        today = dt.datetime.now(dt.timezone.utc).date()
        first_of_next_month = (today.replace(day=calendar.monthrange(today.year, today.month)[1]) + dt.timedelta(days=1))
        if scope == "tier":
            fault = _Fault("http", None, 429, "rate_limit_error", SPEND_LIMIT_TIER_MESSAGE, dict(headers or {}),
                           SPEND_LIMIT_TIER_CODE)
        elif scope in ("organization", "workspace"):
            template = SPEND_LIMIT_ORGANIZATION_MESSAGE if scope == "organization" else SPEND_LIMIT_WORKSPACE_MESSAGE
            fault = _Fault("http", None, 400, "invalid_request_error", template.format(date=first_of_next_month.isoformat()),
                           dict(headers or {}))
        else:
            raise ValueError(f"scope must be 'tier', 'organization' or 'workspace', not {scope!r}")
        with self._lock:
            self._faults.extend([fault] * times)

    def disconnect_next(self, times: int = 1, *, path: str | None = None) -> None:
        """Close the connection of the next request(s) without answering."""
        with self._lock:
            self._faults.extend([_Fault("disconnect", path)] * times)

    def delay_next(self, seconds: float, times: int = 1, *, path: str | None = None) -> None:
        """Wait ``seconds`` before answering the next request(s) (normally, or with the next fault)."""
        with self._lock:
            self._faults.extend([_Fault("delay", path, delay=seconds)] * times)

    def malform_next(self, kind: str, times: int = 1) -> None:
        """Answer the next ``times`` message requests with status 200 and a body that breaks the
        Messages API format in the way ``kind`` (a key of ``MALFORMATIONS``) names, or that is
        odd but well formed (a key of ``WELL_FORMED``)."""
        if kind not in MALFORMATIONS and kind not in WELL_FORMED:
            raise ValueError(f"kind must be one of {sorted(MALFORMATIONS) + sorted(WELL_FORMED)}, not {kind!r}")
        with self._lock:
            self._faults.extend([_Fault("malform", MESSAGES_PATH, malformation=kind)] * times)

    def break_transfer_next(self, kind: str, times: int = 1) -> None:
        """Break the transfer of the next ``times`` message answers in the way ``kind`` (one of
        ``TRANSFER_BREAKS``) names, after a 200 status line."""
        if kind not in TRANSFER_BREAKS:
            raise ValueError(f"kind must be one of {TRANSFER_BREAKS}, not {kind!r}")
        with self._lock:
            self._faults.extend([_Fault("transfer", MESSAGES_PATH, malformation=kind)] * times)

    def script_stop_reason(self, stop_reason: str, text: str | None = None, *, times: int = 1) -> None:
        """Make the next ``times`` generated messages (from ``/v1/messages`` or batch items, in
        order) stop with ``stop_reason``; ``text`` replaces the responder's text."""
        with self._lock:
            self._scripts.extend([(stop_reason, text)] * times)

    def reset(self) -> None:
        """Forget pending faults and scripted stops (a test that failed half-way leaves none behind)."""
        with self._lock:
            self._faults.clear()
            self._scripts.clear()

    def clear_cache(self) -> None:
        with self._lock:
            self._cache.clear()

    def start(self) -> AnthropicServer:
        server = self

        class Handler(_Handler):
            owner = server

        self._stopping.clear()
        return self._serve(Handler, "anthropic-api-server", _QuietHTTPServer)

    def _before_stop(self) -> None:
        self._stopping.set()

    # -- protocol -----------------------------------------------------------------------
    def _answer(self, request: RecordedRequest) -> _Answer:
        with self._lock:
            self.requests.append(request)
        while True:
            fault = self._take_fault(request.path)
            if fault is None or fault.kind != "delay":
                break
            if self._stopping.wait(fault.delay):
                return _Answer(503, None, disconnect=True)
        if fault is not None and fault.kind == "disconnect":
            return _Answer(0, None, disconnect=True)
        if fault is not None and fault.kind == "malform":
            answer = self._create_message(request.body)
            if answer.status != 200:
                return answer
            malform, content_type = MALFORMATIONS.get(fault.malformation) or (WELL_FORMED[fault.malformation],
                                                                               "application/json")
            return _Answer(200, malform(answer.body), content_type=content_type)
        if fault is not None and fault.kind == "transfer":
            answer = self._create_message(request.body)
            answer.transfer_break = fault.malformation
            return answer
        if fault is not None:
            headers = {k: v for k, v in fault.headers.items() if v is not None}
            return _error(fault.status, fault.error_type, fault.message, headers=headers, error_code=fault.error_code)

        headers = request.headers
        bearer = headers.get("authorization", "")
        if headers.get("x-api-key") != self.api_key and bearer != f"Bearer {self.api_key}":
            return _error(401, "authentication_error", "invalid x-api-key")
        if not headers.get("anthropic-version"):
            return _error(400, "invalid_request_error", "anthropic-version: header is required")
        if request.body is _INVALID_JSON:
            return _error(400, "invalid_request_error", "The request body is not valid JSON.")

        path, method = request.path.rstrip("/"), request.method
        if path == MESSAGES_PATH and method == "POST":
            return self._create_message(request.body)
        if path == BATCHES_PATH and method == "POST":
            return self._create_batch(request.body)
        if path == BATCHES_PATH and method == "GET":
            return self._list_batches()
        if path.startswith(BATCHES_PATH + "/"):
            parts = path[len(BATCHES_PATH) + 1:].split("/")
            if len(parts) == 1 and method == "GET":
                return self._retrieve_batch(parts[0])
            if len(parts) == 2 and parts[1] == "results" and method == "GET":
                return self._batch_results(parts[0])
            if len(parts) == 2 and parts[1] == "cancel" and method == "POST":
                return self._cancel_batch(parts[0])
        return _error(404, "not_found_error", "Not Found")

    def _take_fault(self, path: str) -> _Fault | None:
        with self._lock:
            for i, fault in enumerate(self._faults):
                if fault.path is None or fault.path == path:
                    del self._faults[i]
                    return fault
        return None

    # /v1/messages
    def _create_message(self, body: Any) -> _Answer:
        problem = _invalid_params(body)
        if problem:
            return _error(400, "invalid_request_error", problem)
        if body.get("stream"):
            return _error(400, "invalid_request_error", "stream: this test server does not stream; call without stream=True")
        try:
            message = self._generate(body)
        except ItemError as err:
            return _error(err.status, err.error_type, err.message)
        except Exception as err:  # a broken responder: make it visible, do not let the SDK retry it
            with self._lock:
                self.responder_errors.append(err)
            return _error(400, "invalid_request_error", f"test responder raised {type(err).__name__}: {err}")
        return _Answer(200, message)

    def _generate(self, body: dict, *, service_tier: str = "standard") -> dict:
        """The Message for a valid request body (raises ``ItemError`` from the responder)."""
        with self._lock:
            script = self._scripts.popleft() if self._scripts else None
        prompt = json.dumps(body.get("messages"))
        if script is None and REFUSAL_TEST_STRING in prompt:
            script = ("refusal", None)
        reply = self.responder(body)
        if isinstance(reply, (dict, list)):
            reply = Reply(json.dumps(reply))
        elif isinstance(reply, str):
            reply = Reply(reply)
        elif not isinstance(reply, Reply):
            raise TypeError(f"the responder must return str, dict or Reply, not {type(reply).__name__}")
        max_tokens = int(body["max_tokens"])
        text, stop_reason, stop_sequence, stop_details = reply.text, reply.stop_reason, reply.stop_sequence, reply.stop_details
        output_tokens = reply.output_tokens
        if script is not None:
            stop_reason, scripted_text = script
            text = scripted_text if scripted_text is not None else text
            stop_sequence = None
            if stop_reason == "max_tokens" and scripted_text is None:
                text = text[: max(1, min(len(text) // 2, max_tokens * 4))]
                output_tokens = max_tokens
            elif stop_reason == "max_tokens":
                output_tokens = max_tokens
            elif stop_reason == "refusal":
                text = text if scripted_text is not None else text[:8]
                stop_details = stop_details or {"type": "refusal", "category": None, "explanation": None}
        elif reply.content is None:
            for sequence in body.get("stop_sequences") or []:
                if sequence and sequence in text:
                    text, stop_reason, stop_sequence = text[: text.index(sequence)], "stop_sequence", sequence
                    break
            if self.enforce_max_tokens and _tokens(text) > max_tokens:
                text, stop_reason, stop_sequence, output_tokens = text[: max_tokens * 4], "max_tokens", None, max_tokens
        if reply.content is not None:
            content = reply.content
        else:  # a refusal before any text has no text block
            content = [{"type": "text", "text": text}] if text or stop_reason != "refusal" else []
        usage = self._usage(body, service_tier)
        usage["output_tokens"] = output_tokens if output_tokens is not None else max(1, _tokens(json.dumps(content)
                                                                                              if reply.content is not None else text))
        message = {"id": _new_id("msg_01"), "type": "message", "role": "assistant", "model": body["model"],
                   "content": content, "stop_reason": stop_reason, "stop_sequence": stop_sequence, "usage": usage}
        if stop_details is not None:
            message["stop_details"] = stop_details
        return message

    def _usage(self, body: dict, service_tier: str) -> dict:
        """Token counts for a request, reading and writing the prompt cache as the API does."""
        total = max(1, len(json.dumps(body)) // 4)
        prefixes = [p for p in _cache_prefixes(body) if p[1] >= self.min_cacheable_tokens]
        read = created = created_1h = 0
        now = time.monotonic()
        with self._lock:
            for key, tokens, ttl in prefixes:
                if self._cache.get(key, 0.0) > now:
                    read = max(read, tokens)  # the longest prefix found in the cache is read
                self._cache[key] = now + ttl  # a hit refreshes the entry, a miss writes it
        if prefixes:
            longest, ttl = max((tokens, ttl) for _, tokens, ttl in prefixes)
            created = max(0, longest - read)  # the rest of the longest marked prefix is written
            created_1h = created if ttl == 3600 else 0
        total = max(total, read + created + 1)
        return {"input_tokens": total - read - created, "output_tokens": 0,
                "cache_creation_input_tokens": created, "cache_read_input_tokens": read,
                "cache_creation": {"ephemeral_5m_input_tokens": created - created_1h, "ephemeral_1h_input_tokens": created_1h},
                "service_tier": service_tier}

    # /v1/messages/batches
    def _create_batch(self, body: Any) -> _Answer:
        requests = body.get("requests") if isinstance(body, dict) else None
        if not isinstance(requests, list) or not requests:
            return _error(400, "invalid_request_error", "requests: Field required (a non-empty list)")
        ids = [r.get("custom_id") if isinstance(r, dict) else None for r in requests]
        if any(not isinstance(i, str) or not i for i in ids):
            return _error(400, "invalid_request_error", "requests: every request needs a custom_id and params")
        if len(set(ids)) != len(ids):
            return _error(400, "invalid_request_error", "requests: custom_id values must be unique within a batch")
        results = []
        for request in requests:
            params = request.get("params")
            problem = _invalid_params(params)
            if problem:
                result = {"type": "errored", "error": _envelope("invalid_request_error", problem)}
            else:
                try:
                    result = {"type": "succeeded", "message": self._generate(params, service_tier="batch")}
                except ItemError as err:
                    result = {"type": "errored", "error": _envelope(err.error_type, err.message)}
                except Exception as err:
                    with self._lock:
                        self.responder_errors.append(err)
                    result = {"type": "errored", "error": _envelope("api_error", f"test responder raised {err!r}")}
            results.append({"custom_id": request["custom_id"], "result": result})
        batch = _Batch(_new_id("msgbatch_01"), dt.datetime.now(dt.timezone.utc), results)
        with self._lock:
            self._batches[batch.id] = batch
            return _Answer(200, self._batch_object(batch))

    def _retrieve_batch(self, batch_id: str) -> _Answer:
        with self._lock:
            batch = self._batches.get(batch_id)
            if batch is None:
                return _error(404, "not_found_error", f"Message batch {batch_id} not found")
            batch.polls += 1
            if batch.processing_status == "canceling" or (batch.processing_status == "in_progress"
                                                           and batch.polls >= self.batch_polls):
                self._end(batch)
            return _Answer(200, self._batch_object(batch))

    def _cancel_batch(self, batch_id: str) -> _Answer:
        with self._lock:
            batch = self._batches.get(batch_id)
            if batch is None:
                return _error(404, "not_found_error", f"Message batch {batch_id} not found")
            if batch.processing_status == "in_progress":
                batch.processing_status = "canceling"
                batch.cancel_initiated_at = dt.datetime.now(dt.timezone.utc)
                for item in batch.results:
                    item["result"] = {"type": "canceled"}
            return _Answer(200, self._batch_object(batch))

    def _list_batches(self) -> _Answer:
        with self._lock:
            data = [self._batch_object(b) for b in sorted(self._batches.values(), key=lambda b: b.created_at, reverse=True)]
        return _Answer(200, {"data": data, "has_more": False, "first_id": data[0]["id"] if data else None,
                             "last_id": data[-1]["id"] if data else None})

    def _batch_results(self, batch_id: str) -> _Answer:
        with self._lock:
            batch = self._batches.get(batch_id)
            if batch is None:
                return _error(404, "not_found_error", f"Message batch {batch_id} not found")
            if batch.processing_status != "ended":
                return _error(400, "invalid_request_error", f"Message batch {batch_id} has not finished processing")
            text = "".join(json.dumps(item) + "\n" for item in batch.results)
        return _Answer(200, text, content_type="application/x-jsonl")

    def _end(self, batch: _Batch) -> None:
        batch.processing_status = "ended"
        batch.ended_at = dt.datetime.now(dt.timezone.utc)

    def _batch_object(self, batch: _Batch) -> dict:
        ended = batch.processing_status == "ended"
        counts = {"processing": 0 if ended else len(batch.results), "succeeded": 0, "errored": 0, "canceled": 0, "expired": 0}
        if ended:
            for item in batch.results:
                counts[item["result"]["type"]] += 1
        return {"id": batch.id, "type": "message_batch", "processing_status": batch.processing_status,
                "request_counts": counts, "created_at": _iso(batch.created_at),
                "expires_at": _iso(batch.created_at + dt.timedelta(hours=24)),
                "ended_at": _iso(batch.ended_at) if batch.ended_at else None, "archived_at": None,
                "cancel_initiated_at": _iso(batch.cancel_initiated_at) if batch.cancel_initiated_at else None,
                "results_url": f"{self.base_url}{BATCHES_PATH}/{batch.id}/results" if ended else None}


_INVALID_JSON = object()


class _QuietHTTPServer(ThreadingHTTPServer):
    def handle_error(self, request, client_address) -> None:
        if isinstance(sys.exc_info()[1], OSError):  # a client that gave up (timeout, disconnect) is no error
            return
        super().handle_error(request, client_address)  # a bug in the server: print the traceback


class _Handler(BaseHTTPRequestHandler):
    owner: AnthropicServer

    def _handle(self) -> None:
        parts = urlsplit(self.path)
        query = {k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = _INVALID_JSON
        headers = {k.lower(): v for k, v in self.headers.items()}
        request = RecordedRequest(self.command, parts.path, query, headers, body)
        answer = self.owner._answer(request)
        if answer.disconnect:
            self.close_connection = True
            return
        request.status, request.response = answer.status, answer.body
        if isinstance(answer.body, bytes):
            payload = answer.body
        else:
            payload = answer.body.encode() if isinstance(answer.body, str) else json.dumps(answer.body).encode()
        self.send_response(answer.status)
        self.send_header("Content-Type", answer.content_type)
        self.send_header("Content-Length", str(len(payload) + (50 if answer.transfer_break == "cut" else 0)))
        if answer.transfer_break == "false_gzip":
            self.send_header("Content-Encoding", "gzip")
        self.send_header("request-id", answer.headers.pop("request-id", None) or _new_id("req_011C"))
        for name, value in answer.headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(payload[: len(payload) // 2] if answer.transfer_break == "cut" else payload)
        if answer.transfer_break == "cut":
            self.close_connection = True

    do_GET = do_POST = do_DELETE = _handle

    def log_message(self, format, *args) -> None:  # keep pytest output clean
        pass


# -- helpers -----------------------------------------------------------------------------
def default_responder(body: dict) -> str | dict:
    """A minimal valid instance of the requested JSON schema, or a fixed sentence."""
    output_format = (body.get("output_config") or {}).get("format") or {}
    if output_format.get("type") == "json_schema":
        schema = output_format.get("schema") or {}
        return example_for_schema(schema, schema.get("$defs", {}))
    return DEFAULT_TEXT


def example_for_schema(schema: dict, defs: dict | None = None) -> Any:
    """The simplest value that satisfies a (structured-outputs subset) JSON schema."""
    defs = defs or {}
    if "$ref" in schema:
        return example_for_schema(defs[schema["$ref"].rsplit("/", 1)[-1]], defs)
    if "const" in schema:
        return schema["const"]
    if schema.get("enum"):
        return schema["enum"][0]
    for key in ("anyOf", "oneOf"):
        if schema.get(key):
            return example_for_schema(schema[key][0], defs)
    if schema.get("allOf"):
        merged: dict = {}
        for part in schema["allOf"]:
            value = example_for_schema(part, defs)
            merged.update(value if isinstance(value, dict) else {})
        return merged
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind == "object":
        properties = schema.get("properties", {})
        required = schema.get("required", list(properties))
        return {name: example_for_schema(properties[name], defs) for name in properties if name in required}
    if kind == "array":
        return [example_for_schema(schema["items"], defs) for _ in range(schema.get("minItems", 0))] if "items" in schema else []
    if kind == "string":
        return {"date": "2024-01-02", "date-time": "2024-01-02T00:00:00Z"}.get(schema.get("format"), "text")
    if kind == "integer":
        return int(schema.get("minimum", 0))
    if kind == "number":
        return float(schema.get("minimum", 0.0))
    if kind == "boolean":
        return False
    return None


def _invalid_params(body: Any) -> str | None:
    if not isinstance(body, dict):
        return "The request body must be a JSON object."
    if not isinstance(body.get("model"), str) or not body["model"]:
        return "model: Field required"
    if not isinstance(body.get("max_tokens"), int) or body["max_tokens"] < 1:
        return "max_tokens: Field required (an integer >= 1)"
    if not isinstance(body.get("messages"), list) or not body["messages"]:
        return "messages: Field required (a non-empty list)"
    return None


def _cache_prefixes(body: dict) -> list[tuple[str, int, float]]:
    """(key, tokens, ttl seconds) of each cache prefix the request marks with ``cache_control``."""
    segments: list[tuple[str, dict | None]] = []
    for tool in body.get("tools") or []:
        segments.append((json.dumps(tool, sort_keys=True), tool.get("cache_control") if isinstance(tool, dict) else None))
    system = body.get("system")
    for block in ([{"type": "text", "text": system}] if isinstance(system, str) else system or []):
        segments.append((json.dumps(block, sort_keys=True), block.get("cache_control") if isinstance(block, dict) else None))
    for message in body.get("messages") or []:
        content = message.get("content")
        blocks = [{"type": "text", "text": content}] if isinstance(content, str) else content or []
        for block in blocks:
            segments.append((message.get("role", "") + json.dumps(block, sort_keys=True),
                             block.get("cache_control") if isinstance(block, dict) else None))
    if body.get("cache_control") and segments:
        segments[-1] = (segments[-1][0], body["cache_control"])
    prefixes, text = [], str(body.get("model"))
    for seg, control in segments:
        text += seg
        if control:
            ttl = 3600.0 if control.get("ttl") == "1h" else 300.0
            prefixes.append((hashlib.sha256(text.encode()).hexdigest(), max(1, len(text) // 4), ttl))
    return prefixes


def _tokens(text: str) -> int:
    return -(-len(text) // 4)


def _envelope(error_type: str, message: str, error_code: str | None = None) -> dict:
    error: dict = {"type": error_type, "message": message}
    if error_code is not None:
        error["details"] = {"error_code": error_code}
    return {"type": "error", "error": error, "request_id": _new_id("req_011C")}


def _error(status: int, error_type: str, message: str, *, headers: dict[str, str] | None = None,
           error_code: str | None = None) -> _Answer:
    body = _envelope(error_type, message, error_code)
    return _Answer(status, body, {**(headers or {}), "request-id": body["request_id"]})


_ALPHABET = string.ascii_letters + string.digits


def _new_id(prefix: str) -> str:
    return prefix + "".join(random.choices(_ALPHABET, k=20))


def _iso(moment: dt.datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")

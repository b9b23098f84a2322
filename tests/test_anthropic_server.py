"""The local Anthropic API (``tests/servers/anthropic_api.py``) speaks the protocol of the
real ``anthropic`` SDK: replies, retries, errors, structured outputs, caching and batches.

These tests pin down the SDK behaviour Spartan's own LLM code relies on, so an SDK upgrade
that changes it fails here first.
"""

from __future__ import annotations

import json
import time

import anthropic
import pydantic
import pytest

from tests.servers.anthropic_api import REFUSAL_TEST_STRING, AnthropicServer, ItemError

KEY = "test-anthropic-key"
MODEL = "claude-sonnet-5-5"  # the model in params/base.yaml (4-5 warns: deprecated)
ASK = [{"role": "user", "content": "Summarise the run."}]
BACKOFF_FLOOR = 0.375  # the SDK's shortest own backoff: 0.5 s x jitter in [0.75, 1]


@pytest.fixture
def server(monkeypatch):
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")  # never send local requests to a proxy
    monkeypatch.delenv("ANTHROPIC_CUSTOM_HEADERS", raising=False)
    with AnthropicServer(KEY) as server:
        yield server


def client_for(server: AnthropicServer, *, max_retries: int = 2, timeout: float = 5.0, api_key: str = KEY) -> anthropic.Anthropic:
    return anthropic.Anthropic(api_key=api_key, base_url=server.base_url, max_retries=max_retries, timeout=timeout)


def ask(client: anthropic.Anthropic, **kwargs) -> anthropic.types.Message:
    return client.messages.create(**{"model": MODEL, "max_tokens": 256, "messages": ASK, **kwargs})


def test_create_returns_the_responders_text_and_the_request_is_recorded(server):
    server.responder = lambda body: f"You said: {body['messages'][0]['content']}"
    message = ask(client_for(server), system="You are Spartan's analyst.")

    assert message.content[0].text == "You said: Summarise the run."
    assert (message.type, message.role, message.model, message.stop_reason) == ("message", "assistant", MODEL, "end_turn")
    assert message.usage.input_tokens > 0 and message.usage.output_tokens > 0
    (request,) = server.requests
    assert (request.method, request.path, request.status) == ("POST", "/v1/messages", 200)
    assert request.body == {"model": MODEL, "max_tokens": 256, "messages": ASK, "system": "You are Spartan's analyst."}
    assert request.headers["authorization"] == f"Bearer {KEY}" and request.headers["anthropic-version"]


@pytest.mark.parametrize("status, error_type", [(429, "rate_limit_error"), (529, "overloaded_error"), (500, "api_error")])
def test_transient_errors_are_retried_after_retry_after_ms(server, status, error_type):
    server.fail_next(status, error_type)
    started = time.monotonic()
    message = ask(client_for(server, max_retries=2))
    elapsed = time.monotonic() - started

    assert message.content[0].text
    assert [r.status for r in server.requests] == [status, 200]
    assert [r.headers["x-stainless-retry-count"] for r in server.requests] == ["0", "1"]
    assert server.requests[0].body == server.requests[1].body
    assert elapsed < BACKOFF_FLOOR  # the SDK waited the 10 ms of retry-after-ms, not its own backoff


@pytest.mark.parametrize("status, error_type, exception", [
    (429, "rate_limit_error", anthropic.RateLimitError),
    (529, "overloaded_error", anthropic.OverloadedError),
    (500, "api_error", anthropic.InternalServerError),
])
def test_persistent_errors_raise_the_typed_exception_after_max_retries(server, status, error_type, exception):
    server.fail_next(status, error_type, "try later", times=3)
    with pytest.raises(exception) as caught:
        ask(client_for(server, max_retries=2))

    assert len(server.requests) == 3
    err = caught.value
    assert (err.status_code, err.type, err.api_message) == (status, error_type, "try later")
    assert err.request_id == server.requests[-1].response["request_id"]
    assert err.body == server.requests[-1].response


def test_wrong_key_raises_authentication_error_without_retry(server):
    with pytest.raises(anthropic.AuthenticationError) as caught:
        ask(client_for(server, api_key="wrong-key"))
    assert len(server.requests) == 1
    assert caught.value.type == "authentication_error"


def test_x_should_retry_false_stops_the_sdk_retrying(server):
    server.fail_next(529, headers={"x-should-retry": "false"})
    with pytest.raises(anthropic.OverloadedError):
        ask(client_for(server, max_retries=2))
    assert len(server.requests) == 1


def test_tier_spend_limit_is_a_429_the_sdk_still_retries(server):
    """The usage-tier cap: 429 rate_limit_error, error.details.error_code ==
    "enforced_spend_limit_reached", no retry-after. Detect it by class or error_code."""
    server.fail_spend_limit("tier", times=2)
    started = time.monotonic()
    with pytest.raises(anthropic.EnforcedSpendLimitReachedError) as caught:
        ask(client_for(server, max_retries=1))

    assert len(server.requests) == 2  # retried like any 429, after the SDK's own backoff
    assert time.monotonic() - started >= BACKOFF_FLOOR
    err = caught.value
    assert isinstance(err, anthropic.RateLimitError)
    assert (err.status_code, err.type, err.error_code) == (429, "rate_limit_error", "enforced_spend_limit_reached")
    assert "retry-after" not in err.response.headers


def test_a_spend_limit_you_set_is_a_400_bad_request(server):
    server.fail_spend_limit("workspace")
    with pytest.raises(anthropic.BadRequestError) as caught:
        ask(client_for(server))
    assert len(server.requests) == 1
    assert caught.value.api_message.startswith("You have reached your specified workspace API usage limits.")


def test_timeouts_and_dropped_connections_raise_connection_errors_and_are_retried(server):
    server.delay_next(1.0)
    with pytest.raises(anthropic.APITimeoutError):
        ask(client_for(server, max_retries=0, timeout=0.2))

    server.disconnect_next()
    with pytest.raises(anthropic.APIConnectionError) as caught:
        ask(client_for(server, max_retries=0))
    assert not isinstance(caught.value, anthropic.APITimeoutError)

    server.disconnect_next()
    assert ask(client_for(server, max_retries=1)).content[0].text  # retried after ~0.4-0.5 s of backoff
    assert len(server.requests) == 4


def test_stop_reasons_surface_on_the_message(server):
    client = client_for(server)
    server.responder = lambda body: "word " * 100
    server.script_stop_reason("max_tokens")
    truncated = ask(client)
    assert truncated.stop_reason == "max_tokens" and truncated.usage.output_tokens == 256
    assert 0 < len(truncated.content[0].text) < len("word " * 100)

    cut = ask(client, max_tokens=10)  # unscripted: longer than max_tokens, cut by the server
    assert (cut.stop_reason, len(cut.content[0].text)) == ("max_tokens", 40)

    server.script_stop_reason("refusal")
    refused = ask(client)
    assert refused.stop_reason == "refusal" and refused.stop_details.type == "refusal"

    assert ask(client, messages=[{"role": "user", "content": REFUSAL_TEST_STRING}]).stop_reason == "refusal"

    server.responder = lambda body: "alpha beta gamma delta"
    stopped = ask(client, stop_sequences=["gamma"])
    assert (stopped.stop_reason, stopped.stop_sequence, stopped.content[0].text) == ("stop_sequence", "gamma", "alpha beta ")
    assert ask(client).stop_reason == "end_turn"


class Allocation(pydantic.BaseModel):
    ticker: str
    weight: float


def test_parse_sends_the_json_schema_and_validates_the_reply(server):
    client = client_for(server)
    server.responder = lambda body: {"ticker": "MSFT", "weight": 0.25}
    parsed = client.messages.parse(model=MODEL, max_tokens=256, messages=ASK, output_format=Allocation)

    assert parsed.parsed_output == Allocation(ticker="MSFT", weight=0.25)
    assert parsed.content[0].parsed_output == parsed.parsed_output
    request = server.requests[-1]
    assert request.headers["x-stainless-helper"] == "messages.parse"
    assert request.body["output_config"] == {"format": {"type": "json_schema", "schema": {
        "type": "object", "title": "Allocation", "additionalProperties": False, "required": ["ticker", "weight"],
        "properties": {"ticker": {"type": "string", "title": "Ticker"}, "weight": {"type": "number", "title": "Weight"}}}}}

    for reply in ("not json", {"ticker": "MSFT"}):  # malformed, then valid JSON that breaks the model
        server.responder = lambda body, reply=reply: reply
        before = len(server.requests)
        with pytest.raises(pydantic.ValidationError):
            client.messages.parse(model=MODEL, max_tokens=256, messages=ASK, output_format=Allocation)
        assert len(server.requests) == before + 1  # a reply that does not parse is not retried

    # create() with output_config sends the schema as given and does not parse the reply
    server.responder = lambda body: {"ticker": "AAPL", "weight": 1.0}
    schema = {"type": "object", "properties": {"ticker": {"type": "string"}}, "required": ["ticker"], "additionalProperties": False}
    plain = ask(client, output_config={"format": {"type": "json_schema", "schema": schema}})
    assert plain.content[0].text == '{"ticker": "AAPL", "weight": 1.0}'
    assert server.requests[-1].body["output_config"] == {"format": {"type": "json_schema", "schema": schema}}


def test_default_responder_answers_the_requested_schema(server):
    parsed = client_for(server).messages.parse(model=MODEL, max_tokens=256, messages=ASK, output_format=Allocation)
    assert parsed.parsed_output == Allocation(ticker="text", weight=0.0)


def test_cache_control_on_system_writes_then_reads_the_cache(server):
    client = client_for(server)
    system = [{"type": "text", "text": "Spartan research context. " * 40, "cache_control": {"type": "ephemeral"}}]
    first, second = ask(client, system=system), ask(client, system=system)

    assert first.usage.cache_creation_input_tokens > 0 and first.usage.cache_read_input_tokens == 0
    assert second.usage.cache_read_input_tokens == first.usage.cache_creation_input_tokens
    assert second.usage.cache_creation_input_tokens == 0
    assert second.usage.input_tokens == first.usage.input_tokens

    uncached = ask(client, system=[{"type": "text", "text": "Spartan research context. " * 40}])
    assert (uncached.usage.cache_creation_input_tokens, uncached.usage.cache_read_input_tokens) == (0, 0)


def test_batch_round_trip(server):
    client = client_for(server)

    def responder(body):
        if body["messages"][0]["content"] == "fail":
            raise ItemError("invalid_request_error", "bad item")
        return f"answer to {body['messages'][0]['content']}"

    server.responder = responder
    requests = [{"custom_id": name, "params": {"model": MODEL, "max_tokens": 64,
                                               "messages": [{"role": "user", "content": name}]}}
                for name in ("AAPL", "MSFT", "fail")]
    batch = client.messages.batches.create(requests=requests)
    assert (batch.processing_status, batch.results_url, batch.request_counts.processing) == ("in_progress", None, 3)

    assert client.messages.batches.retrieve(batch.id).processing_status == "in_progress"  # first poll
    ended = client.messages.batches.retrieve(batch.id)  # second poll
    assert ended.processing_status == "ended" and ended.results_url.startswith(server.base_url)
    assert (ended.request_counts.succeeded, ended.request_counts.errored) == (2, 1)

    results = {item.custom_id: item.result for item in client.messages.batches.results(batch.id)}
    assert results["AAPL"].type == "succeeded" and results["AAPL"].message.content[0].text == "answer to AAPL"
    assert results["AAPL"].message.usage.service_tier == "batch"
    assert results["fail"].type == "errored" and results["fail"].error.error.message == "bad item"
    assert [r.path for r in server.requests] == ["/v1/messages/batches"] + [f"/v1/messages/batches/{batch.id}"] * 3 + [
        f"/v1/messages/batches/{batch.id}/results"]


@pytest.mark.parametrize("kind, surfaces_as", [
    ("html", str), ("json_list", list), ("not_json", json.JSONDecodeError), ("empty_body", json.JSONDecodeError),
    ("no_usage", lambda m: m.usage is None), ("string_tokens", lambda m: m.usage.input_tokens == "812"),
    ("no_content", lambda m: m.content is None),
], ids=lambda value: value if isinstance(value, str) else "")
def test_a_200_answer_that_is_not_a_message_reaches_the_caller_unvalidated(server, kind, surfaces_as):
    """The SDK neither retries nor validates a 200 answer: a proxy's HTML page comes back as a str,
    a body that is not JSON raises a bare JSONDecodeError, and a message missing its usage or
    content is built anyway. Spartan's analyst checks every answer itself (research_lib.llm)."""
    server.malform_next(kind)
    if isinstance(surfaces_as, type) and issubclass(surfaces_as, Exception):
        with pytest.raises(surfaces_as):
            ask(client_for(server))
    elif isinstance(surfaces_as, type):
        assert type(ask(client_for(server))) is surfaces_as
    else:
        assert surfaces_as(ask(client_for(server)))
    assert len(server.requests) == 1


@pytest.mark.parametrize("kind, coerced", [("bool_cache_tokens", 1), ("padded_string_cache_tokens", 7),
                                           ("float_cache_tokens", 3)])
def test_the_sdk_coerces_odd_token_counts_so_the_raw_body_is_the_one_to_read(server, kind, coerced):
    """A parsed Message turns ``true`` into 1 and ``"  7 "`` into 7; ``with_raw_response`` gives
    the body as sent, which is what Spartan's analyst validates (research_lib.llm._reply)."""
    server.malform_next(kind, times=2)
    usage = ask(client_for(server)).usage
    assert coerced in (usage.cache_read_input_tokens, usage.cache_creation_input_tokens)
    raw = client_for(server).messages.with_raw_response.create(model=MODEL, max_tokens=256, messages=ASK)
    assert json.loads(raw.read())["usage"] == server.requests[-1].response["usage"]


@pytest.mark.parametrize("kind", ["cut", "false_gzip"])
def test_a_transfer_that_breaks_after_a_200_is_a_connection_error_the_sdk_retries(server, kind):
    server.break_transfer_next(kind, times=2)
    with pytest.raises(anthropic.APIConnectionError):
        ask(client_for(server, max_retries=1))
    assert len(server.requests) == 2
    assert ask(client_for(server)).content[0].text, "the next answer is whole again"

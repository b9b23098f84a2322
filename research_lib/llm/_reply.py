"""Reading a reply of the Messages API from its raw JSON body, strictly.

The SDK's objects coerce what they parse (``true`` becomes 1, ``"3.0"`` becomes 3, a string
body is returned as a string), so the body is read here instead. A *bad reply* (`BadAPIReply`)
is a status 200 whose body is not a Message: not UTF-8 JSON (``NaN``/``Infinity`` are not
JSON), not an object with ``"type": "message"``, no ``content`` list of typed blocks (each text
block with its text), no string ``stop_reason``, or a ``usage`` whose ``input_tokens`` and
``output_tokens`` (and cache counts, when not absent or null) are not whole numbers from 0 to
`MAX_TOKENS_PER_REQUEST` (``true`` and ``3.0`` are not whole numbers). A usage that can be read
is counted even when the rest of the reply cannot: the API billed it.
"""

from __future__ import annotations

import json

from research_lib.errors import SpartanError
from research_lib.llm._cost import Meter, Usage

MAX_TOKENS_PER_REQUEST = 10_000_000  # no usage count of one request can be larger (contexts are ~1M tokens)
USAGE_FIELDS = {"input_tokens": "input_tokens", "output_tokens": "output_tokens",  # the API's name -> ours
                "cache_read_input_tokens": "cache_read_tokens", "cache_creation_input_tokens": "cache_write_tokens"}
OPTIONAL_USAGE = ("cache_read_input_tokens", "cache_creation_input_tokens")  # absent or null: 0


class BadAPIReply(SpartanError):
    """The API answered (status 200) with something that is not a Message."""


def quote(value) -> str:
    """``repr(value)``, at most 80 characters (a lone surrogate or control character shown escaped)."""
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def json_body(body: bytes) -> object:
    """The JSON of a 200 answer's body, or BadAPIReply (not UTF-8, not JSON, NaN/Infinity, too deep)."""
    try:
        return json.loads(body, parse_constant=refuse_constant)
    except (ValueError, RecursionError) as err:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        raise BadAPIReply(f"the body of a 200 answer is not JSON ({type(err).__name__}: {quote(str(err))}): "
                          f"{quote(body[:200])}") from None


def refuse_constant(name: str):
    """A JSON decoder's ``parse_constant``: NaN and Infinity are not JSON."""
    raise ValueError(f"{name} is not JSON")


def result_lines(body: bytes) -> list[tuple[str, dict]]:
    """``(custom_id, result)`` of each line of a batch's JSONL results, or BadAPIReply."""
    lines = []
    for line in body.splitlines():
        if not line.strip():
            continue
        entry = json_body(line)
        result = entry.get("result") if isinstance(entry, dict) else None
        if not isinstance(entry, dict) or not isinstance(entry.get("custom_id"), str) or not isinstance(result, dict) \
                or not isinstance(result.get("type"), str):
            raise BadAPIReply(f"a line of the batch results is not a result: {quote(entry)}")
        lines.append((entry["custom_id"], result))
    return lines


def _is_count(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_TOKENS_PER_REQUEST


def read_usage(message) -> tuple[Usage | None, str | None]:
    """``(usage, None)`` when ``message`` (raw JSON) carries a readable usage, else ``(None, why not)``."""
    usage = message.get("usage") if isinstance(message, dict) else None
    if not isinstance(usage, dict):
        return None, "the message has no usage (its tokens, so its cost, are unknown)"
    counts = {}
    for name, ours in USAGE_FIELDS.items():
        value = usage.get(name)
        value = 0 if value is None and name in OPTIONAL_USAGE else value
        if not _is_count(value):
            return None, (f"the message's usage.{name} is not a whole number of tokens from 0 to "
                          f"{MAX_TOKENS_PER_REQUEST:,}: {quote(value)}")
        counts[ours] = value
    return Usage(**counts), None


def message_problem(message) -> str | None:
    """What makes ``message`` (raw JSON) not a Message we can read, its usage aside, or None."""
    if not isinstance(message, dict) or message.get("type") != "message":
        return f"the body of a 200 answer is not a Message: {quote(message)}"
    content = message.get("content")
    if not isinstance(content, list) or not all(
            isinstance(block, dict) and isinstance(block.get("type"), str)
            and (block["type"] != "text" or isinstance(block.get("text"), str)) for block in content):
        return f"the message's content is not a list of typed blocks, each text block with its text: {quote(content)}"
    if not isinstance(message.get("stop_reason"), str):
        return f"the message's stop_reason is not a string: {quote(message.get('stop_reason'))}"
    return None


def read_reply(message, meter: Meter) -> tuple[str, str]:
    """``(text, stop_reason)`` of a reply (raw JSON); its usage, when readable, is added to
    ``meter`` even if the rest is not (the API billed it). Raises BadAPIReply saying what is wrong."""
    usage, problem = read_usage(message)
    if usage is not None:
        meter.add(usage)
    problem = message_problem(message) or problem
    if problem is not None:
        raise BadAPIReply(problem)
    return "".join(b["text"] for b in message["content"] if b["type"] == "text"), message["stop_reason"]

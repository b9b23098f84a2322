"""What is sent to Claude for a prompt, built without the SDK: the request payload, the key it
is cached under, and whether its system prompt is long enough for prompt caching.

Kept apart from the client (`research_lib.llm._anthropic`) so that the offline analyst, replays and
cache look-ups never import the ``anthropic`` SDK (about a second).

Prompt caching: the API silently skips a cache prefix shorter than a per-model minimum, so the
system prompt is marked ``cache_control`` only when it is at least that long
(``MIN_CACHEABLE_TOKENS``), and a shorter one is sent unmarked. Whatever the API did is read
from ``usage`` (cache writes and reads) into the cost report either way. The marker never
enters the response-cache key (`research_lib.llm._cache.request_key`).
"""

from __future__ import annotations

from research_lib.llm._cache import payload_digest
from research_lib.llm._prompt import PromptRequest

API_KEY_ENV = "ANTHROPIC_API_KEY"
ANALYSIS_PROMPT = "First write a brief analysis of the inputs (150 words at most, no JSON)."
ANSWER_PROMPT = "Now give the JSON answer for every symbol."

# The shortest prefix the API caches, in tokens, for each model of params/base.yaml (below it,
# cache_control is silently ignored). Anthropic's prompt-caching docs as mirrored by litellm
# (2026-10): Opus 5 512, Sonnet 5 1,024 (the 5.5 models have no row of their own: their family's),
# Sonnet 4.6 2,048, Haiku 4.5 4,096.
MIN_CACHEABLE_TOKENS = {"claude-sonnet-5-5": 1024, "claude-opus-5-5": 512, "claude-sonnet-5": 1024,
                        "claude-sonnet-4-6": 2048, "claude-haiku-4-5": 4096}
CHARS_PER_TOKEN = 4  # the long end for English text, so a prefix counted long enough is long enough


def cacheable(text: str, model: str) -> bool:
    """Whether a prefix of ``text`` is long enough for ``model``'s prompt cache (unknown model: no)."""
    minimum = MIN_CACHEABLE_TOKENS.get(model)
    return minimum is not None and len(text) // CHARS_PER_TOKEN >= minimum


def request_payload(request: PromptRequest, schema: dict, settings) -> dict:
    """Exactly what is sent for ``request`` (first call), plus how the answer is produced.

    The response cache is keyed by a hash of this (less its ``cache_control`` markers), so a
    cached answer is always the answer to this very request.
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


def legacy_request_key(payload: dict) -> str:
    """The key the versions before issue 13 gave ``payload``'s answer: the digest of the payload
    as they sent it, with every system block marked ``cache_control: {type: ephemeral}``."""
    return payload_digest({**payload, "system": [{**block, "cache_control": {"type": "ephemeral"}}
                                                 for block in payload["system"]]})

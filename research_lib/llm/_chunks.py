"""A large universe asked in chunks: each rebalance date's symbols split into prompts of at most
``chunk_symbols`` symbols, each one request with its own cache entry and its own validation.

Membership is deterministic: the date's table is cut in its own order (the features are sorted
by symbol), so the same inputs give the same chunks, prompts and cache keys on every re-run. A
date whose symbols fit in one chunk is asked exactly as before chunks existed: the same prompt,
the same alias shuffle, the same cache key. Sorted (not liquidity) order mixes each chunk, so
"relative to the average of the symbols in the table", which the system prompt asks for, stays
close to the whole universe's average.

Masking per chunk: aliases run S01.. within a chunk and are shuffled per date and chunk. A chunk
gets only the headlines about its own symbols, and any other ticker of the date's universe that
a headline names is replaced by ``OTHER_SYMBOL``, so a masked prompt shows no real ticker.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

import pandas as pd

from research_lib.llm._prompt import Headline, PromptRequest, build_request

OTHER_SYMBOL = "[another company]"


@dataclass(frozen=True)
class Chunk:
    """One request: chunk ``part`` (0-based) of ``parts`` for ``date``, its table and its prompt."""

    date: pd.Timestamp
    part: int
    parts: int
    table: pd.DataFrame  # the chunk's symbols x inputs
    request: PromptRequest

    @property
    def label(self) -> str:
        """``2021-01-29`` for a date asked in one prompt, ``2021-01-29 (chunk 2 of 3)`` otherwise."""
        return f"{self.date:%Y-%m-%d}" + (f" (chunk {self.part + 1} of {self.parts})" if self.parts > 1 else "")


def split_table(table: pd.DataFrame, chunk_symbols: int) -> list[pd.DataFrame]:
    """``table`` cut into consecutive pieces of at most ``chunk_symbols`` rows, in its own order."""
    if chunk_symbols < 1:
        raise ValueError(f"chunk_symbols must be at least 1, got {chunk_symbols}; set llm.chunk_symbols >= 1")
    return [table.iloc[start:start + chunk_symbols] for start in range(0, len(table), chunk_symbols)]


def chunk_count(n_symbols: int, chunk_symbols: int) -> int:
    """How many requests ``n_symbols`` symbols take at ``chunk_symbols`` per prompt."""
    return -(-n_symbols // chunk_symbols)


def build_chunks(tables: dict[pd.Timestamp, pd.DataFrame], settings, headlines: dict | None = None) -> list[Chunk]:
    """Every request of a run: each date of ``tables`` (in date order) cut into chunks of
    ``settings.chunk_symbols``, each with its prompt (``settings``: mask, reasoning, horizon)."""
    chunks = []
    for date, table in sorted(tables.items()):
        pieces = split_table(table, settings.chunk_symbols)
        universe = list(table.index)
        for part, piece in enumerate(pieces):
            news = chunk_headlines((headlines or {}).get(date, ()), list(piece.index), universe, settings.mask)
            request = build_request(date, piece, settings.horizon_days, mask=settings.mask,
                                    reasoning=settings.reasoning, headlines=news, part=part)
            chunks.append(Chunk(pd.Timestamp(date), part, len(pieces), piece, request))
    return chunks


def chunk_headlines(headlines, symbols: list[str], universe: list[str], mask: bool) -> list[Headline]:
    """The headlines about ``symbols``; when masked, the other tickers of ``universe`` they name
    (as whole words) are replaced by `OTHER_SYMBOL` (the chunk's own are aliased by the prompt)."""
    own = set(symbols)
    kept = [h for h in headlines if h.symbol in own]
    others = [s for s in universe if s not in own]
    if not mask or not others or not kept:
        return kept
    pattern = re.compile(r"\b(?:" + "|".join(re.escape(s) for s in sorted(others, key=len, reverse=True)) + r")\b")
    return [replace(h, text=pattern.sub(OTHER_SYMBOL, h.text)) for h in kept]

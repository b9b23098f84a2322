"""A seeded synthetic market (``data.source: synthetic``) for scale and known-answer tests.

Every page a synthetic market reaches says it is synthetic.
"""

from __future__ import annotations

from pydantic import Field

from research_lib.params import StrictModel

__all__ = ["SyntheticConfig"]


class SyntheticConfig(StrictModel):
    """``data.synthetic``: the generated market's size, seed and planted signal (source: synthetic only)."""

    n_symbols: int = Field(100, ge=2, le=5000, description="stocks in the universe")
    seed: int = Field(0, ge=0, description="the same seed gives the same market, bit for bit")
    signal_strength: float = Field(0.0, ge=0.0, le=0.5, description="strength of the planted signal (0: none)")

"""What the analyst must answer: one view per symbol, validated field by field.

The JSON schema sent to Claude (structured output) and the validation of its answer come
from the same pydantic models, so a view that passes is one the schema allows.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

Direction = Literal["up", "down", "neutral"]


class SymbolView(BaseModel):
    """One symbol's view over the horizon, relative to the other symbols in the prompt."""

    model_config = ConfigDict(extra="forbid")

    symbol: str = Field(description="the symbol exactly as given in the prompt")
    direction: Direction = Field(description="expected performance relative to the cross-section average")
    conviction: float = Field(ge=0.0, le=1.0, description="strength of the view, 0 (none) to 1 (strongest)")
    expected_excess_return: float = Field(ge=-0.5, le=0.5, description="expected return over the horizon minus the cross-section average, as a fraction")
    confidence: float = Field(ge=0.0, le=1.0, description="probability the direction is right")
    rationale: str = Field(max_length=600, description="two sentences at most, citing the inputs used")
    key_risks: list[str] = Field(max_length=3, description="up to three short risks to the view")


class AnalystAnswer(BaseModel):
    """The whole answer for one date."""

    model_config = ConfigDict(extra="forbid")

    horizon_days: int = Field(ge=1, le=252, description="sessions the views cover; echo the requested horizon")
    views: list[SymbolView]


def answer_schema() -> dict:
    """The JSON schema of ``AnalystAnswer`` for ``output_config`` (no unsupported keywords)."""
    from anthropic import transform_schema

    return transform_schema(AnalystAnswer)

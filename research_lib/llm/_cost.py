"""Token prices, cost of a completion, estimates before a backfill, and the budget cap.

Every attempt sent to the API whose ``usage`` could be read is counted, retries of a bad reply
and the first (analysis) call of two-step reasoning included: a `Meter` adds its tokens and
dollars to the request's cost report and to the run's `Budget` as soon as it is read, and the
budget is checked before each attempt with that attempt's worst case.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from research_lib.errors import SpartanError
from research_lib.units import format_usd


class BudgetExceeded(SpartanError):
    """The next call would take spending past ``llm.budget_usd``: nothing more is sent."""


@dataclass(frozen=True)
class Price:
    """US dollars per million tokens."""

    input: float
    output: float
    cache_write: float
    cache_read: float
    batch_discount: float = 0.5


def completion_cost(price: Price, input_tokens: int, output_tokens: int, cache_read_tokens: int = 0,
                    cache_write_tokens: int = 0, batch: bool = False) -> float:
    """Dollars for one completion. ``input_tokens`` excludes cached tokens (as the API reports)."""
    dollars = (input_tokens * price.input + output_tokens * price.output
               + cache_read_tokens * price.cache_read + cache_write_tokens * price.cache_write) / 1e6
    return dollars * (1.0 - price.batch_discount) if batch else dollars


def estimate_tokens(text: str) -> int:
    """A conservative token estimate (about 3.5 characters a token for English and numbers)."""
    return math.ceil(len(text) / 3.5)


@dataclass(frozen=True)
class Usage:
    """The tokens of one API attempt, as its ``usage`` reported them (``input_tokens`` excludes cached tokens)."""

    input_tokens: int
    output_tokens: int
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0


@dataclass
class Budget:
    """Refuses a call whose worst-case cost would take spending past ``cap_usd``."""

    cap_usd: float
    spent_usd: float = 0.0

    def check(self, estimated_usd: float) -> None:
        if self.spent_usd + estimated_usd > self.cap_usd:
            error = BudgetExceeded(
                f"LLM budget: spent {format_usd(self.spent_usd)}, the next call could cost up to "
                f"{format_usd(estimated_usd)}, which would pass llm.budget_usd ({format_usd(self.cap_usd)}). Nothing "
                "more was sent; raise the budget or run with a cache (llm.provider: replay).")
            from research_lib.alerts import alert

            alert("llm_budget", str(error), key="llm.budget_usd", spent_usd=self.spent_usd,
                  next_call_usd=estimated_usd, budget_usd=self.cap_usd)
            raise error

    def add(self, usd: float) -> None:
        self.spent_usd += usd


@dataclass
class Meter:
    """One request's tokens and dollars over all its attempts, spent from ``budget`` as they are read.

    `check` before each attempt (with that attempt's worst case), `add` each attempt whose usage
    could be read, whether or not the rest of its reply was usable: the API billed it.
    """

    price: Price
    budget: Budget
    batch: bool = False
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    cost_usd: float = 0.0

    def check(self, input_tokens_est: int, max_output_tokens: int) -> None:
        """Refuse (``BudgetExceeded``) an attempt that could take spending past the budget."""
        self.budget.check(completion_cost(self.price, input_tokens_est, max_output_tokens, batch=self.batch))

    def add(self, usage: Usage) -> None:
        """Count one attempt's ``usage`` here and in the budget."""
        cost = completion_cost(self.price, usage.input_tokens, usage.output_tokens, usage.cache_read_tokens,
                               usage.cache_write_tokens, batch=self.batch)
        self.input_tokens += usage.input_tokens
        self.output_tokens += usage.output_tokens
        self.cache_read_tokens += usage.cache_read_tokens
        self.cache_write_tokens += usage.cache_write_tokens
        self.cost_usd += cost
        self.budget.add(cost)

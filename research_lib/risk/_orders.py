"""Proposed orders, reference prices and the risk layer's decision about them."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from enum import Enum

from research_lib.risk._limits import RiskInputError

# The smallest quantity an order may have, in shares: Alpaca's precision for fractional
# quantities. An order (as given or as clamped) of fewer shares is never sent.
MIN_ORDER_QUANTITY = 1e-9


class Side(Enum):
    """Order side."""

    BUY = "buy"
    SELL = "sell"

    @property
    def sign(self) -> int:
        """+1 for a buy, -1 for a sell."""
        return 1 if self is Side.BUY else -1


@dataclass(frozen=True)
class Order:
    """A proposed order: exactly one of ``quantity`` (shares) or ``notional`` (currency).

    Numbers are not validated here so that :func:`check_orders` can reject a bad order with a
    reason instead of failing the whole batch; ``side`` accepts ``"buy"``/``"sell"``.
    """

    symbol: str
    side: Side
    quantity: float | None = None
    notional: float | None = None
    limit_price: float | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.side, Side):
            try:
                object.__setattr__(self, "side", Side(self.side))
            except ValueError:
                raise RiskInputError(f"side is {self.side!r}; use one of {[s.value for s in Side]}") from None


@dataclass(frozen=True)
class ReferencePrice:
    """The latest trusted price of a symbol and when it was observed (same tz-awareness as ``now``)."""

    price: float
    as_of: dt.datetime


@dataclass(frozen=True)
class ClampedOrder:
    """An order sent smaller than proposed: ``order`` replaces ``original`` because of ``reason``."""

    original: Order
    order: Order
    reason: str


@dataclass(frozen=True)
class RejectedOrder:
    """An order that is not sent; ``reason`` names the limit, the value and the limit's value."""

    order: Order
    reason: str


@dataclass(frozen=True)
class RiskNote:
    """An order sent (``order`` is in ``to_send``) that reduces a position and takes net exposure
    beyond its limit where the strict rule would not let it (grown, or through zero): the exposure
    limits never refuse a reducing order. ``reason`` names the limit and the values."""

    order: Order
    reason: str


@dataclass(frozen=True)
class RiskDecision:
    """What to send and what not, in processing order.

    accepted : orders sent as proposed.
    clamped : orders sent smaller than proposed.
    rejected : orders not sent.
    to_send : accepted and clamped (the reduced) orders, in the order they were checked.
    positions_after : the hypothetical book once every order in ``to_send`` is filled.
    notes : orders sent that reduce a position and leave net exposure beyond its limit where
        the strict rule would not let it be (grown, or through zero): the exposure limits never
        refuse a reducing order, and these notes show when that exemption was used.
    """

    accepted: tuple[Order, ...]
    clamped: tuple[ClampedOrder, ...]
    rejected: tuple[RejectedOrder, ...]
    to_send: tuple[Order, ...]
    positions_after: dict[str, float]
    notes: tuple[RiskNote, ...] = ()

"""What a broker is to Spartan: one interface, implemented by the simulated broker and Alpaca.

The broker is the source of truth: positions, open orders, cash and equity are read from it
at the start of every trading cycle. Orders are market, day orders in shares (fractional
allowed), or, for a broker that works execution schedules (the sim), child limit orders over given
5-minute bars of the next session (``limit_price``, ``bar``, ``bars``); each has a deterministic
``client_order_id`` (at most 48 characters) so that a
retried or re-run submission can be recognised instead of duplicated.

Errors are translated into the few cases the trading cycle must treat differently:
`DuplicateClientOrderId` (the order already exists: adopt it), `InsufficientBuyingPower`
and `OrderRejected` (not sent), `RateLimited` and `BrokerUnavailable` (retry within a bound),
and `UnknownOutcome` (the request may or may not have reached the broker: look the order up
by its ``client_order_id``).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Literal, Protocol

from research_lib.errors import SpartanError
from research_lib.execution.ids import MAX_CLIENT_ORDER_ID, check_client_order_id  # noqa: F401 (this package's names)

OrderStatus = Literal["new", "accepted", "partially_filled", "filled", "canceled", "rejected", "expired"]
OPEN_STATUSES = ("new", "accepted", "partially_filled")


class BrokerError(SpartanError):
    """A broker call failed; the subclass says how the trading cycle should react."""


class DuplicateClientOrderId(BrokerError):
    """The broker already has an order with this client_order_id (adopt it, never resend)."""


class InsufficientBuyingPower(BrokerError):
    """The broker refused the order for buying power."""


class OrderRejected(BrokerError):
    """The broker refused the order for another stated reason."""


class RateLimited(BrokerError):
    """Too many requests (HTTP 429): retry after a pause, within the cycle's bound."""


class BrokerUnavailable(BrokerError):
    """The broker answered with a server error (5xx) or could not be reached before sending."""


class UnknownOutcome(BrokerError):
    """The request was sent but no answer came back (timeout, dropped connection): the order
    may exist; resolve it with `Broker.order_by_client_id`."""


@dataclass(frozen=True)
class Clock:
    """The broker's view of the market: ``now`` (tz-aware) and whether the session is open."""

    now: dt.datetime
    is_open: bool
    next_open: dt.datetime
    next_close: dt.datetime


@dataclass(frozen=True)
class Account:
    """Money and flags, in account currency."""

    equity: float
    cash: float
    buying_power: float
    trading_blocked: bool = False
    pattern_day_trader: bool = False


@dataclass(frozen=True)
class Position:
    """A holding: ``quantity`` in shares (negative: short)."""

    symbol: str
    quantity: float
    avg_entry_price: float
    market_value: float


@dataclass(frozen=True)
class BrokerOrder:
    """An order as the broker reports it."""

    client_order_id: str
    broker_id: str
    symbol: str
    side: Literal["buy", "sell"]
    quantity: float
    status: OrderStatus
    filled_quantity: float = 0.0
    filled_avg_price: float | None = None
    submitted_at: dt.datetime | None = None

    @property
    def is_open(self) -> bool:
        return self.status in OPEN_STATUSES


class Broker(Protocol):
    """The calls a trading cycle makes. Every call has an explicit timeout; none retries on
    its own beyond what the implementation documents."""

    name: str
    works_schedules: bool  # True: a child order names its bars and the broker works it then (the sim)

    def clock(self) -> Clock: ...

    def account(self) -> Account: ...

    def positions(self) -> dict[str, Position]: ...

    def open_orders(self) -> list[BrokerOrder]: ...

    def submit_order(self, symbol: str, side: Literal["buy", "sell"], quantity: float,
                     client_order_id: str, *, limit_price: float | None = None, bar: int | None = None,
                     bars: int = 1) -> BrokerOrder: ...

    def order_by_client_id(self, client_order_id: str) -> BrokerOrder | None: ...

    def cancel_order(self, broker_id: str) -> None: ...

"""What a trading cycle is given (`CycleInputs`) and what it reports (`CycleReport`)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

import pandas as pd

from research_lib.config import ExecutionConfig
from research_lib.risk import RiskLimits


@dataclass(frozen=True)
class CycleInputs:
    """What the cycle needs besides the broker and the ledger.

    targets : target weights (symbol -> fraction of equity) decided at ``session``'s close, or
        None to hold: reconcile and check the loss limits, but propose no order (the book drifts
        with prices between decisions, as in the backtest).
    decision : the date of the decision ``targets`` come from (recorded with the cycle).
    prices : reference prices of every symbol held or targeted, observed at ``price_time``.
    adv : average daily volume in shares per symbol (None: unknown, which fails closed).
    execution : how orders are worked (``params: execution``); None or ``market``: one order per
        symbol and side, at market (`research_lib.trading._working` for the others).
    """

    strategy: str
    session: dt.date
    targets: pd.Series | None
    prices: pd.Series
    price_time: dt.datetime
    limits: RiskLimits
    adv: pd.Series | None = None
    min_trade_value: float = 1.0
    decision: dt.date | None = None
    execution: ExecutionConfig | None = None


@dataclass
class CycleReport:
    """What the cycle found and did; ``status`` is ``traded``, ``nothing_to_do``, ``market_closed``,
    ``halted`` or ``dry_run``. ``positions`` are the broker's, reconciled before any order (the
    orders sent fill later: at the next close on the sim); ``kill_switch_before`` is the state
    the cycle started in, ``kill_switch`` the one it ended in."""

    strategy: str
    session: str
    cycle_id: int | None = None
    status: str = "running"
    kill_switch_before: str = "active"
    kill_switch: str = "active"
    kill_switch_reason: str | None = None
    equity: float | None = None
    cash: float | None = None
    daily_pnl: float | None = None
    drawdown: float | None = None
    resolved: list[dict] = field(default_factory=list)
    cancelled: list[str] = field(default_factory=list)
    would_cancel: list[str] = field(default_factory=list)
    mismatches: list[dict] = field(default_factory=list)
    sent: list[dict] = field(default_factory=list)
    adopted: list[dict] = field(default_factory=list)
    rejected: list[dict] = field(default_factory=list)
    clamped: list[dict] = field(default_factory=list)
    scheduled: list[dict] = field(default_factory=list)
    delisted: list[dict] = field(default_factory=list)
    positions: dict[str, float] = field(default_factory=dict)



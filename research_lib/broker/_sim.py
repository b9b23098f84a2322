"""The simulated broker: replays a price history one session at a time, offline.

Conventions
-----------
- **Time.** The sim stands at the close (16:00 America/New_York) of one session of the
  price index, its *sim date* (the first session on or after ``start`` when the account is
  created). `SimBroker.advance_to` and `SimBroker.step` move it forward, never back.
- **Execution.** Orders are market-on-next-close: an order submitted while the sim date is
  ``d`` fills at the close of the session after ``d``, when the sim advances past ``d``
  (however far it advances), in submission order. This is the backtester's
  ``execution_lag_sessions=1``, so paper and backtest compare session by session.
  `clock` reports ``is_open`` True while such a session exists: a cycle run at the close of
  ``d`` may submit. At the last session of the history the market is closed for good.
- **Child orders** of an execution schedule (`research_lib.execution`): an order submitted with a
  ``limit_price`` and a ``bar`` works, evenly, over ``bars`` 5-minute bars of the next session from
  ``bar``, on that session's intraday bars (`research_lib.execution.session_bars`: modelled from the
  closes, seeded, the same on every run; SIMULATED). It fills by `research_lib.execution.fill_slice`:
  at the mean typical price of its bars, plus the half-spread and the impact of what it trades in each
  bar (the cost model's coefficient, volatility and average traded value), never beyond its limit;
  what does not fill expires at its last bar, with the reason. Child orders fill before the
  market-on-close orders of the session, in the order of their bars.
- **Fill price and costs** are the backtest's cost model (`research_lib.backtest.CostModel`),
  charged on each trade as `run_backtest` charges it: a buy fills at ``close * (1 +
  spread_bps / 1e4 + impact)``, a sell at ``close * (1 - spread_bps / 1e4 - impact)`` (the
  half-spread and the market impact are in the reported price); commissions
  ``commission_bps / 1e4 * quantity * close`` are charged to cash separately. ``impact`` is
  `research_lib.backtest.impact_rate` of the symbol's traded value at that close, with its
  average traded value and volatility over the ``IMPACT_WINDOW`` sessions before the fill
  (known when the order is submitted); orders in one symbol filled at one close pay impact
  as one trade of their summed value, so splitting an order does not lower it.
- **Cash** changes by fills (``-quantity * price - commission`` for a buy, ``quantity * price -
  commission`` for a sell) and, each session, by the backtest's daily accrual before that session's
  fills: it earns (a negative balance pays) ``cash_rate_per_year / sessions_per_year`` on the previous
  close's cash and pays ``borrow_bps_per_year / 1e4 / sessions_per_year`` on its short market value.
- **Buying power** (no margin) is cash, plus the proceeds of open sells of shares held, less
  the cost of open buys, all valued at the sim date's close with costs (impact as if each
  order filled there alone); a buy that would exceed it is refused at submission. A sell
  beyond the shares held (less open sells) is refused unless ``allow_short``. As at a real
  broker, nothing is re-checked at the fill but the price: a price move can leave cash
  slightly negative. An order whose symbol has no close at its fill session expires, with a
  reason (`SimBroker.order_reason`).
- **Delistings.** A holding whose prices end is closed as the backtest closes it: on the first
  session without a price (after that session's fills), its value at the last close, times
  ``1 + delisting_return`` when one is given, becomes cash, with no commission. Each closure is
  recorded (`SimBroker.delistings`), once: an advance is one transaction.
- **Refusals send nothing.** An order refused at submission is not stored: its client_order_id
  stays free. Every stored order keeps its client_order_id for the account's whole history.
- **State** lives in SQLite at ``db_path`` (the workspace's is ``research_lib.paths.state_db()``),
  kept by `research_lib.broker._sim_store`: each state change (a submission, a cancel, an
  advance with its fills) is one transaction. An account's settings (starting cash, the cost
  model, ``allow_short``, start) are fixed when it is created; reopening it with other values
  is refused.
- **Fault injection** for tests of the trading cycle: `SimBroker.fail_next`.

Quantities are shares (fractional allowed); a position within ``QUANTITY_TOLERANCE`` of zero
is closed.
"""

from __future__ import annotations

import datetime as dt
import math
import numbers
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Literal, TypeVar, get_args

import numpy as np
import pandas as pd

from research_lib.backtest import IMPACT_MIN_SESSIONS, IMPACT_WINDOW, CostModel, impact_inputs, impact_rate
from research_lib.broker._base import (OPEN_STATUSES, Account, BrokerError, BrokerOrder, BrokerUnavailable, Clock,
                                       DuplicateClientOrderId, InsufficientBuyingPower, OrderRejected, Position,
                                       RateLimited, UnknownOutcome, check_client_order_id)
from research_lib.broker._sim_intraday import fill_worked_orders, worked_order
from research_lib.broker._sim_store import (ADDED_SETTINGS, EXCHANGE_TZ, LOCK_TIMEOUT_SECONDS, QUANTITY_TOLERANCE,
                                            SESSION_CLOSE, SESSION_OPEN, SimDelisting, SimFill, SimStore, close_frame, cost_model,
                                            exchange_time, stored_account)
from research_lib.units import SESSIONS_PER_YEAR, check_sessions_per_year

__all__ = ["EXCHANGE_TZ", "FAULTS", "LOCK_TIMEOUT_SECONDS", "QUANTITY_TOLERANCE", "SESSION_CLOSE", "SESSION_OPEN",
           "BrokerCall", "SimBroker", "SimFill"]

BrokerCall = Literal["clock", "account", "positions", "open_orders", "submit_order", "order_by_client_id",
                     "cancel_order"]
FAULTS = (RateLimited, BrokerUnavailable, UnknownOutcome)
_T = TypeVar("_T")


@dataclass
class _Fault:
    error: type[BrokerError]
    remaining: int
    call: str | None


class SimBroker:
    """The offline broker of paper trading, implementing `research_lib.broker.Broker`.

    Parameters
    ----------
    db_path : the SQLite file holding the state (created if missing).
    prices : the canonical price frame; fills use its ``close`` field (adjusted closes) and its
        sessions are the sim's calendar.
    account_id : the account's key in the file; several accounts can share one file.
    starting_cash : cash of a new account, in account currency.
    cost_bps : commissions per unit traded, as ``BacktestConfig.cost_bps`` (default 10); with
        ``spread_bps``, the older way to give the costs: leave both out when passing ``costs``.
    spread_bps : half-spread and slippage per unit traded, as ``BacktestConfig.spread_bps`` (default 0).
    costs : the whole cost model (commission, spread, impact, borrow, cash rate), e.g.
        ``CostModel.from_backtest_kwargs(config.backtest.model())``.
    allow_short : let a sell exceed the shares held.
    start : the new account's first sim date: the first session on or after it (default: the
        first session of ``prices``). Ignored when reopening an account unless given.
    name, sessions_per_year : the broker's name in reports; the year the cash and borrow rates accrue over.

    Raises
    ------
    ValueError
        if a parameter is out of range, ``costs`` comes with ``cost_bps`` or ``spread_bps``, impact
        is asked for without a volume field in ``prices``, ``prices`` has no usable close,
        ``start`` is after the history, or the stored account was created with other settings.
    """

    works_schedules = True  # a child order names its bars of the next session, and the sim works it there

    def __init__(self, db_path: str | Path, prices: pd.DataFrame, account_id: str = "sim",
                 starting_cash: float = 1_000_000.0, cost_bps: float | None = None, spread_bps: float | None = None,
                 *, costs: CostModel | None = None, allow_short: bool = False, start: str | dt.date | None = None,
                 name: str = "sim", delisting_return: float | None = None, sessions_per_year: int = SESSIONS_PER_YEAR):
        if not (math.isfinite(starting_cash) and starting_cash > 0):
            raise ValueError(f"starting_cash must be finite and > 0 (got {starting_cash}).")
        check_sessions_per_year(sessions_per_year)
        if not account_id:
            raise ValueError("account_id must be a non-empty string, e.g. 'sim'.")
        if delisting_return is not None and not (math.isfinite(delisting_return) and delisting_return >= -1.0):
            raise ValueError(f"delisting_return must be finite and >= -1, or None (got {delisting_return}).")
        self.delisting_return, self.sessions_per_year = delisting_return, sessions_per_year  # 365 for crypto
        self.db_path, self.account_id, self.name = Path(db_path), account_id, name
        self.starting_cash, self.costs = float(starting_cash), cost_model(costs, cost_bps, spread_bps)
        self.cost_bps, self.spread_bps = self.costs.commission_bps, self.costs.spread_bps
        self.allow_short = bool(allow_short)
        close = close_frame(prices)
        impact = self.costs.impact_coefficient
        if impact and "volume" not in prices.columns.get_level_values(0):
            raise ValueError(f"impact_coefficient={impact} needs a volume field in prices (the average traded "
                             "value); pass prices with volume, or costs with impact_coefficient=0.")
        self._adv_value, self._daily_vol = impact_inputs(prices, close) if impact else (None, None)
        self._volume = (prices["volume"].reindex(columns=close.columns).to_numpy(dtype=float)
                        if "volume" in prices.columns.get_level_values(0) else None)
        self._sessions = close.index
        self._symbols = list(close.columns)
        self._column = {symbol: i for i, symbol in enumerate(self._symbols)}
        self._close = close.to_numpy(dtype=float)
        self._mark = close.ffill().to_numpy(dtype=float)  # a holding whose prices ended keeps its last close
        self._faults: list[_Fault] = []
        self._store = SimStore(self.db_path, account_id)
        self._open_account(start)

    @property
    def sessions(self) -> pd.DatetimeIndex:
        """The sessions of the price history the sim replays."""
        return self._sessions

    @staticmethod
    def stored_account(db_path: str | Path, account_id: str) -> dict | None:
        """The settings and sim date of an account already in ``db_path`` (None if there is none)."""
        return stored_account(db_path, account_id)

    # -- the Broker interface ------------------------------------------------------------

    def clock(self) -> Clock:
        """Now is the sim date's close; open while a later session exists to fill at (after the
        last session, the next open and close are those of the next weekday, an estimate)."""
        return self._guarded("clock", self._clock)

    def account(self) -> Account:
        """Cash, buying power (see the module docstring) and equity at the sim date's close."""
        return self._guarded("account", self._account)

    def positions(self) -> dict[str, Position]:
        """Holdings by symbol, marked at the sim date's close (or the symbol's last close)."""
        return self._guarded("positions", self._positions)

    def open_orders(self) -> list[BrokerOrder]:
        """Orders not yet filled, canceled or expired, in submission order."""
        return self._guarded("open_orders", lambda: self._store.read_only(self._store.open_orders))

    def submit_order(self, symbol: str, side: Literal["buy", "sell"], quantity: float,
                     client_order_id: str, *, limit_price: float | None = None, bar: int | None = None,
                     bars: int = 1) -> BrokerOrder:
        """Accept a market order to fill at the next session's close, or, with ``limit_price`` and
        ``bar``, a child order working over ``bars`` bars of the next session from ``bar`` (see the
        module docstring).

        Raises
        ------
        ValueError
            if ``client_order_id`` is empty or longer than 48 characters (checked before sending).
        DuplicateClientOrderId
            if the account ever had an order with this ``client_order_id``.
        InsufficientBuyingPower
            if a buy's cost at the sim date's close, with costs, exceeds the buying power.
        OrderRejected
            for an unknown side, symbol or quantity, a symbol without a close at the sim date, a
            sell beyond the position without ``allow_short``, or no session left to fill at; for a
            limit price that is not a finite number > 0, a limit without a bar (or a bar without a
            limit), or bars outside the session's `BARS_PER_SESSION`.
        """
        check_client_order_id(client_order_id)
        return self._guarded("submit_order", lambda: self._submit(symbol, side, quantity, client_order_id,
                                                                  worked_order(limit_price, bar, bars)))

    def order_by_client_id(self, client_order_id: str) -> BrokerOrder | None:
        """The account's order with this client_order_id, whatever its status, or None."""
        return self._guarded("order_by_client_id", lambda: self._store.read_only(self._store.order_by_client_id, client_order_id))

    def cancel_order(self, broker_id: str) -> None:
        """Cancel an open order; an unknown, filled, canceled or expired one raises `OrderRejected`."""
        self._guarded("cancel_order", lambda: self._cancel(broker_id))

    # -- the simulation ------------------------------------------------------------------

    @property
    def sim_date(self) -> pd.Timestamp:
        """The session at whose close the sim stands."""
        return self._sessions[self._store.read_only(self._sim_row)]

    def advance_to(self, session_date: str | dt.date) -> pd.Timestamp:
        """Move the sim to the close of ``session_date``, filling the open orders at the close of
        the session after the current sim date, and accruing each session passed (interest on
        cash, borrow on shorts; before that session's fills). Advancing to the current sim date
        does nothing.

        Raises
        ------
        ValueError
            if ``session_date`` is not a session of the price index or is before the sim date.
        """
        target = self._session_row(session_date)
        with self._store.write() as conn:
            current = self._sim_row(conn)
            if target < current:
                raise ValueError(f"session_date {self._day(target)} is before the sim date {self._day(current)}; "
                                 "the sim never goes back. Use a new account_id (or db_path) to replay from earlier.")
            for row in range(current + 1, target + 1):
                self._accrue(conn, row)
                if row == current + 1:
                    self._fill_open_orders(conn, row)
                self._close_delisted(conn, row)
            if target > current:
                self._store.set_sim_date(conn, self._day(target))
        return self._sessions[target]

    def step(self) -> pd.Timestamp:
        """Advance one session (one trading cycle); return the new sim date.

        Raises
        ------
        ValueError
            if the sim date is the last session of the price history.
        """
        row = self._store.read_only(self._sim_row)
        if row + 1 >= len(self._sessions):
            raise ValueError(f"the sim date {self._day(row)} is the last session of the price history; "
                             "load prices that reach further to continue.")
        return self.advance_to(self._sessions[row + 1])

    def delistings(self) -> list[SimDelisting]:
        """Every position the sim closed because its prices ended, by session."""
        return self._store.read_only(self._store.delistings)

    def orders(self) -> list[BrokerOrder]:
        """Every order of the account, in submission order."""
        return self._store.read_only(self._store.orders)

    def order_reason(self, client_order_id: str) -> str | None:
        """Why an order was canceled or expired (None otherwise)."""
        return self._store.read_only(self._store.order_reason, client_order_id)

    def fills(self) -> list[SimFill]:
        """Every fill of the account, in the order they were applied to cash."""
        return self._store.read_only(self._store.fills)

    def fail_next(self, error: type[BrokerError], times: int = 1, *, call: BrokerCall | None = None) -> None:
        """Make the next ``times`` broker calls (of ``call`` only, if given) raise ``error``.

        `RateLimited` and `BrokerUnavailable` are raised before the call does anything.
        `UnknownOutcome` is raised after the call took effect: a submitted order is stored
        (or refused, its error lost), a cancel is done. Faults live in this object only.
        """
        if error not in FAULTS:
            raise ValueError(f"error {error!r} cannot be injected; valid errors: {[e.__name__ for e in FAULTS]}")
        if times < 1:
            raise ValueError(f"times must be >= 1 (got {times}).")
        if call is not None and call not in get_args(BrokerCall):
            raise ValueError(f"call {call!r} is not a broker call; valid calls: {list(get_args(BrokerCall))}")
        self._faults.append(_Fault(error, int(times), call))

    # -- implementation ------------------------------------------------------------------

    def _guarded(self, call: str, action: Callable[[], _T]) -> _T:
        fault = next((f for f in self._faults if f.call in (None, call)), None)
        if fault is None:
            return action()
        fault.remaining -= 1
        if fault.remaining == 0:
            self._faults.remove(fault)
        if fault.error is not UnknownOutcome:
            raise fault.error(f"simulated {fault.error.__name__} on {call} (SimBroker.fail_next); nothing was done")
        try:
            action()
        except BrokerError:
            pass  # the broker answered with a refusal, and the answer was lost
        raise UnknownOutcome(f"simulated lost answer on {call} (SimBroker.fail_next): the call may have taken effect; "
                             "look the order up with order_by_client_id")

    def _open_account(self, start: str | dt.date | None) -> None:
        self._store.create_tables()
        first = 0 if start is None else int(self._sessions.searchsorted(pd.Timestamp(start)))
        if first >= len(self._sessions):
            raise ValueError(f"start {start} is after the last session of the prices ({self._day(-1)}); "
                             "choose an earlier start or load later prices.")
        settings = {"starting_cash": self.starting_cash, "cost_bps": self.cost_bps, "spread_bps": self.spread_bps,
                    **{name: getattr(self.costs, name) for name in ADDED_SETTINGS},
                    "allow_short": int(self.allow_short), "start_session": self._day(first)}
        with self._store.write() as conn:
            stored = self._store.open_account(conn, settings, self._day(first), self.starting_cash)
            self._sim_row(conn)  # the stored sim date must be a session of these prices
            used = self._store.symbols_in_use(conn)
            if used - set(self._column):
                raise ValueError(f"account {self.account_id!r} holds or has open orders in {sorted(used - set(self._column))}, "
                                 "which the prices lack; pass prices that include them.")
        for (key, wanted), had in zip(settings.items(), stored):
            if wanted != had and not (key == "start_session" and start is None):
                raise ValueError(f"account {self.account_id!r} in {self.db_path} was created with {key}={had!r}; got "
                                 f"{wanted!r}. Pass the stored value, or use a new account_id for other settings.")

    def _clock(self) -> Clock:
        row = self._store.read_only(self._sim_row)
        is_open = row + 1 < len(self._sessions)
        following = self._sessions[row + 1] if is_open else self._sessions[row] + pd.offsets.BDay(1)
        return Clock(now=exchange_time(self._sessions[row], SESSION_CLOSE), is_open=is_open,
                     next_open=exchange_time(following, SESSION_OPEN), next_close=exchange_time(following, SESSION_CLOSE))

    def _account(self) -> Account:
        with self._store.read() as conn:
            row = self._sim_row(conn)
            cash = self._store.cash(conn)
            buying_power = self._buying_power(conn, row)
            held = self._store.held(conn)
        equity = cash + sum(quantity * self._mark[row, self._column[s]] for s, (quantity, _) in held.items())
        return Account(equity=equity, cash=cash, buying_power=buying_power)

    def _positions(self) -> dict[str, Position]:
        with self._store.read() as conn:
            row = self._sim_row(conn)
            held = self._store.held(conn)
        return {s: Position(s, quantity, avg, quantity * self._mark[row, self._column[s]])
                for s, (quantity, avg) in held.items()}

    def _submit(self, symbol: str, side: str, quantity: float, client_order_id: str,
                worked: tuple[float, int, int] | None) -> BrokerOrder:
        with self._store.write() as conn:
            if self._store.order_by_client_id(conn, client_order_id) is not None:
                raise DuplicateClientOrderId(f"client_order_id {client_order_id!r} was already used by an order of "
                                             f"account {self.account_id!r}; look it up with order_by_client_id.")
            row = self._sim_row(conn)
            close = self._check_order(symbol, side, quantity, row)
            if side == "buy":
                cost = quantity * close * (1.0 + self._cost_rate(row, symbol, quantity * close))
                buying_power = self._buying_power(conn, row)
                if cost > buying_power:
                    raise InsufficientBuyingPower(
                        f"buy of {quantity:g} {symbol} costs {cost:,.2f} at the {self._day(row)} close ({close:g}) with "
                        f"costs; buying power is {buying_power:,.2f}. Lower the quantity or sell first.")
            elif not self.allow_short:
                available = self._store.held(conn).get(symbol, (0.0, 0.0))[0] - self._store.open_sells(conn, symbol)
                if quantity > available + QUANTITY_TOLERANCE:
                    raise OrderRejected(f"sell of {quantity:g} {symbol} exceeds the {available:g} shares held less open "
                                        "sells; the sim does not short unless allow_short=True.")
            self._store.add_order(conn, symbol, side, quantity, client_order_id, self._day(row), worked)
            return self._store.order_by_client_id(conn, client_order_id)

    def _check_order(self, symbol: str, side: str, quantity: float, row: int) -> float:
        """The sim date's close of ``symbol``, if the order can be accepted at all."""
        if side not in ("buy", "sell"):
            raise OrderRejected(f"side {side!r} is not valid; valid sides: ['buy', 'sell']")
        if not (isinstance(quantity, numbers.Real) and math.isfinite(quantity) and quantity > 0):
            raise OrderRejected(f"quantity {quantity!r} must be a finite number of shares > 0.")
        if symbol not in self._column:
            raise OrderRejected(f"symbol {symbol!r} is not in the sim's prices; valid symbols: {self._symbols}")
        if row + 1 >= len(self._sessions):
            raise OrderRejected(f"the sim date {self._day(row)} is the last session of the price history: no later "
                                "close to fill at. Load prices that reach further.")
        close = self._close[row, self._column[symbol]]
        if not np.isfinite(close):
            raise OrderRejected(f"{symbol} has no close on {self._day(row)}: it is not tradable then.")
        column = self._column[symbol]
        if self.costs.impact_coefficient and not (self._adv_value[row + 1, column] > 0
                                                  and np.isfinite(self._daily_vol[row + 1, column])):
            raise OrderRejected(f"impact_coefficient={self.costs.impact_coefficient} needs {symbol}'s average "
                                f"traded value (close x volume) and volatility over the {IMPACT_WINDOW} sessions "
                                f"before its fill on {self._day(row + 1)} (at least {IMPACT_MIN_SESSIONS} sessions with "
                                "a price and a volume), and the prices do not have them: it is not tradable then.")
        return float(close)

    def _cancel(self, broker_id: str) -> None:
        with self._store.write() as conn:
            status = self._store.order_status(conn, broker_id)
            if status is None:
                raise OrderRejected(f"account {self.account_id!r} has no order with broker_id {broker_id!r}.")
            if status not in OPEN_STATUSES:
                raise OrderRejected(f"order {broker_id} is {status}; only an open order can be canceled.")
            self._store.close_order(conn, broker_id, "canceled", "canceled by the client")

    def _fill_open_orders(self, conn: sqlite3.Connection, row: int) -> None:
        """Fill the child orders in session ``row``'s bars, then every market order at its close, in
        submission order."""
        fill_worked_orders(conn, self._store, row, sessions=self._sessions, close=self._close, volume=self._volume,
                           column=self._column, impact=lambda symbol, value: self._impact(row, symbol, value),
                           spread=self.spread_bps / 1e4, commission=self.cost_bps / 1e4)
        spread = self.spread_bps / 1e4
        traded = dict.fromkeys(self._symbols, 0.0)  # value traded at this close so far: impact is on the sum
        for broker_id, client_order_id, symbol, side, quantity in self._store.open_order_rows(conn, on_close=True):
            close = self._close[row, self._column[symbol]]
            if not np.isfinite(close):
                self._store.close_order(conn, broker_id, "expired", f"{symbol} has no close on {self._day(row)}, its fill session")
                continue
            sign, value = (1.0 if side == "buy" else -1.0), quantity * close
            impact = self._impact(row, symbol, traded[symbol] + value) - self._impact(row, symbol, traded[symbol])
            traded[symbol] += value
            fill = SimFill(broker_id, client_order_id, self._sessions[row].date(), symbol, side, quantity,
                           price=float(close * (1.0 + sign * spread) + sign * impact / quantity),
                           commission=float(self.cost_bps / 1e4 * quantity * close))
            self._store.book_fill(conn, fill)

    def _close_delisted(self, conn: sqlite3.Connection, row: int) -> None:
        """Close, at its last close, each holding whose prices end before session ``row``."""
        for symbol, (quantity, _) in self._store.held(conn).items():
            column = self._column[symbol]
            last = self._mark[row, column]  # the last close known at ``row``
            if np.isfinite(self._close[row, column]) or not np.isfinite(last):
                continue
            value = quantity * last
            self._store.close_delisted(conn, SimDelisting(self._sessions[row].date(), symbol, quantity, float(last),
                                                          float(value * (1.0 + (self.delisting_return or 0.0)))))

    def _accrue(self, conn: sqlite3.Connection, row: int) -> None:
        """Session ``row``'s interest on the previous close's cash and borrow fee on its short value."""
        cash_rate, borrow_rate = self.costs.session_rates(self.sessions_per_year)
        if cash_rate == 0.0 and borrow_rate == 0.0:
            return
        short = sum(-quantity * self._mark[row - 1, self._column[symbol]]
                    for symbol, (quantity, _) in self._store.held(conn).items() if quantity < 0)
        self._store.set_cash(conn, (1.0 + cash_rate) * self._store.cash(conn) - borrow_rate * short)

    def _buying_power(self, conn: sqlite3.Connection, row: int) -> float:
        """Cash, plus open sells' proceeds on shares held, less open buys' cost, at ``row``'s close with costs."""
        power = self._store.cash(conn)
        unsold = {s: max(quantity, 0.0) for s, (quantity, _) in self._store.held(conn).items()}
        for _, _, symbol, side, quantity in self._store.open_order_rows(conn):
            mark = self._mark[row, self._column[symbol]]
            if side == "buy":
                power -= quantity * mark * (1.0 + self._cost_rate(row, symbol, quantity * mark))
            else:
                sold = min(quantity, unsold.get(symbol, 0.0))
                unsold[symbol] = unsold.get(symbol, 0.0) - sold
                power += sold * mark * (1.0 - self._cost_rate(row, symbol, sold * mark))
        return power

    def _cost_rate(self, row: int, symbol: str, value: float) -> float:
        """Costs per unit of a trade of ``value`` submitted at ``row``'s close, were it filled there."""
        return self.costs.trading_rate + (self._impact(row + 1, symbol, value) / value if value > 0 else 0.0)

    def _impact(self, row: int, symbol: str, value: float) -> float:
        """Market impact, in currency, of trading ``value`` of ``symbol`` at ``row``'s close (0 without impact)."""
        if not self.costs.impact_coefficient or row >= len(self._sessions):
            return 0.0
        column = self._column[symbol]
        return float(impact_rate(self.costs.impact_coefficient, self._daily_vol[row, column], value,
                                 self._adv_value[row, column]) * value)

    def _sim_row(self, conn: sqlite3.Connection) -> int:
        return self._session_row(self._store.sim_date(conn), what=f"the stored sim date of account {self.account_id!r}")

    def _session_row(self, day: str | dt.date, what: str = "session_date") -> int:
        stamp = pd.Timestamp(day).normalize()
        row = int(self._sessions.searchsorted(stamp))
        if row < len(self._sessions) and self._sessions[row] == stamp:
            return row
        before = self._day(row - 1) if row > 0 else "none"
        after = self._day(row) if row < len(self._sessions) else "none"
        raise ValueError(f"{what} {stamp:%Y-%m-%d} is not a session of the prices (the sessions around it: {before} "
                         f"and {after}); pick one of them, or pass prices that include it.")

    def _day(self, row: int) -> str:
        return f"{self._sessions[row]:%Y-%m-%d}"


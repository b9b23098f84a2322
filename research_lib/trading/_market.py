"""The market a session trades in: the broker, the prices the cycle trades on and when its
reference prices were observed.

- ``sim`` (the default, offline): one simulated account per strategy in ``data/spartan.sqlite``
  replaying the promoted run's prices from ``paper.sim_start``; its orders fill at the next
  session's close with the backtest's whole cost model (commission, spread, impact, borrow, cash
  rate: `sim_costs`). Every simulated account is opened by `open_sim`.
  A dry run never creates or moves the account: without one it runs against a scratch account.
- ``alpaca``: Alpaca's paper endpoint (keys from the environment, ``APCA_API_BASE_URL`` to
  point it elsewhere), today's session only, reference prices and volume from Alpaca's daily bars.
  A crypto book's session is today's UTC day (crypto days are UTC days) and its bars Alpaca's
  crypto bars; a book mixing stocks and crypto trades New York's session on bars aligned point in
  time (`research_lib.data.align_point_in_time`). No broker here trades forex: a book holding a
  currency pair is refused.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd

from research_lib import paths
from research_lib.backtest import CostModel
from research_lib.broker import AlpacaBroker, Broker, SimBroker
from research_lib.data import align_point_in_time, asset_class, fetch_alpaca, fetch_alpaca_crypto, select
from research_lib.risk import UNKNOWN_VOLUME
from research_lib.trading._errors import TradingRefused
from research_lib.trading._ledger import Ledger
from research_lib.validation.promotion import Promoted

TRADING_URL_ENV = "APCA_API_BASE_URL"
NEW_YORK = ZoneInfo("America/New_York")
CLOSE = dt.time(16, 0)
_ADDED_COSTS = ("impact_coefficient", "borrow_bps_per_year", "cash_rate_per_year")  # charged by the sim since issue 14

log = logging.getLogger(__name__)
_WARNED: set[tuple[str, str]] = set()


def sim_account(strategy: str) -> str:
    """The strategy's account in the workspace's simulated broker."""
    return f"paper-{strategy}"


def default_sim_start(promoted: Promoted) -> dt.date:
    """``paper.sim_start``, or ``paper.sim_history_sessions`` before the end of the prices."""
    if promoted.config.paper.sim_start:
        return promoted.config.paper.sim_start
    sessions = promoted.prices.index
    return sessions[max(0, len(sessions) - 1 - promoted.config.paper.sim_history_sessions)].date()


def open_sim(promoted: Promoted, db: Path, start: dt.date | None = None) -> SimBroker:
    """The strategy's simulated account (created at ``start``, default `default_sim_start`)."""
    account = sim_account(promoted.name)
    stored = SimBroker.stored_account(db, account)
    first = None if stored else (start or default_sim_start(promoted))
    try:
        return SimBroker(db, promoted.prices, account, starting_cash=promoted.starting_cash,
                         costs=sim_costs(promoted, stored), allow_short=promoted.config.risk.allow_short, start=first,
                         delisting_return=promoted.config.backtest.delisting_return,
                         sessions_per_year=promoted.config.sessions_per_year)
    except ValueError as err:
        raise TradingRefused(f"the simulated account {account!r} cannot be opened: {err}") from None


def sim_costs(promoted: Promoted, stored: dict | None) -> CostModel:
    """What the simulated account charges: the promoted run's backtest cost model, so that paper and
    backtest differ only by what the market does.

    An account stored by a version that charged only commission and spread (its impact, borrow and
    cash rate stored as 0) keeps charging what it did (`legacy_cost_note` says so) rather than being
    refused: its history was made under those costs. A new account gets the whole model.
    """
    costs = CostModel.from_backtest_kwargs(promoted.config.backtest.model())
    if not _predates_full_costs(costs, stored):
        return costs
    account = (str(paths.state_db()), promoted.name)
    if account not in _WARNED:  # once per process: every step of a session opens the account
        _WARNED.add(account)
        log.warning(_legacy_note(promoted, costs))
    return dataclasses.replace(costs, **dict.fromkeys(_ADDED_COSTS, 0.0))


def legacy_cost_note(promoted: Promoted) -> str | None:
    """Why the strategy's sim account charges less than the backtest, or None when it charges the same."""
    stored = SimBroker.stored_account(paths.state_db(), sim_account(promoted.name))
    costs = CostModel.from_backtest_kwargs(promoted.config.backtest.model())
    return _legacy_note(promoted, costs) if _predates_full_costs(costs, stored) else None


def _legacy_note(promoted: Promoted, costs: CostModel) -> str:
    charged = ", ".join(f"{name}={getattr(costs, name):g}" for name in _ADDED_COSTS if getattr(costs, name))
    return (f"simulated account {sim_account(promoted.name)!r} was created before the sim charged impact, borrow and "
            f"cash rate: it keeps charging only commission and spread, while the backtest also charges {charged}. "
            "Promote the run under a new strategy name to paper trade it with the whole cost model.")


def _predates_full_costs(costs: CostModel, stored: dict | None) -> bool:
    """The stored account has none of the costs added in issue 14 while the promoted model has some."""
    return (stored is not None and any(getattr(costs, name) for name in _ADDED_COSTS)
            and not any(stored.get(name) for name in _ADDED_COSTS))


@contextmanager
def market(promoted: Promoted, kind: str, session: dt.date, ledger: Ledger,
           dry_run: bool) -> Iterator[tuple[Broker, pd.DataFrame, dt.datetime]]:
    """The broker at ``session``, the prices the cycle trades on and when its reference prices
    were observed. The sim moves to the session; a dry run never creates or moves the strategy's
    account: without one it runs against a scratch account made at the session."""
    refuse_forex(promoted)
    crypto = sorted(s for s in promoted.weights.columns if asset_class(s, promoted.config.data.markets) == "crypto")
    if crypto and promoted.config.execution.algorithm != "market":  # e.g. a file whose symbols no setting named
        raise TradingRefused(f"{promoted.name!r} trades crypto {crypto[:3]} with execution.algorithm "
                             f"{promoted.config.execution.algorithm!r}, which works orders over New York's session; "
                             "crypto trades around the clock: promote it again with execution.algorithm: market.")
    if kind != "sim":
        yield _alpaca_market(promoted, session, ledger)
    elif not dry_run or SimBroker.stored_account(paths.state_db(), sim_account(promoted.name)):
        yield _sim_market(promoted, session, paths.state_db())
    else:
        with tempfile.TemporaryDirectory(prefix="spartan-dry-run-") as scratch:
            yield _sim_market(promoted, session, Path(scratch) / paths.STATE_DB_NAME)


def _sim_market(promoted: Promoted, session: dt.date, db: Path) -> tuple[SimBroker, pd.DataFrame, dt.datetime]:
    sim = open_sim(promoted, db, start=session)
    try:
        sim.advance_to(session)
    except ValueError as err:
        raise TradingRefused(f"the simulated account of {promoted.name!r} cannot trade {session}: {err}") from None
    return sim, promoted.prices, dt.datetime.combine(session, CLOSE, NEW_YORK)  # the sim's clock


def refuse_forex(promoted: Promoted) -> None:
    """No broker here trades forex, the sim included: a book holding a currency pair is refused."""
    forex = sorted(s for s in promoted.weights.columns if asset_class(s, promoted.config.data.markets) == "forex")
    if forex:
        raise TradingRefused(f"{promoted.name!r} holds currency pairs {forex}: no broker here trades forex (rates are "
                             "research inputs); paper trade stocks or crypto pairs.")


def trading_zone(promoted: Promoted) -> dt.tzinfo:
    """Where the strategy's session dates are days: UTC for a book of crypto pairs only (its
    sessions are UTC days), New York otherwise."""
    symbols = set(promoted.weights.columns)
    renamed = sorted(s for s in symbols if asset_class(s, promoted.config.data.markets) != asset_class(s))
    if renamed:  # the broker and the cycle read a symbol's market from its spelling, as Alpaca does
        raise TradingRefused(f"{promoted.name!r} trades {renamed}, named crypto or stock by data.markets only: the "
                             "brokers read a symbol's market from its spelling (crypto pairs as BASE/QUOTE, e.g. "
                             "BTC/USD); spell them so in the data and promote the run again.")
    crypto = all(asset_class(s) == "crypto" for s in symbols)
    return dt.timezone.utc if symbols and crypto else NEW_YORK


def session_end(promoted: Promoted, session: dt.date) -> dt.datetime:
    """When ``session``'s prices are final: 16:00 New York, or the next midnight UTC for a crypto book."""
    if trading_zone(promoted) is NEW_YORK:
        return dt.datetime.combine(session, CLOSE, NEW_YORK)
    return dt.datetime.combine(session + dt.timedelta(days=1), dt.time(0), dt.timezone.utc)


def _alpaca_market(promoted: Promoted, session: dt.date, ledger: Ledger) -> tuple[AlpacaBroker, pd.DataFrame, dt.datetime]:
    broker = alpaca_broker()
    zone = trading_zone(promoted)
    now = broker.clock().now.astimezone(zone)
    if session != now.date():
        where = "New York" if zone is NEW_YORK else "UTC, a crypto day"
        raise TradingRefused(f"Alpaca trades today's session only ({now.date()} in {where}); leave out --asof "
                             f"(got {session}). Replay past sessions with --broker sim.")
    bars = _alpaca_bars(promoted, session, ledger)
    last = bars.index[-1].date() if len(bars.index) else None
    if last != session:
        raise TradingRefused(f"Alpaca has no bar for {session} yet (latest: {last}); run the cycle during or after "
                             "the session.")
    return broker, bars, min(now, session_end(promoted, session))


def _alpaca_bars(promoted: Promoted, session: dt.date, ledger: Ledger) -> pd.DataFrame:
    """Alpaca's daily bars of the strategy's symbols up to ``session``, back to the first paper
    session too (the drift check backtests every paper session)."""
    symbols = sorted(set(promoted.weights.columns))
    start = session - dt.timedelta(days=3 * max(promoted.config.paper.adv_sessions,
                                                promoted.config.paper.max_target_age_sessions))
    cycles = ledger.cycles(promoted.name)
    if cycles:
        start = min(start, dt.date.fromisoformat(cycles[0]["session"]) - dt.timedelta(days=7))
    crypto = [s for s in symbols if asset_class(s, promoted.config.data.markets) == "crypto"]
    stocks = [s for s in symbols if s not in crypto]
    if not crypto:
        return fetch_alpaca(symbols, start, session)[0]
    coins, _ = fetch_alpaca_crypto(crypto, start, session)
    if not stocks:
        return coins
    shares, _ = fetch_alpaca(stocks, start, session)  # New York's sessions, today's bar so far included
    return select(align_point_in_time([(shares, "XNYS"), (coins, "24/7")], shares.index, "XNYS"), symbols)


def traded_prices(promoted: Promoted, cycle: dict, ledger: Ledger) -> pd.DataFrame:
    """The prices a finished cycle traded on: the promoted run's for the sim, Alpaca's bars."""
    if cycle["broker"] == "sim":
        return promoted.prices
    return _alpaca_bars(promoted, dt.date.fromisoformat(cycle["session"]), ledger)


def alpaca_broker() -> AlpacaBroker:
    """Alpaca's paper endpoint, or ``APCA_API_BASE_URL``'s (keys from the environment)."""
    return AlpacaBroker(url_override=os.environ.get(TRADING_URL_ENV) or None)


def reference_prices(prices: pd.DataFrame, session: dt.date, adv_sessions: int, *,
                     unknown_volume_passes: bool) -> tuple[pd.Series, pd.Series, bool]:
    """Closes at ``session`` and the average daily volume over the ``adv_sessions`` sessions
    up to it. Without volume the share-of-ADV check cannot bind: allowed for the sim on
    research data (``unknown_volume_passes``, reported as not checked), fail closed otherwise."""
    day = pd.Timestamp(session)
    if day not in prices.index:
        raise TradingRefused(f"{day:%Y-%m-%d} is not a session of the prices (last: {prices.index[-1]:%Y-%m-%d}).")
    close = prices["close"].loc[day]
    fields = prices.columns.get_level_values(0)
    volume = (prices["volume"].loc[:day].tail(adv_sessions).mean() if "volume" in fields
              else pd.Series(np.nan, index=close.index))
    volume = volume.reindex(close.index)
    checked = bool(volume.notna().all())
    if unknown_volume_passes:
        volume = volume.fillna(UNKNOWN_VOLUME)
    return close, volume, checked

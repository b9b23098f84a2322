"""Which session a `trade` runs, checked before anything runs, and whether a session is done.

- **Sessions are checked before anything runs** (`resolve_session`): for the sim a session of
  the promoted prices, never before the last session traded; for Alpaca today by Alpaca's
  clock. Otherwise `InvalidSession` (`spartan trade` exits 2, having started nothing).
- **The sim moves forward.** Each `trade` without ``--asof`` moves it one session (or re-runs a
  session whose cycle did not finish); ``--asof`` moves it to that session, never back.
- **A session that is done** (`session_cycle`: a re-run would send nothing) is not run again:
  its report stands, ``--asof`` an older one included. A session left with orders unsent or
  unresolved (halted since resumed, market closed, a lost request...) is traded again,
  converging by client_order_id.
"""

from __future__ import annotations

import datetime as dt
import re

import pandas as pd

from research_lib import paths
from research_lib.broker import SimBroker
from research_lib.errors import ConfigError
from research_lib.risk import KillSwitch
from research_lib.trading._errors import InvalidSession, TradingRefused
from research_lib.trading._ledger import Ledger
from research_lib.trading._market import alpaca_broker, default_sim_start, sim_account, trading_zone
from research_lib.trading._report_dirs import finished, reportable
from research_lib.validation.promotion import Promoted, load_promoted

BROKERS = ("sim", "alpaca")
UNSETTLED = ("intent", "unknown", "not_sent", "planned")  # an order a re-run of its session looks up or sends again
SETTLED_STATUSES = ("traded", "nothing_to_do")  # a cycle after which a re-run sends nothing (all else resolved)
_ISO_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")


def resolve_session(strategy: str | None = None, broker: str | None = None, asof: str | dt.date | None = None,
                    dry_run: bool = False) -> tuple[Promoted, str, dt.date]:
    """Which strategy, broker and session a `trade` would run, without changing anything.

    Raises
    ------
    NotPromoted, ConfigError
        an unknown strategy or broker, or a broker other than the one the strategy traded on.
    InvalidSession
        ``asof`` is not a date, or not a session the strategy can trade (`session_refusal`): on the
        sim a session of the promoted prices, not before the account's date (nor, for a dry run,
        any other); at Alpaca today by Alpaca's clock (asked only when ``asof`` is given). An
        empty ``asof`` is not a date (None means the next session).
    research_lib.broker.BrokerError
        Alpaca's clock could not be read.
    """
    promoted = load_promoted(strategy)
    kind = broker or promoted.config.paper.broker
    if kind not in BROKERS:
        raise ConfigError(f"broker {kind!r} is unknown; use one of {list(BROKERS)}")
    day = parse_asof(asof)
    ledger = Ledger(paths.state_db())
    used = {c["broker"] for c in ledger.cycles(promoted.name)} - {kind}
    if used:
        raise ConfigError(f"{promoted.name!r} has traded on {', '.join(sorted(used))}; its ledger (equity, loss limits, "
                          f"orders) belongs to that account, so it cannot switch to {kind}. Keep --broker "
                          f"{sorted(used)[0]}, or promote the strategy under another scenario name for {kind}.")
    if kind == "sim":
        if day is None:
            return promoted, kind, sim_date(promoted) if dry_run else next_sim_session(promoted, ledger)
        _check_sim_session(promoted, day, last_traded_session(ledger, promoted.name), dry_run)
        return promoted, kind, day
    if day is None:
        return promoted, kind, dt.datetime.now(trading_zone(promoted)).date()
    today = alpaca_broker().clock().now.astimezone(trading_zone(promoted)).date()
    if day != today:
        raise InvalidSession(f"--asof {day}: Alpaca trades today's session only ({today} in New York, by Alpaca's "
                             "clock); leave out --asof, or replay past sessions with --broker sim.")
    return promoted, kind, day


def _check_sim_session(promoted: Promoted, day: dt.date, last: dt.date | None, dry_run: bool) -> None:
    """Refuse a session the strategy's simulated account cannot trade (see `resolve_session`)."""
    stored = SimBroker.stored_account(paths.state_db(), sim_account(promoted.name))
    reached = dt.date.fromisoformat(stored["sim_date"]) if stored else None
    if dry_run and reached is not None and day != reached:
        raise InvalidSession(f"--asof {day}: a dry run does not move the simulated market; it stands at {reached}. "
                             f"Leave out --asof (or pass --asof {reached}), or trade {day} without --dry-run.")
    floor = max((d for d in (reached, last) if d is not None), default=None)
    if not dry_run and floor is not None and day < floor and session_done(Ledger(paths.state_db()), promoted.name, day):
        return  # traded and reported: the trade returns its report, nothing runs
    sessions = promoted.prices.index
    refusal = session_refusal(day, sessions, floor)
    if refusal:
        raise InvalidSession(f"--asof {day} {refusal}. On the sim, {promoted.name!r} trades the sessions of the prices "
                             f"it was promoted with ({sessions[0]:%Y-%m-%d} to {sessions[-1]:%Y-%m-%d}), never going "
                             f"back: pick one{f' from {floor} on' if floor else ''}, or leave out --asof to trade its "
                             "next session.")


def session_refusal(day: dt.date, sessions: pd.DatetimeIndex, floor: dt.date | None) -> str | None:
    """Why ``day`` cannot be traded, or None: it must be one of ``sessions`` (sorted session
    dates) and not before ``floor`` (the last session traded, sessions are traded forward only).
    The reason names the sessions next to ``day``."""
    stamp = pd.Timestamp(day)
    if floor is not None and day < floor:
        return f"is before {floor}, the last session traded"
    if stamp > sessions[-1]:
        return f"is after the last session, {sessions[-1]:%Y-%m-%d}"
    if stamp < sessions[0]:
        return f"is before the first session, {sessions[0]:%Y-%m-%d}"
    row = int(sessions.searchsorted(stamp))
    if sessions[row] != stamp:
        return (f"is not a session (a {stamp:%A}); the sessions around it are {sessions[row - 1]:%Y-%m-%d} and "
                f"{sessions[row]:%Y-%m-%d}")
    return None


def parse_asof(asof: str | dt.date | None) -> dt.date | None:
    """The session ``asof`` names (None: none named, the next one is traded); `InvalidSession`
    for anything but a date or a ``YYYY-MM-DD`` string (an empty one included)."""
    if asof is None:
        return None
    if isinstance(asof, dt.datetime):
        return asof.date()
    if isinstance(asof, dt.date):
        return asof
    if not (isinstance(asof, str) and _ISO_DATE.fullmatch(asof)):
        raise InvalidSession(f"--asof {asof!r} is not a date; use YYYY-MM-DD, e.g. 2022-06-30")
    try:
        return dt.date.fromisoformat(asof)
    except ValueError as err:
        raise InvalidSession(f"--asof {asof!r} is not a date ({err}); use YYYY-MM-DD, e.g. 2022-06-30") from None


def sim_date(promoted: Promoted) -> dt.date:
    """The session the strategy's simulated account stands at, or would stand at once created
    (the first session from `default_sim_start`); nothing is created."""
    stored = SimBroker.stored_account(paths.state_db(), sim_account(promoted.name))
    if stored:
        return dt.date.fromisoformat(stored["sim_date"])
    sessions = promoted.prices.index
    row = int(sessions.searchsorted(pd.Timestamp(default_sim_start(promoted))))
    if row >= len(sessions):
        raise TradingRefused(f"paper.sim_start {default_sim_start(promoted)} is after the last session of the prices "
                             f"({sessions[-1]:%Y-%m-%d}); choose an earlier sim_start, or promote a run with later "
                             "prices.")
    return sessions[row].date()


def next_sim_session(promoted: Promoted, ledger: Ledger) -> dt.date:
    """The session a `trade` without ``--asof`` trades: the sim date until a cycle finished
    there (`session_done`), then the next session (the last session of the history stays the
    last)."""
    current = pd.Timestamp(sim_date(promoted))
    sessions = promoted.prices.index
    later = sessions[sessions > current]
    return (later[0] if session_done(ledger, promoted.name, current.date()) and len(later) else current).date()


def session_done(ledger: Ledger, strategy: str, session: dt.date) -> bool:
    """Whether ``session`` needs no more cycle: a re-run would send nothing and its report can be
    returned (`session_cycle`), so a `trade` of it returns that report and runs nothing."""
    return session_cycle(ledger, strategy, session) is not None


def session_cycle(ledger: Ledger, strategy: str, session: dt.date) -> dict | None:
    """The cycle whose report stands for ``session``, or None while the session is to be traded
    (again).

    The session is done when its latest cycle (not a dry run) finished ``traded`` or
    ``nothing_to_do`` and was not halted while sending, or was halted by a kill switch that
    still holds (a re-run would be halted too); left every order of the session resolved at the
    broker (none ``intent``, ``unknown`` or ``not_sent``); and its report is on disk or can be
    made from the ledger. A session whose cycle ended ``market_closed``, blocked, failed, was
    interrupted, left an order unresolved or was halted by a switch since resumed is traded
    again, and the re-run converges (client_order_id): it sends what is missing, never twice.
    """
    day = f"{session:%Y-%m-%d}"
    ours = [c for c in ledger.cycles(strategy) if c["session"] == day and not c["summary"].get("dry_run")]
    if not ours:
        return None
    latest = ours[-1]
    settled = all(i.status not in UNSETTLED for i in ledger.intents(strategy, day))
    halted_now = ledger.kill_switch(strategy)[0] is KillSwitch.HALTED
    done = finished(latest) and _sends_nothing_more(latest, halted_now) and settled
    return latest if done and reportable(strategy, latest) else None


def _sends_nothing_more(cycle: dict, halted_now: bool) -> bool:
    """Whether a re-run of a finished cycle's session would send nothing: it went to the end of
    its orders (``traded`` or ``nothing_to_do``, not halted while sending), or the kill switch
    that halted it still holds (``halted_now``)."""
    halted = cycle["summary"].get("kill_switch") == KillSwitch.HALTED.value
    if halted and halted_now:
        return cycle["status"] in (*SETTLED_STATUSES, "halted")
    return cycle["status"] in SETTLED_STATUSES and not halted


def last_traded_session(ledger: Ledger, strategy: str) -> dt.date | None:
    """The latest session that is done (`session_done`)."""
    sessions = sorted({c["session"] for c in ledger.cycles(strategy) if finished(c)}, reverse=True)
    return next((dt.date.fromisoformat(s) for s in sessions
                 if session_done(ledger, strategy, dt.date.fromisoformat(s))), None)

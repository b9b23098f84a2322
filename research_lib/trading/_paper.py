"""Paper trading of a promoted strategy, one session at a time: what `spartan trade`, notebook
``07_paper_trade`` and `spartan status`/`halt`/`resume` run.

- **Only promoted strategies.** ``params/promoted/<strategy>.yaml`` (written by `spartan
  promote`) names the validated run; its frozen parameters (risk limits, costs, ``paper``)
  apply, and its ``weights.parquet`` and ``prices.parquet`` must be the files promoted
  (same sha256), or nothing is traded.
- **Targets** are the run's decisions: the latest ``weights.parquet`` row at or before the
  session (a row dated ``d`` was decided with data up to ``d``'s close, so nothing later is
  used). Like the backtest, the book trades when a new decision is in force and otherwise
  holds and drifts with prices; a decision older than ``paper.max_target_age_sessions`` is
  refused (re-run the research and promote again).
- **Brokers.** ``sim`` (the default, offline): one simulated account per strategy in
  ``data/spartan.sqlite`` replaying the run's prices from ``paper.sim_start``. Each `trade`
  without ``--asof`` moves it one session (or re-runs a session whose cycle did not finish);
  ``--asof`` moves it to that session, never back. Its orders fill at the next session's close
  with the backtest's costs. A dry run never creates or moves the account: without one it runs
  against a scratch account. ``alpaca``: Alpaca's paper endpoint (keys from the environment,
  ``APCA_API_BASE_URL`` to point it elsewhere), today's session only, reference prices and
  volume from Alpaca's daily bars.
- **Reports**: ``reports/paper/<strategy>/<session>/`` (or ``report_dir``) holds ``cycle.json``
  (what the cycle did, positions, P&L, slippage, drift against the backtest) and
  ``summary.html``; `spartan trade` adds the executed notebook. A dry run writes to
  ``<session>-dry-run/``. The ledger says which reports are written (`research_lib.trading._report`
  makes them from its record of the cycle): a trade first writes the report and raises the
  alerts of any finished cycle whose command was killed before it could, and a session that is
  done (`session_cycle`: a re-run would send nothing) is not run again: its report stands and is
  returned, ``--asof`` an older one included. A session left with orders unsent or unresolved
  (halted since resumed, market closed, a lost request...) is traded again, converging by
  client_order_id. ``report_dir`` is recorded relative to the workspace when inside it.
- **Sessions are checked before anything runs** (`resolve_session`): for the sim a session of
  the promoted prices, never before the last session traded; for Alpaca today by Alpaca's clock.
  Otherwise `InvalidSession` (`spartan trade` exits 2, having started nothing).
- **One trade of a strategy at a time** (`trade_lock`): a trade holds ``data/locks/trade-<strategy>.lock``
  from the choice of its session to its report; another one meanwhile is refused (`TradeLocked`;
  a lock file that cannot be opened: `TradeLockUnusable`). A dry run takes no lock: it sends
  nothing, moves no market and marks no intent ``not_sent``.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import os
import re
import tempfile
from contextlib import ExitStack, contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd
import yaml
from pydantic import ValidationError

from research_lib import paths
from research_lib._io import flock, lock_holder_pid, lock_path, now_utc, read_json
from research_lib._kernel_guard import command_pid
from research_lib.broker import AlpacaBroker, Broker, SimBroker
from research_lib.config import RunConfig
from research_lib.data import sha256_of
from research_lib.errors import ConfigError, SpartanError
from research_lib.risk import KillSwitch
from research_lib.risk import UNKNOWN_VOLUME
from research_lib.trading._cycle import CycleInputs, run_cycle
from research_lib.trading._ledger import ALL_STRATEGIES, Ledger
from research_lib.trading._report import CYCLE_FILE, raise_session_alerts, session_report, write_session_report

STATE_DB = "spartan.sqlite"
REPORT_DIR, REPORT_WRITTEN = "report_dir", "report_written_at"  # in a cycle's record in the ledger
TRADING_URL_ENV = "APCA_API_BASE_URL"
NEW_YORK = ZoneInfo("America/New_York")
CLOSE = dt.time(16, 0)
BROKERS = ("sim", "alpaca")
_ISO_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")

log = logging.getLogger(__name__)


class NotPromoted(ConfigError):
    """The strategy has no ``params/promoted/<strategy>.yaml``: it may not be paper traded."""


class TradingRefused(SpartanError):
    """The session cannot be traded as asked (stale targets, a date the sim cannot reach...);
    nothing was sent."""


class InvalidSession(ConfigError, TradingRefused):
    """The session asked for cannot be traded by this strategy on this broker: not a date, not a
    session of its calendar, or before the last session it traded. Found before anything runs:
    a bad argument (`spartan trade` exits 2), and a refusal that sent nothing."""


class TradeLocked(TradingRefused):
    """Another trade of the strategy is running (`trade_lock`); this one ran and sent nothing."""


class TradeLockUnusable(TradingRefused):
    """The strategy's lock file cannot be opened (a folder in its place, no permission); nothing
    was run."""


class ReportUnwritable(SpartanError):
    """A session's report folder cannot hold its report (``report_dir`` a file, not writable)."""


@dataclass(frozen=True)
class Promoted:
    """A promoted strategy with what paper trading needs from its run."""

    name: str
    file: Path
    record: dict
    config: RunConfig
    run_dir: Path
    weights: pd.DataFrame
    prices: pd.DataFrame

    @property
    def starting_cash(self) -> float:
        return self.config.paper.starting_cash or self.config.portfolio.capital


def state_db() -> Path:
    """The workspace's SQLite state: the ledger, the simulated accounts, caches."""
    return paths.data_dir() / STATE_DB


def promoted_dir() -> Path:
    return paths.workspace_root() / "params" / "promoted"


def promoted_names() -> list[str]:
    """The strategies that may be paper traded."""
    return sorted(p.stem for p in promoted_dir().glob("*.yaml"))


def load_promoted(strategy: str | None = None) -> Promoted:
    """Read ``params/promoted/<strategy>.yaml`` and its run's weights and prices.

    ``strategy`` None picks the only promoted strategy. Raises `NotPromoted` for a strategy
    that is not promoted, `ConfigError` for a promoted file whose run is gone or changed.
    """
    strategy = promoted_strategy(strategy)
    file = promoted_dir() / f"{strategy}.yaml"
    try:
        record = yaml.safe_load(file.read_text()) or {}
        config = RunConfig.model_validate(record["params"])
    except (yaml.YAMLError, KeyError, ValidationError) as err:
        raise ConfigError(f"{file} is not a promoted strategy this version can read ({type(err).__name__}: {err}); "
                          "promote the run again with `spartan promote`.") from None
    run_dir = Path(record.get("run_dir") or "")
    if not run_dir.is_dir():
        run_dir = paths.reports_dir() / "runs" / str(record.get("run_id"))
    if config.backtest.execution_lag_sessions != 1:
        raise ConfigError(f"{file}: backtest.execution_lag_sessions is {config.backtest.execution_lag_sessions}, but "
                          "paper trading executes one session after each decision; validate and promote a run with "
                          "execution_lag_sessions: 1.")
    for name in ("weights.parquet", "prices.parquet"):
        path = run_dir / name
        if not path.is_file():
            raise ConfigError(f"{file} points at run {record.get('run_id')}, but {path} is missing; restore the run "
                              "folder, or run the research again and promote the new run.")
        promoted_hash = (record.get("artifacts") or {}).get(name)
        if not promoted_hash:
            raise ConfigError(f"{file} records no sha256 of {name} (promoted by an older version); promote the run "
                              f"again: spartan promote {run_dir}")
        if sha256_of(path) != promoted_hash:
            raise ConfigError(f"{path} changed since {strategy!r} was promoted (sha256 differs from {file}); paper "
                              "trading only replays what was validated. Promote the run again if the change is wanted.")
    weights = pd.read_parquet(run_dir / "weights.parquet")
    prices = pd.read_parquet(run_dir / "prices.parquet")
    return Promoted(strategy, file, record, config, run_dir, weights.sort_index(), prices.sort_index())


def promoted_strategy(strategy: str | None = None) -> str:
    """The name of ``strategy`` if it is promoted (None: the only promoted strategy), without
    reading its run; raises `NotPromoted` as `load_promoted` does."""
    available = promoted_names()
    how = ("Only a promoted strategy may be paper traded: `spartan run params/daily.yaml`, then `spartan promote "
           "reports/runs/<run_id>` (add --override-reason TEXT to promote a run that fails the gate).")
    if strategy is None:
        if len(available) != 1:
            raise NotPromoted(f"{'No strategy is' if not available else 'Several strategies are'} promoted in "
                              f"{promoted_dir()} ({', '.join(available) or 'none'}); "
                              + ("name one with --strategy NAME." if available else how))
        return available[0]
    if not (promoted_dir() / f"{strategy}.yaml").is_file():
        raise NotPromoted(f"Strategy {strategy!r} is not promoted ({promoted_dir()} holds: "
                          f"{', '.join(available) or 'nothing'}). {how}")
    return strategy


# ---------------------------------------------------------------- one trade of a strategy at a time

_LOCKS_HELD: set[Path] = set()  # the trade locks this process holds


@contextmanager
def trade_lock(strategy: str) -> Iterator[None]:
    """Hold the strategy's trade lock (``data/locks/trade-<strategy>.lock``, an exclusive
    ``flock`` released when the holder ends, however) for the block.

    A strategy's trades run one at a time: two at once would move the simulated market under
    each other and mark each other's cycle interrupted. A process re-entering the lock it holds,
    and a notebook kernel whose command holds it for it (`spartan trade` runs notebook 07), go
    on without taking it again.

    Raises
    ------
    TradeLocked
        another process holds it; nothing was run.
    """
    path = lock_path(f"trade-{strategy}")
    if path in _LOCKS_HELD:
        yield
        return
    with ExitStack() as held:
        try:
            fd = held.enter_context(flock(path, blocking=False, holder=f"pid {os.getpid()} since {now_utc()}"))
        except OSError as err:
            raise TradeLockUnusable(f"the trade lock of {strategy}, {path}, cannot be opened ({type(err).__name__}: "
                                    f"{err.strerror or err}); it must be a file this user can write: remove what is "
                                    f"there (or fix its permissions) and run spartan trade again. Nothing was "
                                    "run.") from None
        holder = None if fd is not None else lock_holder_pid(path)
        if fd is None and (holder is None or holder != command_pid()):
            raise TradeLocked(f"another spartan trade of {strategy} is running (pid {holder or 'unknown'}); wait for "
                              f"it or stop it (its lock: {path}).")
        _LOCKS_HELD.add(path)
        try:
            yield
        finally:
            _LOCKS_HELD.discard(path)


# ---------------------------------------------------------------- the session to trade


def open_sim(promoted: Promoted, db: Path, start: dt.date | None = None) -> SimBroker:
    """The strategy's simulated account (created at ``start``, default `default_sim_start`)."""
    account = sim_account(promoted.name)
    stored = SimBroker.stored_account(db, account)
    first = None if stored else (start or default_sim_start(promoted))
    b = promoted.config.backtest
    try:
        return SimBroker(db, promoted.prices, account, starting_cash=promoted.starting_cash, cost_bps=b.cost_bps,
                         spread_bps=b.spread_bps, allow_short=promoted.config.risk.allow_short, start=first)
    except ValueError as err:
        raise TradingRefused(f"the simulated account {account!r} cannot be opened: {err}") from None


def sim_account(strategy: str) -> str:
    """The strategy's account in the workspace's simulated broker."""
    return f"paper-{strategy}"


def default_sim_start(promoted: Promoted) -> dt.date:
    """``paper.sim_start``, or ``paper.sim_history_sessions`` before the end of the prices."""
    if promoted.config.paper.sim_start:
        return promoted.config.paper.sim_start
    sessions = promoted.prices.index
    return sessions[max(0, len(sessions) - 1 - promoted.config.paper.sim_history_sessions)].date()


def sim_date(promoted: Promoted) -> dt.date:
    """The session the strategy's simulated account stands at, or would stand at once created
    (the first session from `default_sim_start`); nothing is created."""
    stored = SimBroker.stored_account(state_db(), sim_account(promoted.name))
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
    done = _finished(latest) and _sends_nothing_more(latest, halted_now) and settled
    return latest if done and _reportable(strategy, latest) else None


UNSETTLED = ("intent", "unknown", "not_sent")  # an order a re-run of its session looks up or sends again
SETTLED_STATUSES = ("traded", "nothing_to_do")  # a cycle after which a re-run sends nothing (all else resolved)


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
    sessions = sorted({c["session"] for c in ledger.cycles(strategy) if _finished(c)}, reverse=True)
    return next((dt.date.fromisoformat(s) for s in sessions
                 if session_done(ledger, strategy, dt.date.fromisoformat(s))), None)


def _finished(cycle: dict) -> bool:
    """A cycle that ran to its end: finished, not failed, not a dry run (it has a report)."""
    return (bool(cycle["finished_at"]) and not cycle["status"].startswith("failed")
            and not cycle["summary"].get("dry_run"))


def _rebuildable(cycle: dict) -> bool:
    """Whether the ledger recorded what the report of ``cycle`` needs (a cycle recorded by an
    older version did not: its report is its ``cycle.json``, or the session is traded again)."""
    return "cycle" in cycle["summary"]


def _reportable(strategy: str, cycle: dict) -> bool:
    """Whether the report of a finished cycle can be returned: written (or writable) from the
    ledger, or, for a cycle recorded by an older version, its ``cycle.json`` is there."""
    return _rebuildable(cycle) or (_report_dir(strategy, cycle) / CYCLE_FILE).is_file()


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
    ledger = Ledger(state_db())
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
        return promoted, kind, dt.datetime.now(NEW_YORK).date()
    today = _alpaca_broker().clock().now.astimezone(NEW_YORK).date()
    if day != today:
        raise InvalidSession(f"--asof {day}: Alpaca trades today's session only ({today} in New York, by Alpaca's "
                             "clock); leave out --asof, or replay past sessions with --broker sim.")
    return promoted, kind, day


def _check_sim_session(promoted: Promoted, day: dt.date, last: dt.date | None, dry_run: bool) -> None:
    """Refuse a session the strategy's simulated account cannot trade (see `resolve_session`)."""
    stored = SimBroker.stored_account(state_db(), sim_account(promoted.name))
    reached = dt.date.fromisoformat(stored["sim_date"]) if stored else None
    if dry_run and reached is not None and day != reached:
        raise InvalidSession(f"--asof {day}: a dry run does not move the simulated market; it stands at {reached}. "
                             f"Leave out --asof (or pass --asof {reached}), or trade {day} without --dry-run.")
    floor = max((d for d in (reached, last) if d is not None), default=None)
    if not dry_run and floor is not None and day < floor and session_done(Ledger(state_db()), promoted.name, day):
        return  # traded and reported: `plan_session` returns its report, nothing runs
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


def decision_at(weights: pd.DataFrame, session: dt.date, sessions: pd.DatetimeIndex,
                max_age_sessions: int) -> tuple[pd.Timestamp, pd.Series]:
    """The latest decision at or before ``session`` and its non-zero target weights.

    Raises `TradingRefused` when there is none or it is more than ``max_age_sessions``
    sessions old (counted on ``sessions``, or on weekdays beyond them).
    """
    day = pd.Timestamp(session)
    known = weights.loc[weights.index <= day]
    if known.empty:
        raise TradingRefused(f"the promoted run has no decision at or before {day:%Y-%m-%d} (its first is "
                             f"{weights.index[0]:%Y-%m-%d}); trade a later session.")
    decided = known.index[-1]
    if day <= sessions[-1]:
        age = int(sessions.searchsorted(day, side="right") - sessions.searchsorted(decided, side="right"))
    else:
        age = int(np.busday_count(decided.date(), day.date()))
    if age > max_age_sessions:
        raise TradingRefused(f"the latest decision of the promoted run ({decided:%Y-%m-%d}) is {age} sessions old at "
                             f"{day:%Y-%m-%d} (paper.max_target_age_sessions: {max_age_sessions}); run the research "
                             "again up to this date and promote the new run.")
    row = known.iloc[-1].fillna(0.0)
    return decided, row[row != 0.0]


def with_cash_buffer(targets: pd.Series, cash_buffer: float) -> pd.Series:
    """Scale the long targets down so that they sum to at most ``1 - cash_buffer`` (buys must be
    paid for with their costs, at a price that moves before the fill)."""
    longs = float(targets[targets > 0].sum())
    scale = min(1.0, (1.0 - cash_buffer) / longs) if longs > 0 else 1.0
    return targets.where(targets <= 0, targets * scale)


def applied_decision(ledger: Ledger, strategy: str) -> tuple[str | None, str | None]:
    """``(decision, session)`` of the last cycle that rebalanced to a decision in full (ACTIVE,
    not a dry run, finished); ``(None, None)`` when none did or its orders were then cancelled
    or expired (by a halt, say): the decision in force is still to be traded."""
    for cycle in reversed(ledger.cycles(strategy)):
        summary = cycle["summary"]
        if cycle["status"] in ("traded", "nothing_to_do") and summary.get("rebalance") and summary.get("decision"):
            if any(i.status in ("canceled", "expired") for i in ledger.intents(strategy, cycle["session"])):
                return None, None
            return summary["decision"], cycle["session"]
    return None, None


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


# ---------------------------------------------------------------- one session


@dataclass(frozen=True)
class SessionPlan:
    """What a `trade` runs (`plan_session`): the strategy, broker and session, the reports just
    written for earlier cycles whose command was killed before writing them, and this
    session's report when it was already traded (then nothing more runs)."""

    promoted: Promoted
    broker: str
    session: dt.date
    dry_run: bool
    recovered: list[dict]
    report: dict | None
    report_dir: Path | None  # where ``report`` is


def plan_session(strategy: str | None = None, broker: str | None = None, asof: str | dt.date | None = None,
                 dry_run: bool = False) -> SessionPlan:
    """`resolve_session`, then (not for a dry run) write the missing reports of finished cycles
    (`finish_reports`) and find this session's report if it was traded already. Hold the
    strategy's `trade_lock` around it and the trade that follows."""
    promoted, kind, session = resolve_session(strategy, broker, asof, dry_run)
    if dry_run:
        return SessionPlan(promoted, kind, session, True, [], None, None)
    ledger = Ledger(state_db())
    recovered = finish_reports(promoted, ledger)
    traded = session_cycle(ledger, promoted.name, session)
    report = None if traded is None else _stored_report(promoted, ledger, traded)
    return SessionPlan(promoted, kind, session, False, recovered, report,
                       None if report is None else _report_dir(promoted.name, traded))


def trade_session(strategy: str | None = None, broker: str | None = None, asof: str | dt.date | None = None,
                  dry_run: bool = False, report_dir: str | Path | None = None) -> dict:
    """Run one cycle of the promoted ``strategy`` and write its report; return the report.

    Under the strategy's `trade_lock`, first the reports of finished cycles whose command was
    killed before writing them are written (`finish_reports`). A session already traded is not
    run again: its report is returned as it stands.

    Raises `NotPromoted`, `TradingRefused` (nothing sent; `TradeLocked` while another trade of
    the strategy runs) or a `research_lib.broker.BrokerError` (the ledger records what is known;
    the next run resolves the rest).
    """
    # A dry run sends nothing and moves nothing (`_market`): it never waits for nor blocks a trade.
    with nullcontext() if dry_run else trade_lock(promoted_strategy(strategy)):
        plan = plan_session(strategy, broker, asof, dry_run)
        if plan.report is not None:
            log.info("%s %s was traded already; its report stands, nothing was run", plan.promoted.name, plan.session)
            return plan.report
        return _trade(plan, report_dir)


def _trade(plan: SessionPlan, report_dir: str | Path | None) -> dict:
    """Run the cycle of ``plan``'s session, then write its report and raise its alerts."""
    promoted, kind, session, dry_run = plan.promoted, plan.broker, plan.session, plan.dry_run
    ledger = Ledger(state_db())
    config = promoted.config
    max_age = config.paper.max_target_age_sessions
    decided = targets = None
    if kind == "sim":  # the decision first: a refusal must leave the simulated market where it stands
        decided, targets = decision_at(promoted.weights, session, promoted.prices.index, max_age)
    folder = _usable_report_dir(Path(report_dir) if report_dir else session_report_dir(promoted.name, session, dry_run))
    with _market(promoted, kind, session, ledger, dry_run) as (live, prices, price_time):
        if decided is None:  # at Alpaca, on its bars
            decided, targets = decision_at(promoted.weights, session, prices.index, max_age)
        close, adv, adv_checked = reference_prices(prices, session, config.paper.adv_sessions,
                                                   unknown_volume_passes=kind == "sim")
        targets = with_cash_buffer(targets, config.paper.cash_buffer)
        applied, applied_in = applied_decision(ledger, promoted.name)
        rebalance = applied != f"{decided:%Y-%m-%d}" or applied_in == f"{session:%Y-%m-%d}"
        inputs = CycleInputs(promoted.name, session, targets if rebalance else None, close, price_time, config.risk,
                             adv=adv, min_trade_value=config.paper.min_trade_value, decision=decided.date())
        report = run_cycle(live, ledger, inputs, dry_run=dry_run,
                           notes={REPORT_DIR: _recorded_dir(folder), "adv_checked": adv_checked})
    return _publish(promoted, ledger, ledger.cycle(report.cycle_id), prices, alerts=not dry_run)


def finish_reports(promoted: Promoted, ledger: Ledger) -> list[dict]:
    """Write the report, and raise the alerts, of each finished cycle of ``promoted`` whose
    command was killed before it could (the ledger has no ``report_written_at`` for it); return
    those reports. Each is made from the ledger's record of its cycle (`session_report`)."""
    written, cycles = [], ledger.cycles(promoted.name)
    latest = {c["session"]: c["id"] for c in cycles if not c["summary"].get("dry_run")}  # its report is the session's
    for cycle in cycles:
        if (_finished(cycle) and _rebuildable(cycle) and not cycle["summary"].get(REPORT_WRITTEN)
                and latest.get(cycle["session"]) == cycle["id"]):
            log.warning("%s %s: the cycle finished but its report was not written (its command was stopped); "
                        "writing it from the ledger", promoted.name, cycle["session"])
            written.append(_publish(promoted, ledger, cycle, _traded_prices(promoted, cycle, ledger), alerts=True))
    return written


def _publish(promoted: Promoted, ledger: Ledger, cycle: dict, prices: pd.DataFrame, *, alerts: bool) -> dict:
    """Write the report of ``cycle`` where its record says and raise its alerts (``alerts``);
    then, for a cycle that counts (not a dry run, not failed), record in the ledger that its
    report is done. Killed before that, the next trade does it all again (alerts de-duplicate)."""
    result = session_report(promoted, ledger, cycle, prices)
    folder = _report_dir(promoted.name, cycle)
    try:
        write_session_report(result, folder)
    except OSError as err:
        raise ReportUnwritable(f"the report of {promoted.name} {cycle['session']} cannot be written to {folder} "
                               f"({type(err).__name__}: {err.strerror or err}); make it a folder this user can "
                               "write, then run spartan trade again: the ledger keeps the cycle and its report is "
                               "written then.") from None
    if alerts:
        raise_session_alerts(result, folder)
    if _finished(cycle):
        ledger.finish_cycle(cycle["id"], cycle["status"], {REPORT_WRITTEN: now_utc()})
    return result


def _stored_report(promoted: Promoted, ledger: Ledger, cycle: dict) -> dict:
    """The report of a session traded already, as written (written again from the ledger if its
    ``cycle.json`` was removed or damaged since; its alerts were raised then)."""
    folder = _report_dir(promoted.name, cycle)
    try:
        stored = read_json(folder / CYCLE_FILE)
    except ValueError:
        stored = None
    if isinstance(stored, dict):
        return stored
    if not _rebuildable(cycle):  # recorded before the ledger kept what a report needs
        return None
    return _publish(promoted, ledger, cycle, _traded_prices(promoted, cycle, ledger), alerts=False)


def session_report_dir(strategy: str, session: dt.date, dry_run: bool = False) -> Path:
    return paths.reports_dir() / "paper" / strategy / (f"{session:%Y-%m-%d}" + ("-dry-run" if dry_run else ""))


def _report_dir(strategy: str, cycle: dict) -> Path:
    """Where the report of a finished cycle is: as recorded (relative to the workspace root when
    recorded inside it, `_recorded_dir`), else (a cycle recorded by an older version) the
    session's folder."""
    recorded = cycle["summary"].get(REPORT_DIR)
    if not (isinstance(recorded, str) and recorded):
        return session_report_dir(strategy, dt.date.fromisoformat(cycle["session"]))
    return paths.workspace_root() / recorded  # an absolute ``recorded`` stands as it is


def _recorded_dir(folder: Path) -> str:
    """``folder`` as the ledger records it: relative to the workspace root when inside it (the
    workspace may move), else absolute."""
    absolute = Path(os.path.abspath(folder))
    try:
        return str(absolute.relative_to(os.path.abspath(paths.workspace_root())))
    except ValueError:
        return str(absolute)


def _usable_report_dir(folder: Path) -> Path:
    """``folder``, made if missing, once it is known to be a folder this user can write (checked
    before the cycle runs: a report that cannot be written must not follow orders sent).

    Raises
    ------
    ReportUnwritable
        it is a file, cannot be made or is not writable; nothing was run.
    """
    try:
        folder.mkdir(parents=True, exist_ok=True)
        if not os.access(folder, os.W_OK | os.X_OK):
            raise PermissionError(f"{folder} is not writable by this user")
    except (OSError, ValueError) as err:
        raise ReportUnwritable(f"report_dir {str(folder)!r} cannot hold the session's report ({type(err).__name__}: "
                               f"{getattr(err, 'strerror', None) or err}); pass a folder this user can write, or leave "
                               "report_dir out (reports/paper/<strategy>/<session>/). Nothing was run.") from None
    return folder


@contextmanager
def _market(promoted: Promoted, kind: str, session: dt.date, ledger: Ledger,
            dry_run: bool) -> Iterator[tuple[Broker, pd.DataFrame, dt.datetime]]:
    """The broker at ``session``, the prices the cycle trades on and when its reference prices
    were observed. The sim moves to the session; a dry run never creates or moves the strategy's
    account: without one it runs against a scratch account made at the session."""
    if kind != "sim":
        yield _alpaca_market(promoted, session, ledger)
    elif not dry_run or SimBroker.stored_account(state_db(), sim_account(promoted.name)):
        yield _sim_market(promoted, session, state_db())
    else:
        with tempfile.TemporaryDirectory(prefix="spartan-dry-run-") as scratch:
            yield _sim_market(promoted, session, Path(scratch) / STATE_DB)


def _sim_market(promoted: Promoted, session: dt.date, db: Path) -> tuple[SimBroker, pd.DataFrame, dt.datetime]:
    sim = open_sim(promoted, db, start=session)
    try:
        sim.advance_to(session)
    except ValueError as err:
        raise TradingRefused(f"the simulated account of {promoted.name!r} cannot trade {session}: {err}") from None
    return sim, promoted.prices, dt.datetime.combine(session, CLOSE, NEW_YORK)


def _alpaca_market(promoted: Promoted, session: dt.date, ledger: Ledger) -> tuple[AlpacaBroker, pd.DataFrame, dt.datetime]:
    broker = _alpaca_broker()
    now = broker.clock().now.astimezone(NEW_YORK)
    if session != now.date():
        raise TradingRefused(f"Alpaca trades today's session only ({now.date()} in New York); leave out --asof "
                             f"(got {session}). Replay past sessions with --broker sim.")
    bars = _alpaca_bars(promoted, session, ledger)
    last = bars.index[-1].date() if len(bars.index) else None
    if last != session:
        raise TradingRefused(f"Alpaca has no bar for {session} yet (latest: {last}); run the cycle during or after "
                             "the session.")
    return broker, bars, min(now, dt.datetime.combine(session, CLOSE, NEW_YORK))


def _alpaca_bars(promoted: Promoted, session: dt.date, ledger: Ledger) -> pd.DataFrame:
    """Alpaca's daily bars of the strategy's symbols up to ``session``, back to the first paper
    session too (the drift check backtests every paper session)."""
    from research_lib.data import fetch_alpaca

    symbols = sorted(set(promoted.weights.columns))
    start = session - dt.timedelta(days=3 * max(promoted.config.paper.adv_sessions,
                                                promoted.config.paper.max_target_age_sessions))
    cycles = ledger.cycles(promoted.name)
    if cycles:
        start = min(start, dt.date.fromisoformat(cycles[0]["session"]) - dt.timedelta(days=7))
    bars, _ = fetch_alpaca(symbols, start, session)
    return bars


def _traded_prices(promoted: Promoted, cycle: dict, ledger: Ledger) -> pd.DataFrame:
    """The prices a finished cycle traded on: the promoted run's for the sim, Alpaca's bars."""
    if cycle["broker"] == "sim":
        return promoted.prices
    return _alpaca_bars(promoted, dt.date.fromisoformat(cycle["session"]), ledger)


def _alpaca_broker() -> AlpacaBroker:
    """Alpaca's paper endpoint, or ``APCA_API_BASE_URL``'s (keys from the environment)."""
    return AlpacaBroker(url_override=os.environ.get(TRADING_URL_ENV) or None)


# ---------------------------------------------------------------- status, halt, resume


def status(strategy: str | None = None) -> list[dict]:
    """Positions, cash, P&L, open orders and the kill switch of each promoted strategy (or one),
    from the ledger and the simulated account; nothing is moved or sent."""
    names = [strategy] if strategy else promoted_names()
    ledger = Ledger(state_db())
    out = []
    for name in names:
        promoted = load_promoted(name)
        state, why = ledger.kill_switch(name)
        cycles = ledger.cycles(name)
        entry = {"strategy": name, "kill_switch": {"state": state.value, "reason": why},
                 "last_cycle": cycles[-1] if cycles else None, "broker": promoted.config.paper.broker,
                 "account": None, "positions": [], "open_orders": []}
        if SimBroker.stored_account(state_db(), sim_account(name)):
            sim = open_sim(promoted, state_db())
            account, close = sim.account(), promoted.prices["close"].ffill().loc[sim.sim_date]
            entry["account"] = {"sim_date": f"{sim.sim_date:%Y-%m-%d}", "equity": account.equity,
                                "cash": account.cash, "pnl_total": account.equity - promoted.starting_cash}
            entry["positions"] = [{"symbol": s, "quantity": p.quantity, "value": p.quantity * float(close[s])}
                                  for s, p in sorted(sim.positions().items())]
            entry["open_orders"] = [dataclasses.asdict(o) for o in sim.open_orders()]
        out.append(entry)
    return out


def halt(strategy: str | None = None, reason: str = "halted by the user") -> list[str]:
    """Move the kill switch to HALTED for ``strategy`` (None: every strategy) and cancel the
    open orders of the affected simulated accounts at once (Alpaca's: at the next cycle).
    Returns the cancelled client_order_ids."""
    if strategy is not None:
        load_promoted(strategy)
    ledger = Ledger(state_db())
    ledger.set_kill_switch(strategy or ALL_STRATEGIES, KillSwitch.HALTED, reason)
    cancelled = []
    for name in [strategy] if strategy else promoted_names():
        if not SimBroker.stored_account(state_db(), sim_account(name)):
            continue
        sim = open_sim(load_promoted(name), state_db())
        for order in sim.open_orders():
            sim.cancel_order(order.broker_id)  # the sim cancels at once; the ledger copies its answer
            after = sim.order_by_client_id(order.client_order_id)
            ledger.update_intent(order.client_order_id, after.status, reason=f"halted: {reason}")
            cancelled.append(order.client_order_id)
    return cancelled


def resume(strategy: str | None = None, reason: str = "resumed by the user") -> dict[str, tuple[KillSwitch, str]]:
    """Move the kill switch back to ACTIVE for ``strategy`` (None: the workspace-wide switch and
    every promoted strategy's own); return the state that now applies to each strategy concerned
    (the halt file, or the workspace-wide switch when resuming one strategy, may still hold it)."""
    if strategy is not None:
        load_promoted(strategy)
    ledger = Ledger(state_db())
    names = [strategy] if strategy else promoted_names()
    for name in [strategy] if strategy else [ALL_STRATEGIES, *names]:
        if strategy or ledger.own_kill_switch(name)[0] is not KillSwitch.ACTIVE or name == ALL_STRATEGIES:
            ledger.set_kill_switch(name, KillSwitch.ACTIVE, reason)
    return {name: ledger.kill_switch(name) for name in names or [ALL_STRATEGIES]}


# ---------------------------------------------------------------- text for the terminal and notebook


def describe_session(result: dict) -> str:
    """A few lines on what a session did (printed by `spartan trade` and notebook 07)."""
    cycle, account, tracking = result["cycle"], result["account"], result["drift"]
    lines = [f"{result['strategy']} {result['session']} on {result['broker']}: {result['status']} "
             f"(kill switch {result['kill_switch']['state'].upper()}; decision {result['decision']}, "
             f"{'rebalancing' if result['rebalance'] else 'holding'})",
             f"  orders: {len(cycle['sent'])} sent, {len(cycle['adopted'])} adopted, {len(cycle['rejected'])} rejected, "
             f"{len(cycle['cancelled'])} cancelled; {len(result['open_orders'])} open at the broker",
             f"  equity {_money(account['equity'])}, cash {_money(account['cash'])}, P&L "
             f"{_money(account['daily_pnl'])} (since the previous cycle), since start {_money(account['pnl_total'])}"]
    if tracking["tracking_error"] is not None:
        lines.append(f"  against the backtest ({tracking['sessions']} sessions): tracking error "
                     f"{tracking['tracking_error']:.2%}{' (ABOVE TOLERANCE)' if tracking['flagged'] else ''}, "
                     f"book overlap {tracking['signal_agreement']:.0%}")
    lines += [f"  rejected {r['side']} {r['symbol']}: {r['reason']}" for r in cycle["rejected"]]
    if result["kill_switch"]["state"] != "active":
        lines.append(f"  kill switch: {result['kill_switch']['reason']}")
    return "\n".join(lines)


def describe_status(entries: list[dict]) -> str:
    """`spartan status`'s text for `status`'s entries."""
    if not entries:
        return "No promoted strategy. Promote a validated run with `spartan promote reports/runs/<run_id>`."
    out = []
    for e in entries:
        out.append(f"{e['strategy']}: kill switch {e['kill_switch']['state'].upper()} ({e['kill_switch']['reason']})")
        last = e["last_cycle"]
        out.append(f"  last cycle: {last['session']} on {last['broker']}, {last['status']}" if last else
                   "  never traded: spartan trade --strategy " + e["strategy"])
        if e["account"]:
            a = e["account"]
            out.append(f"  sim at {a['sim_date']}: equity {_money(a['equity'])}, cash {_money(a['cash'])}, "
                       f"P&L since start {_money(a['pnl_total'])}")
        out += [f"  {p['symbol']:>8} {p['quantity']:>14,.4f}  {_money(p['value'])}" for p in e["positions"]]
        out += [f"  open: {o['side']} {o['quantity']:,.4f} {o['symbol']} ({o['client_order_id']})" for o in e["open_orders"]]
    return "\n".join(out)


def _money(value) -> str:
    return "n/a" if value is None else f"{value:,.2f}"

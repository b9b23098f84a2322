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
  without ``--asof`` moves it one session (or re-runs a session whose cycle did not finish or
  whose report is missing); ``--asof`` moves it to that session, never back. Its orders fill
  at the next session's close with the backtest's costs. ``alpaca``: Alpaca's paper endpoint (keys from the environment,
  ``APCA_API_BASE_URL`` to point it elsewhere), today's session only, reference prices and
  volume from Alpaca's daily bars.
- **Reports**: ``reports/paper/<strategy>/<session>/`` holds ``cycle.json`` (what the cycle
  did, positions, P&L, slippage, drift against the backtest) and ``summary.html``; `spartan
  trade` adds the executed notebook. A dry run writes to ``<session>-dry-run/``. A session is
  done when its cycle finished *and* its report is written: one killed in between is run again
  (it sends nothing twice) before the sim moves on, so no session's report is lost.
- **Sessions are checked before anything runs** (`resolve_session`): for the sim a session of
  the promoted prices, never before the last session traded; for Alpaca today by Alpaca's clock.
  Otherwise `InvalidSession` (`spartan trade` exits 2, having started nothing).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd
import yaml
from pydantic import ValidationError

from research_lib import paths
from research_lib._io import now_utc, read_json, write_json
from research_lib.broker import AlpacaBroker, Broker, SimBroker
from research_lib.config import RunConfig
from research_lib.data._snapshot import sha256_of
from research_lib.errors import ConfigError, SpartanError
from research_lib.risk import KillSwitch
from research_lib.risk._research import UNKNOWN_VOLUME
from research_lib.trading._cycle import CycleInputs, CycleReport, run_cycle
from research_lib.trading._ledger import ALL_STRATEGIES, Ledger
from research_lib.trading._tracking import daily_pnl, drift, expected_backtest, mean_slippage_bps, slippage

STATE_DB = "spartan.sqlite"
TRADING_URL_ENV = "APCA_API_BASE_URL"
NEW_YORK = ZoneInfo("America/New_York")
CLOSE = dt.time(16, 0)
BROKERS = ("sim", "alpaca")
_ISO_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")


class NotPromoted(ConfigError):
    """The strategy has no ``params/promoted/<strategy>.yaml``: it may not be paper traded."""


class TradingRefused(SpartanError):
    """The session cannot be traded as asked (stale targets, a date the sim cannot reach...);
    nothing was sent."""


class InvalidSession(ConfigError, TradingRefused):
    """The session asked for cannot be traded by this strategy on this broker: not a date, not a
    session of its calendar, or before the last session it traded. Found before anything runs:
    a bad argument (`spartan trade` exits 2), and a refusal that sent nothing."""


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
    available = promoted_names()
    how = ("Only a promoted strategy may be paper traded: `spartan run params/daily.yaml`, then `spartan promote "
           "reports/runs/<run_id>` (add --override-reason TEXT to promote a run that fails the gate).")
    if strategy is None:
        if len(available) != 1:
            raise NotPromoted(f"{'No strategy is' if not available else 'Several strategies are'} promoted in "
                              f"{promoted_dir()} ({', '.join(available) or 'none'}); "
                              + ("name one with --strategy NAME." if available else how))
        strategy = available[0]
    file = promoted_dir() / f"{strategy}.yaml"
    if not file.is_file():
        raise NotPromoted(f"Strategy {strategy!r} is not promoted ({promoted_dir()} holds: "
                          f"{', '.join(available) or 'nothing'}). {how}")
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


def next_sim_session(sim: SimBroker, ledger: Ledger, strategy: str) -> dt.date:
    """The session a `trade` without ``--asof`` trades: the sim date until it is done there (a
    cycle finished and its report written, `session_done`), then the next session (the last
    session of the history stays the last)."""
    current = sim.sim_date
    later = sim.sessions[sim.sessions > current]
    return (later[0] if session_done(ledger, strategy, current.date()) and len(later) else current).date()


def session_done(ledger: Ledger, strategy: str, session: dt.date) -> bool:
    """Whether ``session`` needs no more run: a cycle there finished (not failed, not a dry run)
    and its report (``cycle.json``) is on disk."""
    return _finished(ledger, strategy, session) and _reported(strategy, session)


def last_traded_session(ledger: Ledger, strategy: str) -> dt.date | None:
    """The latest session where a cycle of the strategy finished (not failed, not a dry run)."""
    sessions = [c["session"] for c in ledger.cycles(strategy) if _completed(c)]
    return dt.date.fromisoformat(max(sessions)) if sessions else None


def _finished(ledger: Ledger, strategy: str, session: dt.date) -> bool:
    return any(_completed(c) and c["session"] == f"{session:%Y-%m-%d}" for c in ledger.cycles(strategy))


def _reported(strategy: str, session: dt.date) -> bool:
    return (session_report_dir(strategy, session) / "cycle.json").is_file()


def _completed(cycle: dict) -> bool:
    """A cycle that ran to its end: finished, not failed, not a dry run."""
    return (bool(cycle["finished_at"]) and not cycle["status"].startswith("failed")
            and not cycle["summary"].get("dry_run"))


def resolve_session(strategy: str | None = None, broker: str | None = None, asof: str | dt.date | None = None,
                    dry_run: bool = False) -> tuple[Promoted, str, dt.date]:
    """Which strategy, broker and session a `trade` would run, without changing anything
    (for the sim without ``asof`` a new account is created but not moved).

    Raises
    ------
    NotPromoted, ConfigError
        an unknown strategy or broker, or a broker other than the one the strategy traded on.
    InvalidSession
        ``asof`` is not a date, or not a session the strategy can trade (`session_refusal`): on the
        sim a session of the promoted prices, not before the account's date (nor, for a dry run,
        any other); at Alpaca today by Alpaca's clock (asked only when ``asof`` is given).
    research_lib.broker.BrokerError
        Alpaca's clock could not be read.
    """
    promoted = load_promoted(strategy)
    kind = broker or promoted.config.paper.broker
    if kind not in BROKERS:
        raise ConfigError(f"broker {kind!r} is unknown; use one of {list(BROKERS)}")
    day = _as_date(asof)
    ledger = Ledger(state_db())
    used = {c["broker"] for c in ledger.cycles(promoted.name)} - {kind}
    if used:
        raise ConfigError(f"{promoted.name!r} has traded on {', '.join(sorted(used))}; its ledger (equity, loss limits, "
                          f"orders) belongs to that account, so it cannot switch to {kind}. Keep --broker "
                          f"{sorted(used)[0]}, or promote the strategy under another scenario name for {kind}.")
    if kind == "sim":
        if day is None:
            sim = open_sim(promoted, state_db())
            return promoted, kind, next_sim_session(sim, ledger, promoted.name) if not dry_run else sim.sim_date.date()
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


def _as_date(asof: str | dt.date | None) -> dt.date | None:
    if asof in (None, ""):
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


def trade_session(strategy: str | None = None, broker: str | None = None, asof: str | dt.date | None = None,
                  dry_run: bool = False, report_dir: str | Path | None = None) -> dict:
    """Run one cycle of the promoted ``strategy`` and write its report; return the report.

    Raises `NotPromoted`, `TradingRefused` (nothing sent) or a `research_lib.broker.BrokerError`
    (the ledger records what is known; the next run resolves the rest).
    """
    promoted, kind, session = resolve_session(strategy, broker, asof, dry_run)
    ledger = Ledger(state_db())
    behind = _unreported_sim_session(promoted, ledger) if kind == "sim" and not dry_run else None
    if behind is not None and behind < session:  # its report first: moving on would lose it for good
        trade_session(promoted.name, kind, behind)
    config = promoted.config
    max_age = config.paper.max_target_age_sessions
    if kind == "sim":
        # The decision first: a refusal must leave the simulated market where it stands.
        decided, targets = decision_at(promoted.weights, session, promoted.prices.index, max_age)
        live, prices, price_time = _sim_market(promoted, session)
    else:
        live, prices, price_time = _alpaca_market(promoted, session, ledger)
        decided, targets = decision_at(promoted.weights, session, prices.index, max_age)
    close, adv, adv_checked = reference_prices(prices, session, config.paper.adv_sessions,
                                               unknown_volume_passes=kind == "sim")
    targets = with_cash_buffer(targets, config.paper.cash_buffer)
    applied, applied_in = applied_decision(ledger, promoted.name)
    rebalance = applied != f"{decided:%Y-%m-%d}" or applied_in == f"{session:%Y-%m-%d}"
    inputs = CycleInputs(promoted.name, session, targets if rebalance else None, close, price_time, config.risk,
                         adv=adv, min_trade_value=config.paper.min_trade_value, decision=decided.date())
    before, _ = ledger.kill_switch(promoted.name)
    report = run_cycle(live, ledger, inputs, dry_run=dry_run)
    result = _session_report(promoted, kind, live, ledger, inputs, report, prices, adv_checked, rebalance)
    folder = Path(report_dir) if report_dir else session_report_dir(promoted.name, session, dry_run)
    write_session_report(result, folder)
    if not dry_run:  # a dry run changes nothing: nothing to alert, and no real alert is deduplicated away
        _raise_alerts(result, before, folder)
    return result


def _unreported_sim_session(promoted: Promoted, ledger: Ledger) -> dt.date | None:
    """The session the strategy's simulated account stands at if a cycle finished there but its
    report was never written (the command was killed in between), else None."""
    stored = SimBroker.stored_account(state_db(), sim_account(promoted.name))
    reached = dt.date.fromisoformat(stored["sim_date"]) if stored else None
    if reached is None or not _finished(ledger, promoted.name, reached) or _reported(promoted.name, reached):
        return None
    return reached


def _raise_alerts(result: dict, before: KillSwitch, folder: Path) -> None:
    """Alert on what a person must look at: a reconciliation mismatch, a kill switch tightened by
    the cycle, drift beyond tolerance (`research_lib.alerts`; delivery never raises)."""
    from research_lib.alerts import alert

    name, session = result["strategy"], result["session"]
    common = {"strategy": name, "session": session, "report": str(folder / "summary.html")}
    state = KillSwitch(result["kill_switch"]["state"])
    if result["cycle"]["mismatches"]:
        alert("reconciliation_mismatch", f"{name} {session}: broker positions differ from the recorded fills; "
              f"HALTED. {result['kill_switch']['reason']}", key=name, mismatches=result["cycle"]["mismatches"], **common)
    elif state.rank > before.rank:
        alert("kill_switch", f"{name} {session}: kill switch {before.name} -> {state.name}: "
              f"{result['kill_switch']['reason']}", key=f"{name}:{state.value}", **common)
    if result["drift"]["flagged"]:
        d = result["drift"]
        alert("drift", f"{name} {session}: paper tracks its backtest with a tracking error of "
              f"{d['tracking_error']:.2%} over {d['sessions']} sessions (tolerance {d['max_tracking_error']:.2%})",
              key=name, tracking_error=d["tracking_error"], tolerance=d["max_tracking_error"], **common)


def session_report_dir(strategy: str, session: dt.date, dry_run: bool = False) -> Path:
    return paths.reports_dir() / "paper" / strategy / (f"{session:%Y-%m-%d}" + ("-dry-run" if dry_run else ""))


def _sim_market(promoted: Promoted, session: dt.date) -> tuple[SimBroker, pd.DataFrame, dt.datetime]:
    sim = open_sim(promoted, state_db(), start=session)
    try:
        sim.advance_to(session)
    except ValueError as err:
        raise TradingRefused(f"the simulated account of {promoted.name!r} cannot trade {session}: {err}") from None
    return sim, promoted.prices, dt.datetime.combine(session, CLOSE, NEW_YORK)


def _alpaca_market(promoted: Promoted, session: dt.date, ledger: Ledger) -> tuple[AlpacaBroker, pd.DataFrame, dt.datetime]:
    from research_lib.data._sources import fetch_alpaca

    broker = _alpaca_broker()
    now = broker.clock().now.astimezone(NEW_YORK)
    if session != now.date():
        raise TradingRefused(f"Alpaca trades today's session only ({now.date()} in New York); leave out --asof "
                             f"(got {session}). Replay past sessions with --broker sim.")
    symbols = sorted(set(promoted.weights.columns))
    # Bars back to the first paper session too: the drift check backtests every paper session.
    start = session - dt.timedelta(days=3 * max(promoted.config.paper.adv_sessions,
                                                promoted.config.paper.max_target_age_sessions))
    cycles = ledger.cycles(promoted.name)
    if cycles:
        start = min(start, dt.date.fromisoformat(cycles[0]["session"]) - dt.timedelta(days=7))
    bars, _ = fetch_alpaca(symbols, start, session)
    last = bars.index[-1].date() if len(bars.index) else None
    if last != session:
        raise TradingRefused(f"Alpaca has no bar for {session} yet (latest: {last}); run the cycle during or after "
                             "the session.")
    return broker, bars, min(now, dt.datetime.combine(session, CLOSE, NEW_YORK))


def _alpaca_broker() -> AlpacaBroker:
    """Alpaca's paper endpoint, or ``APCA_API_BASE_URL``'s (keys from the environment)."""
    return AlpacaBroker(url_override=os.environ.get(TRADING_URL_ENV) or None)


def _session_report(promoted: Promoted, kind: str, broker: Broker, ledger: Ledger, inputs: CycleInputs,
                    report: CycleReport, prices: pd.DataFrame, adv_checked: bool, rebalance: bool) -> dict:
    name, session = promoted.name, inputs.session
    equity = pd.Series(dict(ledger.equity_history(name)), dtype=float)
    equity.index = pd.DatetimeIndex(pd.to_datetime(equity.index))
    cycles = [c for c in ledger.cycles(name) if c["finished_at"] and not c["summary"].get("dry_run")]
    first = pd.Timestamp(cycles[0]["session"]) if cycles else pd.Timestamp(session)
    starting_cash = promoted.starting_cash if kind == "sim" else float(equity.iloc[0]) if len(equity) else 0.0
    pnl = daily_pnl(equity, starting_cash)
    fills = slippage(ledger.intents(name))
    expected, holdings = expected_backtest(promoted.weights, prices, first,
                                           promoted.config.backtest.model(capital=promoted.starting_cash))
    weights_by_session = {c["session"]: c["summary"].get("weights") or {} for c in cycles}
    tracking = drift(pnl, weights_by_session, expected, holdings, promoted.config.paper.max_tracking_error)
    positions = _positions_table(broker, inputs, report.equity)
    state, why = ledger.kill_switch(name)
    manifest = read_json(promoted.run_dir / "manifest.json") or {}
    return {
        "strategy": name, "broker": kind, "session": f"{session:%Y-%m-%d}", "written_at": now_utc(),
        "status": report.status, "decision": f"{inputs.decision:%Y-%m-%d}", "rebalance": rebalance,
        "kill_switch": {"state": state.value, "reason": why},
        "cycle": dataclasses.asdict(report),
        "account": {"equity": report.equity, "cash": report.cash, "starting_cash": starting_cash,
                    "pnl_total": None if report.equity is None else report.equity - starting_cash,
                    "daily_pnl": _num(pnl["pnl"].iloc[-1]) if len(pnl) else None},
        "positions": positions,
        "open_orders": [dataclasses.asdict(o) for o in broker.open_orders()],
        "session_orders": [dataclasses.asdict(i) for i in ledger.intents(name, f"{session:%Y-%m-%d}")],
        "pnl": [{"session": f"{d:%Y-%m-%d}", **{k: _num(v) for k, v in row.items()}} for d, row in pnl.iterrows()],
        "slippage": {"mean_bps": mean_slippage_bps(fills), "fills": len(fills),
                     "recent": fills.tail(20).to_dict(orient="records")},
        "drift": tracking,
        "adv_checked": adv_checked,
        "promoted": {"run_id": promoted.record.get("run_id"), "promoted_at": promoted.record.get("promoted_at"),
                     "override_reason": promoted.record.get("override_reason"),
                     "gate_passed": (promoted.record.get("gate") or {}).get("passed")},
        "analyst": (manifest.get("llm") or {}).get("analyst") or "unknown: the promoted run's manifest has no analyst",
    }


def _positions_table(broker: Broker, inputs: CycleInputs, equity: float | None) -> list[dict]:
    """The broker's positions after the cycle, valued at the reference prices, beside the targets."""
    rows = []
    for symbol, position in sorted(broker.positions().items()):
        price = _num(inputs.prices.get(symbol))
        value = None if price is None else position.quantity * price
        rows.append({"symbol": symbol, "quantity": position.quantity, "price": price, "value": value,
                     "weight": value / equity if value is not None and equity else None,
                     "target": None if inputs.targets is None else _num(inputs.targets.get(symbol, 0.0))})
    return rows


def _num(value) -> float | None:
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def write_session_report(result: dict, folder: Path) -> Path:
    """``cycle.json`` and ``summary.html`` in ``folder`` (each written atomically)."""
    from research_lib.reports._templates import render_to

    folder.mkdir(parents=True, exist_ok=True)
    write_json(folder / "cycle.json", result)
    render_to(folder / "summary.html", "paper.html.j2", r=result)
    return folder


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

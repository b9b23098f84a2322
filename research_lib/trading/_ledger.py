"""The trading ledger: every order intent, written before the order is sent, and the
kill-switch and equity history, in the workspace's SQLite state (WAL).

An intent is keyed by its deterministic ``client_order_id``, so writing it twice is a no-op
and a re-run of the same session finds what the previous run did. Statuses:

- ``planned``: a child order of an execution schedule, recorded with its schedule, not sent yet;
  ``withdrawn``: a planned child that will never be sent (the strategy was halted, the market closed);
- ``intent``: written, not yet known to be at the broker (a crash here leaves it so; the
  next cycle looks it up by client_order_id);
- ``sent``: the broker acknowledged it; ``adopted``: found at the broker after an unknown
  outcome or a duplicate-id answer; ``not_sent``: looked up and not found;
- ``rejected``: the broker or the risk layer refused it (with the reason);
- ``filled``, ``canceled``, ``expired``: final states copied from the broker.

An order worked by an execution algorithm (`research_lib.execution`) is recorded as its schedule
(`Schedule`: the parent order, its arrival price and its child slices) and one ``planned`` intent per
child, all in one transaction, before any child is sent; each child is then sent as any intent is.
A re-run finds the schedule and sends only the children still ``planned`` or ``not_sent``.

A cycle is ``running`` from its start to its finish, which records its status (``traded``...,
``failed: <error>``) and its summary. A cycle whose process was killed keeps ``running`` and no
finish time until the strategy's next cycle starts and marks it ``interrupted``
(`Ledger.start_cycle`; a strategy's cycles run one at a time, under its trade lock). The
session that ran a cycle adds ``report_written_at`` to its summary once the session's report
and alerts are done (`research_lib.stages.paper`, `mark_reported`): the ledger, not the report folder, says
whether a session's report was written.
"""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path

from research_lib.risk import KillSwitch


def now_utc() -> str:
    """UTC, ISO 8601 to the microsecond: the order of events within a second matters here."""
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="microseconds")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS ledger_intents (
    client_order_id TEXT PRIMARY KEY, strategy TEXT NOT NULL, session TEXT NOT NULL, symbol TEXT NOT NULL,
    side TEXT NOT NULL, quantity REAL NOT NULL, decision_price REAL NOT NULL, status TEXT NOT NULL,
    broker_id TEXT, filled_quantity REAL NOT NULL DEFAULT 0, filled_avg_price REAL, reason TEXT,
    created_at TEXT NOT NULL, updated_at TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS ledger_intents_session ON ledger_intents (strategy, session);
CREATE TABLE IF NOT EXISTS ledger_kill_switch (
    id INTEGER PRIMARY KEY AUTOINCREMENT, strategy TEXT NOT NULL, state TEXT NOT NULL, reason TEXT NOT NULL,
    at TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS ledger_equity (
    strategy TEXT NOT NULL, session TEXT NOT NULL, equity REAL NOT NULL, cash REAL NOT NULL, recorded_at TEXT NOT NULL,
    PRIMARY KEY (strategy, session));
CREATE TABLE IF NOT EXISTS ledger_schedules (
    parent_id TEXT PRIMARY KEY, strategy TEXT NOT NULL, session TEXT NOT NULL, symbol TEXT NOT NULL, side TEXT NOT NULL,
    quantity REAL NOT NULL, arrival_price REAL NOT NULL, algorithm TEXT NOT NULL, unplanned REAL NOT NULL,
    slices TEXT NOT NULL, created_at TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS ledger_cycles (
    id INTEGER PRIMARY KEY AUTOINCREMENT, strategy TEXT NOT NULL, session TEXT NOT NULL, broker TEXT NOT NULL,
    started_at TEXT NOT NULL, finished_at TEXT, status TEXT NOT NULL, summary TEXT);
"""
FINAL_STATUSES = ("filled", "canceled", "expired", "rejected", "not_sent", "delisted",  # delisted: closed by the broker
                  "withdrawn")  # a planned child never sent: the strategy was halted, or the market closed
INTERRUPTED = "interrupted"  # the status of a cycle whose process ended before it finished
ALL_STRATEGIES = "*"  # the kill-switch row that applies to every strategy (`spartan halt` without --strategy)
HALT_FILE = "HALT"


@dataclass(frozen=True)
class Intent:
    """One order the cycle decided to send, as recorded."""

    client_order_id: str
    strategy: str
    session: str
    symbol: str
    side: str
    quantity: float
    decision_price: float
    status: str
    broker_id: str | None = None
    filled_quantity: float = 0.0
    filled_avg_price: float | None = None
    reason: str | None = None


@dataclass(frozen=True)
class Schedule:
    """A parent order worked by an execution algorithm: ``slices`` are its children (client_order_id,
    bar, bars, quantity, limit_price, phase), ``unplanned`` what the participation cap left out."""

    parent_id: str
    strategy: str
    session: str
    symbol: str
    side: str
    quantity: float
    arrival_price: float
    algorithm: str
    unplanned: float
    slices: tuple[dict, ...]


class Ledger:
    """The ledger in ``db_path`` (created on first use). Each method is one transaction."""

    def __init__(self, db_path: str | Path):
        self.db_path = Path(db_path)
        self.db_path.parent.mkdir(parents=True, exist_ok=True)
        with closing(sqlite3.connect(self.db_path, timeout=30)) as conn:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.executescript(_SCHEMA)  # executescript runs its own transaction

    @contextmanager
    def _write(self):
        with closing(sqlite3.connect(self.db_path, timeout=30, isolation_level=None)) as conn:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")  # an acknowledged intent survives a power cut
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise

    def _read(self, sql: str, args: tuple = ()) -> list[tuple]:
        with closing(sqlite3.connect(self.db_path, timeout=30)) as conn:
            return conn.execute(sql, args).fetchall()

    # ---------------------------------------------------------------- intents

    def record_intent(self, intent: Intent) -> bool:
        """Write ``intent`` unless its client_order_id is already recorded; True if written."""
        now = now_utc()
        with self._write() as conn:
            cursor = conn.execute(
                "INSERT OR IGNORE INTO ledger_intents VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (intent.client_order_id, intent.strategy, intent.session, intent.symbol, intent.side,
                 intent.quantity, intent.decision_price, intent.status, intent.broker_id, intent.filled_quantity,
                 intent.filled_avg_price, intent.reason, now, now))
            return cursor.rowcount == 1

    def update_intent(self, client_order_id: str, status: str, *, broker_id: str | None = None,
                      filled_quantity: float | None = None, filled_avg_price: float | None = None,
                      reason: str | None = None, quantity: float | None = None,
                      decision_price: float | None = None) -> None:
        """Move an intent to ``status``, keeping fields not given (``quantity`` and
        ``decision_price`` change only when an intent that never reached the broker is re-sent)."""
        with self._write() as conn:
            conn.execute(
                "UPDATE ledger_intents SET status = ?, broker_id = COALESCE(?, broker_id), "
                "filled_quantity = COALESCE(?, filled_quantity), filled_avg_price = COALESCE(?, filled_avg_price), "
                "reason = COALESCE(?, reason), quantity = COALESCE(?, quantity), "
                "decision_price = COALESCE(?, decision_price), updated_at = ? WHERE client_order_id = ?",
                (status, broker_id, filled_quantity, filled_avg_price, reason, quantity, decision_price, now_utc(),
                 client_order_id))

    def intents(self, strategy: str, session: str | None = None) -> list[Intent]:
        """The strategy's intents (of one session if given), oldest first."""
        sql = "SELECT * FROM ledger_intents WHERE strategy = ?" + (" AND session = ?" if session else "")
        rows = self._read(sql + " ORDER BY created_at, client_order_id", (strategy, session) if session else (strategy,))
        return [Intent(*row[:12]) for row in rows]

    def record_schedule(self, schedule: Schedule) -> bool:
        """Write ``schedule`` and a ``planned`` intent per child in one transaction, unless the parent
        is already recorded; True if written."""
        now = now_utc()
        with self._write() as conn:
            written = conn.execute(
                "INSERT OR IGNORE INTO ledger_schedules VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (schedule.parent_id, schedule.strategy, schedule.session, schedule.symbol, schedule.side,
                 schedule.quantity, schedule.arrival_price, schedule.algorithm, schedule.unplanned,
                 json.dumps(list(schedule.slices)), now)).rowcount == 1
            if written:
                conn.executemany(
                    "INSERT INTO ledger_intents (client_order_id, strategy, session, symbol, side, quantity, "
                    "decision_price, status, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, 'planned', ?, ?)",
                    [(child["client_order_id"], schedule.strategy, schedule.session, schedule.symbol, schedule.side,
                      child["quantity"], schedule.arrival_price, now, now) for child in schedule.slices])
            return written

    def schedules(self, strategy: str, session: str | None = None) -> list[Schedule]:
        """The strategy's schedules (of one session if given), oldest first."""
        sql = "SELECT * FROM ledger_schedules WHERE strategy = ?" + (" AND session = ?" if session else "")
        rows = self._read(sql + " ORDER BY created_at, parent_id", (strategy, session) if session else (strategy,))
        return [Schedule(*row[:9], tuple(json.loads(row[9]))) for row in rows]

    def intent(self, client_order_id: str) -> Intent | None:
        rows = self._read("SELECT * FROM ledger_intents WHERE client_order_id = ?", (client_order_id,))
        return Intent(*rows[0][:12]) if rows else None

    # ---------------------------------------------------------------- kill switch

    def kill_switch(self, strategy: str) -> tuple[KillSwitch, str]:
        """The state that applies to ``strategy`` and why: the most restrictive of its own, the
        workspace-wide one (`ALL_STRATEGIES`) and the halt file (`halt_file`). ACTIVE when none is set."""
        candidates = []
        for who in (strategy, ALL_STRATEGIES):
            rows = self._read("SELECT state, reason FROM ledger_kill_switch WHERE strategy = ? ORDER BY id DESC "
                              "LIMIT 1", (who,))
            if rows:
                scope = "" if who == strategy else "all strategies: "
                candidates.append((KillSwitch(rows[0][0]), scope + rows[0][1]))
        if self.halt_file.exists():
            note = self.halt_file.read_text(errors="replace").strip()[:200]
            candidates.append((KillSwitch.HALTED, f"halt file {self.halt_file} exists{': ' + note if note else ''} "
                                                  "(delete it to lift this halt)"))
        return max(candidates, key=lambda c: c[0].rank) if candidates else (KillSwitch.ACTIVE, "never set")

    def own_kill_switch(self, strategy: str) -> tuple[KillSwitch, str]:
        """The state set for ``strategy`` itself (or `ALL_STRATEGIES`), ignoring the others."""
        rows = self._read("SELECT state, reason FROM ledger_kill_switch WHERE strategy = ? ORDER BY id DESC LIMIT 1",
                          (strategy,))
        return (KillSwitch(rows[0][0]), rows[0][1]) if rows else (KillSwitch.ACTIVE, "never set")

    @property
    def halt_file(self) -> Path:
        """A file whose mere presence halts every strategy (``data/HALT`` beside the workspace state)."""
        return self.db_path.parent / HALT_FILE

    def set_kill_switch(self, strategy: str, state: KillSwitch, reason: str) -> None:
        """Record a new state for ``strategy``, or for every strategy with `ALL_STRATEGIES`."""
        with self._write() as conn:
            conn.execute("INSERT INTO ledger_kill_switch (strategy, state, reason, at) VALUES (?, ?, ?, ?)",
                         (strategy, KillSwitch(state).value, reason, now_utc()))

    def kill_switch_history(self, strategy: str) -> list[tuple[str, str, str]]:
        """``(at, state, reason)`` of the strategy's and the workspace-wide changes, oldest first."""
        return self._read("SELECT at, state, reason FROM ledger_kill_switch WHERE strategy IN (?, ?) ORDER BY id",
                          (strategy, ALL_STRATEGIES))

    # ---------------------------------------------------------------- equity and cycles

    def record_equity(self, strategy: str, session: str, equity: float, cash: float) -> None:
        """The account's equity at a session (a re-run of the session replaces it)."""
        with self._write() as conn:
            conn.execute("INSERT OR REPLACE INTO ledger_equity VALUES (?, ?, ?, ?, ?)",
                         (strategy, session, equity, cash, now_utc()))

    def equity_history(self, strategy: str, with_times: bool = False) -> list[tuple]:
        """``(session, equity)`` pairs, oldest first (``(session, equity, recorded_at)`` with ``with_times``)."""
        rows = self._read("SELECT session, equity, recorded_at FROM ledger_equity WHERE strategy = ? ORDER BY session",
                          (strategy,))
        return [tuple(r) if with_times else (r[0], r[1]) for r in rows]

    def last_resume(self, strategy: str) -> str | None:
        """When the kill switch was last set back to ACTIVE for ``strategy`` or for all (UTC, ISO)."""
        rows = self._read("SELECT MAX(at) FROM ledger_kill_switch WHERE strategy IN (?, ?) AND state = ?",
                          (strategy, ALL_STRATEGIES, KillSwitch.ACTIVE.value))
        return rows[0][0] if rows else None

    def start_cycle(self, strategy: str, session: str, broker: str, *, dry_run: bool = False) -> int:
        """Record a new ``running`` cycle and return its id.

        A real cycle marks the strategy's real cycles still ``running`` `INTERRUPTED` (their finish
        time stays empty): a strategy's real cycles run one after another under its lock, so those
        were killed (were one in fact still running, its finish would overwrite this). A dry run,
        which runs beside a trade without the lock, is recorded as such from its start (so that,
        running or killed, it never stands for its session) and interrupts nothing.
        """
        now = now_utc()
        with self._write() as conn:
            if not dry_run:
                running = conn.execute("SELECT id, summary FROM ledger_cycles WHERE strategy = ? AND status = 'running'",
                                       (strategy,)).fetchall()
                for cycle_id, summary in running:  # a dry run keeps its flag (its own finish overwrites the mark)
                    marked = {**(json.loads(summary) if summary else {}),
                              "interrupted": f"found unfinished at {now}, when the next cycle started"}
                    conn.execute("UPDATE ledger_cycles SET status = ?, summary = ? WHERE id = ?",
                                 (INTERRUPTED, json.dumps(marked), cycle_id))
            return conn.execute("INSERT INTO ledger_cycles (strategy, session, broker, started_at, status, summary) "
                                "VALUES (?, ?, ?, ?, 'running', ?)",
                                (strategy, session, broker, now, json.dumps({"dry_run": True}) if dry_run else None)
                                ).lastrowid

    def cycles(self, strategy: str) -> list[dict]:
        """Every cycle of the strategy, oldest first: id, session, broker, times, status, summary."""
        return self._cycles("WHERE strategy = ? ORDER BY id", (strategy,))

    def cycle(self, cycle_id: int) -> dict | None:
        """One cycle, as `cycles` lists it (None if there is no such cycle)."""
        found = self._cycles("WHERE id = ?", (cycle_id,))
        return found[0] if found else None

    def _cycles(self, where: str, args: tuple) -> list[dict]:
        rows = self._read(f"SELECT id, session, broker, started_at, finished_at, status, summary FROM ledger_cycles "
                          f"{where}", args)
        return [{"id": r[0], "session": r[1], "broker": r[2], "started_at": r[3], "finished_at": r[4],
                 "status": r[5], "summary": json.loads(r[6]) if r[6] else {}} for r in rows]

    def strategies(self) -> list[str]:
        """Strategies with any cycle in the ledger."""
        return [r[0] for r in self._read("SELECT DISTINCT strategy FROM ledger_cycles ORDER BY strategy")]

    def finish_cycle(self, cycle_id: int, status: str, summary: dict) -> None:
        """Record the cycle's status and add ``summary`` to its record (a key given replaces the
        one stored). The finish time is that of the first call; a later one adds to the record
        of a finished cycle (its report written, say)."""
        with self._write() as conn:
            row = conn.execute("SELECT summary FROM ledger_cycles WHERE id = ?", (cycle_id,)).fetchone()
            recorded = json.loads(row[0]) if row and row[0] else {}
            conn.execute("UPDATE ledger_cycles SET finished_at = COALESCE(finished_at, ?), status = ?, summary = ? "
                         "WHERE id = ?",
                         (now_utc(), status, json.dumps({**recorded, **summary}, default=str), cycle_id))

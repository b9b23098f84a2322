"""The simulated broker's database: where `SimBroker` keeps its accounts, orders, fills and positions.

State lives in SQLite (WAL) at the sim's ``db_path`` (the workspace's is
``research_lib.paths.state_db()``), in tables prefixed ``sim_`` and keyed by ``account_id``, beside
other accounts and the ledger's tables. `SimStore` holds the SQL of one account: the schema, the
migration of accounts stored by earlier versions (an account stored before the cost model had
impact, borrow and a cash rate is given them as 0, what it had, the first time it is opened), the
transactions and the queries. It also checks what an account is opened with (`cost_model`,
`close_frame`). The rules of the sim (prices, costs, buying power, when an order fills) are
`research_lib.broker._sim`'s; this module stores what they decide.

Each state change (a submission, a cancel, an advance with its fills) is one transaction
(`SimStore.write`), so a process killed at any point leaves the state before or after it.
Session dates are stored as ``YYYY-MM-DD`` text.
"""

from __future__ import annotations

import datetime as dt
import math
import sqlite3
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Literal, TypeVar
from zoneinfo import ZoneInfo

import pandas as pd

from research_lib.backtest import CostModel
from research_lib.broker._base import OPEN_STATUSES, BrokerOrder

QUANTITY_TOLERANCE = 1e-9  # shares: a position this close to zero is flat, a sell this much over the position is not short
LOCK_TIMEOUT_SECONDS = 30.0  # the longest a call waits for another process's write to the same file
EXCHANGE_TZ = ZoneInfo("America/New_York")
SESSION_OPEN, SESSION_CLOSE = dt.time(9, 30), dt.time(16, 0)
ADDED_SETTINGS = ("impact_coefficient", "borrow_bps_per_year", "cash_rate_per_year")  # 0 in older accounts
_T = TypeVar("_T")
_OPEN = "('" + "','".join(OPEN_STATUSES) + "')"
WORKED_COLUMNS = {"limit_price": "REAL", "work_bar": "INTEGER", "work_bars": "INTEGER"}  # NULL: market-on-close
_ORDER_COLUMNS = "broker_id, client_order_id, symbol, side, quantity, status, filled_quantity, filled_avg_price, submitted_session"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS sim_accounts (
    account_id TEXT PRIMARY KEY,
    starting_cash REAL NOT NULL,
    cost_bps REAL NOT NULL,
    spread_bps REAL NOT NULL,
    impact_coefficient REAL NOT NULL DEFAULT 0,
    borrow_bps_per_year REAL NOT NULL DEFAULT 0,
    cash_rate_per_year REAL NOT NULL DEFAULT 0,
    allow_short INTEGER NOT NULL,
    start_session TEXT NOT NULL,
    sim_date TEXT NOT NULL,
    cash REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS sim_orders (
    account_id TEXT NOT NULL REFERENCES sim_accounts (account_id),
    seq INTEGER NOT NULL,
    broker_id TEXT NOT NULL,
    client_order_id TEXT NOT NULL,
    symbol TEXT NOT NULL,
    side TEXT NOT NULL CHECK (side IN ('buy', 'sell')),
    quantity REAL NOT NULL CHECK (quantity > 0),
    status TEXT NOT NULL,
    submitted_session TEXT NOT NULL,
    filled_quantity REAL NOT NULL DEFAULT 0,
    filled_avg_price REAL,
    reason TEXT,
    limit_price REAL,
    work_bar INTEGER,
    work_bars INTEGER,
    PRIMARY KEY (account_id, seq),
    UNIQUE (account_id, broker_id),
    UNIQUE (account_id, client_order_id)
);
CREATE TABLE IF NOT EXISTS sim_fills (
    fill_id INTEGER PRIMARY KEY,
    account_id TEXT NOT NULL REFERENCES sim_accounts (account_id),
    broker_id TEXT NOT NULL,
    client_order_id TEXT NOT NULL,
    session TEXT NOT NULL,
    symbol TEXT NOT NULL,
    side TEXT NOT NULL,
    quantity REAL NOT NULL,
    price REAL NOT NULL,
    commission REAL NOT NULL,
    UNIQUE (account_id, broker_id)
);
CREATE TABLE IF NOT EXISTS sim_delistings (
    account_id TEXT NOT NULL REFERENCES sim_accounts (account_id),
    session TEXT NOT NULL,
    symbol TEXT NOT NULL,
    quantity REAL NOT NULL,
    price REAL NOT NULL,
    cash_flow REAL NOT NULL,
    PRIMARY KEY (account_id, session, symbol)
);
CREATE TABLE IF NOT EXISTS sim_positions (
    account_id TEXT NOT NULL REFERENCES sim_accounts (account_id),
    symbol TEXT NOT NULL,
    quantity REAL NOT NULL,
    avg_entry_price REAL NOT NULL,
    PRIMARY KEY (account_id, symbol)
);
"""


@dataclass(frozen=True)
class SimFill:
    """One fill: ``price`` includes the half-spread and the impact; ``commission`` is charged to cash on top."""

    broker_id: str
    client_order_id: str
    session: dt.date
    symbol: str
    side: Literal["buy", "sell"]
    quantity: float
    price: float
    commission: float

    @property
    def cash_flow(self) -> float:
        """The change in cash, in account currency."""
        traded = self.quantity * self.price
        return (-traded if self.side == "buy" else traded) - self.commission


@dataclass(frozen=True)
class SimDelisting:
    """A position the sim closed because its symbol's prices ended: ``quantity`` shares (signed:
    negative for a short) closed on ``session``, the first session without a price, at ``price``,
    the last close; ``cash_flow`` is what cash received (the value times 1 + the delisting return)."""

    session: dt.date
    symbol: str
    quantity: float
    price: float
    cash_flow: float


def stored_account(db_path: str | Path, account_id: str) -> dict | None:
    """The settings and sim date of an account already in ``db_path`` (None if there is none).

    Reads without migrating: the settings an earlier version did not store are reported as 0.
    """
    if not Path(db_path).is_file():
        return None
    with closing(sqlite3.connect(db_path, timeout=LOCK_TIMEOUT_SECONDS)) as conn:
        if not conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'sim_accounts'").fetchone():
            return None
        cursor = conn.execute("SELECT * FROM sim_accounts WHERE account_id = ?", (account_id,))
        row = cursor.fetchone()
        columns = [c[0] for c in cursor.description]
    return {**dict.fromkeys(ADDED_SETTINGS, 0.0), **dict(zip(columns, row))} if row else None


class SimStore:
    """One account's tables in the SQLite file ``db_path``.

    The methods taking ``conn`` run inside a transaction opened by `read` or `write`.
    """

    def __init__(self, db_path: Path, account_id: str):
        self.db_path, self.account_id = db_path, account_id

    # -- the file and its transactions ---------------------------------------------------

    def create_tables(self) -> None:
        """Create the file, its folder and the tables if missing; switch the file to WAL."""
        self.db_path.parent.mkdir(parents=True, exist_ok=True)
        with closing(self._connect()) as conn:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.executescript(_SCHEMA)
            have = {column for _, column, *_ in conn.execute("PRAGMA table_info(sim_orders)")}
            for column, kind in WORKED_COLUMNS.items():
                if column not in have:  # a file of an earlier version: its orders were all market-on-close
                    conn.execute(f"ALTER TABLE sim_orders ADD COLUMN {column} {kind}")

    def write(self):
        """One write transaction: committed whole when the block succeeds, else rolled back."""
        return self._transaction("BEGIN IMMEDIATE")

    def read(self):
        """A read transaction: every query in the block sees the same state."""
        return self._transaction("BEGIN")

    def _connect(self) -> sqlite3.Connection:
        return sqlite3.connect(self.db_path, timeout=LOCK_TIMEOUT_SECONDS, isolation_level=None)

    def read_only(self, query: Callable[..., _T], *args) -> _T:
        """``query(conn, *args)`` in one read transaction."""
        with self.read() as conn:
            return query(conn, *args)

    @contextmanager
    def _transaction(self, begin: str) -> Iterator[sqlite3.Connection]:
        conn = self._connect()
        try:
            conn.execute(begin)
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
        finally:
            conn.close()

    # -- the account ---------------------------------------------------------------------

    def open_account(self, conn: sqlite3.Connection, settings: dict, sim_date: str, cash: float) -> tuple:
        """Add the account with ``settings`` unless it exists (migrating an older file's table
        first); return the stored values of ``settings``, in their order."""
        have = {column for _, column, *_ in conn.execute("PRAGMA table_info(sim_accounts)")}
        for column in ADDED_SETTINGS:
            if column not in have:  # an account file of an earlier version: its costs had none of these
                conn.execute(f"ALTER TABLE sim_accounts ADD COLUMN {column} REAL NOT NULL DEFAULT 0")
        conn.execute(f"INSERT OR IGNORE INTO sim_accounts (account_id, {', '.join(settings)}, sim_date, cash) "
                     f"VALUES ({', '.join('?' * (len(settings) + 3))})",
                     (self.account_id, *settings.values(), sim_date, cash))
        return conn.execute(f"SELECT {', '.join(settings)} FROM sim_accounts WHERE account_id = ?",
                            (self.account_id,)).fetchone()

    def symbols_in_use(self, conn: sqlite3.Connection) -> set[str]:
        """The symbols the account holds or has open orders in."""
        return {symbol for (symbol,) in conn.execute(
            f"SELECT symbol FROM sim_positions WHERE account_id = ?1 UNION SELECT symbol FROM sim_orders "
            f"WHERE account_id = ?1 AND status IN {_OPEN}", (self.account_id,))}

    def sim_date(self, conn: sqlite3.Connection) -> str:
        (day,) = conn.execute("SELECT sim_date FROM sim_accounts WHERE account_id = ?", (self.account_id,)).fetchone()
        return day

    def set_sim_date(self, conn: sqlite3.Connection, day: str) -> None:
        conn.execute("UPDATE sim_accounts SET sim_date = ? WHERE account_id = ?", (day, self.account_id))

    def cash(self, conn: sqlite3.Connection) -> float:
        return conn.execute("SELECT cash FROM sim_accounts WHERE account_id = ?", (self.account_id,)).fetchone()[0]

    def set_cash(self, conn: sqlite3.Connection, cash: float) -> None:
        conn.execute("UPDATE sim_accounts SET cash = ? WHERE account_id = ?", (cash, self.account_id))

    # -- positions -----------------------------------------------------------------------

    def held(self, conn: sqlite3.Connection) -> dict[str, tuple[float, float]]:
        """(quantity, average entry price) by symbol."""
        rows = conn.execute("SELECT symbol, quantity, avg_entry_price FROM sim_positions WHERE account_id = ? "
                            "ORDER BY symbol", (self.account_id,))
        return {symbol: (quantity, avg) for symbol, quantity, avg in rows}

    def move_position(self, conn: sqlite3.Connection, symbol: str, change: float, price: float) -> None:
        """Add ``change`` shares bought (sold, if negative) at ``price`` to the position in ``symbol``."""
        quantity, avg = self.held(conn).get(symbol, (0.0, 0.0))
        new = quantity + change
        if abs(new) <= QUANTITY_TOLERANCE:
            conn.execute("DELETE FROM sim_positions WHERE account_id = ? AND symbol = ?", (self.account_id, symbol))
            return
        if quantity == 0.0 or (quantity > 0) != (new > 0):
            avg = price  # opened, or turned from long to short or back
        elif abs(new) > abs(quantity):
            avg = (quantity * avg + change * price) / new
        conn.execute("INSERT OR REPLACE INTO sim_positions VALUES (?, ?, ?, ?)", (self.account_id, symbol, new, avg))

    # -- orders and fills ----------------------------------------------------------------

    def add_order(self, conn: sqlite3.Connection, symbol: str, side: str, quantity: float, client_order_id: str,
                  session: str, worked: tuple[float, int, int] | None = None) -> None:
        """Store a new order, with the next broker_id of the account; ``worked`` is a child order's
        (limit price, first bar, bars) in the next session (None: market-on-close)."""
        seq = conn.execute("SELECT COALESCE(MAX(seq), 0) + 1 FROM sim_orders WHERE account_id = ?",
                           (self.account_id,)).fetchone()[0]
        conn.execute("INSERT INTO sim_orders (account_id, seq, broker_id, client_order_id, symbol, side, quantity, "
                     "status, submitted_session, limit_price, work_bar, work_bars) "
                     "VALUES (?, ?, ?, ?, ?, ?, ?, 'new', ?, ?, ?, ?)",
                     (self.account_id, seq, f"{self.account_id}-{seq:08d}", client_order_id, symbol, side,
                      float(quantity), session, *(worked or (None, None, None))))

    def open_order_rows(self, conn: sqlite3.Connection, *, on_close: bool = False) -> list[tuple[str, str, str, str, float]]:
        """(broker_id, client_order_id, symbol, side, quantity) of the open orders (the market-on-close
        ones only, with ``on_close``), in submission order."""
        only = "AND work_bar IS NULL" if on_close else ""
        return conn.execute(f"SELECT broker_id, client_order_id, symbol, side, quantity FROM sim_orders "
                            f"WHERE account_id = ? AND status IN {_OPEN} {only} ORDER BY seq", (self.account_id,)).fetchall()

    def worked_order_rows(self, conn: sqlite3.Connection) -> list[tuple]:
        """(broker_id, client_order_id, symbol, side, quantity, limit_price, work_bar, work_bars) of the
        open child orders, by the bar they start in, then in submission order."""
        return conn.execute(f"SELECT broker_id, client_order_id, symbol, side, quantity, limit_price, work_bar, work_bars "
                            f"FROM sim_orders WHERE account_id = ? AND status IN {_OPEN} AND work_bar IS NOT NULL "
                            f"ORDER BY work_bar, seq", (self.account_id,)).fetchall()

    def open_sells(self, conn: sqlite3.Connection, symbol: str) -> float:
        """The shares of ``symbol`` in open sell orders."""
        return conn.execute(f"SELECT COALESCE(SUM(quantity), 0) FROM sim_orders WHERE account_id = ? AND symbol = ? "
                            f"AND side = 'sell' AND status IN {_OPEN}", (self.account_id, symbol)).fetchone()[0]

    def order_status(self, conn: sqlite3.Connection, broker_id: str) -> str | None:
        found = conn.execute("SELECT status FROM sim_orders WHERE account_id = ? AND broker_id = ?",
                             (self.account_id, broker_id)).fetchone()
        return None if found is None else found[0]

    def close_order(self, conn: sqlite3.Connection, broker_id: str, status: str, reason: str) -> None:
        conn.execute("UPDATE sim_orders SET status = ?, reason = ? WHERE account_id = ? AND broker_id = ?",
                     (status, reason, self.account_id, broker_id))

    def book_fill(self, conn: sqlite3.Connection, fill: SimFill, unfilled_reason: str | None = None) -> None:
        """Store ``fill``, apply it to the cash and the position, and mark its order filled, or, when
        part of it did not fill (``unfilled_reason`` says why), expired with what filled."""
        conn.execute("INSERT INTO sim_fills (account_id, broker_id, client_order_id, session, symbol, side, quantity, "
                     "price, commission) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                     (self.account_id, fill.broker_id, fill.client_order_id, f"{fill.session:%Y-%m-%d}", fill.symbol,
                      fill.side, fill.quantity, fill.price, fill.commission))
        self.set_cash(conn, self.cash(conn) + fill.cash_flow)
        self.move_position(conn, fill.symbol, fill.quantity if fill.side == "buy" else -fill.quantity, fill.price)
        if unfilled_reason is None:
            conn.execute("UPDATE sim_orders SET status = 'filled', filled_quantity = quantity, filled_avg_price = ? "
                         "WHERE account_id = ? AND broker_id = ?", (fill.price, self.account_id, fill.broker_id))
            return
        conn.execute("UPDATE sim_orders SET status = 'expired', filled_quantity = ?, filled_avg_price = ?, reason = ? "
                     "WHERE account_id = ? AND broker_id = ?",
                     (fill.quantity, fill.price, unfilled_reason, self.account_id, fill.broker_id))

    def orders(self, conn: sqlite3.Connection, where: str = "") -> list[BrokerOrder]:
        """The account's orders matching the SQL condition ``where`` (``AND ...``), in submission order."""
        rows = conn.execute(f"SELECT {_ORDER_COLUMNS} FROM sim_orders WHERE account_id = ? {where} ORDER BY seq",
                            (self.account_id,)).fetchall()
        return [_order(row) for row in rows]

    def open_orders(self, conn: sqlite3.Connection) -> list[BrokerOrder]:
        return self.orders(conn, f"AND status IN {_OPEN}")

    def order_by_client_id(self, conn: sqlite3.Connection, client_order_id: str) -> BrokerOrder | None:
        row = conn.execute(f"SELECT {_ORDER_COLUMNS} FROM sim_orders WHERE account_id = ? AND client_order_id = ?",
                           (self.account_id, client_order_id)).fetchone()
        return _order(row) if row else None

    def order_reason(self, conn: sqlite3.Connection, client_order_id: str) -> str | None:
        row = conn.execute("SELECT reason FROM sim_orders WHERE account_id = ? AND client_order_id = ?",
                           (self.account_id, client_order_id)).fetchone()
        return row[0] if row else None

    def close_delisted(self, conn: sqlite3.Connection, delisting: SimDelisting) -> None:
        """Record ``delisting``, credit its cash flow and remove the position."""
        conn.execute("INSERT INTO sim_delistings VALUES (?, ?, ?, ?, ?, ?)",
                     (self.account_id, f"{delisting.session:%Y-%m-%d}", delisting.symbol, delisting.quantity,
                      delisting.price, delisting.cash_flow))
        self.set_cash(conn, self.cash(conn) + delisting.cash_flow)
        self.move_position(conn, delisting.symbol, -delisting.quantity, delisting.price)

    def delistings(self, conn: sqlite3.Connection) -> list[SimDelisting]:
        rows = conn.execute("SELECT session, symbol, quantity, price, cash_flow FROM sim_delistings WHERE account_id = ? "
                            "ORDER BY session, symbol", (self.account_id,)).fetchall()
        return [SimDelisting(dt.date.fromisoformat(r[0]), *r[1:]) for r in rows]

    def fills(self, conn: sqlite3.Connection) -> list[SimFill]:
        """Every fill of the account, in the order they were applied to cash."""
        rows = conn.execute("SELECT broker_id, client_order_id, session, symbol, side, quantity, price, commission "
                            "FROM sim_fills WHERE account_id = ? ORDER BY fill_id", (self.account_id,)).fetchall()
        return [SimFill(r[0], r[1], dt.date.fromisoformat(r[2]), *r[3:]) for r in rows]


def exchange_time(session: pd.Timestamp, time: dt.time) -> dt.datetime:
    """``time`` on the day of ``session``, in the exchange's time zone."""
    return dt.datetime.combine(session.date(), time, tzinfo=EXCHANGE_TZ)


def _order(row: tuple) -> BrokerOrder:
    broker_id, client_order_id, symbol, side, quantity, status, filled_quantity, filled_avg_price, session = row
    return BrokerOrder(client_order_id=client_order_id, broker_id=broker_id, symbol=symbol, side=side,
                       quantity=quantity, status=status, filled_quantity=filled_quantity,
                       filled_avg_price=filled_avg_price, submitted_at=exchange_time(pd.Timestamp(session), SESSION_CLOSE))


def cost_model(costs: CostModel | None, cost_bps: float | None, spread_bps: float | None) -> CostModel:
    """The account's cost model, from ``costs`` or the older ``cost_bps`` and ``spread_bps`` keywords."""
    if costs is not None:
        if not isinstance(costs, CostModel):
            raise ValueError(f"costs must be a research_lib.backtest.CostModel (got {type(costs).__name__}); build "
                             "it with CostModel(...) or CostModel.from_backtest_kwargs(config.backtest.model()).")
        if cost_bps is not None or spread_bps is not None:
            raise ValueError("pass the costs either as costs=CostModel(...) or as cost_bps/spread_bps, not both; "
                             "put commission_bps and spread_bps in the CostModel.")
        return costs
    cost_bps, spread_bps = 10.0 if cost_bps is None else cost_bps, 0.0 if spread_bps is None else spread_bps
    for label, value in (("cost_bps", cost_bps), ("spread_bps", spread_bps)):
        if not (math.isfinite(value) and value >= 0):
            raise ValueError(f"{label} must be finite and >= 0 (got {value}).")
    return CostModel(commission_bps=float(cost_bps), spread_bps=float(spread_bps))


def close_frame(prices: pd.DataFrame) -> pd.DataFrame:
    """The ``close`` field of the canonical price frame ``prices``, checked for the sim."""
    if not (isinstance(prices.columns, pd.MultiIndex) and "close" in prices.columns.get_level_values(0)):
        raise ValueError("prices must be the canonical frame, columns (field, symbol) with a 'close' field; "
                         "build it with research_lib.data.load_prices or canonical_frame.")
    close = prices["close"]
    if not (isinstance(close.index, pd.DatetimeIndex) and close.index.is_monotonic_increasing and close.index.is_unique):
        raise ValueError("prices must be indexed by sorted, unique session dates (a DatetimeIndex); "
                         "sort them with prices.sort_index() and drop repeated dates.")
    if close.empty or close.isna().all().all():
        raise ValueError("prices have no close at all; the sim needs at least one session with a close.")
    return close

"""The running totals in a database, counted exactly once per micro-batch.

The same tables in SQLite (the embedded default, one file) and PostgreSQL (`--totals-db
postgresql://...`, through psycopg 3):

- `product_totals(product, total_sales)`: the table the console prints;
- `rejected_counts(reason, records)`: records set aside, by reason;
- `stream_progress`: one row: the checkpoint the totals belong to (the Spark query id in its
  `metadata` file, and its location), the last micro-batch counted, the valid orders counted and
  when that batch was committed;
- sales over time (ventas/sale_windows.py): `window_sales(window_start, product, total_sales)` and
  `window_orders(window_start, orders, late_orders)` per window of `sale_date`, and one row of
  `sales_over_time`: the window length (fixed per database), the newest sale_date counted, and the
  late, undated and future orders since the first batch.

Each micro-batch adds its sums and counts and records its batch id in one transaction. A batch that
Spark runs again after a crash (its id already recorded) changes nothing, so a stop or a kill at any
moment leaves every batch counted once or not at all. Money is exact: `numeric(38,2)` in PostgreSQL;
decimal text in SQLite (`'4203.00'`, never REAL), added up here with Python's Decimal.
"""

from __future__ import annotations

import abc
import contextlib
import decimal
import sqlite3
import threading
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from ventas.config import EXIT_USAGE, UserError, first_line
from ventas.outages import Unavailable
from ventas.sale_windows import WindowSettings, describe, window_name, window_start

POSTGRES_SCHEMES = ("postgresql", "postgres")
# Sums of decimal(38,2) values: exact, or an error; never rounded to Decimal's default 28 digits.
MONEY_CONTEXT = decimal.Context(prec=38, traps=[decimal.Inexact, decimal.Overflow, decimal.InvalidOperation])
CENTS = Decimal("0.01")
NO_BATCH = -1
# Columns added after their table's first version: added to a database created before them.
ADDED_COLUMNS = (("sales_over_time", "future_orders", "BIGINT NOT NULL DEFAULT 0"),)
CONNECT_TIMEOUT_S = 3  # PostgreSQL: then the consumer says it waits (a stop must not wait longer)
BUSY_TIMEOUT_S = 2  # SQLite, held by another writer: then the consumer says it waits


class TotalsDbError(UserError):
    """The totals database refused or failed an operation; one line that says what to do."""


@dataclass(frozen=True)
class WindowCounts:
    """A window's orders, the late ones among them, and its sales per product."""

    orders: int = 0
    late: int = 0
    totals: Mapping[str, Decimal] = field(default_factory=dict)

    def plus(self, other: WindowCounts) -> WindowCounts:
        return WindowCounts(self.orders + other.orders, self.late + other.late, add_money(self.totals, other.totals))


@dataclass(frozen=True)
class BatchCounts:
    """What one micro-batch adds: sales per product, valid orders, rejected records per reason, and,
    with windows, each window's counts by its start, the orders without a usable sale_date and the
    newest sale_date."""

    totals: Mapping[str, Decimal] = field(default_factory=dict)
    orders: int = 0
    rejected: Mapping[str, int] = field(default_factory=dict)
    newest_record_at: datetime | None = None  # the newest Kafka timestamp among the batch's records
    windows: Mapping[datetime, WindowCounts] = field(default_factory=dict)
    undated: int = 0
    newest_sale_at: datetime | None = None
    future: int = 0  # orders whose sale_date is more than --allowed-future ahead of the clock: in no window

    @property
    def late(self) -> int:
        return sum(window.late for window in self.windows.values())


@dataclass(frozen=True)
class StoredTotals:
    """The totals as committed after batch `batch_id` of checkpoint `checkpoint_id` (None: unclaimed)."""

    checkpoint_id: str | None = None
    checkpoint_location: str | None = None
    batch_id: int = NO_BATCH
    totals: Mapping[str, Decimal] = field(default_factory=dict)
    orders: int = 0
    rejected: Mapping[str, int] = field(default_factory=dict)
    committed_at: str | None = None
    late: int = 0  # orders more than --allowed-lateness behind the newest sale_date of the batches before
    undated: int = 0  # orders without a usable sale_date
    newest_sale_at: datetime | None = None
    future: int = 0  # orders whose sale_date was more than --allowed-future ahead of the clock

    @property
    def rejected_total(self) -> int:
        return sum(self.rejected.values())

    def plus(self, batch_id: int, counts: BatchCounts, committed_at: str) -> StoredTotals:
        rejected = dict(self.rejected)
        for reason, records in counts.rejected.items():
            rejected[reason] = rejected.get(reason, 0) + records
        newest = [at for at in (self.newest_sale_at, counts.newest_sale_at) if at is not None]
        return StoredTotals(
            self.checkpoint_id,
            self.checkpoint_location,
            batch_id,
            add_money(self.totals, counts.totals),
            self.orders + counts.orders,
            rejected,
            committed_at,
            self.late + counts.late,
            self.undated + counts.undated,
            max(newest, default=None),
            self.future + counts.future,
        )


@dataclass(frozen=True)
class StoredWindow:
    """A window of sale_date as the database holds it, by its start (UTC)."""

    start: datetime
    counts: WindowCounts


def money_sum(amounts: Iterable[Decimal]) -> Decimal:
    """The exact sum, to the cent, however many digits it takes (Decimal's default context keeps 28)."""
    with decimal.localcontext(decimal.Context(prec=decimal.MAX_PREC)):
        return sum(amounts, Decimal("0.00"))


def add_money(totals: Mapping[str, Decimal], more: Mapping[str, Decimal]) -> dict[str, Decimal]:
    """Sums per key, exact to the cent, or TotalsDbError past decimal(38,2)."""
    added = dict(totals)
    for key, amount in more.items():
        try:
            with decimal.localcontext(MONEY_CONTEXT):
                added[key] = (added.get(key, Decimal("0.00")) + amount).quantize(CENTS)
        except decimal.DecimalException:
            raise TotalsDbError(f"the total of {key!r} would exceed 38 digits") from None
    return added


class TotalsDb(abc.ABC):
    """One database of running totals; its transactions run one at a time, from whichever thread
    (Spark calls the foreachBatch function on a py4j callback thread)."""

    placeholder = "?"
    money_type = "TEXT"
    time_type = "TEXT"
    lock_row = ""
    begin = "BEGIN"
    begin_read = "BEGIN"  # one snapshot for all the reads of a transaction, blocking no writer
    errors: tuple[type[Exception], ...] = ()
    unavailable_errors: tuple[type[Exception], ...] = ()  # the server gone, the file locked: worth a wait

    def __init__(self, display: str) -> None:
        self.display = display  # the database as a user named it, without a password
        self._lock = threading.Lock()
        self._db: Any = None
        self.windows: WindowSettings | None = None  # set by use_windows

    @staticmethod
    def open(target: str) -> TotalsDb:
        """`postgresql://...` or a SQLite file's path; tables created if missing."""
        path = sqlite_path(target)
        if path is None and urlsplit(target).scheme not in POSTGRES_SCHEMES:
            raise TotalsDbError(
                f"--totals-db {target!r}: expected a SQLite file's path or postgresql://USER@HOST:PORT/DATABASE",
                EXIT_USAGE,
            )
        try:
            return SqliteTotals(path) if path else PostgresTotals(target)
        except Unavailable as error:  # at start, a wrong address more likely than an outage: no wait
            raise TotalsDbError(f"the totals database {path or target} is unreachable: {error}") from None

    # ---------------------------------------------------------------- what the consumer calls

    def read(self) -> StoredTotals:
        with self._transaction(read_only=True):
            return self._read()

    def check(self, checkpoint_id: str | None, location: str, committed_batch: int) -> StoredTotals:
        """Refuse, in one line, totals that do not belong to this checkpoint: another checkpoint's
        (`checkpoint_id` None: the checkpoint is new), or a database behind or ahead of it. A database
        one batch ahead is the checkpoint's own after a crash between the two commits: Spark runs that
        batch again, and it is not counted twice."""
        stored = self.read()
        if stored.checkpoint_id is None:
            if committed_batch > NO_BATCH:
                raise TotalsDbError(
                    f"the totals database {self.display} holds no totals, but checkpoint {location} has counted "
                    f"batches 0 to {committed_batch} into another one: point --totals-db at that database, or "
                    f"delete the checkpoint to recount the topic: rm -r {location}"
                )
            return stored
        if stored.checkpoint_id != checkpoint_id:
            raise self._claimed_by_another(stored, location)
        if stored.batch_id not in (committed_batch, committed_batch + 1):
            raise TotalsDbError(
                f"the totals database {self.display} counted batches up to {stored.batch_id}, but checkpoint "
                f"{location} committed batches up to {committed_batch}: restore the database that goes with "
                f"the checkpoint, or recount the topic ({self._reset_hint()}, then rm -r {location})"
            )
        return stored

    def claim(self, checkpoint_id: str, location: str, imported: BatchCounts | None = None) -> StoredTotals:
        """Make these the totals of checkpoint `checkpoint_id` (from `imported`, if given, or zero);
        the checkpoint's own totals as they are when it already owns them."""
        with self._transaction():
            stored = self._read(for_update=True)
            if stored.checkpoint_id == checkpoint_id:
                return stored
            if stored.checkpoint_id is not None:
                raise self._claimed_by_another(stored, location)
            claimed = StoredTotals(checkpoint_id, location, committed_at=_now())
            if imported:
                claimed = claimed.plus(NO_BATCH, imported, _now())
            self._write(claimed, stored, imported.windows if imported else {})
            return claimed

    def commit(self, checkpoint_id: str, batch_id: int, counts: BatchCounts) -> tuple[StoredTotals, bool]:
        """Add batch `batch_id` to the totals, once: (the totals committed, whether the batch had
        been counted already)."""
        with self._transaction():
            stored = self._read(for_update=True)
            if stored.checkpoint_id != checkpoint_id:
                raise self._claimed_by_another(stored, "this consumer's checkpoint")
            if batch_id <= stored.batch_id:
                return stored, True
            if batch_id != stored.batch_id + 1:
                raise TotalsDbError(
                    f"the totals database {self.display} counted batches up to {stored.batch_id}; batch "
                    f"{batch_id} does not follow it: was the database restored from an older copy?"
                )
            committed = stored.plus(batch_id, counts, _now())
            self._write(committed, stored, counts.windows)
            return committed, False

    def use_windows(self, windows: WindowSettings) -> None:
        """Total sales per window of `windows.length_s` (0: none) from now on; a database that was
        given another length is refused in one line: its windows could not be added to."""
        with self._transaction():
            fixed = self._window_seconds()
            if fixed is None:
                self._connection().execute(
                    self._sql(
                        "INSERT INTO sales_over_time (one_row, window_seconds, late_orders, undated_orders) "
                        "VALUES (1, ?, 0, 0)"
                    ),
                    (windows.length_s,),
                )
            elif fixed != windows.length_s:
                raise TotalsDbError(
                    f"the totals database {self.display} totals sales per {_window_name(fixed)}, not per "
                    f"{_window_name(windows.length_s)}: run with --window '{describe(fixed)}', or give this "
                    f"consumer a --totals-db of its own, or recount into this one ({self._reset_hint()})",
                    EXIT_USAGE,
                )
        self.windows = windows

    def window_length(self) -> int | None:
        """The window length in seconds this database totals sales in (0: none; None: never set)."""
        with self._transaction(read_only=True):
            return self._window_seconds()

    def windows_since(self, start: datetime) -> list[StoredWindow]:
        """The windows from `start` on, oldest first."""
        with self._transaction(read_only=True):
            return self._windows("WHERE window_start >= ?", (self._time(_iso(start)),))

    def last_windows(self, count: int) -> list[StoredWindow]:
        """The `count` newest windows held, oldest first."""
        with self._transaction(read_only=True):
            cursor = self._connection().cursor()
            cursor.execute(
                self._sql("SELECT window_start FROM window_orders ORDER BY window_start DESC LIMIT ?"), (count,)
            )
            starts = [row[0] for row in cursor.fetchall()]
            return self._windows("WHERE window_start >= ?", (starts[-1],)) if starts else []

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                with contextlib.suppress(Exception):
                    self._db.close()

    # ---------------------------------------------------------------- SQL, the same in both dialects

    def _schema(self) -> list[str]:
        return [
            "CREATE TABLE IF NOT EXISTS stream_progress ("
            " one_row INTEGER PRIMARY KEY CHECK (one_row = 1),"
            " checkpoint_id TEXT NOT NULL,"
            " checkpoint_location TEXT NOT NULL,"
            " batch_id BIGINT NOT NULL,"
            " orders BIGINT NOT NULL,"
            f" committed_at {self.time_type} NOT NULL)",
            "CREATE TABLE IF NOT EXISTS product_totals ("
            f" product TEXT PRIMARY KEY, total_sales {self.money_type} NOT NULL)",
            "CREATE TABLE IF NOT EXISTS rejected_counts (reason TEXT PRIMARY KEY, records BIGINT NOT NULL)",
            "CREATE TABLE IF NOT EXISTS sales_over_time ("
            " one_row INTEGER PRIMARY KEY CHECK (one_row = 1),"
            " window_seconds BIGINT NOT NULL,"
            f" newest_sale_date {self.time_type},"
            " late_orders BIGINT NOT NULL,"
            " undated_orders BIGINT NOT NULL)",
            "CREATE TABLE IF NOT EXISTS window_orders ("
            f" window_start {self.time_type} PRIMARY KEY, orders BIGINT NOT NULL, late_orders BIGINT NOT NULL)",
            "CREATE TABLE IF NOT EXISTS window_sales ("
            f" window_start {self.time_type} NOT NULL, product TEXT NOT NULL, total_sales {self.money_type} NOT NULL,"
            " PRIMARY KEY (window_start, product))",
        ]

    def _sql(self, statement: str) -> str:
        return statement.replace("?", self.placeholder)

    def _read(self, for_update: bool = False) -> StoredTotals:
        cursor = self._connection().cursor()
        cursor.execute(
            "SELECT checkpoint_id, checkpoint_location, batch_id, orders, committed_at FROM stream_progress"
            + (self.lock_row if for_update else "")
        )
        progress = cursor.fetchone()
        if progress is None:
            return StoredTotals()
        cursor.execute("SELECT product, total_sales FROM product_totals")
        totals = {product: Decimal(total) for product, total in cursor.fetchall()}
        cursor.execute("SELECT reason, records FROM rejected_counts")
        rejected = dict(cursor.fetchall())
        cursor.execute("SELECT late_orders, undated_orders, future_orders, newest_sale_date FROM sales_over_time")
        late, undated, future, newest = cursor.fetchone() or (0, 0, 0, None)
        checkpoint_id, location, batch_id, orders, committed_at = progress
        when = committed_at if isinstance(committed_at, str) else _iso(committed_at)
        newest_sale_at = None if newest is None else _utc(newest)
        return StoredTotals(
            checkpoint_id, location, batch_id, totals, orders, rejected, when, late, undated, newest_sale_at, future
        )

    def _window_seconds(self) -> int | None:
        cursor = self._connection().cursor()
        cursor.execute("SELECT window_seconds FROM sales_over_time")
        fixed = cursor.fetchone()
        return None if fixed is None else fixed[0]

    def _windows(self, where: str, parameters: tuple) -> list[StoredWindow]:
        cursor = self._connection().cursor()
        cursor.execute(self._sql(f"SELECT window_start, orders, late_orders FROM window_orders {where}"), parameters)
        orders = {_utc(start): (count, late) for start, count, late in cursor.fetchall()}
        cursor.execute(self._sql(f"SELECT window_start, product, total_sales FROM window_sales {where}"), parameters)
        sales: dict[datetime, dict[str, Decimal]] = {start: {} for start in orders}
        for start, product, total in cursor.fetchall():
            sales.setdefault(_utc(start), {})[product] = Decimal(total)
        return [StoredWindow(start, WindowCounts(*orders.get(start, (0, 0)), sales[start])) for start in sorted(sales)]

    def _write_windows(self, committed: StoredTotals, windows: Mapping[datetime, WindowCounts]) -> None:
        """Add a batch's windows to those held, and prune the windows older than the retention."""
        cursor, newest = self._connection().cursor(), committed.newest_sale_at
        cursor.execute(
            self._sql(
                "UPDATE sales_over_time SET newest_sale_date = ?, late_orders = ?, undated_orders = ?,"
                " future_orders = ?"
            ),
            (newest and self._time(_iso(newest)), committed.late, committed.undated, committed.future),
        )
        if windows:
            keys = tuple(self._time(_iso(start)) for start in windows)
            held = {
                w.start: w.counts for w in self._windows(f"WHERE window_start IN ({', '.join('?' * len(keys))})", keys)
            }
            orders, sales = [], []
            for start, counts in windows.items():
                before = held.get(start, WindowCounts())
                after = before.plus(counts)
                key = self._time(_iso(start))
                orders.append((key, after.orders, after.late))
                sales += [(key, p, self._money(t)) for p, t in after.totals.items() if before.totals.get(p) != t]
            cursor.executemany(
                self._sql(
                    "INSERT INTO window_orders VALUES (?, ?, ?) ON CONFLICT (window_start) "
                    "DO UPDATE SET orders = excluded.orders, late_orders = excluded.late_orders"
                ),
                orders,
            )
            if sales:
                cursor.executemany(
                    self._sql(
                        "INSERT INTO window_sales VALUES (?, ?, ?) ON CONFLICT (window_start, product) "
                        "DO UPDATE SET total_sales = excluded.total_sales"
                    ),
                    sales,
                )
        if self.windows and self.windows.retention_s and committed.newest_sale_at:
            oldest = window_start(
                committed.newest_sale_at - timedelta(seconds=self.windows.retention_s), self.windows.length_s
            )
            for table in ("window_orders", "window_sales"):
                cursor.execute(self._sql(f"DELETE FROM {table} WHERE window_start < ?"), (self._time(_iso(oldest)),))

    def _write(self, committed: StoredTotals, before: StoredTotals, windows: Mapping[datetime, WindowCounts]) -> None:
        """Store `committed` where `before` was, with the batch's `windows`: the progress rows, and the
        rows whose values changed."""
        cursor = self._connection().cursor()
        when = self._time(committed.committed_at)
        if before.checkpoint_id is None:  # a claim: whatever an unclaimed database held is not counted
            for table in ("product_totals", "rejected_counts", "window_orders", "window_sales"):
                cursor.execute(f"DELETE FROM {table}")
            cursor.execute(
                self._sql("INSERT INTO stream_progress VALUES (1, ?, ?, ?, ?, ?)"),
                (committed.checkpoint_id, committed.checkpoint_location, committed.batch_id, committed.orders, when),
            )
            before = StoredTotals()
        else:
            cursor.execute(
                self._sql("UPDATE stream_progress SET batch_id = ?, orders = ?, committed_at = ?"),
                (committed.batch_id, committed.orders, when),
            )
        upsert = "INSERT INTO {0} VALUES (?, ?) ON CONFLICT ({1}) DO UPDATE SET {2} = excluded.{2}"
        totals = [(p, self._money(t)) for p, t in committed.totals.items() if before.totals.get(p) != t]
        rejected = [(r, n) for r, n in committed.rejected.items() if before.rejected.get(r) != n]
        if totals:
            cursor.executemany(self._sql(upsert.format("product_totals", "product", "total_sales")), totals)
        if rejected:
            cursor.executemany(self._sql(upsert.format("rejected_counts", "reason", "records")), rejected)
        if self.windows and self.windows.length_s:
            self._write_windows(committed, windows)

    def _claimed_by_another(self, stored: StoredTotals, location: str) -> TotalsDbError:
        if stored.checkpoint_location == location:  # the checkpoint was deleted (to recount) or replaced
            whose = f"an earlier checkpoint at {location} (query id {stored.checkpoint_id}), not of the one there now"
        else:
            whose = (
                f"another checkpoint ({stored.checkpoint_location}, query id {stored.checkpoint_id}), not of {location}"
            )
        return TotalsDbError(
            f"the totals database {self.display} holds the totals of {whose}: give this consumer a --totals-db of "
            f"its own, or recount into this one ({self._reset_hint()})"
        )

    @contextlib.contextmanager
    def _transaction(self, read_only: bool = False) -> Iterator[None]:
        """BEGIN ... COMMIT, or ROLLBACK when anything fails; the database's errors in one line."""
        with self._lock:
            try:
                connection = self._connection()
                connection.execute(self.begin_read if read_only else self.begin)
                yield
                connection.execute("COMMIT")
            except BaseException as error:
                if self._db is not None:
                    with contextlib.suppress(Exception):
                        self._db.execute("ROLLBACK")
                if isinstance(error, self.unavailable_errors):
                    raise Unavailable(first_line(error)) from None
                if isinstance(error, self.errors):
                    raise TotalsDbError(f"the totals database {self.display} failed: {first_line(error)}") from None
                raise

    def _create_tables(self) -> None:
        with self._transaction():
            for statement in self._schema():
                self._connection().execute(statement)
            for table, column, definition in ADDED_COLUMNS:
                cursor = self._connection().execute(f"SELECT * FROM {table} LIMIT 0")
                if column not in (described[0] for described in cursor.description):
                    self._connection().execute(f"ALTER TABLE {table} ADD COLUMN {column} {definition}")

    @abc.abstractmethod
    def _connection(self) -> Any:
        """An open connection in autocommit mode: transactions are the explicit BEGIN ... COMMIT above."""

    @abc.abstractmethod
    def _money(self, amount: Decimal) -> Any:
        """A total as the database stores it."""

    @abc.abstractmethod
    def _time(self, iso: str | None) -> Any:
        """A UTC time (ISO 8601) as the database stores it."""

    @abc.abstractmethod
    def _reset_hint(self) -> str:
        """How a user empties this database, to recount into it."""


class SqliteTotals(TotalsDb):
    """A SQLite file in WAL mode: a reader (the sqlite3 shell, a BI tool) never blocks the consumer's
    commits, nor they the reader. Each commit is synced (synchronous=FULL): Spark's own commit of the
    batch follows it, and must never find the database behind it after a power loss."""

    begin = "BEGIN IMMEDIATE"  # the write lock at once: a second writer waits here, not halfway
    errors = (sqlite3.Error,)
    unavailable_errors = (sqlite3.OperationalError,)  # locked by another writer, a full disk

    def __init__(self, path: Path) -> None:
        super().__init__(str(path))
        self.path = path
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            # check_same_thread off: Spark calls foreachBatch on a py4j thread; _lock serializes the uses.
            self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=BUSY_TIMEOUT_S)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
        except (OSError, sqlite3.Error) as error:
            raise TotalsDbError(
                f"--totals-db {path}: {getattr(error, 'strerror', None) or error}", EXIT_USAGE
            ) from None
        self._create_tables()

    def _connection(self) -> sqlite3.Connection:
        return self._db

    def _money(self, amount: Decimal) -> str:
        return f"{amount:f}"

    def _time(self, iso: str | None) -> str | None:
        return iso

    def _reset_hint(self) -> str:
        return f"rm {self.path} {self.path}-wal {self.path}-shm"


class PostgresTotals(TotalsDb):
    """A PostgreSQL database; the password comes from PGPASSWORD or a password file (~/.pgpass,
    PGPASSFILE), as for psql, never from the URL, which shows in `ps` and in logs."""

    placeholder = "%s"
    money_type = "NUMERIC(38,2)"
    time_type = "TIMESTAMPTZ"
    lock_row = " FOR UPDATE"  # a second consumer's claim or batch waits for this transaction
    begin = "BEGIN"
    begin_read = "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY"

    def __init__(self, url: str) -> None:
        if urlsplit(url).password is not None:
            raise TotalsDbError(
                "--totals-db: a password in the URL shows in `ps` and in logs; put it in PGPASSWORD or a "
                "password file (~/.pgpass or PGPASSFILE)",
                EXIT_USAGE,
            )
        try:
            import psycopg
        except ImportError:
            raise TotalsDbError("--totals-db postgresql://... needs psycopg: pip install -r requirements.txt") from None
        super().__init__(url)
        self.url, self._psycopg = url, psycopg
        self.errors, self.unavailable_errors = (psycopg.Error,), (psycopg.OperationalError,)
        self._create_tables()

    def _connection(self) -> Any:
        if self._db is None or self._db.closed:
            try:
                self._db = self._psycopg.connect(
                    self.url,
                    autocommit=True,
                    connect_timeout=CONNECT_TIMEOUT_S,
                    application_name="ventas-consumer",
                )
            except self._psycopg.Error as error:
                raise Unavailable(first_line(error)) from None
        return self._db

    def _money(self, amount: Decimal) -> Decimal:
        return amount

    def _time(self, iso: str | None) -> datetime | None:
        return datetime.fromisoformat(iso) if iso else None

    def _reset_hint(self) -> str:
        tables = "stream_progress, product_totals, rejected_counts, sales_over_time, window_orders, window_sales"
        return f"psql {self.url} -c 'DROP TABLE {tables}'"


def sqlite_path(target: str) -> Path | None:
    """The SQLite file a --totals-db names (a path, or sqlite:PATH); None when it names none."""
    parts = urlsplit(target)
    if parts.scheme == "sqlite":
        return Path(parts.path).expanduser()
    if len(parts.scheme) > 1:  # a one-letter "scheme" is a Windows drive
        return None
    return Path(target).expanduser()


def _window_name(length_s: int) -> str:
    return window_name(length_s) if length_s else "no window (--window 0)"


def _utc(moment: str | datetime) -> datetime:
    """A time as read from either database (ISO text, or an aware datetime) in UTC."""
    return (datetime.fromisoformat(moment) if isinstance(moment, str) else moment).astimezone(UTC)


def _now() -> str:
    return _iso(datetime.now(UTC))


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds")

"""ventas/totals_db.py on a real SQLite file and a real PostgreSQL server: each batch counted once,
money exact, another checkpoint's totals refused in one line."""

from __future__ import annotations

import contextlib
import sqlite3
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from ventas.config import EXIT_USAGE
from ventas.sale_windows import WindowSettings
from ventas.totals_db import BatchCounts, StoredWindow, TotalsDb, TotalsDbError, WindowCounts, add_money

LARGEST = Decimal("2" + "4" * 35 + ".99")  # four of them still fit numeric(38,2)
FOUR_TIMES_LARGEST = Decimal("9" + "7" * 34 + "9.96")  # written out: Decimal multiplies to 28 digits


@pytest.fixture
def db(totals_target: str):
    with contextlib.closing(TotalsDb.open(totals_target)) as opened:
        yield opened


def batch(**totals: str) -> BatchCounts:
    return BatchCounts({name: Decimal(total) for name, total in totals.items()}, len(totals), {"bad": 1})


def test_each_batch_is_counted_once_whatever_runs_again(db: TotalsDb) -> None:
    assert db.check(None, "/cp", -1).checkpoint_id is None
    assert db.claim("q1", "/cp").batch_id == -1
    first, replayed = db.commit("q1", 0, batch(Laptop="2000.00", Mouse="9.99"))
    assert not replayed
    assert first.totals == {"Laptop": Decimal("2000.00"), "Mouse": Decimal("9.99")}
    # Spark runs batch 0 again after a crash between the database's commit and its own: no change.
    assert db.commit("q1", 0, batch(Laptop="2000.00", Mouse="9.99")) == (first, True)
    second, _ = db.commit("q1", 1, batch(Laptop="0.01"))
    assert second.totals == {"Laptop": Decimal("2000.01"), "Mouse": Decimal("9.99")}
    assert (second.batch_id, second.orders, second.rejected) == (1, 3, {"bad": 2})
    assert db.read() == second
    assert db.claim("q1", "/cp") == second  # a restart of the same checkpoint changes nothing
    assert db.check("q1", "/cp", 1) == second
    assert db.check("q1", "/cp", 0) == second  # the crash window: Spark committed batch 0 only


def test_money_is_exact_to_38_digits(db: TotalsDb) -> None:
    db.claim("q1", "/cp")
    for batch_id in range(4):
        stored, _ = db.commit("q1", batch_id, BatchCounts({"Yacht": LARGEST}, 1))
    assert stored.totals["Yacht"] == FOUR_TIMES_LARGEST
    assert TotalsDb.open(db.display).read().totals == {"Yacht": FOUR_TIMES_LARGEST}
    with pytest.raises(TotalsDbError):  # one more cent would not fit numeric(38,2): an error, never rounded
        db.commit("q1", 4, BatchCounts({"Yacht": Decimal("1" + "0" * 35 + ".00")}, 1))


def test_sqlite_keeps_money_as_decimal_text(tmp_path: Path) -> None:
    file = tmp_path / "totals.sqlite3"
    db = TotalsDb.open(str(file))
    db.claim("q1", "/cp")
    db.commit("q1", 0, batch(Laptop="2000.10"))
    with contextlib.closing(sqlite3.connect(file)) as shell:
        assert shell.execute("SELECT product, total_sales, typeof(total_sales) FROM product_totals").fetchall() == [
            ("Laptop", "2000.10", "text")
        ]
        assert shell.execute("PRAGMA journal_mode").fetchone() == ("wal",)


def test_a_reader_in_a_transaction_does_not_block_a_commit(tmp_path: Path) -> None:
    """WAL: a sqlite3 shell or a BI tool inside a read transaction leaves the consumer's commits be."""
    file = tmp_path / "totals.sqlite3"
    db = TotalsDb.open(str(file))
    db.claim("q1", "/cp")
    with contextlib.closing(sqlite3.connect(file, isolation_level=None, timeout=0.1)) as reader:
        reader.execute("BEGIN")
        reader.execute("SELECT * FROM product_totals").fetchall()
        db.commit("q1", 0, batch(Laptop="1.00"))
        assert reader.execute("SELECT count(*) FROM product_totals").fetchone() == (0,)  # its own snapshot
        reader.execute("COMMIT")
        assert reader.execute("SELECT total_sales FROM product_totals").fetchone() == ("1.00",)


def test_another_checkpoints_totals_are_refused_in_one_line(db: TotalsDb) -> None:
    db.claim("q1", "/cp")
    db.commit("q1", 0, batch(Laptop="1.00"))
    for refused in (
        lambda: db.check(None, "/new", -1),  # the checkpoint was deleted to recount
        lambda: db.check("q2", "/other", 5),
        lambda: db.claim("q2", "/other"),
        lambda: db.commit("q2", 1, batch(Laptop="1.00")),
    ):
        with pytest.raises(TotalsDbError) as error:
            refused()
        message = str(error.value)
        assert "holds the totals of another checkpoint (/cp, query id q1)" in message
        assert ("rm " if db.display.endswith("sqlite3") else "DROP TABLE") in message
        assert "\n" not in message
    assert db.read().totals == {"Laptop": Decimal("1.00")}


def test_a_database_out_of_step_with_its_checkpoint_is_refused(db: TotalsDb) -> None:
    db.claim("q1", "/cp")
    db.commit("q1", 0, batch(Laptop="1.00"))
    with pytest.raises(TotalsDbError, match="counted batches up to 0, but checkpoint /cp committed batches up to 3"):
        db.check("q1", "/cp", 3)
    with pytest.raises(TotalsDbError, match="batch 2 does not follow it"):
        db.commit("q1", 2, batch(Laptop="1.00"))


def test_an_unclaimed_database_for_a_checkpoint_that_counted_elsewhere_is_refused(db: TotalsDb) -> None:
    with pytest.raises(TotalsDbError, match="holds no totals, but checkpoint /cp has counted batches 0 to 4"):
        db.check("q1", "/cp", 4)


def test_an_import_becomes_the_checkpoints_starting_totals(db: TotalsDb) -> None:
    stored = db.claim("q1", "/cp", BatchCounts({"Laptop": Decimal("5.00")}, 7, {"bad": 2}))
    assert (stored.batch_id, stored.totals, stored.orders, stored.rejected) == (
        -1,
        {"Laptop": Decimal("5.00")},
        7,
        {"bad": 2},
    )
    assert db.commit("q1", 0, batch(Laptop="1.00"))[0].totals == {"Laptop": Decimal("6.00")}


@pytest.mark.parametrize(
    ("totals_target", "message"),
    [
        ("postgresql://ventas:secret@127.0.0.1/ventas", "a password in the URL shows in `ps`"),
        ("mysql://127.0.0.1/ventas", "expected a SQLite file's path or postgresql://"),
        ("/proc/no/such/dir/totals.sqlite3", "--totals-db /proc/no/such/dir/totals.sqlite3: "),
    ],
)
def test_a_bad_totals_db_is_a_usage_error(totals_target: str, message: str) -> None:
    with pytest.raises(TotalsDbError) as error:
        TotalsDb.open(totals_target)
    assert message in str(error.value) and error.value.exit_code == EXIT_USAGE


def test_an_unreachable_postgresql_is_one_line() -> None:
    from ventas.lab.ports import free_port

    with pytest.raises(TotalsDbError) as error:
        TotalsDb.open(f"postgresql://ventas@127.0.0.1:{free_port()}/ventas")
    assert str(error.value).startswith("the totals database postgresql://ventas@127.0.0.1:")
    assert " is unreachable: " in str(error.value) and "\n" not in str(error.value)


MINUTE = WindowSettings(length_s=60, allowed_lateness_s=120, retention_s=3600, allowed_future_s=86400)


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def windowed(orders_at: dict[str, tuple[int, int, dict[str, str]]], undated: int = 0, future: int = 0) -> BatchCounts:
    windows = {
        at(start): WindowCounts(n, late, {p: Decimal(t) for p, t in sales.items()})
        for start, (n, late, sales) in orders_at.items()
    }
    totals = {}
    for window in windows.values():
        totals = add_money(totals, window.totals)
    newest = max(windows) + timedelta(seconds=59) if windows else None
    orders = sum(w.orders for w in windows.values()) + undated + future
    return BatchCounts(totals, orders, {}, None, windows, undated, newest, future)


def test_windows_are_added_to_in_the_batchs_transaction_once(db: TotalsDb) -> None:
    db.use_windows(MINUTE)
    db.claim("q1", "/cp")
    db.commit("q1", 0, windowed({"2025-05-12T15:33:00": (2, 0, {"Laptop": "2000.00", "Mouse": "0.10"})}, undated=1))
    second = windowed({"2025-05-12T15:33:00": (1, 1, {"Mouse": "0.20"}), "2025-05-12T15:34:00": (1, 0, {})}, future=2)
    db.commit("q1", 1, second)
    stored, replayed = db.commit("q1", 1, second)

    assert replayed and (stored.late, stored.undated, stored.future) == (1, 1, 2)
    assert stored.newest_sale_at == at("2025-05-12T15:34:59")
    assert stored.totals == {"Laptop": Decimal("2000.00"), "Mouse": Decimal("0.30")}
    assert db.windows_since(at("2025-05-12T15:00:00")) == [
        StoredWindow(
            at("2025-05-12T15:33:00"), WindowCounts(3, 1, {"Laptop": Decimal("2000.00"), "Mouse": Decimal("0.30")})
        ),
        StoredWindow(at("2025-05-12T15:34:00"), WindowCounts(1, 0, {})),
    ]
    assert [w.start for w in db.last_windows(1)] == [at("2025-05-12T15:34:00")]
    assert db.windows_since(at("2025-05-12T15:34:00")) == db.last_windows(1)


def test_windows_older_than_the_retention_are_pruned(db: TotalsDb) -> None:
    db.use_windows(MINUTE)
    db.claim("q1", "/cp")
    db.commit("q1", 0, windowed({"2025-05-12T14:00:00": (1, 0, {"Laptop": "1.00"})}))
    db.commit("q1", 1, windowed({"2025-05-12T15:00:00": (1, 0, {"Laptop": "1.00"})}))
    assert [w.start for w in db.last_windows(10)] == [at("2025-05-12T14:00:00"), at("2025-05-12T15:00:00")]
    db.commit("q1", 2, windowed({"2025-05-12T15:01:00": (1, 0, {"Laptop": "1.00"})}))
    assert [w.start for w in db.last_windows(10)] == [at("2025-05-12T15:00:00"), at("2025-05-12T15:01:00")]
    assert db.read().totals == {"Laptop": Decimal("3.00")}  # the product totals keep everything


def test_the_window_length_is_fixed_per_database(totals_target: str) -> None:
    with contextlib.closing(TotalsDb.open(totals_target)) as first:
        assert first.window_length() is None
        first.use_windows(MINUTE)
    with contextlib.closing(TotalsDb.open(totals_target)) as again:
        again.use_windows(MINUTE)
        assert again.window_length() == 60
        for other, named in ((300, "5-minute window"), (0, "no window")):
            with pytest.raises(TotalsDbError, match=f"per 1-minute window, not per {named}") as refused:
                again.use_windows(WindowSettings(other, 120, 3600, 86400))
            assert "--window '1 minute'" in str(refused.value) and "\n" not in str(refused.value)
            assert refused.value.exit_code == EXIT_USAGE


def test_a_claim_starts_the_windows_over(db: TotalsDb) -> None:
    db.use_windows(MINUTE)
    db.claim("q1", "/cp")
    db.commit("q1", 0, windowed({"2025-05-12T15:33:00": (1, 1, {"Laptop": "1.00"})}, undated=1, future=1))
    with contextlib.closing(TotalsDb.open(db.display)) as reopened:
        reopened._connection().execute("DELETE FROM stream_progress")  # unclaimed, as after a recount
        reopened.use_windows(MINUTE)
        claimed = reopened.claim("q2", "/cp2")
        assert (claimed.late, claimed.undated, claimed.future, claimed.newest_sale_at) == (0, 0, 0, None)
        assert reopened.last_windows(10) == []


def test_a_database_of_an_earlier_version_gets_the_future_orders_column(db: TotalsDb) -> None:
    db.use_windows(MINUTE)
    db.claim("q1", "/cp")
    db.commit("q1", 0, windowed({"2025-05-12T15:33:00": (1, 0, {"Laptop": "1.00"})}))
    db._connection().execute("ALTER TABLE sales_over_time DROP COLUMN future_orders")  # as they created it
    with contextlib.closing(TotalsDb.open(db.display)) as upgraded:
        assert upgraded.read().future == 0
        upgraded.use_windows(MINUTE)
        stored, _ = upgraded.commit("q1", 1, windowed({}, future=3))
        assert (stored.future, stored.orders, upgraded.read().future) == (3, 4, 3)


def test_the_default_totals_db_follows_the_checkpoint(tmp_path: Path) -> None:
    from ventas.config import STATE_HOME
    from ventas.consumer_settings import default_checkpoint_location, default_totals_db

    assert default_totals_db("t", default_checkpoint_location("t")) == str(STATE_HOME / "totals" / "t.sqlite3")
    assert default_totals_db("t", str(tmp_path / "c")) == str(tmp_path / "c" / "totals.sqlite3")
    remote = [default_totals_db("t", f"s3a://bucket/{name}") for name in ("a", "b")]
    assert remote[0] != remote[1] and all(path.startswith(str(STATE_HOME / "totals" / "t-")) for path in remote)

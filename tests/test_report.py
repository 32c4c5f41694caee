"""`python -m ventas.report` on databases the consumer's TotalsDb API wrote, in SQLite and PostgreSQL:
the last windows of sale_date cell by cell, against the sqlite3 shell's own reading of the same file,
one product's sales, the zone the starts are shown in, and every refusal in one line; and the table
layout it shares with the console."""

from __future__ import annotations

import contextlib
import sqlite3
import subprocess
import sys
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from schemas import SALE_DATE_STRFTIME
from ventas.lab.ports import free_port
from ventas.lab.processes import ROOT, pipeline_env
from ventas.report import main
from ventas.sale_windows import WindowSettings
from ventas.table import format_rows, format_table
from ventas.totals_db import BatchCounts, TotalsDb, WindowCounts

FIRST = datetime(2025, 5, 12, 13, 31, tzinfo=UTC)
MINUTE = timedelta(minutes=1)
LARGEST = Decimal("2" + "4" * 35 + ".99")  # 38 digits, as numeric(38,2) holds; five add up to 39
# 12 windows, one with nothing but late orders and one without orders: more than --last's default 10.
TWELVE = {
    FIRST + i * MINUTE: WindowCounts(
        orders=i + 1,
        late=i % 3,
        totals={"Laptop": Decimal("2000.00") * (i + 1), "Mouse": Decimal("9.99")} if i % 2 else {"Mouse": Decimal(i)},
    )
    for i in range(12)
}


@pytest.fixture(autouse=True)
def no_pipeline_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """The report's flags default to the environment: a developer's own settings stay out of the tests."""
    for name in ("TOTALS_DB", "KAFKA_TOPIC", "SALE_DATE_ZONE", "LOG_LEVEL", "XDG_STATE_HOME"):
        monkeypatch.delenv(name, raising=False)


@contextlib.contextmanager
def consumer_db(totals_target: str, window_s: int = 60) -> Iterator[TotalsDb]:
    """A database as the consumer leaves it at its start: windows of `window_s`, claimed by its checkpoint."""
    with contextlib.closing(TotalsDb.open(totals_target)) as db:
        db.use_windows(WindowSettings(window_s, 120, 0, 86400))  # retention 0: no window pruned
        db.claim("q1", "/cp")
        yield db


def commit(db: TotalsDb, batch_id: int, windows: Mapping[datetime, WindowCounts]) -> None:
    """A batch as the consumer commits it: its windows, and their sums in the running totals."""
    totals: dict[str, Decimal] = {}
    for counts in windows.values():
        for product, amount in counts.totals.items():
            totals[product] = totals.get(product, Decimal("0.00")) + amount
    orders = sum(counts.orders for counts in windows.values())
    db.commit("q1", batch_id, BatchCounts(totals, orders, windows=windows, newest_sale_at=max(windows)))


def report(capsys: pytest.CaptureFixture[str], *args: str) -> list[str]:
    main(list(args))
    return capsys.readouterr().out.splitlines()


def run_report(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "ventas.report", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=pipeline_env(env),
        timeout=120,
    )


def cells(lines: list[str]) -> list[list[str]]:
    """The table under the title, cell by cell: the header first, then each row; its rules checked."""
    rule = lines[1]
    assert lines[3] == rule == lines[-1] and set(rule) == {"+", "-"}
    return [[cell.rstrip() for cell in line.split("|")[1:-1]] for line in [lines[2], *lines[4:-1]]]


def test_the_report_shows_each_window_oldest_first(totals_target: str, capsys: pytest.CaptureFixture[str]) -> None:
    with consumer_db(totals_target) as db:
        commit(
            db,
            0,
            {
                FIRST: WindowCounts(3, 0, {"Laptop": Decimal("2000.00"), "Mouse": Decimal("9.99")}),
                FIRST + MINUTE: WindowCounts(1, 1, {"Smartwatch": Decimal("4203.00")}),
            },
        )
        # A later batch adds to a window already held, and opens one after a minute without orders.
        commit(
            db,
            1,
            {
                FIRST + MINUTE: WindowCounts(1, 0, {"Laptop": Decimal("0.01")}),
                FIRST + 3 * MINUTE: WindowCounts(1, 0, {"ノートパソコン": Decimal("100.50")}),
            },
        )
    assert report(capsys, "--totals-db", totals_target, "--sale-date-zone", "Europe/Madrid") == [
        "Sales per 1-minute window of sale_date (Europe/Madrid)",
        "+-------------------+------+----+-----------+",
        "|Window start       |Orders|Late|Total Sales|",
        "+-------------------+------+----+-----------+",
        "|12/05/2025 15:31:00|3     |0   |2009.99    |",
        "|12/05/2025 15:32:00|2     |1   |4203.01    |",
        "|12/05/2025 15:34:00|1     |0   |100.50     |",
        "+-------------------+------+----+-----------+",
    ]


def test_the_last_windows_are_the_newest_and_their_totals_exact(
    totals_target: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with consumer_db(totals_target) as db:
        commit(db, 0, TWELVE)
        yachts = dict.fromkeys(["Yacht", "Jet", "Island", "Rocket", "Satellite"], LARGEST)
        commit(db, 1, {FIRST + 11 * MINUTE: WindowCounts(2, 2, yachts)})
    table = cells(report(capsys, "--totals-db", totals_target, "--sale-date-zone", "UTC"))
    assert table[0] == ["Window start", "Orders", "Late", "Total Sales"]
    expected = [
        [
            start.strftime(SALE_DATE_STRFTIME),
            str(counts.orders),
            str(counts.late),
            f"{sum(counts.totals.values(), Decimal('0.00')):f}",
        ]
        for start, counts in list(TWELVE.items())[2:]
    ]
    assert expected[-1] == ["12/05/2025 13:42:00", "12", "2", "24009.99"]
    # Five times LARGEST, 39 digits, added exactly: Decimal's default context would round it to 28.
    expected[-1][1:] = ["14", "4", "1222222222222222222222222222222246234.94"]
    assert table[1:] == expected
    in_utc = ("--totals-db", totals_target, "--sale-date-zone", "UTC")
    assert cells(report(capsys, *in_utc, "--last", "3"))[1:] == expected[-3:]
    assert cells(report(capsys, *in_utc, "--last", "50"))[1:][2:] == expected


def test_the_report_agrees_with_the_sqlite3_shell(tmp_path: Path) -> None:
    file = tmp_path / "totals.sqlite3"
    with consumer_db(str(file)) as db:
        commit(db, 0, TWELVE)
        commit(db, 1, {FIRST + 5 * MINUTE: WindowCounts(1, 1, {"Mouse": Decimal("0.01")})})
    result = run_report("--totals-db", str(file), "--sale-date-zone", "Asia/Tokyo")
    assert (result.returncode, result.stderr) == (0, "")
    with contextlib.closing(sqlite3.connect(file)) as shell:
        newest = shell.execute(
            "SELECT window_start, orders, late_orders FROM window_orders ORDER BY window_start DESC LIMIT 10"
        ).fetchall()
        sales: dict[str, Decimal] = {}
        for start, total in shell.execute("SELECT window_start, total_sales FROM window_sales"):
            sales[start] = sales.get(start, Decimal("0.00")) + Decimal(total)  # decimal text: summed exactly
    tokyo = ZoneInfo("Asia/Tokyo")
    expected = [
        [
            datetime.fromisoformat(start).astimezone(tokyo).strftime(SALE_DATE_STRFTIME),
            str(orders),
            str(late),
            f"{sales[start]:f}",
        ]
        for start, orders, late in reversed(newest)
    ]
    lines = result.stdout.splitlines()
    assert lines[0] == "Sales per 1-minute window of sale_date (Asia/Tokyo)"
    assert cells(lines)[1:] == expected
    assert expected[0][0] == "12/05/2025 22:33:00"


def test_one_products_sales_in_each_of_the_last_windows(totals_target: str, capsys: pytest.CaptureFixture[str]) -> None:
    with consumer_db(totals_target) as db:
        commit(db, 0, TWELVE)
    in_utc = ("--totals-db", totals_target, "--sale-date-zone", "UTC")
    lines = report(capsys, *in_utc, "--product", "Laptop", "--last", "4")
    assert lines[0] == "Sales of Laptop per 1-minute window of sale_date (UTC)"
    # Laptop sold in every other window: 0.00 in the others; Orders counts every order of the window.
    assert cells(lines) == [
        ["Window start", "Orders", "Total Sales"],
        ["12/05/2025 13:39:00", "9", "0.00"],
        ["12/05/2025 13:40:00", "10", "20000.00"],
        ["12/05/2025 13:41:00", "11", "0.00"],
        ["12/05/2025 13:42:00", "12", "24000.00"],
    ]
    nowhere = cells(
        report(capsys, "--totals-db", totals_target, "--sale-date-zone", "UTC", "--product", "Kite", "--last", "2")
    )
    assert [row[2] for row in nowhere[1:]] == ["0.00", "0.00"]


def test_window_starts_are_shown_in_the_sale_date_zone(tmp_path: Path) -> None:
    file = str(tmp_path / "totals.sqlite3")
    with consumer_db(file, window_s=3600) as db:
        # Hours across the end of summer time in Madrid (27/10/2024, 03:00 CEST -> 02:00 CET).
        commit(
            db,
            0,
            {
                datetime(2024, 10, 27, hour, tzinfo=UTC): WindowCounts(1, 0, {"Mouse": Decimal("1")})
                for hour in range(3)
            },
        )

    def starts(*args: str, env: dict[str, str] | None = None) -> tuple[str, list[str]]:
        result = run_report("--totals-db", file, *args, env=env)
        assert (result.returncode, result.stderr) == (0, "")
        lines = result.stdout.splitlines()
        return lines[0], [row[0] for row in cells(lines)[1:]]

    assert starts("--sale-date-zone", "Europe/Madrid") == (
        "Sales per 1-hour window of sale_date (Europe/Madrid)",
        ["27/10/2024 02:00:00", "27/10/2024 02:00:00", "27/10/2024 03:00:00"],  # the hour 02:00 twice, as sale_date
    )
    assert starts(env={"SALE_DATE_ZONE": "America/New_York"})[1] == [
        "26/10/2024 20:00:00",
        "26/10/2024 21:00:00",
        "26/10/2024 22:00:00",
    ]
    # No zone given: this machine's, as the producer writes sale_date.
    assert starts(env={"TZ": "Asia/Kolkata"}) == (
        "Sales per 1-hour window of sale_date (local time)",
        ["27/10/2024 05:30:00", "27/10/2024 06:30:00", "27/10/2024 07:30:00"],
    )


def test_no_windows_yet_is_the_header_alone(totals_target: str, capsys: pytest.CaptureFixture[str]) -> None:
    with consumer_db(totals_target, window_s=90):
        pass
    assert report(capsys, "--totals-db", totals_target, "--sale-date-zone", "UTC") == [
        "Sales per 90-second window of sale_date (UTC)",
        "+------------+------+----+-----------+",
        "|Window start|Orders|Late|Total Sales|",
        "+------------+------+----+-----------+",
        "+------------+------+----+-----------+",
    ]


def one_line_error(result: subprocess.CompletedProcess, exit_code: int, message: str) -> None:
    assert (result.returncode, result.stdout, result.stderr) == (exit_code, "", f"report: error: {message}\n")


def test_a_missing_database_is_reported_never_created(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "totals.sqlite3"
    one_line_error(
        run_report("--totals-db", str(missing)),
        1,
        f"no totals database at {missing}: run the consumer first, or point --totals-db at its database",
    )
    # The default: the consumer's, under the state directory, for the topic.
    state = tmp_path / "state"
    one_line_error(
        run_report(env={"XDG_STATE_HOME": str(state), "KAFKA_TOPIC": "orders"}),
        1,
        f"no totals database at {state}/ventas/totals/orders.sqlite3: run the consumer first, or point "
        "--totals-db at its database",
    )
    assert not missing.parent.exists()
    assert not state.exists()


def test_a_database_without_windows_is_reported(tmp_path: Path) -> None:
    off = tmp_path / "off.sqlite3"
    with consumer_db(str(off), window_s=0):
        pass
    one_line_error(
        run_report("--totals-db", str(off)),
        1,
        f"the totals database {off} keeps no sales per window of sale_date: its consumer runs with --window 0; "
        "a consumer with a --window and a --totals-db of its own keeps them",
    )
    earlier = tmp_path / "earlier.sqlite3"
    with contextlib.closing(TotalsDb.open(str(earlier))) as db:  # as a consumer before windows left it
        db.claim("q1", "/cp")
    one_line_error(
        run_report("--totals-db", str(earlier)),
        1,
        f"the totals database {earlier} keeps no sales per window of sale_date: a consumer without windows "
        "(an earlier version) wrote it; the current consumer adds them from its next batch",
    )
    empty = tmp_path / "empty.sqlite3"
    TotalsDb.open(str(empty)).close()
    one_line_error(
        run_report("--totals-db", str(empty)),
        1,
        f"the totals database {empty} holds no totals: run the consumer first, or point --totals-db at its database",
    )


def test_an_unreachable_postgresql_is_one_line() -> None:
    url = f"postgresql://ventas@127.0.0.1:{free_port()}/ventas"
    result = run_report("--totals-db", url)
    assert (result.returncode, result.stdout) == (1, "")
    assert result.stderr.startswith(f"report: error: the totals database {url} is unreachable: ")
    assert result.stderr.count("\n") == 1


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--last", "0"], "argument --last: must be >= 1, got '0'"),
        (["--last", "ten"], "argument --last: not a whole number: 'ten'"),
        (
            ["--sale-date-zone", "Mars/Olympus"],
            "argument --sale-date-zone: not a time zone name like 'Europe/Madrid' or 'UTC': 'Mars/Olympus'",
        ),
        (["--window", "1 minute"], "unrecognized arguments: --window 1 minute"),
    ],
)
def test_a_bad_flag_is_one_line_and_exit_2(args: list[str], message: str) -> None:
    one_line_error(run_report(*args), 2, f"{message} (see --help)")


def test_any_header_and_rows_take_the_consoles_layout() -> None:
    assert format_rows(("Window start", "東京"), [("12/05/2025 15:31:00", "1"), ("x", "ノート")]).splitlines() == [
        "+-------------------+------+",
        "|Window start       |東京  |",
        "+-------------------+------+",
        "|12/05/2025 15:31:00|1     |",
        "|x                  |ノート|",
        "+-------------------+------+",
    ]
    assert format_rows(("A", "Bb"), []).splitlines() == ["+-+--+", "|A|Bb|", "+-+--+", "+-+--+"]
    # The console's table is this layout under its own header, highest total first.
    assert format_table({"ノート": Decimal("10.00"), "Mouse": Decimal("99.50")}).splitlines() == [
        "+-------+-----------+",
        "|Product|Total Sales|",
        "+-------+-----------+",
        "|Mouse  |99.50      |",
        "|ノート |10.00      |",
        "+-------+-----------+",
    ]

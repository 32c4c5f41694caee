"""Sales per window of sale_date through the real broker and real spark-submit: every window exact to the
cent against the producer's ground truth, late orders counted as the producer sent them, through stops
and restarts; the report and the sqlite3 shell reading the same windows."""

from __future__ import annotations

import contextlib
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from tests.helpers import (
    consumer_args,
    printed_lines,
    producer_args,
    run_consumer,
    run_producer,
    send_values,
    start_consumer,
    start_producer,
    stored_totals,
    summary_totals,
    summary_windows,
    wait_for_table,
)
from tests.reject_examples import order
from ventas.lab.processes import ROOT, pipeline_env, stop

pytestmark = pytest.mark.integration

Windows = dict[datetime, tuple[int, int, dict[str, Decimal]]]
ZONE = ("--sale-date-zone", "Asia/Kolkata")  # UTC+05:30: a sale_date read in another zone lands elsewhere


def stored_windows(database: Path) -> Windows:
    """The windows in a consumer's SQLite database, as a user's `sqlite3` shell reads them."""
    with contextlib.closing(sqlite3.connect(database)) as shell:
        orders = shell.execute("SELECT window_start, orders, late_orders FROM window_orders").fetchall()
        sales = shell.execute("SELECT window_start, product, total_sales FROM window_sales").fetchall()
    windows: Windows = {datetime.fromisoformat(start): (n, late, {}) for start, n, late in orders}
    for start, product, total in sales:
        windows[datetime.fromisoformat(start)][2][product] = Decimal(total)
    return windows


def truth(*summaries: Path) -> Windows:
    """The producers' windows, added up."""
    windows: Windows = {}
    for summary in summaries:
        for start, (n, late, sales) in summary_windows(summary).items():
            before = windows.get(datetime.fromisoformat(start), (0, 0, {}))
            totals = Counter(before[2]) + Counter(sales)
            windows[datetime.fromisoformat(start)] = (before[0] + n, before[1] + late, dict(totals))
    return windows


def product_truth(*summaries: Path) -> dict[str, Decimal]:
    return dict(sum((Counter(summary_totals(s)) for s in summaries), Counter()))


def produce(bootstrap: str, topic: str, summary: Path, count: int, rate: int, seed: int, *extra: str) -> None:
    produced = run_producer(*producer_args(bootstrap, topic, summary, count, rate, seed), *ZONE, *extra)
    assert produced.returncode == 0, produced.stderr


def catch_up(bootstrap: str, topic: str, state: Path, *extra: str) -> list[str]:
    result = run_consumer(*consumer_args(bootstrap, topic, state, "--available-now", *ZONE, *extra))
    assert result.returncode == 0, result.stdout + result.stderr
    return printed_lines(result)


def late_in_lines(lines: list[str]) -> int:
    """The late orders the consumer's set-aside lines report, batch by batch."""
    return sum(int(line.split("Late: ", 1)[1].split()[0]) for line in lines if "Late: " in line)


def test_every_window_and_the_late_count_equal_the_producers(kafka_bootstrap: str, topic: str, tmp_path: Path) -> None:
    on_time, with_late = tmp_path / "on-time.json", tmp_path / "with-late.json"
    produce(kafka_bootstrap, topic, on_time, 200, 0, 41)
    catch_up(kafka_bootstrap, topic, tmp_path)
    # Late orders are 5 minutes behind the sale clock, more than the 2 minutes allowed behind the newest
    # sale_date the first run counted.
    produce(kafka_bootstrap, topic, with_late, 2000, 0, 42, "--late-fraction", "0.05", "--late-by", "5 minutes")
    lines = catch_up(kafka_bootstrap, topic, tmp_path)

    database = tmp_path / "totals.sqlite3"
    sent_late = summary_windows_late(with_late)
    assert 50 < sent_late < 150
    assert stored_windows(database) == truth(on_time, with_late)
    assert stored_totals(database) == product_truth(on_time, with_late)
    assert late_in_lines(lines) == sent_late
    with contextlib.closing(sqlite3.connect(database)) as shell:
        assert shell.execute("SELECT late_orders, undated_orders FROM sales_over_time").fetchone() == (sent_late, 0)

    # Another window length on the same database is refused in one line.
    refused = run_consumer(*consumer_args(kafka_bootstrap, topic, tmp_path, "--window", "5 minutes"))
    assert refused.returncode == 2, refused.stdout + refused.stderr
    said = [line for line in printed_lines(refused) if "totals sales per 1-minute window" in line]
    assert said and said[0].startswith("consumer.py: error: "), refused.stdout + refused.stderr


def test_orders_dated_next_year_count_apart_and_move_neither_late_orders_nor_the_chart(
    kafka_bootstrap: str, topic: str, tmp_path: Path
) -> None:
    today, later = tmp_path / "today.json", tmp_path / "later.json"
    produce(kafka_bootstrap, topic, today, 300, 0, 46)
    next_year = datetime.now(ZoneInfo(ZONE[1])) + timedelta(days=365)
    lines = [{"name": "Laptop", "cantidad": 1, "price": 1500}, {"name": "Mouse", "cantidad": 3, "price": 9.99}]
    dated = [order(*lines, order_id=f"f-{n}", sale_date=f"{next_year:%d/%m/%Y %H:%M:%S}") for n in range(3)]
    send_values(kafka_bootstrap, topic, dated)
    said = catch_up(kafka_bootstrap, topic, tmp_path)
    # Had the orders of next year moved the newest sale_date, every order from now on would be late.
    produce(kafka_bootstrap, topic, later, 300, 0, 47)
    said += catch_up(kafka_bootstrap, topic, tmp_path)

    database = tmp_path / "totals.sqlite3"
    future_sales = Counter({"Laptop": Decimal("4500.00"), "Mouse": Decimal("89.91")})
    assert stored_totals(database) == dict(Counter(product_truth(today, later)) + future_sales)
    assert stored_windows(database) == truth(today, later)  # nothing in next year's windows
    with contextlib.closing(sqlite3.connect(database)) as shell:
        counts = "SELECT late_orders, undated_orders, future_orders, newest_sale_date FROM sales_over_time"
        late, undated, future, newest = shell.execute(counts).fetchone()
    assert (late, undated, future) == (0, 0, 3)
    assert datetime.fromisoformat(newest) < datetime.now(UTC)  # the chart ends at today's orders
    future_lines = [line for line in said if line.startswith("Future: 3 orders in batch ")]
    assert future_lines and "more than 1 day ahead of this machine's clock" in future_lines[0], said


def summary_windows_late(summary: Path) -> int:
    return sum(late for _, late, _ in summary_windows(summary).values())


def test_the_report_prints_the_last_windows_the_database_holds(
    kafka_bootstrap: str, topic: str, tmp_path: Path
) -> None:
    summary = tmp_path / "summary.json"
    # A replay: 20 minutes of sales in about 5 seconds, so that there are more windows than shown.
    replay = ("--start-date", "2025-05-12T08:00", "--speed", "240")
    produce(kafka_bootstrap, topic, summary, 1000, 200, 43, *replay)
    catch_up(kafka_bootstrap, topic, tmp_path)
    database = tmp_path / "totals.sqlite3"

    report = subprocess.run(
        [sys.executable, "-m", "ventas.report", "--totals-db", str(database), "--last", "10", *ZONE],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=pipeline_env(),
        timeout=60,
    )
    assert report.returncode == 0, report.stderr
    rows = [line.strip("|").split("|") for line in report.stdout.splitlines() if line.startswith("|")][1:]
    with contextlib.closing(sqlite3.connect(database)) as shell:
        newest = shell.execute(
            "SELECT window_start, orders, late_orders FROM window_orders ORDER BY window_start DESC LIMIT 10"
        ).fetchall()
        sums = {
            start: sum(
                Decimal(t)
                for (t,) in shell.execute("SELECT total_sales FROM window_sales WHERE window_start = ?", (start,))
            )
            for start, _, _ in newest
        }
    assert len(newest) == 10 and len(rows) == 10
    zone = ZONE[1]
    for (start, orders, late), row in zip(reversed(newest), rows, strict=True):
        shown = datetime.fromisoformat(start).astimezone(ZoneInfo(zone))
        assert [cell.strip() for cell in row] == [
            shown.strftime("%d/%m/%Y %H:%M:%S"),
            str(orders),
            str(late),
            f"{sums[start]:.2f}",
        ]


def test_stopped_and_restarted_at_random_the_windows_stay_exact(
    kafka_bootstrap: str, topic: str, tmp_path: Path
) -> None:
    seed = int(os.environ.get("STOP_SEED") or random.randrange(1_000_000))
    moments = random.Random(seed)
    first, late = tmp_path / "first.json", tmp_path / "late.json"
    produce(kafka_bootstrap, topic, first, 100, 0, 44)
    producer = None
    try:
        for cycle in range(3):
            out = tmp_path / f"consumer-{cycle}.txt"
            consumer = start_consumer(consumer_args(kafka_bootstrap, topic, tmp_path, *ZONE), out)
            try:
                wait_for_table(out, consumer)
                if producer is None:  # once the first orders are counted: late ones are late from then on
                    args = producer_args(kafka_bootstrap, topic, late, 6000, 200, 45)
                    producer = start_producer([*args, *ZONE, "--late-fraction", "0.05", "--late-by", "5 minutes"])
                time.sleep(moments.uniform(3, 8))
                os.killpg(consumer.pid, signal.SIGTERM)
                code = consumer.wait(90)
            finally:
                stop(consumer, signal.SIGKILL)
            assert code == 0, f"STOP_SEED={seed}, cycle {cycle}: {out.read_text()[-3000:]}"
        assert producer.wait(120) == 0, producer.stderr.read()
    finally:
        if producer:
            stop(producer)
    catch_up(kafka_bootstrap, topic, tmp_path)
    database = tmp_path / "totals.sqlite3"
    assert stored_windows(database) == truth(first, late), f"STOP_SEED={seed}"
    assert stored_totals(database) == product_truth(first, late), f"STOP_SEED={seed}"
    with contextlib.closing(sqlite3.connect(database)) as shell:
        counted = shell.execute("SELECT late_orders FROM sales_over_time").fetchone()[0]
    assert counted == summary_windows_late(late), f"STOP_SEED={seed}"

"""Sales per window of sale_date, on static DataFrames: the windows, the late, undated and future orders."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from tests.reject_examples import order
from tests.test_transform import kafka_rows
from ventas.sale_windows import chart_start, describe, duration, sale_instant, window_start, zone
from ventas.totals_db import WindowCounts
from ventas.transforms import batch_counts, batch_totals, parse_orders

LAPTOP = {"name": "Laptop", "cantidad": 1, "price": 2000}
MOUSE = {"name": "Mouse", "cantidad": 2, "price": Decimal("9.99")}


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def dated(sale_date: str | None, *lines: dict) -> bytes:
    return order(*lines, sale_date=sale_date)


@pytest.fixture
def session_zone(spark) -> Iterator[Callable[[str], None]]:
    """Sets the session's time zone, as the consumer's --sale-date-zone does, until the test ends."""
    before = spark.conf.get("spark.sql.session.timeZone")
    yield lambda name: spark.conf.set("spark.sql.session.timeZone", name)
    spark.conf.set("spark.sql.session.timeZone", before)


def counts(
    spark,
    values: list[bytes],
    window_s: int = 60,
    late_before: datetime | None = None,
    future_after: datetime | None = None,
):
    late, future = (int(when.timestamp()) if when else None for when in (late_before, future_after))
    rows = batch_totals(parse_orders(kafka_rows(spark, values)), window_s, late, future).collect()
    return batch_counts(rows, windows=bool(window_s))


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("1 minute", 60), ("90 seconds", 90), ("2 days", 172800), ("5 Minutes", 300), ("0", 0), (" 1 hour ", 3600)],
)
def test_a_length_of_time_is_read_as_spark_writes_intervals(text: str, seconds: int) -> None:
    assert duration(text) == seconds
    if seconds:
        assert duration(describe(seconds)) == seconds


@pytest.mark.parametrize("text", ["", "1", "minute", "1 minutes ago", "-1 minute", "1.5 minutes", "1 week"])
def test_a_bad_length_of_time_is_refused(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match="not a length of time"):
        duration(text)


def test_a_zone_is_an_iana_name() -> None:
    assert zone("Europe/Madrid") == "Europe/Madrid"
    with pytest.raises(argparse.ArgumentTypeError, match="not a time zone name"):
        zone("Mars/Olympus")


def test_windows_are_aligned_on_the_epoch_in_utc() -> None:
    instant = sale_instant(datetime(2025, 5, 12, 15, 33, 35), "Asia/Kolkata")  # UTC+05:30
    assert instant == at("2025-05-12T10:03:35")
    assert window_start(instant, 60) == at("2025-05-12T10:03:00")
    assert window_start(instant, 3600) == at("2025-05-12T10:00:00")
    assert chart_start(instant, 60) == at("2025-05-12T09:04:00")  # 60 windows up to the newest


def test_each_window_gets_its_orders_and_sales_exactly(spark, session_zone) -> None:
    session_zone("UTC")
    values = [
        dated("12/05/2025 15:33:35", LAPTOP, MOUSE),
        dated("12/05/2025 15:33:59", MOUSE),
        dated("12/05/2025 15:34:00", LAPTOP),
    ]
    batch = counts(spark, values)
    assert batch.windows == {
        at("2025-05-12T15:33:00"): WindowCounts(2, 0, {"Laptop": Decimal("2000.00"), "Mouse": Decimal("39.96")}),
        at("2025-05-12T15:34:00"): WindowCounts(1, 0, {"Laptop": Decimal("2000.00")}),
    }
    assert batch.totals == {"Laptop": Decimal("4000.00"), "Mouse": Decimal("39.96")}
    assert (batch.orders, batch.undated, batch.late) == (3, 0, 0)
    assert batch.newest_sale_at == at("2025-05-12T15:34:00")


@pytest.mark.parametrize(
    "sale_date",
    [None, "2025-05-12 15:33:35", "31/02/2025 10:00:00", "1/5/2025 15:33:35", " 12/05/2025 15:33:35", "12/05/2025"],
)
def test_an_order_without_a_usable_sale_date_counts_in_the_totals_and_as_undated(spark, sale_date) -> None:
    batch = counts(spark, [dated(sale_date, LAPTOP), dated("12/05/2025 15:33:35", LAPTOP)])
    assert batch.totals == {"Laptop": Decimal("4000.00")}
    assert (batch.orders, batch.undated) == (2, 1)
    assert sum(w.orders for w in batch.windows.values()) == 1
    assert {p: t for w in batch.windows.values() for p, t in w.totals.items()} == {"Laptop": Decimal("2000.00")}


def test_orders_before_the_threshold_are_late_and_still_in_their_window(spark, session_zone) -> None:
    session_zone("UTC")
    values = [dated("12/05/2025 15:33:35", LAPTOP), dated("12/05/2025 15:27:10", MOUSE), dated("12/05/2025 15:28:00")]
    batch = counts(spark, values, late_before=at("2025-05-12T15:28:00"))
    assert batch.windows[at("2025-05-12T15:27:00")] == WindowCounts(1, 1, {"Mouse": Decimal("19.98")})
    assert batch.windows[at("2025-05-12T15:28:00")] == WindowCounts(1, 0, {})  # not before: on time
    assert batch.late == 1


def test_orders_after_the_future_threshold_count_in_the_totals_only(spark, session_zone) -> None:
    session_zone("UTC")
    values = [dated("12/05/2025 15:33:35", LAPTOP), dated("12/05/2026 09:00:00", MOUSE), dated("13/05/2025 15:33:36")]
    batch = counts(spark, values, late_before=at("2025-05-12T15:30:00"), future_after=at("2025-05-13T15:33:35"))
    assert batch.totals == {"Laptop": Decimal("2000.00"), "Mouse": Decimal("19.98")}
    assert (batch.orders, batch.future, batch.undated, batch.late) == (3, 2, 0, 0)
    assert batch.windows == {at("2025-05-12T15:33:00"): WindowCounts(1, 0, {"Laptop": Decimal("2000.00")})}
    assert batch.newest_sale_at == at("2025-05-12T15:33:35")  # the future moves neither late orders nor the chart


def test_sale_date_is_read_in_the_sessions_zone(spark, session_zone) -> None:
    session_zone("America/Sao_Paulo")  # UTC-03:00, no summer time since 2019
    batch = counts(spark, [dated("12/05/2025 15:33:35", LAPTOP)])
    assert list(batch.windows) == [at("2025-05-12T18:33:00")]


def test_without_windows_nothing_is_parsed_nor_undated(spark) -> None:
    batch = counts(spark, [dated("not a date", LAPTOP)], window_s=0)
    assert (batch.windows, batch.undated, batch.newest_sale_at) == ({}, 0, None)
    assert batch.totals == {"Laptop": Decimal("2000.00")}


def test_a_new_threshold_compiles_no_new_code(spark) -> None:
    """Each batch has its own thresholds (late, future): Spark must find the batch's generated code in its
    cache, not compile it again (as it did for a long literal written into the code)."""
    rows = [("t", 0, i, b"k", dated(f"12/05/2025 15:{i % 60:02d}:00", LAPTOP)) for i in range(100)]
    kafka = spark.createDataFrame(rows, "topic string, partition int, offset long, key binary, value binary")
    parsed = parse_orders(kafka.selectExpr("*", "cast(offset as timestamp) as timestamp"))  # no literal per query
    compilations = spark._jvm.org.apache.spark.metrics.source.CodegenMetrics.METRIC_COMPILATION_TIME()
    batch_totals(parsed, 60, 1747063000, 1747150000).collect()
    before = compilations.getCount()
    for threshold in (1747063007, 1747063100, 1747064000):
        batch_totals(parsed, 60, threshold, threshold + 86400).collect()
    assert compilations.getCount() == before

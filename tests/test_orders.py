"""The order generator: the seed's message shape, reproducible, exact money."""

from __future__ import annotations

import hashlib
import json
import re
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from schemas import ORDER_SCHEMA, PRODUCT_SCHEMA, SALE_DATE_STRFTIME
from tests.helpers import summary_windows
from ventas.orders import CATALOGUE, LineItem, Order, OrderGenerator, product_totals, sale_clock, wall_time
from ventas.sale_windows import sale_instant

SOLD_AT = datetime(2025, 5, 12, 15, 33, 35)


def orders(seed: int, n: int) -> list[Order]:
    generator = OrderGenerator(seed)
    return [generator.order(SOLD_AT) for _ in range(n)]


def test_message_has_exactly_the_schema_fields_with_the_seed_formats() -> None:
    for order in orders(seed=7, n=200):
        message = json.loads(order.to_json(), parse_float=Decimal)
        assert list(message) == ORDER_SCHEMA.fieldNames()
        assert uuid.UUID(message["order_id"]).version == 4
        assert re.fullmatch(r"\d{3}-\d{2}-\d{4}", message["customer_document"])
        assert datetime.strptime(message["sale_date"], SALE_DATE_STRFTIME) == SOLD_AT
        assert message["sale_date"] == "12/05/2025 15:33:35"
        assert len(message["products"]) >= 1
        for line in message["products"]:
            assert list(line) == PRODUCT_SCHEMA.fieldNames()
            assert isinstance(line["cantidad"], int) and line["cantidad"] >= 1
            assert line["price"] == CATALOGUE[line["name"]]


def test_products_within_an_order_are_distinct() -> None:
    for order in orders(seed=3, n=500):
        names = [line.name for line in order.products]
        assert len(names) == len(set(names))


def test_same_seed_same_bytes_other_seed_other_bytes() -> None:
    first = [o.to_json() for o in orders(seed=42, n=100)]
    assert first == [o.to_json() for o in orders(seed=42, n=100)]
    assert first != [o.to_json() for o in orders(seed=43, n=100)]


def test_prices_are_written_as_exact_decimal_literals() -> None:
    order = Order(
        "id",
        "431-61-5633",
        (
            LineItem("Smartphone", 3, Decimal("899.99")),
            LineItem("Laptop", 1, Decimal("2000")),
            LineItem("Plancha de Vapor", 2, Decimal("45.50")),
        ),
        SOLD_AT,
    )
    text = order.to_json().decode()
    assert '"price":899.99' in text and '"price":2000}' in text and '"price":45.50' in text
    assert '"Plancha de Vapor"' in text


def test_totals_are_quantity_times_price_summed_per_product() -> None:
    seed_orders = [
        Order("a", "x", (LineItem("Smartwatch", 3, Decimal("1401")), LineItem("Laptop", 1, Decimal("2000"))), SOLD_AT),
        Order("b", "y", (LineItem("Smartwatch", 1, Decimal("0.10")),), SOLD_AT),
        Order("c", "z", (LineItem("USB-C Charger", 3, Decimal("0.10")),), SOLD_AT),
    ]
    assert product_totals(seed_orders) == {
        "Smartwatch": Decimal("4203.10"),
        "Laptop": Decimal("2000"),
        "USB-C Charger": Decimal("0.30"),  # exactly, where floats would give 0.30000000000000004
    }


def test_the_delivery_report_counts_each_record_by_its_own_future() -> None:
    """Acknowledgements come out of order across partitions: at exit a record still in flight is
    failed, and one acknowledged after it is still acknowledged, with its totals."""
    from kafka.errors import KafkaTimeoutError
    from kafka.future import Future

    from producer import DeliveryReport

    generator = OrderGenerator(seed=7)
    orders = [generator.order(datetime(2025, 5, 12, 15, 33, 35)) for _ in range(4)]
    futures = [Future() for _ in orders]
    report = DeliveryReport()
    for future, order in zip(futures, orders, strict=True):
        report.track(future, order)
    futures[0].success(None)
    futures[2].success(None)  # ahead of futures[1], still in flight
    futures[3].failure(KafkaTimeoutError())
    report.settle()
    assert (report.acknowledged, report.failed, report.pending) == (1, 0, 1)  # settled up to the first in flight

    report.abandon_pending()
    assert (report.sent, report.acknowledged, report.failed) == (4, 2, 2)
    assert report.totals == product_totals([orders[0], orders[2]])


# sha256 of seed 42's first 200 orders (to_json() + newline each), sold at SOLD_AT, as generated before
# lateness existed: a stream without late orders must not change.
SEED_42_DIGEST = "5643f4c12b16cebb2c70f281f43b642ea9b0795dfbca060b40dd2c6027f3927b"


def test_without_late_orders_a_seeded_stream_is_byte_identical_to_before() -> None:
    generator = OrderGenerator(42)
    stream = b""
    for _ in range(200):
        assert not generator.is_late(0)
        stream += generator.order(SOLD_AT).to_json() + b"\n"
    assert hashlib.sha256(stream).hexdigest() == SEED_42_DIGEST


def test_lateness_is_seeded_and_close_to_the_fraction() -> None:
    def late_flags(seed: int, fraction: float) -> list[bool]:
        generator = OrderGenerator(seed)
        return [generator.is_late(fraction) for _ in range(2000)]

    flags = late_flags(7, 0.1)
    assert flags == late_flags(7, 0.1)
    assert flags != late_flags(8, 0.1)
    assert 150 <= sum(flags) <= 250
    assert all(late_flags(7, 1.0)) and not any(late_flags(7, 0.0))


def test_the_sale_clock_runs_speed_times_as_fast_as_the_wall_clock() -> None:
    start = datetime(2025, 5, 12, 6, 0, tzinfo=UTC)
    assert sale_clock(start, 1, 0) == start
    assert sale_clock(start, 1, 2.5) == start + timedelta(seconds=2.5)
    assert sale_clock(start, 240, 360) == start + timedelta(days=1)  # a day replayed in 6 minutes


@pytest.mark.parametrize("zone", ["Europe/Madrid", "America/Bogota", None])
def test_sale_date_is_the_wall_time_of_the_sale_zone_and_reads_back_as_the_same_instant(zone: str | None) -> None:
    instant = datetime(2025, 5, 12, 6, 0, 59, tzinfo=UTC)
    written = wall_time(instant, ZoneInfo(zone) if zone else None)
    assert written.tzinfo is None
    assert sale_instant(written, zone) == instant
    if zone == "Europe/Madrid":
        assert written == datetime(2025, 5, 12, 8, 0, 59)


def acknowledged_report(orders: list[tuple[Order, bool, bool]], window_s: int, zone: str):
    """A DeliveryReport of (order, late, acknowledged) records, every one settled."""
    from kafka.errors import KafkaTimeoutError
    from kafka.future import Future

    from producer import DeliveryReport

    report = DeliveryReport(window_s=window_s, sale_zone=zone)
    for order, late, acknowledged in orders:
        future = Future()
        report.track(future, order, late)
        if acknowledged:
            future.success(None)
        else:
            future.failure(KafkaTimeoutError())
    report.settle()
    return report


def test_the_summary_has_the_acknowledged_orders_of_each_window_of_sale_date(tmp_path: Path) -> None:
    def sold(order_id: str, wall: str, *lines: LineItem) -> Order:
        return Order(order_id, "431-61-5633", lines, datetime.strptime(wall, SALE_DATE_STRFTIME))

    records = [  # sale_date in Madrid (UTC+2 in May); windows of a minute
        (sold("a", "12/05/2025 08:00:59", LineItem("Smartphone", 2, Decimal("899.99"))), False, True),
        (sold("b", "12/05/2025 08:01:00", LineItem("Smartphone", 1, Decimal("899.99"))), False, True),
        (sold("c", "12/05/2025 07:56:00", LineItem("Tablet", 3, Decimal("329.50"))), True, True),  # 5 minutes late
        (sold("d", "12/05/2025 08:01:30", LineItem("Laptop", 1, Decimal("2000"))), False, False),  # not acknowledged
        (sold("e", "12/05/2025 08:01:59", LineItem("USB-C Charger", 3, Decimal("0.10"))), True, True),
    ]
    report = acknowledged_report(records, window_s=60, zone="Europe/Madrid")
    summary = tmp_path / "summary.json"
    summary.write_text(json.dumps(report.as_json("t", 1.0)))

    written = json.loads(summary.read_text())
    assert (written["orders_acknowledged"], written["orders_failed"], written["late_orders"]) == (4, 1, 2)
    assert written["window_seconds"] == 60
    assert list(written["windows"]) == [  # sorted by start
        "2025-05-12T05:56:00+00:00",
        "2025-05-12T06:00:00+00:00",
        "2025-05-12T06:01:00+00:00",
    ]
    assert written["windows"]["2025-05-12T06:00:00+00:00"]["totals"] == {"Smartphone": "1799.98"}
    assert summary_windows(summary) == {
        "2025-05-12T05:56:00+00:00": (1, 1, {"Tablet": Decimal("988.50")}),
        "2025-05-12T06:00:00+00:00": (1, 0, {"Smartphone": Decimal("1799.98")}),
        "2025-05-12T06:01:00+00:00": (2, 1, {"Smartphone": Decimal("899.99"), "USB-C Charger": Decimal("0.30")}),
    }

    without_windows = acknowledged_report(records, window_s=0, zone="Europe/Madrid").as_json("t", 1.0)
    assert (without_windows["window_seconds"], without_windows["windows"]) == (0, {})
    assert without_windows["late_orders"] == 2
    assert without_windows["totals"] == written["totals"]


class AcknowledgingProducer:
    """Stands in for KafkaProducer: acknowledges every record at once and keeps its value."""

    _transaction_manager = None  # not idempotent: renew_producer_id_after_reset leaves it alone

    def __init__(self) -> None:
        self.values: list[bytes] = []

    def partitions_for(self, topic: str) -> set[int]:
        return {0}

    def send(self, topic: str, key: bytes, value: bytes):
        from kafka.future import Future

        self.values.append(value)
        return Future().success(None)

    def flush(self, timeout: float | None = None) -> None:
        pass

    def close(self, timeout: float | None = None) -> None:
        pass


def test_the_producer_replays_from_the_start_date_with_late_orders(monkeypatch: pytest.MonkeyPatch) -> None:
    """producer.produce() with a producer that acknowledges everything: the sale clock starts at
    --start-date, in --sale-date-zone, and the late orders are the seed's, --late-by earlier."""
    import producer
    from ventas.signals import StopRequest

    kafka = AcknowledgingProducer()
    monkeypatch.setattr(producer, "connect", lambda *args, **settings: kafka)
    args = producer.build_parser().parse_args(
        [
            *("--count", "200", "--rate", "0", "--seed", "5", "--speed", "1"),
            *("--late-fraction", "0.25", "--late-by", "1 hour"),
            *("--start-date", "2025-05-12T08:00", "--sale-date-zone", "Europe/Madrid", "--window", "1 hour"),
        ]
    )
    report, _ = producer.produce(args, StopRequest())

    seeded = OrderGenerator(5)  # the same draws as the producer's: lateness, then the order
    late = []
    for _ in range(200):
        late.append(seeded.is_late(0.25))
        seeded.order(SOLD_AT)
    dates = [json.loads(value)["sale_date"] for value in kafka.values]
    # The run takes well under an hour of wall time at speed 1: every date is in its first hour.
    assert all(
        d.startswith("12/05/2025 07:" if is_late else "12/05/2025 08:") for d, is_late in zip(dates, late, strict=True)
    )
    assert (report.sent, report.acknowledged, report.late) == (200, 200, sum(late))
    assert 25 <= report.late <= 75
    windows = report.as_json("t", 1.0)["windows"]
    assert {start: (w["orders"], w["late_orders"]) for start, w in windows.items()} == {
        "2025-05-12T05:00:00+00:00": (report.late, report.late),
        "2025-05-12T06:00:00+00:00": (200 - report.late, 0),
    }

"""The order generator: the seed's message shape, reproducible, exact money."""

from __future__ import annotations

import json
import re
import uuid
from datetime import datetime
from decimal import Decimal

from schemas import ORDER_SCHEMA, PRODUCT_SCHEMA, SALE_DATE_STRFTIME
from ventas.orders import CATALOGUE, LineItem, Order, OrderGenerator, product_totals

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

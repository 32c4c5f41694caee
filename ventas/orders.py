"""Simulated e-commerce orders: a Faker provider for the catalogue and a pure, seedable generator.

Nothing here touches Kafka: `OrderGenerator(seed).order(sold_at)` returns an `Order`, whose
`to_json()` is the exact bytes the producer publishes. Prices are `Decimal` end to end. The sale
clock (`sale_clock`, `wall_time`) and lateness (`OrderGenerator.is_late`) are pure too, so a replay
of a day with late orders is reproducible from its seed and start.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta, tzinfo
from decimal import Decimal

from faker import Faker
from faker.providers import BaseProvider

from schemas import SALE_DATE_STRFTIME

# A stable catalogue: name -> unit price (currency units; some with cents).
CATALOGUE: dict[str, Decimal] = {
    name: Decimal(price)
    for name, price in {
        "Smartwatch": "1401",
        "Laptop": "2000",
        "Bluetooth Speaker": "215",
        "Washing Machine": "1100",
        "Smartphone": "899.99",
        "Tablet": "329.50",
        "Wireless Earbuds": "129.90",
        "Mechanical Keyboard": "89.95",
        "Gaming Mouse": "49.99",
        "4K Monitor": "379.00",
        "Noise-Cancelling Headphones": "249.99",
        "E-Reader": "139.99",
        "Action Camera": "299.95",
        "Drone": "799",
        "Coffee Maker": "74.50",
        "Air Fryer": "119.99",
        "Robot Vacuum": "449",
        "Electric Toothbrush": "59.90",
        'Smart TV 55"': "649.99",
        "Refrigerator": "1299",
        "Microwave Oven": "159.90",
        "External SSD 1TB": "109.99",
        "USB-C Charger": "24.99",
        "Portable Power Bank": "39.95",
        "Fitness Tracker": "79.99",
        "Cafetera Espresso Automática": "349.90",
        "Plancha de Vapor": "45.50",
        "Máquina de Coser": "189",
    }.items()
}

MAX_LINES_PER_ORDER = 4
MAX_CANTIDAD = 5


@dataclass(frozen=True)
class LineItem:
    name: str
    cantidad: int
    price: Decimal

    @property
    def amount(self) -> Decimal:
        return self.cantidad * self.price


@dataclass(frozen=True)
class Order:
    order_id: str
    customer_document: str
    products: tuple[LineItem, ...]
    sale_date: datetime

    def to_json(self) -> bytes:
        """The Kafka record value: compact UTF-8 JSON with prices written as exact decimal literals."""
        lines = ",".join(
            f'{{"name":{json.dumps(p.name, ensure_ascii=False)},"cantidad":{p.cantidad},"price":{p.price:f}}}'
            for p in self.products
        )
        return (
            f'{{"order_id":{json.dumps(self.order_id)},"customer_document":{json.dumps(self.customer_document)},'
            f'"products":[{lines}],"sale_date":"{self.sale_date.strftime(SALE_DATE_STRFTIME)}"}}'
        ).encode()


class CatalogueProvider(BaseProvider):
    """Faker provider of line items drawn from CATALOGUE (distinct products within one order)."""

    def line_items(
        self, max_lines: int = MAX_LINES_PER_ORDER, max_cantidad: int = MAX_CANTIDAD
    ) -> tuple[LineItem, ...]:
        count = self.random_int(1, min(max_lines, len(CATALOGUE)))
        names = self.random_sample(list(CATALOGUE), length=count)
        return tuple(LineItem(name, self.random_int(1, max_cantidad), CATALOGUE[name]) for name in names)


class OrderGenerator:
    """Orders from a seeded Faker: the same seed gives the same sequence of orders.

    The sale time is passed in (`sold_at`), so the stream is reproducible byte for byte when the
    caller's clock is, and realistic (the time of sending) when it is the wall clock.
    """

    def __init__(self, seed: int | None = None) -> None:
        self._fake = Faker("en_US")
        self._fake.add_provider(CatalogueProvider)
        if seed is not None:
            self._fake.seed_instance(seed)

    def is_late(self, fraction: float) -> bool:
        """Whether the next order is sent late, true for `fraction` of orders. Nothing is drawn when
        `fraction` is 0, so a seed's stream without late orders stays byte-identical to earlier versions'."""
        return fraction > 0 and self._fake.random.random() < fraction

    def order(self, sold_at: datetime) -> Order:
        return Order(
            order_id=self._fake.uuid4(),
            customer_document=self._fake.ssn(),
            products=self._fake.line_items(),
            sale_date=sold_at.replace(microsecond=0),
        )


def sale_clock(start: datetime, speed: float, elapsed_s: float) -> datetime:
    """The sale clock's instant `elapsed_s` wall-clock seconds after it showed `start`, running `speed`
    times as fast as the wall clock (240: a day in 6 minutes)."""
    return start + timedelta(seconds=elapsed_s * speed)


def wall_time(instant: datetime, sale_zone: tzinfo | None) -> datetime:
    """An aware instant as the naive wall time sale_date is written in: in `sale_zone`, or in this
    machine's zone when None (ventas.sale_windows.sale_instant reads it back)."""
    return instant.astimezone(sale_zone).replace(tzinfo=None)


def product_totals(orders: Iterable[Order]) -> dict[str, Decimal]:
    """Exact total sales per product (sum of cantidad * price): the ground truth for the consumer."""
    totals: dict[str, Decimal] = defaultdict(Decimal)
    for order in orders:
        for line in order.products:
            totals[line.name] += line.amount
    return dict(totals)

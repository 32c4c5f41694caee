"""Publish simulated e-commerce orders to Kafka (`ventas-events`), one JSON object per record.

    python producer.py [--bootstrap-servers HOST:PORT] [--topic T] [--rate N] [--count N]
                       [--seed N] [--summary-file PATH] [--late-fraction F] [--late-by DURATION]
                       [--start-date YYYY-MM-DDTHH:MM] [--speed X] [--window DURATION]
                       [--sale-date-zone ZONE]

Delivery is acks=all with retries and the idempotent producer. sale_date is read from a sale clock
that starts at --start-date (default now) and runs --speed times as fast as the wall clock;
--late-fraction of the orders are sent late, their sale_date --late-by earlier. On exit (count
reached, Ctrl-C or SIGTERM) every pending record is flushed, a one-line summary is printed, and
--summary-file gets the exact per-product totals of the orders the broker acknowledged, overall and
per --window of sale_date: the consumer's ground truth.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections import defaultdict, deque
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING

from ventas.config import (
    EXIT_RUNTIME_ERROR,
    Parser,
    UserError,
    add_kafka_arguments,
    any_reachable,
    env,
    fail,
    non_negative_float,
    positive_int,
    setup_logging,
)
from ventas.kafka_python_workarounds import abandon, renew_producer_id_after_reset
from ventas.orders import Order, OrderGenerator, sale_clock, wall_time
from ventas.sale_windows import (
    add_window_argument,
    add_zone_argument,
    describe,
    duration,
    sale_instant,
    window_start,
    zone_info,
)
from ventas.security import connect, load_security
from ventas.signals import STOP_NOTICE_AFTER_S, StopRequest, print_status

if TYPE_CHECKING:
    from kafka.future import Future

log = logging.getLogger("producer")
PROGRESS_EVERY_S = 5.0
CLOCK_EVERY = 1000  # records sent between two reads of the clock when not paced by --rate
DELIVERY_TIMEOUT_MS = 120_000
FLUSH_POLL_S = 0.2  # how soon a second stop signal ends the final flush
# kafka-python settings of every producer this project runs (bench/measuring.py measures with them too):
# acks from all replicas, retried for up to DELIVERY_TIMEOUT_MS, without duplicates.
KAFKA_SETTINGS = {
    "acks": "all",
    "enable_idempotence": True,
    "retries": 2**31 - 1,
    "retry_backoff_ms": 200,
    "delivery_timeout_ms": DELIVERY_TIMEOUT_MS,
    # One request in flight per broker: a retried batch is never overtaken (kafka-python 2 required it
    # for idempotence; 3.0 allows up to 5, a change left to a measured throughput issue).
    "max_in_flight_requests_per_connection": 1,
    "linger_ms": 20,  # with 256 KiB batches: the fastest setting measured (BENCHMARKS.md)
    "batch_size": 256 * 1024,
    "max_block_ms": 30_000,
}


def build_parser() -> Parser:
    parser = Parser(
        prog="producer.py",
        description="Publish simulated e-commerce orders (JSON) to Kafka.",
        epilog="With --seed every message is byte-identical between runs except sale_date, "
        "which is the sale clock's time when the order is sent (dd/MM/yyyy HH:mm:ss, in --sale-date-zone).",
    )
    add_kafka_arguments(parser)
    parser.add_argument(
        "--rate",
        type=non_negative_float,
        default=env("PRODUCER_RATE", "10"),
        help="orders per second, 0 = as fast as possible (env PRODUCER_RATE; default %(default)s)",
    )
    parser.add_argument(
        "--count",
        type=positive_int,
        default=env("PRODUCER_COUNT"),
        help="stop after this many orders (env PRODUCER_COUNT; default: until Ctrl-C/SIGTERM)",
    )
    parser.add_argument(
        "--seed", type=int, default=env("PRODUCER_SEED"), help="seed for a reproducible stream (env PRODUCER_SEED)"
    )
    parser.add_argument(
        "--summary-file",
        type=Path,
        default=None,
        help="write a JSON summary with the acknowledged orders' per-product totals, overall and per --window, here",
    )
    parser.add_argument(
        "--late-fraction",
        type=fraction,
        default=env("PRODUCER_LATE_FRACTION", "0"),
        help="fraction of the orders sent late, from 0 to 1 (env PRODUCER_LATE_FRACTION; default %(default)s)",
    )
    parser.add_argument(
        "--late-by",
        type=duration,
        default=env("PRODUCER_LATE_BY", "5 minutes"),
        help="how much earlier than the sale clock a late order's sale_date is (env PRODUCER_LATE_BY; "
        "default %(default)s)",
    )
    parser.add_argument(
        "--start-date",
        type=local_date_time,
        default=env("PRODUCER_START_DATE"),
        help="where the sale clock starts, a local date-time in --sale-date-zone like 2025-05-12T08:00 "
        "(env PRODUCER_START_DATE; default now)",
    )
    parser.add_argument(
        "--speed",
        type=positive_float,
        default=env("PRODUCER_SPEED", "1"),
        help="how many times as fast as the wall clock the sale clock runs; 240 replays a day in 6 minutes "
        "(env PRODUCER_SPEED; default %(default)s)",
    )
    add_window_argument(parser)
    add_zone_argument(parser)
    return parser


def fraction(text: str) -> float:
    """argparse type: a number from 0 to 1."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"must be a number from 0 to 1, got {text!r}")
    return value


def positive_float(text: str) -> float:
    """argparse type: a finite number > 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text!r}")
    return value


def local_date_time(text: str) -> datetime:
    """argparse type: an ISO local date-time without a zone (2025-05-12T08:00): the zone is
    --sale-date-zone's, known only once every flag is parsed."""
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a local date-time like 2025-05-12T08:00: {text!r}") from None
    if value.tzinfo is not None:
        raise argparse.ArgumentTypeError(f"must have no zone (it is read in --sale-date-zone): {text!r}")
    return value


@dataclass
class WindowTruth:
    """The acknowledged orders whose sale_date falls in one window: what the consumer's windowed totals
    must show for it."""

    orders: int = 0
    late: int = 0
    totals: dict[str, Decimal] = field(default_factory=lambda: defaultdict(Decimal))

    def add(self, order: Order, late: bool) -> None:
        self.orders += 1
        self.late += late
        for line in order.products:
            self.totals[line.name] += line.amount

    def as_json(self) -> dict:
        return {
            "orders": self.orders,
            "late_orders": self.late,
            "totals": {name: str(total) for name, total in sorted(self.totals.items())},
        }


@dataclass
class DeliveryReport:
    """What the broker acknowledged, told by each record's own future. The sending loop settles the
    futures (no callback and no lock per record): oldest first, as far as the first still in flight.
    Acknowledged orders are also counted per window of `window_s` seconds (0: not at all) of their
    sale_date, read in `sale_zone` as the consumer reads it."""

    window_s: int = 0
    sale_zone: str | None = None
    sent: int = 0
    acknowledged: int = 0
    failed: int = 0
    late: int = 0
    totals: dict[str, Decimal] = field(default_factory=lambda: defaultdict(Decimal))
    windows: dict[datetime, WindowTruth] = field(default_factory=lambda: defaultdict(WindowTruth))
    _in_flight: deque[tuple[Future, Order, bool]] = field(default_factory=deque, repr=False)

    def track(self, future: Future, order: Order, late: bool = False) -> None:
        """A record handed to the producer (`late`: sent late), counted once its future is done."""
        self._in_flight.append((future, order, late))
        self.sent += 1

    def settle(self) -> None:
        """Count the records whose outcome is known, oldest first, up to the first still in flight."""
        in_flight = self._in_flight
        while in_flight and in_flight[0][0].is_done:
            future, order, late = in_flight.popleft()
            if not self._count(future, order, late):
                log.error("order %s was not delivered: %s", order.order_id, future.exception)

    def _count(self, future: Future, order: Order, late: bool) -> bool:
        """Count a record whose future is done; True when the broker acknowledged it."""
        if not future.succeeded():
            self.failed += 1
            return False
        self.acknowledged += 1
        self.late += late
        for line in order.products:
            self.totals[line.name] += line.amount
        if self.window_s:
            # From the sale_date as written (whole seconds, no zone): the consumer sees nothing else.
            self.windows[window_start(sale_instant(order.sale_date, self.sale_zone), self.window_s)].add(order, late)
        return True

    @property
    def pending(self) -> int:
        """Records not acknowledged nor failed yet."""
        return sum(not future.is_done for future, _, _ in self._in_flight)

    def abandon_pending(self) -> None:
        """At exit, count every record by its own outcome (futures finish out of order across
        partitions): one still in flight is counted as failed. One line for all that failed, not one
        per record: a stop with the broker gone fails the whole buffer at once."""
        failed_before = self.failed
        for future, order, late in self._in_flight:
            if future.is_done:
                self._count(future, order, late)
            else:
                self.failed += 1
        self._in_flight.clear()
        if failed := self.failed - failed_before:
            log.error("%d orders were not acknowledged by the broker before exit", failed)

    def as_json(self, topic: str, elapsed_s: float) -> dict:
        return {
            "topic": topic,
            "orders_sent": self.sent,
            "orders_acknowledged": self.acknowledged,
            "orders_failed": self.failed,
            "elapsed_s": round(elapsed_s, 3),
            "totals": {name: str(total) for name, total in sorted(self.totals.items())},
            "late_orders": self.late,
            "window_seconds": self.window_s,
            "windows": {start.isoformat(): truth.as_json() for start, truth in sorted(self.windows.items())},
        }


def produce(args: argparse.Namespace, stop: StopRequest) -> tuple[DeliveryReport, float]:
    """Send orders until --count or `stop`; flush and close. Returns the report and elapsed seconds."""
    from kafka import KafkaProducer
    from kafka.errors import KafkaTimeoutError, TopicAuthorizationFailedError

    security = load_security(args.client_properties)
    producer = connect(KafkaProducer, args.bootstrap_servers, security, args.connect_timeout, **KAFKA_SETTINGS)
    renew_producer_id_after_reset(producer)
    report = DeliveryReport(window_s=args.window, sale_zone=args.sale_date_zone)
    generator = OrderGenerator(args.seed)
    sale_zone = zone_info(args.sale_date_zone)
    late_by = timedelta(seconds=args.late_by)
    send_every_s = 1 / args.rate if args.rate else 0.0
    started = time.monotonic()
    next_progress = started + PROGRESS_EVERY_S
    try:
        try:
            producer.partitions_for(args.topic)
        except KafkaTimeoutError:
            if not any_reachable(args.bootstrap_servers):
                raise UserError(
                    f"the broker at {args.bootstrap_servers} stopped answering while looking up topic {args.topic!r}"
                ) from None
            raise UserError(f"topic {args.topic!r} not found on {args.bootstrap_servers}") from None
        except TopicAuthorizationFailedError:
            raise UserError(f"user {security.username!r} is not authorized to use topic {args.topic!r}") from None
        # The sale clock starts with the first order, not before the topic lookup: at --speed 240 a
        # lookup of a second would move every sale_date 4 minutes past --start-date.
        clock_start = sale_instant(args.start_date, args.sale_date_zone) if args.start_date else datetime.now(UTC)
        clock_started = time.monotonic()
        while not stop.requested.is_set() and (args.count is None or report.sent < args.count):
            sold_at = sale_clock(clock_start, args.speed, time.monotonic() - clock_started)
            late = generator.is_late(args.late_fraction)
            order = generator.order(wall_time(sold_at - late_by if late else sold_at, sale_zone))
            try:
                future = producer.send(args.topic, key=order.order_id.encode(), value=order.to_json())
            except KafkaTimeoutError:  # the buffer stayed full: the broker takes nothing; this order was not sent
                log.warning("the broker at %s has taken no records for a while; still trying", args.bootstrap_servers)
                continue
            report.track(future, order, late)
            report.settle()
            if not send_every_s and report.sent % CLOCK_EVERY:
                continue  # as fast as possible: the clock is read for the progress line now and then
            now = time.monotonic()
            if now >= next_progress:
                log.info(
                    "sent %d orders (%.0f/s), acknowledged %d, failed %d",
                    report.sent,
                    report.sent / max(now - started, 1e-9),
                    report.acknowledged,
                    report.failed,
                )
                next_progress = now + PROGRESS_EVERY_S
            if send_every_s:
                stop.requested.wait(max(0.0, started + report.sent * send_every_s - now))
    finally:
        finish(producer, report, stop)
    return report, time.monotonic() - started


def finish(producer, report: DeliveryReport, stop: StopRequest) -> None:
    """Flush what is pending, for at most the delivery timeout, or until a second stop signal: a
    record not acknowledged by then (the broker stayed down) is counted as failed rather than waited
    for forever."""
    from kafka.errors import KafkaTimeoutError

    started = time.monotonic()
    flushed = noticed = False
    while not flushed and not stop.immediate.is_set() and time.monotonic() - started < DELIVERY_TIMEOUT_MS / 1000:
        try:
            producer.flush(timeout=FLUSH_POLL_S)
            flushed = True
        except KafkaTimeoutError:
            if not noticed and time.monotonic() - started >= STOP_NOTICE_AFTER_S:
                print_status(
                    f"producer: waiting for the broker to acknowledge {report.pending} orders "
                    f"(at most {DELIVERY_TIMEOUT_MS // 1000} s; Ctrl-C again to stop at once)"
                )
                noticed = True
    if flushed:
        producer.close(timeout=5)
    else:
        abandon(producer)
    report.abandon_pending()  # once the producer is closed, no future changes any more


def main(argv: list[str] | None = None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    setup_logging(args.log_level)
    stop = StopRequest()
    stop.install()
    try:
        report, elapsed = produce(args, stop)
    except UserError as error:
        fail(parser.prog, error)
    summary = report.as_json(args.topic, elapsed)
    if args.summary_file:
        args.summary_file.write_text(json.dumps(summary, indent=2) + "\n")
    late = f"; acknowledged late by {describe(args.late_by)}: {report.late}" if args.late_fraction else ""
    print(
        f"producer: sent {report.sent} orders, {report.acknowledged} acknowledged, {report.failed} failed, "
        f"in {elapsed:.1f}s ({report.acknowledged / max(elapsed, 1e-9):.0f} orders/s){late}"
    )
    if report.failed:
        sys.exit(EXIT_RUNTIME_ERROR)


if __name__ == "__main__":
    main()

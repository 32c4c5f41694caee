"""Publish simulated e-commerce orders to Kafka (`ventas-events`), one JSON object per record.

    python producer.py [--bootstrap-servers HOST:PORT] [--topic T] [--rate N] [--count N]
                       [--seed N] [--summary-file PATH]

Delivery is acks=all with retries and the idempotent producer. On exit (count reached, Ctrl-C or
SIGTERM) every pending record is flushed, a one-line summary is printed, and --summary-file gets
the exact per-product totals of the orders the broker acknowledged: the consumer's ground truth.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections import defaultdict, deque
from dataclasses import dataclass, field
from datetime import datetime
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
from ventas.orders import Order, OrderGenerator
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
        "which is the time the order is sent (dd/MM/yyyy HH:mm:ss, local time).",
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
        help="write a JSON summary with the acknowledged orders' per-product totals here",
    )
    return parser


@dataclass
class DeliveryReport:
    """What the broker acknowledged, told by each record's own future. The sending loop settles the
    futures (no callback and no lock per record): oldest first, as far as the first still in flight."""

    sent: int = 0
    acknowledged: int = 0
    failed: int = 0
    totals: dict[str, Decimal] = field(default_factory=lambda: defaultdict(Decimal))
    _in_flight: deque[tuple[Future, Order]] = field(default_factory=deque, repr=False)

    def track(self, future: Future, order: Order) -> None:
        """A record handed to the producer, counted once its future is done."""
        self._in_flight.append((future, order))
        self.sent += 1

    def settle(self) -> None:
        """Count the records whose outcome is known, oldest first, up to the first still in flight."""
        in_flight = self._in_flight
        while in_flight and in_flight[0][0].is_done:
            future, order = in_flight.popleft()
            if not self._count(future, order):
                log.error("order %s was not delivered: %s", order.order_id, future.exception)

    def _count(self, future: Future, order: Order) -> bool:
        """Count a record whose future is done; True when the broker acknowledged it."""
        if future.succeeded():
            self.acknowledged += 1
            for line in order.products:
                self.totals[line.name] += line.amount
            return True
        self.failed += 1
        return False

    @property
    def pending(self) -> int:
        """Records not acknowledged nor failed yet."""
        return sum(not future.is_done for future, _ in self._in_flight)

    def abandon_pending(self) -> None:
        """At exit, count every record by its own outcome (futures finish out of order across
        partitions): one still in flight is counted as failed. One line for all that failed, not one
        per record: a stop with the broker gone fails the whole buffer at once."""
        failed_before = self.failed
        for future, order in self._in_flight:
            if future.is_done:
                self._count(future, order)
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
        }


def produce(args: argparse.Namespace, stop: StopRequest) -> tuple[DeliveryReport, float]:
    """Send orders until --count or `stop`; flush and close. Returns the report and elapsed seconds."""
    from kafka import KafkaProducer
    from kafka.errors import KafkaTimeoutError, TopicAuthorizationFailedError

    security = load_security(args.client_properties)
    producer = connect(KafkaProducer, args.bootstrap_servers, security, args.connect_timeout, **KAFKA_SETTINGS)
    report = DeliveryReport()
    generator = OrderGenerator(args.seed)
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
        while not stop.requested.is_set() and (args.count is None or report.sent < args.count):
            order = generator.order(datetime.now())
            try:
                future = producer.send(args.topic, key=order.order_id.encode(), value=order.to_json())
            except KafkaTimeoutError:  # the buffer stayed full: the broker takes nothing; this order was not sent
                log.warning("the broker at %s has taken no records for a while; still trying", args.bootstrap_servers)
                continue
            report.track(future, order)
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


def abandon(producer) -> None:
    """Close a producer that still holds records no broker will acknowledge. kafka-python's
    close(timeout) flushes first and raises when that times out (2.3 and 3.0 alike), so its sender
    thread is force-closed first, failing what it holds. Private API: tests/test_stops.py
    (test_a_second_signal_stops_a_producer_waiting_for_a_dead_broker) pins it."""
    producer._sender.force_close()
    producer._sender.join(5)
    producer.close(timeout=0)


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
    print(
        f"producer: sent {report.sent} orders, {report.acknowledged} acknowledged, {report.failed} failed, "
        f"in {elapsed:.1f}s ({report.acknowledged / max(elapsed, 1e-9):.0f} orders/s)"
    )
    if report.failed:
        sys.exit(EXIT_RUNTIME_ERROR)


if __name__ == "__main__":
    main()

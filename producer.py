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
per --window of sale_date: the consumer's ground truth. While the broker acknowledges nothing for
AWAY_AFTER_S, the producer says so once on stderr and generates no new orders until it acknowledges
again (kafka-python keeps retrying what it holds); it says so again when the broker is back.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections import defaultdict, deque
from collections.abc import Callable
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
from ventas.outages import clock_time, waited_for
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
# The broker is away once records have waited this long with none acknowledged: longer than a failover
# (a crashed leader is replaced when it misses broker.session.timeout.ms, 9 s by default), which is
# ridden out without a word; short against the delivery timeout, so that few orders pile up to expire.
AWAY_AFTER_S = 10.0
AWAY_POLL_S = 0.5  # how often a send loop held for the broker looks for an acknowledgement
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
    _on_acknowledged: Callable[[object], None] | None = field(default=None, repr=False)
    _failing: bool = field(default=False, repr=False)  # the last record settled failed

    def track(self, future: Future, order: Order, late: bool = False) -> None:
        """A record handed to the producer (`late`: sent late), counted once its future is done."""
        self._in_flight.append((future, order, late))
        self.sent += 1
        if self._on_acknowledged:
            future.add_callback(self._on_acknowledged)

    def call_on_acknowledged(self, callback: Callable[[object], None] | None) -> None:
        """From now on, `callback` on the producer's thread as each record still in flight is acknowledged
        (None: no more): the moment the broker answers again, whatever order the futures settle in."""
        self._on_acknowledged = callback
        if callback:
            for future, _, _ in self._in_flight:
                if not future.is_done:
                    future.add_callback(callback)

    def settle(self) -> None:
        """Count the records whose outcome is known, oldest first, up to the first still in flight."""
        in_flight = self._in_flight
        while in_flight and in_flight[0][0].is_done:
            future, order, late = in_flight.popleft()
            if self._count(future, order, late):
                self._failing = False
            elif not self._failing:  # a broker away expires every order it held: one line, not one each
                self._failing = True
                log.error(
                    "order %s was not delivered: %s (and the next ones that fail before one is acknowledged,"
                    " counted in the summary)",
                    order.order_id,
                    future.exception,
                )

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

    @property
    def awaiting(self) -> bool:
        """Whether a record still awaits its outcome, as of the last settle() (which stops at the first
        one in flight): cheap enough for every clock read, unlike `pending`."""
        return bool(self._in_flight)

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


@dataclass
class BrokerWatch:
    """Whether the broker at `address` is away: records pending and none acknowledged for AWAY_AFTER_S.
    It says so on stderr once when the broker goes away and once when it is back, never once per retry.
    Back means a record acknowledged after it went away: the count of acknowledged records also grows
    when an expiry lets settle() reach records acknowledged before."""

    address: str
    quiet_since: float  # monotonic: since when nothing was acknowledged while records were pending
    acknowledged: int = 0  # report.acknowledged at the last check
    away: bool = False
    answered: bool = False  # while away: a record was acknowledged since

    def check(self, report: DeliveryReport, now: float, refused: bool = False) -> None:
        """After report.settle(); `refused`: a send just timed out on a full buffer or on metadata."""
        if self.away:
            if self.answered:
                print_status(
                    f"producer: the broker at {self.address} is back after {waited_for(now - self.quiet_since)}; "
                    "sending again"
                )
                self.away = False
                report.call_on_acknowledged(None)
                self.acknowledged, self.quiet_since = report.acknowledged, now
        elif report.acknowledged > self.acknowledged:
            self.acknowledged, self.quiet_since = report.acknowledged, now
        elif not (report.awaiting or refused):
            self.quiet_since = now
        elif now - self.quiet_since >= AWAY_AFTER_S:
            self.away, self.answered = True, False
            report.call_on_acknowledged(self._answer)
            print_status(
                f"producer: waiting for the broker at {self.address} since {self.since(now)}: nothing acknowledged "
                f"for {waited_for(now - self.quiet_since)}, {report.pending} orders pending"
            )

    def _answer(self, _metadata: object) -> None:
        self.answered = True

    def since(self, now: float) -> str:
        """The wall-clock time at which the broker stopped acknowledging, as HH:MM:SS."""
        return clock_time(time.time() - (now - self.quiet_since))


@dataclass
class Progress:
    """The INFO line every PROGRESS_EVERY_S seconds: what was sent, how fast, what came of it."""

    started: float
    due: float = field(init=False)

    def __post_init__(self) -> None:
        self.due = self.started + PROGRESS_EVERY_S

    def tell(self, report: DeliveryReport, watch: BrokerWatch, now: float) -> None:
        if now < self.due:
            return
        log.info(
            "sent %d orders (%.0f/s), acknowledged %d, failed %d%s",
            report.sent,
            report.sent / max(now - self.started, 1e-9),
            report.acknowledged,
            report.failed,
            f"; waiting for the broker since {watch.since(now)}" if watch.away else "",
        )
        self.due = now + PROGRESS_EVERY_S


@dataclass
class Pace:
    """When the next order is due at --rate: counted from `since`, the start or the end of the last
    wait for the broker, so that the orders not generated while it was away are not sent in a burst."""

    every_s: float
    since: float
    sent: int = 0  # report.sent at `since`

    def delay(self, sent: int, now: float) -> float:
        return max(0.0, self.since + (sent - self.sent) * self.every_s - now)

    def restart(self, sent: int, now: float) -> None:
        self.since, self.sent = now, sent


def hold_while_away(report: DeliveryReport, watch: BrokerWatch, progress: Progress, stop: StopRequest) -> None:
    """Generate nothing while the broker is away and records wait for it: kafka-python retries them.
    Ends on the first acknowledgement, on a stop signal, or once nothing is pending any more (every
    record expired): the next order then finds out whether the broker is back."""
    while watch.away and report.awaiting and not stop.requested.wait(AWAY_POLL_S):
        report.settle()
        now = time.monotonic()
        watch.check(report, now)
        progress.tell(report, watch, now)


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
    progress = Progress(started)
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
        watch = BrokerWatch(args.bootstrap_servers, clock_started)
        pace = Pace(send_every_s, clock_started)
        while not stop.requested.is_set() and (args.count is None or report.sent < args.count):
            sold_at = sale_clock(clock_start, args.speed, time.monotonic() - clock_started)
            late = generator.is_late(args.late_fraction)
            order = generator.order(wall_time(sold_at - late_by if late else sold_at, sale_zone))
            try:
                future = producer.send(args.topic, key=order.order_id.encode(), value=order.to_json())
            except KafkaTimeoutError:  # the buffer stayed full (or the topic unknown): this order was not sent
                refused = True
            else:
                refused = False
                report.track(future, order, late)
            report.settle()
            if not (send_every_s or refused or watch.away) and report.sent % CLOCK_EVERY:
                continue  # as fast as possible: the clock is read for the watch and progress now and then
            now = time.monotonic()
            watch.check(report, now, refused)
            progress.tell(report, watch, now)
            if watch.away:
                hold_while_away(report, watch, progress, stop)
                now = time.monotonic()
                pace.restart(report.sent, now)
            if send_every_s:
                stop.requested.wait(pace.delay(report.sent, now))
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

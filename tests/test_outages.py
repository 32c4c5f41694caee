"""Outages waited out, through real processes: Kafka or the totals database gone for minutes while the
producer sends, and the consumer waits, says so once, answers 503 on /healthz, and resumes exactly."""

from __future__ import annotations

import contextlib
import re
import signal
import sqlite3
import subprocess
import threading
import time
import urllib.error
import urllib.request
from decimal import Decimal
from pathlib import Path

import pytest

from tests.helpers import (
    consumer_args,
    final_totals,
    lines_with,
    postgres_totals,
    producer_args,
    start_consumer,
    start_logging_producer,
    start_producer,
    stored_totals,
    summary_totals,
    wait_for_line,
    wait_for_table,
)
from ventas.dashboard import url
from ventas.lab.kafka_broker import LocalBroker
from ventas.lab.ports import free_port
from ventas.lab.postgres_local import LocalPostgres
from ventas.lab.processes import stop

pytestmark = pytest.mark.integration

KAFKA_OUTAGE_S = 180
POSTGRES_OUTAGE_S = 120
TOPIC = "ventas-events"


def health(port: int, path: str = "healthz") -> tuple[int, str]:
    """The consumer's answer at `path` (/healthz): status and text; 0 when it did not answer."""
    try:
        with urllib.request.urlopen(url("127.0.0.1", port) + path, timeout=5) as answer:
            return answer.status, answer.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()
    except OSError as error:
        return 0, str(error)


class HealthLog:
    """/healthz asked every second in a thread of its own: every answer, in order."""

    def __init__(self, port: int) -> None:
        self.port, self.answers, self._done = port, [], threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def _poll(self) -> None:
        while not self._done.wait(1):
            self.answers.append(health(self.port))

    def __enter__(self) -> HealthLog:
        self._thread.start()
        return self

    def __exit__(self, *_) -> None:
        self._done.set()
        self._thread.join(10)


def test_kafka_stopped_for_minutes_is_waited_out(own_broker: LocalBroker, tmp_path: Path) -> None:
    bootstrap, summary, out = own_broker.bootstrap, tmp_path / "summary.json", tmp_path / "consumer.txt"
    said_by_producer, dashboard_port = tmp_path / "producer.txt", free_port()
    producer = start_logging_producer(said_by_producer, *producer_args(bootstrap, TOPIC, summary, 10**9, 50, 51))
    served = ["--dashboard-port", str(dashboard_port), "--metrics-port", str(dashboard_port)]
    consumer = start_consumer(consumer_args(bootstrap, TOPIC, tmp_path, *served), out)
    try:
        wait_for_table(out, consumer)
        with HealthLog(dashboard_port) as healths:
            own_broker.stop()
            time.sleep(KAFKA_OUTAGE_S)
            assert consumer.poll() is None and producer.poll() is None, out.read_text()[-3000:]
            assert len(lines_with(out, f"consumer: waiting for Kafka at {bootstrap} since ")) == 1, out.read_text()
            assert len(lines_with(said_by_producer, f"producer: waiting for the broker at {bootstrap} since ")) == 1
            own_broker.start()
            wait_for_line(out, consumer, f"consumer: Kafka at {bootstrap} is back after ")
            wait_for_line(said_by_producer, producer, f"producer: the broker at {bootstrap} is back after ")
            acknowledged_at_restart = producer_progress(said_by_producer)
            time.sleep(10)
        assert producer_progress(said_by_producer) > acknowledged_at_restart  # its orders flowed again
        # Orders pending when the broker went away expired after the delivery timeout: the producer
        # counts them as failed, keeps them out of its summary, and exits 1.
        truth_reached(out, consumer, producer, summary, producer_exits=(0, 1))
    finally:
        stop_all(producer, consumer)
    said = out.read_text()
    assert len(lines_with(out, f"consumer: Kafka at {bootstrap} is back after ")) == 1, said[-3000:]
    statuses = [status for status, _ in healths.answers]
    assert 503 in statuses and statuses[-1] == 200, healths.answers
    waiting = re.compile(rf"waiting for Kafka at {bootstrap} since \d\d:\d\d:\d\d \(")
    assert any(waiting.match(text) for _, text in healths.answers), healths.answers


def producer_progress(said: Path) -> int:
    """The orders acknowledged as of the producer's last progress line."""
    counts = re.findall(r"acknowledged (\d+), failed", said.read_text())
    return int(counts[-1]) if counts else 0


def test_give_up_after_ends_the_wait_for_kafka_with_one_line(own_broker: LocalBroker, tmp_path: Path) -> None:
    bootstrap, summary, out = own_broker.bootstrap, tmp_path / "summary.json", tmp_path / "consumer.txt"
    producer = start_producer(producer_args(bootstrap, TOPIC, summary, count=200, rate=0, seed=52))
    assert producer.wait(120) == 0
    consumer = start_consumer(consumer_args(bootstrap, TOPIC, tmp_path, "--give-up-after", "30s"), out)
    try:
        wait_for_table(out, consumer)
        own_broker.stop()
        code = consumer.wait(300)
    finally:
        stop(consumer, signal.SIGKILL)
    said = out.read_text()
    assert code == 1, said[-3000:]
    errors = lines_with(out, "consumer.py: error:")
    assert errors == [
        f"consumer.py: error: gave up waiting for Kafka at {bootstrap} after 30 seconds (--give-up-after): "
        + errors[0].split("(--give-up-after): ")[-1]
    ], said[-3000:]
    assert len(lines_with(out, f"consumer: waiting for Kafka at {bootstrap} since ")) == 1, said[-3000:]
    assert "Traceback" not in said


def test_postgresql_stopped_for_minutes_then_restarted_twice_is_waited_out(
    kafka_bootstrap: str, topic: str, tmp_path: Path, own_postgres: LocalPostgres
) -> None:
    summary, out, metrics_port = tmp_path / "summary.json", tmp_path / "consumer.txt", free_port()
    args = consumer_args(
        kafka_bootstrap, topic, tmp_path, "--totals-db", own_postgres.url, "--metrics-port", str(metrics_port)
    )  # the page off (the tests' DASHBOARD_PORT=0), /healthz on a port of its own
    producer = start_producer(producer_args(kafka_bootstrap, topic, summary, count=10**9, rate=100, seed=53))
    consumer = start_consumer(args, out)
    waiting = f"consumer: waiting for the totals database {own_postgres.url} since "
    try:
        wait_for_table(out, consumer)
        assert health(metrics_port, "data.json")[0] == 404  # the page is not served with the metrics
        with HealthLog(metrics_port) as healths:
            assert own_postgres.stop()
            time.sleep(POSTGRES_OUTAGE_S)
            assert consumer.poll() is None, out.read_text()[-3000:]
            assert len(lines_with(out, waiting)) == 1, out.read_text()[-3000:]
            own_postgres.start()
            wait_for_line(out, consumer, f"consumer: the totals database {own_postgres.url} is back after ")
            for _ in range(2):  # restarted twice in a row, quickly, as a minor upgrade does
                assert own_postgres.stop()
                own_postgres.start()
        truth = truth_reached(out, consumer, producer, summary)
    finally:
        stop_all(producer, consumer)
    assert postgres_totals(own_postgres.url) == truth
    assert any(status == 503 and "waiting for the totals database" in text for status, text in healths.answers)


def test_sqlite_held_by_another_writer_is_waited_out(kafka_bootstrap: str, topic: str, tmp_path: Path) -> None:
    summary, out, database = tmp_path / "summary.json", tmp_path / "consumer.txt", tmp_path / "totals.sqlite3"
    producer = start_producer(producer_args(kafka_bootstrap, topic, summary, count=3000, rate=100, seed=54))
    consumer = start_consumer(consumer_args(kafka_bootstrap, topic, tmp_path), out)
    try:
        wait_for_table(out, consumer)
        with contextlib.closing(sqlite3.connect(database, isolation_level=None)) as other:
            other.execute("BEGIN IMMEDIATE")  # another writer, a BI tool's long transaction
            wait_for_line(out, consumer, f"consumer: waiting for the totals database {database} since ")
            time.sleep(20)
            other.execute("ROLLBACK")
        wait_for_line(out, consumer, f"consumer: the totals database {database} is back after ")
        truth = truth_reached(out, consumer, producer, summary)
    finally:
        stop_all(producer, consumer)
    assert len(lines_with(out, "consumer: waiting for the totals database")) == 1, out.read_text()[-3000:]
    assert stored_totals(database) == truth


@pytest.mark.parametrize("dependency", ["Kafka", "the totals database"])
def test_a_stop_during_a_wait_ends_it_at_once(
    dependency: str, own_broker: LocalBroker, own_postgres: LocalPostgres, tmp_path: Path
) -> None:
    bootstrap, summary, out = own_broker.bootstrap, tmp_path / "summary.json", tmp_path / "consumer.txt"
    args = consumer_args(bootstrap, TOPIC, tmp_path, "--totals-db", own_postgres.url)
    producer = start_producer(producer_args(bootstrap, TOPIC, summary, count=2000, rate=100, seed=55))
    consumer = start_consumer(args, out)
    try:
        wait_for_table(out, consumer)
        (own_broker if dependency == "Kafka" else own_postgres).stop()
        wait_for_line(out, consumer, f"consumer: waiting for {dependency} ", timeout_s=240)
        time.sleep(3)
        signalled = time.monotonic()
        code = stop(consumer, signal.SIGTERM)
        stopped_after_s = time.monotonic() - signalled
    finally:
        stop(consumer, signal.SIGKILL)
    said = out.read_text()
    assert code == 0 and stopped_after_s < 5, f"exit {code} after {stopped_after_s:.1f} s: {said[-3000:]}"
    assert "Traceback" not in said, said[-3000:]
    own_broker.start()
    own_postgres.start()
    assert producer.wait(300) == 0, producer.stderr.read()
    truth = summary_totals(summary)
    assert final_totals(bootstrap, TOPIC, tmp_path, "--totals-db", own_postgres.url) == truth
    assert postgres_totals(own_postgres.url) == truth


def truth_reached(
    out: Path, consumer: subprocess.Popen, producer: subprocess.Popen, summary: Path, producer_exits: tuple = (0,)
) -> dict[str, Decimal]:
    """Stop the producer, wait until the consumer's table equals its ground truth, then stop the
    consumer: exit 0, no error, no stack trace. The ground truth."""
    assert stop(producer, signal.SIGTERM) in producer_exits
    truth = summary_totals(summary)
    assert wait_for_table(out, consumer, truth, timeout_s=180) == truth
    said, code = out.read_text(), stop(consumer, signal.SIGTERM)
    assert code == 0, out.read_text()[-3000:]
    assert "Traceback" not in said and "error" not in said.lower(), said[-3000:]
    return truth


def stop_all(*processes: subprocess.Popen) -> None:
    """What a failed test left running: SIGTERM, then SIGKILL (none, once truth_reached stopped them)."""
    for process in processes:
        stop(process, signal.SIGTERM)

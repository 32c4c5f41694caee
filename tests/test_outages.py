"""Outages waited out, through real processes: Kafka or the totals database gone for minutes while the
producer sends, and the consumer waits, says so once, answers 503 on /healthz, and resumes exactly."""

from __future__ import annotations

import contextlib
import json
import re
import signal
import sqlite3
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterator
from datetime import datetime
from decimal import Decimal
from pathlib import Path

import pytest

from tests.helpers import (
    added_up,
    consumer_args,
    final_totals,
    lines_with,
    postgres_totals,
    producer_args,
    run_producer,
    start_consumer,
    start_logging_producer,
    start_producer,
    stored_totals,
    summary_totals,
    topic_totals,
    wait_for_line,
    wait_for_table,
)
from ventas.dashboard import url
from ventas.lab.kafka_broker import LocalBroker
from ventas.lab.kafka_cluster import LocalCluster
from ventas.lab.ports import free_port, free_ports
from ventas.lab.postgres_local import LocalPostgres
from ventas.lab.processes import stop

pytestmark = pytest.mark.integration

KAFKA_OUTAGE_S = 180
CLUSTER_OUTAGE_S = 120  # all three nodes
SHORT_OUTAGE_S = 45  # longer than the Kafka source's 20 s timeout: the consumer waits
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


@pytest.fixture(params=["one broker", "3-node cluster"])
def kafka_to_stop(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[LocalBroker | LocalCluster, int]]:
    """A Kafka of the test's own with a two-partition ventas-events, and how long to stop it for."""
    if request.param == "one broker":
        kafka: LocalBroker | LocalCluster = LocalBroker(free_port(), tmp_path / "broker")
    else:
        kafka = LocalCluster(free_ports(3), 3, tmp_path / "kafka")
    kafka.start(partitions=2, topics=(TOPIC,))
    try:
        yield kafka, KAFKA_OUTAGE_S if request.param == "one broker" else CLUSTER_OUTAGE_S
    finally:
        kafka.stop()


def test_kafka_stopped_for_minutes_is_waited_out(
    kafka_to_stop: tuple[LocalBroker | LocalCluster, int], tmp_path: Path
) -> None:
    kafka, outage_s = kafka_to_stop
    bootstrap, summary, out = kafka.bootstrap, tmp_path / "summary.json", tmp_path / "consumer.txt"
    said_by_producer, dashboard_port = tmp_path / "producer.txt", free_port()
    producer = start_logging_producer(said_by_producer, *producer_args(bootstrap, TOPIC, summary, 10**9, 50, 51))
    served = ["--dashboard-port", str(dashboard_port), "--metrics-port", str(dashboard_port)]
    consumer = start_consumer(consumer_args(bootstrap, TOPIC, tmp_path, *served), out)
    try:
        wait_for_table(out, consumer)
        with HealthLog(dashboard_port) as healths:
            kafka.stop()
            time.sleep(outage_s)
            assert consumer.poll() is None and producer.poll() is None, out.read_text()[-3000:]
            assert len(lines_with(out, f"consumer: waiting for Kafka at {bootstrap} since ")) == 1, out.read_text()
            assert len(lines_with(said_by_producer, f"producer: waiting for the broker at {bootstrap} since ")) == 1
            kafka.start()
            wait_for_line(out, consumer, f"consumer: Kafka at {bootstrap} is back after ")
            wait_for_line(said_by_producer, producer, f"producer: the broker at {bootstrap} is back after ")
            acknowledged_at_restart = producer_progress(said_by_producer)
            time.sleep(10)
        assert producer_progress(said_by_producer) > acknowledged_at_restart  # its orders flowed again
        # Orders pending when the broker went away expired after the delivery timeout: the producer
        # counts them as failed, keeps them out of its summary, and exits 1. Those the broker wrote before
        # it stopped, without its answer reaching the producer, are in the topic all the same: the truth
        # is what the topic holds, and every acknowledged order is in it.
        assert stop(producer, signal.SIGTERM) in (0, 1)
        report = json.loads(summary.read_text())
        held, truth = topic_totals(bootstrap, TOPIC)
        assert report["orders_acknowledged"] <= held <= report["orders_acknowledged"] + report["orders_failed"]
        assert all(truth[product] >= total for product, total in summary_totals(summary).items())
        truth_reached(out, consumer, truth)
    finally:
        stop_all(producer, consumer)
    said = out.read_text()
    assert len(lines_with(out, f"consumer: Kafka at {bootstrap} is back after ")) == 1, said[-3000:]
    statuses = [status for status, _ in healths.answers]
    assert 503 in statuses and statuses[-1] == 200, healths.answers
    waiting = re.compile(rf"waiting for Kafka at {bootstrap} since \d\d:\d\d:\d\d \(")
    assert any(waiting.match(text) for _, text in healths.answers), healths.answers


def test_kafka_stopped_at_each_point_of_a_batch_is_waited_out(own_broker: LocalBroker, tmp_path: Path) -> None:
    """The broker stopped three times, each time for SHORT_OUTAGE_S: while a batch fetches its records,
    while the consumer is idle, and while a batch commits (held by another writer of the SQLite file)."""
    bootstrap, out, ui_port = own_broker.bootstrap, tmp_path / "consumer.txt", free_port()
    database, summaries = tmp_path / "totals.sqlite3", [tmp_path / f"summary-{n}.json" for n in range(3)]
    # A backlog large enough that the first batch fetches for seconds.
    assert run_producer(*producer_args(bootstrap, TOPIC, summaries[0], 60_000, 0, 56)).returncode == 0
    consumer = start_consumer(consumer_args(bootstrap, TOPIC, tmp_path), out, ["--conf", f"spark.ui.port={ui_port}"])
    try:
        fetching = wait_for_a_running_job(ui_port, consumer, out)
        own_broker.stop()
        assert spark_jobs(ui_port, "running") and fetching["jobId"] in [
            j["jobId"] for j in spark_jobs(ui_port, "running")
        ]
        outage(own_broker, out, consumer, waits=1)
        assert wait_for_table(out, consumer, summary_totals(summaries[0]), timeout_s=300)

        own_broker.stop()  # idle: everything sent is counted
        outage(own_broker, out, consumer, waits=2)

        with contextlib.closing(sqlite3.connect(database, isolation_level=None)) as other:
            other.execute("BEGIN IMMEDIATE")
            assert run_producer(*producer_args(bootstrap, TOPIC, summaries[1], 500, 0, 57)).returncode == 0
            wait_for_line(out, consumer, f"consumer: waiting for the totals database {database} since ")
            own_broker.stop()  # the batch has read its records and waits to commit them
            time.sleep(3)
            other.execute("ROLLBACK")
        wait_for_line(out, consumer, f"consumer: the totals database {database} is back after ")
        outage(own_broker, out, consumer, waits=3)

        assert run_producer(*producer_args(bootstrap, TOPIC, summaries[2], 500, 0, 58)).returncode == 0
        truth = dict(sum((Counter(summary_totals(summary)) for summary in summaries), Counter()))
        assert wait_for_table(out, consumer, truth, timeout_s=180) == truth
    finally:
        code = stop(consumer, signal.SIGTERM)
    said = out.read_text()
    assert code == 0 and not error_lines(said), said[-3000:]
    assert stored_totals(database) == truth


def wait_for_a_running_job(ui_port: int, consumer: subprocess.Popen, out: Path, timeout_s: float = 300) -> dict:
    """The first Spark job of the consumer's query once it has run for a second: its batch is reading from Kafka."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert consumer.poll() is None, out.read_text()[-3000:]
        running = spark_jobs(ui_port, "running")
        if running and time.time() - spark_time(running[0]["submissionTime"]) >= 1:
            return running[0]
        time.sleep(0.1)
    raise AssertionError(f"no Spark job ran for a second in {timeout_s} s: {out.read_text()[-3000:]}")


def spark_jobs(ui_port: int, status: str) -> list[dict]:
    """The consumer's Spark jobs in `status` (running, failed...), as its UI's REST API lists them."""
    try:  # the UI answers text until Spark has started
        application = json.loads(health(ui_port, "api/v1/applications")[1])[0]["id"]
        return json.loads(health(ui_port, f"api/v1/applications/{application}/jobs?status={status}")[1])
    except (ValueError, LookupError):
        return []


def spark_time(text: str) -> float:
    """Unix seconds of a time in Spark's REST API: 2026-12-07T20:03:07.123GMT."""
    return datetime.strptime(text.replace("GMT", "+0000"), "%Y-%m-%dT%H:%M:%S.%f%z").timestamp()


def outage(broker: LocalBroker, out: Path, consumer: subprocess.Popen, waits: int) -> None:
    """The broker stopped a moment ago: the consumer says it waits (the `waits`-th time), lives on, and
    says the broker is back once it is started again after SHORT_OUTAGE_S."""
    waiting, back = f"consumer: waiting for Kafka at {broker.bootstrap} since ", f"Kafka at {broker.bootstrap} is back"
    deadline = time.monotonic() + SHORT_OUTAGE_S
    wait_for_line(out, consumer, waiting, timeout_s=SHORT_OUTAGE_S + 60, count=waits)
    time.sleep(max(0.0, deadline - time.monotonic()))
    assert consumer.poll() is None, out.read_text()[-3000:]
    broker.start()
    wait_for_line(out, consumer, back, count=waits)
    assert len(lines_with(out, waiting)) == len(lines_with(out, back)) == waits, out.read_text()[-3000:]


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
        assert stop(producer, signal.SIGTERM) == 0
        truth = truth_reached(out, consumer, summary_totals(summary))
    finally:
        stop_all(producer, consumer)
    assert postgres_totals(own_postgres.url) == truth
    assert any(status == 503 and "waiting for the totals database" in text for status, text in healths.answers)


def test_sqlite_held_by_another_writer_is_waited_out(kafka_bootstrap: str, topic: str, tmp_path: Path) -> None:
    summary, out, database = tmp_path / "summary.json", tmp_path / "consumer.txt", tmp_path / "totals.sqlite3"
    # Orders keep coming until the end, so that a batch needs the database while the other writer holds it.
    producer = start_producer(producer_args(kafka_bootstrap, topic, summary, count=10**9, rate=100, seed=54))
    consumer = start_consumer(consumer_args(kafka_bootstrap, topic, tmp_path), out)
    try:
        wait_for_table(out, consumer)
        with contextlib.closing(sqlite3.connect(database, isolation_level=None)) as other:
            other.execute("BEGIN IMMEDIATE")  # another writer, a BI tool's long transaction
            wait_for_line(out, consumer, f"consumer: waiting for the totals database {database} since ")
            time.sleep(20)
            other.execute("ROLLBACK")
        wait_for_line(out, consumer, f"consumer: the totals database {database} is back after ")
        assert stop(producer, signal.SIGTERM) == 0
        truth = truth_reached(out, consumer, summary_totals(summary))
    finally:
        stop_all(producer, consumer)
    assert len(lines_with(out, "consumer: waiting for the totals database")) == 1, out.read_text()[-3000:]
    assert stored_totals(database) == truth


@pytest.mark.parametrize("dependency", ["Kafka", "PostgreSQL", "SQLite held by another writer"])
def test_a_stop_during_a_wait_ends_it_at_once(
    dependency: str, own_broker: LocalBroker, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    bootstrap, out = own_broker.bootstrap, tmp_path / "consumer.txt"
    summaries = [tmp_path / "summary.json", tmp_path / "during-the-outage.json"]
    postgres = request.getfixturevalue("own_postgres") if dependency == "PostgreSQL" else None
    database = postgres.url if postgres else str(tmp_path / "totals.sqlite3")
    args = consumer_args(bootstrap, TOPIC, tmp_path, "--totals-db", database)
    # Every order acknowledged and counted before the outage: the producer would give up on orders still
    # unacknowledged 2 minutes after its last one, which a slow wait line on a loaded machine outlasts.
    produced = run_producer(*producer_args(bootstrap, TOPIC, summaries[0], count=2000, rate=0, seed=55))
    assert produced.returncode == 0, produced.stderr
    consumer = start_consumer(args, out)
    with contextlib.ExitStack() as held:
        try:
            wait_for_table(out, consumer, summary_totals(summaries[0]))
            if dependency == "Kafka":  # an idle consumer finds out by its own requests
                own_broker.stop()
            else:  # a batch to commit makes the consumer wait for the database
                if postgres:
                    postgres.stop()
                else:
                    other = held.enter_context(contextlib.closing(sqlite3.connect(database, isolation_level=None)))
                    other.execute("BEGIN IMMEDIATE")
                more = run_producer(*producer_args(bootstrap, TOPIC, summaries[1], count=100, rate=0, seed=56))
                assert more.returncode == 0, more.stderr
            waiting_for = "Kafka" if dependency == "Kafka" else "the totals database"
            wait_for_line(out, consumer, f"consumer: waiting for {waiting_for} ", timeout_s=240)
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
    if postgres:
        postgres.start()
    truth = added_up(*(summary for summary in summaries if summary.exists()))
    assert final_totals(bootstrap, TOPIC, tmp_path, "--totals-db", database) == truth
    assert (postgres_totals(database) if postgres else stored_totals(Path(database))) == truth


def truth_reached(out: Path, consumer: subprocess.Popen, truth: dict[str, Decimal]) -> dict[str, Decimal]:
    """Once the producer has stopped: wait until the consumer's table equals the ground truth, then stop
    the consumer: exit 0, no error, no stack trace. The ground truth."""
    assert wait_for_table(out, consumer, truth, timeout_s=180) == truth
    said, code = out.read_text(), stop(consumer, signal.SIGTERM)
    assert code == 0, out.read_text()[-3000:]
    assert not error_lines(said), said[-3000:]
    return truth


def error_lines(said: str) -> list[str]:
    """A stack trace, an ERROR log line or a fatal one-line error; not a wait's reason that names an
    exception (`KafkaTimeoutError: Failed to get offsets ...`)."""
    return [line for line in said.splitlines() if re.search(r"Traceback|\bERROR\b|: error: ", line)]


def stop_all(*processes: subprocess.Popen) -> None:
    """What a failed test left running: SIGTERM, then SIGKILL (none, once truth_reached stopped them)."""
    for process in processes:
        stop(process, signal.SIGTERM)

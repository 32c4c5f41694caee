"""producer.py against the real local broker: exact delivery, a truthful summary, clean exits."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Iterator
from datetime import datetime
from decimal import Decimal
from pathlib import Path

import pytest

from producer import AWAY_AFTER_S, KAFKA_SETTINGS
from tests.helpers import (
    producer_args,
    read_topic,
    run_producer,
    start_logging_producer,
    summary_totals,
    wait_for_line,
    wait_for_records,
)
from ventas.config import any_reachable
from ventas.kafka_python_workarounds import abandon, renew_producer_id_after_reset
from ventas.lab.kafka_broker import LocalBroker
from ventas.lab.ports import free_port
from ventas.lab.processes import ROOT, pipeline_env, stop
from ventas.orders import OrderGenerator

pytestmark = pytest.mark.integration
FROZEN_S = 25  # how long the outage tests freeze the broker: well past AWAY_AFTER_S


@contextlib.contextmanager
def frozen(broker: LocalBroker) -> Iterator[None]:
    """The broker stopped (SIGSTOP), continued on the way out: its connections stay open and nothing
    answers, as when a broker hangs or its network goes away."""
    pid = broker.pid()
    os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(pid, signal.SIGCONT)


def totals_of(values: list[bytes]) -> dict[str, Decimal]:
    totals: dict[str, Decimal] = defaultdict(Decimal)
    for value in values:
        for line in json.loads(value, parse_float=Decimal)["products"]:
            totals[line["name"]] += line["cantidad"] * Decimal(line["price"])
    return dict(totals)


def without_sale_date(value: bytes) -> dict:
    message = json.loads(value, parse_float=Decimal)
    del message["sale_date"]
    return message


def test_count_delivers_exactly_the_generated_orders(kafka_bootstrap: str, topic: str, tmp_path: Path) -> None:
    summary = tmp_path / "summary.json"
    result = run_producer(
        "--bootstrap-servers",
        kafka_bootstrap,
        "--topic",
        topic,
        "--count",
        "500",
        "--rate",
        "0",
        "--seed",
        "11",
        "--summary-file",
        str(summary),
    )
    assert result.returncode == 0, result.stderr
    assert re.search(r"sent 500 orders, 500 acknowledged, 0 failed, in [\d.]+s \(\d+ orders/s\)", result.stdout)

    records = read_topic(kafka_bootstrap, topic)
    generator = OrderGenerator(11)
    expected = {
        o.order_id: without_sale_date(o.to_json()) for o in (generator.order(datetime.now()) for _ in range(500))
    }
    assert len(records) == 500
    assert {r.key.decode(): without_sale_date(r.value) for r in records} == expected
    assert all(r.key.decode() == json.loads(r.value)["order_id"] for r in records)

    written = json.loads(summary.read_text())
    assert (written["orders_sent"], written["orders_acknowledged"], written["orders_failed"]) == (500, 500, 0)
    assert summary_totals(summary) == totals_of([r.value for r in records])


def test_sigterm_flushes_and_the_summary_matches_the_topic(kafka_bootstrap: str, topic: str, tmp_path: Path) -> None:
    summary = tmp_path / "summary.json"
    process = subprocess.Popen(
        [
            sys.executable,
            str(ROOT / "producer.py"),
            "--bootstrap-servers",
            kafka_bootstrap,
            "--topic",
            topic,
            "--rate",
            "300",
            "--summary-file",
            str(summary),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=pipeline_env(),
    )
    try:
        wait_for_records(kafka_bootstrap, topic, 300)
    except BaseException:
        process.kill()
        raise
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 0, stderr
    assert "Traceback" not in stderr

    records = read_topic(kafka_bootstrap, topic)
    written = json.loads(summary.read_text())
    assert written["orders_acknowledged"] == len(records) >= 300
    assert summary_totals(summary) == totals_of([r.value for r in records])


def test_unreachable_broker_is_one_line_and_exit_1(tmp_path: Path) -> None:
    address = f"127.0.0.1:{free_port()}"
    summary = tmp_path / "summary.json"
    result = run_producer(
        "--bootstrap-servers", address, "--count", "5", "--connect-timeout", "2", "--summary-file", str(summary)
    )
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        f"producer.py: error: no Kafka broker reachable at {address} after 2s "
        "(start one with: scripts/kafka-local start)"
    ]
    assert not summary.exists()


def test_orders_sent_after_an_outage_longer_than_the_delivery_timeout_are_acknowledged(
    own_broker: LocalBroker,
) -> None:
    """A broker frozen (SIGSTOP) longer than the delivery timeout expires a batch already sent; once it
    is back, the producer delivers again (kafka_python_workarounds.renew_producer_id_after_reset).
    The timeouts are cut to seconds so that it takes seconds."""
    from kafka import KafkaProducer
    from kafka.errors import KafkaTimeoutError

    settings = {**KAFKA_SETTINGS, "request_timeout_ms": 1000, "delivery_timeout_ms": 3000}
    producer = KafkaProducer(bootstrap_servers=own_broker.bootstrap, **settings)
    renew_producer_id_after_reset(producer)
    try:
        producer.send("ventas-events", b"before").get(timeout=30)
        # sent, unanswered, retried, then expired
        with frozen(own_broker), pytest.raises(KafkaTimeoutError, match="Expiring 1 record"):
            producer.send("ventas-events", b"during").get(timeout=30)
        producer.send("ventas-events", b"after").get(timeout=30)  # without the renewal: KafkaTimeoutError
        # "during" may be there too: the frozen broker may still have appended it once thawed.
        assert {b"before", b"after"} <= {record.value for record in read_topic(own_broker.bootstrap, "ventas-events")}
    finally:
        abandon(producer)


def test_the_producer_waits_for_a_frozen_broker_generating_nothing_and_sends_again_once_it_is_back(
    own_broker: LocalBroker, tmp_path: Path
) -> None:
    """While the broker answers nothing the producer says so once, holds its orders instead of piling
    up orders that would expire, tells it on its progress lines, says when the broker is back, and
    goes on at --rate from then on, without a burst to make up for the time it waited."""
    count, rate = 3000, 100
    summary, err = tmp_path / "summary.json", tmp_path / "stderr.txt"
    bootstrap = own_broker.bootstrap
    producer = start_logging_producer(err, *producer_args(bootstrap, "ventas-events", summary, count, rate, 17))
    try:
        wait_for_records(bootstrap, "ventas-events", 200)
        with frozen(own_broker):
            frozen_at = time.monotonic()
            wait_for_line(err, producer, "producer: waiting for the broker at", timeout_s=FROZEN_S - 5)
            time.sleep(max(0.0, frozen_at + FROZEN_S - time.monotonic()))
            assert producer.poll() is None
        stdout, _ = producer.communicate(timeout=120)
    finally:
        stop(producer, signal.SIGKILL)
    lines = err.read_text().splitlines()
    assert producer.returncode == 0, lines[-20:]
    assert not [line for line in lines if " INFO producer: " not in line and not line.startswith("producer: ")]

    waiting = [line for line in lines if line.startswith("producer: waiting for the broker")]
    back = [line for line in lines if line.startswith("producer: the broker")]
    assert len(waiting) == 1 and len(back) == 1, lines
    assert re.fullmatch(
        rf"producer: waiting for the broker at {bootstrap} since \d\d:\d\d:\d\d: nothing acknowledged for "
        r"\d+ s, \d+ orders pending",
        waiting[0],
    )
    assert re.fullmatch(rf"producer: the broker at {bootstrap} is back after \d+ s; sending again", back[0])
    assert lines.index(waiting[0]) < lines.index(back[0])
    # Nothing generated while waiting: every progress line of the wait shows the same number sent.
    sent_while_waiting = {
        int(sent) for sent in re.findall(r" sent (\d+) orders .*; waiting for the broker since ", "\n".join(lines))
    }
    assert len(sent_while_waiting) == 1, lines

    written = json.loads(summary.read_text())
    assert written["orders_sent"] == written["orders_acknowledged"] == count > sent_while_waiting.pop()
    assert written["orders_acknowledged"] + written["orders_failed"] == written["orders_sent"]
    assert f"sent {count} orders, {count} acknowledged, 0 failed" in stdout
    # It generated nothing for about FROZEN_S - AWAY_AFTER_S and did not make that time up afterwards
    # (at --rate from where it started, the run would take count / rate).
    assert written["elapsed_s"] >= count / rate + (FROZEN_S - AWAY_AFTER_S) / 2


def test_a_stop_signal_ends_the_wait_for_a_frozen_broker_at_once(own_broker: LocalBroker, tmp_path: Path) -> None:
    """SIGTERM while the producer waits for the broker ends the wait at once: it goes on to its final
    flush (saying so), which ends as soon as the broker answers again."""
    summary, err = tmp_path / "summary.json", tmp_path / "stderr.txt"
    bootstrap = own_broker.bootstrap
    producer = start_logging_producer(err, *producer_args(bootstrap, "ventas-events", summary, 10**9, 100, 19))
    try:
        wait_for_records(bootstrap, "ventas-events", 200)
        with frozen(own_broker):
            wait_for_line(err, producer, "producer: waiting for the broker at", timeout_s=FROZEN_S)
            producer.send_signal(signal.SIGTERM)
            signalled = time.monotonic()
            wait_for_line(err, producer, "producer: waiting for the broker to acknowledge", timeout_s=5)
        stdout, _ = producer.communicate(timeout=30)
        stopped_after_s = time.monotonic() - signalled
    finally:
        stop(producer, signal.SIGKILL)
    assert producer.returncode == 0, err.read_text()[-2000:]
    assert stopped_after_s < 10, stopped_after_s
    written = json.loads(summary.read_text())
    assert written["orders_acknowledged"] + written["orders_failed"] == written["orders_sent"]
    assert written["orders_failed"] == 0
    assert f"sent {written['orders_sent']} orders, {written['orders_sent']} acknowledged, 0 failed" in stdout
    assert "Traceback" not in err.read_text()


def test_a_listening_broker_port_is_told_from_a_closed_one() -> None:
    """What tells a broker gone during the topic lookup from a missing topic (both time out)."""
    with socket.create_server(("127.0.0.1", 0)) as listening:
        port = listening.getsockname()[1]
        assert any_reachable(f"127.0.0.1:{free_port()},127.0.0.1:{port}")
    assert not any_reachable(f"127.0.0.1:{port}")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--rate", "-1"], "argument --rate: must be a finite number >= 0, got '-1' (see --help)"),
        (["--count", "0"], "argument --count: must be >= 1, got '0' (see --help)"),
        (["--count", "many"], "argument --count: not a whole number: 'many' (see --help)"),
        (["--bootstrap-servers", "localhost"], "bad bootstrap server 'localhost': expected HOST:PORT"),
        (["--no-such-flag"], "unrecognized arguments: --no-such-flag (see --help)"),
        (["--late-fraction", "1.5"], "argument --late-fraction: must be a number from 0 to 1, got '1.5' (see --help)"),
        (["--late-fraction", "some"], "argument --late-fraction: not a number: 'some' (see --help)"),
        (
            ["--late-by", "soon"],
            "argument --late-by: not a length of time like '1 minute' or '90 seconds': 'soon' (see --help)",
        ),
        (
            ["--start-date", "12/05/2025 08:00"],
            "argument --start-date: not a local date-time like 2025-05-12T08:00: '12/05/2025 08:00' (see --help)",
        ),
        (
            ["--start-date", "2025-05-12T08:00+02:00"],
            "argument --start-date: must have no zone (it is read in --sale-date-zone): '2025-05-12T08:00+02:00' "
            "(see --help)",
        ),
        (["--speed", "0"], "argument --speed: must be a finite number > 0, got '0' (see --help)"),
    ],
)
def test_bad_flags_exit_2_with_one_line(args: list[str], message: str) -> None:
    result = run_producer(*args, "--connect-timeout", "1")
    assert (result.returncode, result.stdout, result.stderr) == (2, "", f"producer.py: error: {message}\n")


def test_bad_environment_values_are_reported_like_bad_flags() -> None:
    result = run_producer(env={"PRODUCER_RATE": "fast", "KAFKA_CONNECT_TIMEOUT": "1"})
    assert (result.returncode, result.stdout, result.stderr) == (
        2,
        "",
        "producer.py: error: argument --rate: not a number: 'fast' (see --help)\n",
    )
    result = run_producer(env={"PRODUCER_START_DATE": "tomorrow", "KAFKA_CONNECT_TIMEOUT": "1"})
    assert (result.returncode, result.stdout, result.stderr) == (
        2,
        "",
        "producer.py: error: argument --start-date: not a local date-time like 2025-05-12T08:00: 'tomorrow' "
        "(see --help)\n",
    )

"""producer.py against the real local broker: exact delivery, a truthful summary, clean exits."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
from collections import defaultdict
from datetime import datetime
from decimal import Decimal
from pathlib import Path

import pytest

from producer import KAFKA_SETTINGS
from tests.helpers import read_topic, run_producer, summary_totals, wait_for_records
from ventas.config import any_reachable
from ventas.kafka_python_workarounds import abandon, renew_producer_id_after_reset
from ventas.lab.kafka_broker import LocalBroker
from ventas.lab.ports import free_port
from ventas.lab.processes import ROOT, pipeline_env
from ventas.orders import OrderGenerator

pytestmark = pytest.mark.integration


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


def test_orders_sent_after_an_outage_longer_than_the_delivery_timeout_are_acknowledged(tmp_path: Path) -> None:
    """A broker frozen (SIGSTOP) longer than the delivery timeout expires a batch already sent; once it
    is back, the producer delivers again (kafka_python_workarounds.renew_producer_id_after_reset).
    The timeouts are cut to seconds so that it takes seconds."""
    from kafka import KafkaProducer
    from kafka.errors import KafkaTimeoutError

    broker = LocalBroker(free_port(), tmp_path / "broker")
    broker.start(topics=("ventas-events",), partitions=2)
    settings = {**KAFKA_SETTINGS, "request_timeout_ms": 1000, "delivery_timeout_ms": 3000}
    producer = KafkaProducer(bootstrap_servers=broker.bootstrap, **settings)
    renew_producer_id_after_reset(producer)
    try:
        producer.send("ventas-events", b"before").get(timeout=30)
        pid = broker.pid()
        os.kill(pid, signal.SIGSTOP)
        try:  # sent, unanswered, retried, then expired
            with pytest.raises(KafkaTimeoutError, match="Expiring 1 record"):
                producer.send("ventas-events", b"during").get(timeout=30)
        finally:
            os.kill(pid, signal.SIGCONT)
        producer.send("ventas-events", b"after").get(timeout=30)  # without the renewal: KafkaTimeoutError
        # "during" may be there too: the frozen broker may still have appended it once thawed.
        assert {b"before", b"after"} <= {record.value for record in read_topic(broker.bootstrap, "ventas-events")}
    finally:
        abandon(producer)
        broker.stop()


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

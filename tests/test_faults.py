"""Faults and bad input, through the real broker and real spark-submit: the final totals are
compared with the producer's ground truth, product by product, exactly. Nothing here is timed."""

from __future__ import annotations

import re
import signal
import time
from decimal import Decimal
from pathlib import Path

import pytest

from tests.helpers import (
    KEEPS_REJECTED,
    consumer_args,
    driver_output,
    end_offsets,
    final_totals,
    printed_lines,
    printed_tables,
    producer_args,
    read_topic,
    rejected_by_reason,
    rejected_rows,
    run_consumer,
    run_producer,
    send_values,
    start_consumer,
    start_producer,
    summary_totals,
    wait_for_table,
)
from tests.reject_examples import REJECT_EXAMPLES
from ventas.lab.kafka_broker import LocalBroker
from ventas.lab.ports import free_port
from ventas.lab.processes import stop

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("kill_with", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
def test_consumer_restarts_mid_stream_lose_nothing_and_count_nothing_twice(
    kafka_bootstrap: str, topic: str, tmp_path: Path, kill_with: signal.Signals
) -> None:
    summary = tmp_path / "summary.json"
    # Sends until told to stop: each restarted consumer has new orders to show a table for.
    producer = start_producer(producer_args(kafka_bootstrap, topic, summary, count=10**9, rate=200, seed=21))
    streaming = consumer_args(kafka_bootstrap, topic, tmp_path, "--trigger-interval", "1 second")
    try:
        for attempt in range(2):
            out = tmp_path / f"consumer-{attempt}.txt"
            consumer = start_consumer(streaming, out)
            try:
                wait_for_table(out, consumer)
                time.sleep(2)
            finally:
                stop(consumer, kill_with)
            assert "Traceback" not in out.read_text()
        assert stop(producer, signal.SIGTERM) == 0, producer.stderr.read()
    finally:
        stop(producer)
    assert final_totals(kafka_bootstrap, topic, tmp_path) == summary_totals(summary)


@pytest.mark.parametrize("trigger", ["streaming", "available-now"])
def test_a_batch_planned_but_not_committed_before_a_stop_runs_on_the_next_start(
    kafka_bootstrap: str, topic: str, tmp_path: Path, trigger: str
) -> None:
    """What a stop between planning a batch (offsets/N) and committing it leaves: the next start runs
    that batch first, then what arrived after it was planned. (Spark 4.1.1's AvailableNow trigger
    ends after that batch, and its streaming query can fail reporting it, SPARK-55271: the consumer
    reads on in both cases.)"""
    import json

    summaries = [tmp_path / f"{n}.json" for n in ("first", "planned", "after")]
    assert run_producer(*producer_args(kafka_bootstrap, topic, summaries[0], count=300, rate=0, seed=5)).returncode == 0
    assert final_totals(kafka_bootstrap, topic, tmp_path) == summary_totals(summaries[0])
    assert run_producer(*producer_args(kafka_bootstrap, topic, summaries[1], count=300, rate=0, seed=6)).returncode == 0
    offsets = tmp_path / "checkpoint" / "sales" / "offsets"
    version, metadata, _ = (offsets / "0").read_text().splitlines()
    planned = {topic: {str(tp.partition): end for tp, end in end_offsets(kafka_bootstrap, topic).items()}}
    (offsets / "1").write_text("\n".join([version, metadata, json.dumps(planned)]))
    assert run_producer(*producer_args(kafka_bootstrap, topic, summaries[2], count=300, rate=0, seed=7)).returncode == 0

    expected: dict[str, Decimal] = {}
    for summary in summaries:
        for name, total in summary_totals(summary).items():
            expected[name] = expected.get(name, 0) + total
    if trigger == "available-now":
        assert final_totals(kafka_bootstrap, topic, tmp_path) == expected
        return
    out = tmp_path / "restarted.txt"
    consumer = start_consumer(consumer_args(kafka_bootstrap, topic, tmp_path, "--trigger-interval", "1 second"), out)
    try:
        assert wait_for_table(out, consumer, expected) == expected
    finally:
        assert stop(consumer, signal.SIGTERM) == 0, out.read_text()[-3000:]
    assert "error" not in out.read_text()


def test_broker_restart_mid_stream(tmp_path: Path) -> None:
    broker = LocalBroker(free_port(), tmp_path / "broker")
    broker.start(topics=("ventas-events",), partitions=2)
    bootstrap, topic, summary = broker.bootstrap, "ventas-events", tmp_path / "summary.json"
    out = tmp_path / "consumer.txt"
    consumer = producer = None
    try:
        producer = start_producer(producer_args(bootstrap, topic, summary, count=4000, rate=200, seed=31))
        consumer = start_consumer(consumer_args(bootstrap, topic, tmp_path, "--trigger-interval", "1 second"), out)
        wait_for_table(out, consumer)
        broker.stop()
        time.sleep(3)
        broker.start()
        assert producer.wait(timeout=300) == 0, producer.stderr.read()
        truth = summary_totals(summary)
        assert wait_for_table(out, consumer, truth, timeout_s=300) == truth  # the running query resumed
        # The idempotent producer's retries left no duplicate behind.
        assert len(read_topic(bootstrap, topic)) == 4000
    finally:
        for process in (consumer, producer):
            if process:
                stop(process, signal.SIGINT)
        broker.stop()
    assert "Traceback" not in out.read_text()


def test_a_poison_flood_is_counted_and_set_aside(kafka_bootstrap: str, topic: str, tmp_path: Path) -> None:
    first, second = tmp_path / "first.json", tmp_path / "second.json"
    assert run_producer(*producer_args(kafka_bootstrap, topic, first, count=1000, rate=0, seed=41)).returncode == 0
    poison = [*REJECT_EXAMPLES] * 20 + [b"x" * 1_000_000] * 3 + [b"\x00" * 1000, b"{" * 10_000, b"[" * 100_000]
    send_values(kafka_bootstrap, topic, poison)
    assert run_producer(*producer_args(kafka_bootstrap, topic, second, count=1000, rate=0, seed=42)).returncode == 0

    result = run_consumer(
        *consumer_args(kafka_bootstrap, topic, tmp_path, "--available-now", "--max-offsets-per-trigger", "300")
    )
    assert result.returncode == 0, result.stdout
    a, b = summary_totals(first), summary_totals(second)
    assert printed_tables(result.stdout)[-1] == {name: a.get(name, 0) + b.get(name, 0) for name in a.keys() | b.keys()}
    assert len(printed_tables(result.stdout)) > 3  # several micro-batches
    assert rejected_by_reason(result.stdout).total() == len(poison)
    assert len(rejected_rows(tmp_path / "rejected")) == (len(poison) if KEEPS_REJECTED else 0)


def delete_all_records(bootstrap: str, topic: str) -> dict:
    """Delete every record of the topic, as retention would; the offsets deleted up to."""
    from kafka import KafkaAdminClient

    ends = end_offsets(bootstrap, topic)
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    admin.delete_records(ends)
    admin.close()
    return ends


def test_deleted_offsets_stop_the_query_unless_told_otherwise(kafka_bootstrap: str, topic: str, tmp_path: Path) -> None:
    counted = tmp_path / "counted.json"
    assert run_producer(*producer_args(kafka_bootstrap, topic, counted, count=200, rate=0, seed=51)).returncode == 0
    assert final_totals(kafka_bootstrap, topic, tmp_path) == summary_totals(counted)
    read_up_to = end_offsets(kafka_bootstrap, topic)

    lost = tmp_path / "lost.json"  # sent, then deleted (as retention would) before the consumer saw them
    assert run_producer(*producer_args(kafka_bootstrap, topic, lost, count=200, rate=0, seed=52)).returncode == 0
    deleted_up_to = delete_all_records(kafka_bootstrap, topic)
    after = tmp_path / "after.json"
    assert run_producer(*producer_args(kafka_bootstrap, topic, after, count=200, rate=0, seed=53)).returncode == 0

    failed = run_consumer(*consumer_args(kafka_bootstrap, topic, tmp_path, "--available-now"))
    assert failed.returncode == 1
    errors = [line for line in printed_lines(failed) if line.startswith("consumer.py: error:")]
    assert len(errors) == 1 and "may have been lost" in errors[0], printed_lines(failed)[-5:]

    resumed = run_consumer(
        *consumer_args(kafka_bootstrap, topic, tmp_path, "--available-now", "--fail-on-data-loss", "false")
    )
    assert resumed.returncode == 0, resumed.stdout
    a, b = summary_totals(counted), summary_totals(after)
    assert printed_tables(resumed.stdout)[-1] == {name: a.get(name, 0) + b.get(name, 0) for name in a.keys() | b.keys()}
    # Spark's Kafka source warns, for each partition, where the skipped range starts and where it ends.
    warnings = "\n".join(line for line in printed_lines(resumed) if " WARN KafkaDataConsumer: " in line)
    # (Spark 4.1 writes no space between the offset and its parenthesis)
    skipped_from = re.findall(r"Cannot fetch offset (\d+) ?\(GroupId: [^,]+, TopicPartition: (\S+)\)", warnings)
    assert set(skipped_from) == {(str(read_up_to[tp]), f"{topic}-{tp.partition}") for tp in read_up_to}, warnings
    recovered_at = re.findall(r"Some data may be lost\. Recovering from the earliest offset: (\d+)", warnings)
    assert set(recovered_at) == {str(offset) for offset in deleted_up_to.values()}


def test_deleting_the_checkpoint_starts_over(kafka_bootstrap: str, topic: str, tmp_path: Path) -> None:
    import shutil

    summary = tmp_path / "summary.json"
    assert run_producer(*producer_args(kafka_bootstrap, topic, summary, count=300, rate=0, seed=61)).returncode == 0
    send_values(kafka_bootstrap, topic, [b"not an order"])
    assert final_totals(kafka_bootstrap, topic, tmp_path) == summary_totals(summary)
    shutil.rmtree(tmp_path / "checkpoint")
    for database in tmp_path.glob("totals.sqlite3*"):  # its totals belong to the deleted checkpoint
        database.unlink()
    assert final_totals(kafka_bootstrap, topic, tmp_path) == summary_totals(summary)  # recounted, not doubled
    assert len(rejected_rows(tmp_path / "rejected")) == (1 if KEEPS_REJECTED else 0)  # rewritten, not appended


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (["--no-such-flag"], {}, "unrecognized arguments: --no-such-flag (see --help)"),
        (
            ["--trigger-interval", "soon"],
            {},
            "argument --trigger-interval: not an interval like '5 seconds': 'soon' (see --help)",
        ),
        (
            [],
            {"MAX_OFFSETS_PER_TRIGGER": "-5"},
            "argument --max-offsets-per-trigger: must be >= 1, got '-5' (see --help)",
        ),
        (
            [],
            {"FAIL_ON_DATA_LOSS": "maybe"},
            "argument --fail-on-data-loss: expected true or false, got 'maybe' (see --help)",
        ),
        (["--bootstrap-servers", "nohost"], {}, "bad bootstrap server 'nohost': expected HOST:PORT"),
    ],
)
def test_bad_consumer_configuration_is_one_line_and_exit_2(args: list[str], env: dict[str, str], message: str) -> None:
    result = run_consumer(*args, env=env)
    assert result.returncode == 2
    assert driver_output(result) == [f"consumer.py: error: {message}"]

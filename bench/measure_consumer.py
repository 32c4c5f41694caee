"""Section 2, the consumer's throughput on a backlog: `consumer.py --available-now` and streaming,
beside the same transformation as a Spark batch job (the ceiling), on the seed's Spark line too; and
the same backlog on a Spark standalone cluster of 1, then 2 workers."""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import tempfile
import threading
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

from bench.measuring import BENCH, Batch, PeakRss, batch_from, kafka_producer, new_topic, phase_shares, repeated
from ventas.lab.kafka_broker import LocalBroker
from ventas.lab.ports import distinct_free_ports
from ventas.lab.processes import line_env, pipeline_env, spark_submit_command, start, stop
from ventas.lab.spark_local import SparkCluster
from ventas.orders import OrderGenerator


def fill_backlog(broker: LocalBroker, count: int) -> str:
    """A topic holding `count` orders, sent with producer.py's settings."""
    topic = new_topic(broker)
    producer = kafka_producer(broker.bootstrap)
    generator = OrderGenerator(seed=3)
    for _ in range(count):
        order = generator.order(datetime.now())
        producer.send(topic, key=order.order_id.encode(), value=order.to_json())
    producer.flush()
    producer.close()
    return topic


def consumer_run(
    broker: LocalBroker,
    topic: str,
    extra: list[str],
    until_records: int,
    peaks: list[float],
    timeout_s: float = 900,
    python: Path | None = None,
    spark_options: Sequence[str] = (),
) -> list[Batch]:
    """Run our consumer on a fresh checkpoint until it has processed `until_records`; each batch that
    read records. `python`: another Spark line's interpreter; `spark_options` go to spark-submit
    (--master)."""
    with tempfile.TemporaryDirectory() as state:
        command = spark_submit_command(
            [
                "--bootstrap-servers",
                broker.bootstrap,
                "--topic",
                topic,
                "--log-level",
                "INFO",
                "--checkpoint-location",
                f"{state}/checkpoint",
                "--rejected-path",
                f"{state}/rejected",
                "--totals-db",
                f"{state}/totals.sqlite3",
                *extra,
            ],
            python=python,
            options=spark_options,
        )
        env = line_env(python) if python else None
        process = start(command, env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        rss = PeakRss(process.pid)
        watchdog = threading.Timer(timeout_s, stop, [process])  # a run that never gets there ends anyway
        watchdog.start()
        batches: list[Batch] = []
        try:
            for line in process.stdout:
                batch = batch_from(line)
                if batch and batch.records:
                    batches.append(batch)
                    if sum(b.records for b in batches) >= until_records:
                        break
        finally:  # a SIGTERM to the bench ends it here too
            watchdog.cancel()
            stop(process)
            peaks.append(rss.stop())
    assert batches, f"the consumer reported no batch: {command}"
    return batches


def batch_ceiling(broker: LocalBroker, topic: str, python: Path | None = None) -> float:
    result = subprocess.run(
        spark_submit_command([broker.bootstrap, topic], BENCH / "batch_ceiling.py", python),
        capture_output=True,
        text=True,
        env=pipeline_env(line_env(python) if python else None),
        check=True,
    )
    match = re.search(r"ceiling: (\d+) records in ([\d.]+) s", result.stdout)
    return int(match.group(1)) / float(match.group(2))


def available_now(
    broker: LocalBroker,
    topic: str,
    backlog: int,
    peaks: list[float],
    python: Path | None = None,
    spark_options: Sequence[str] = (),
    extra: Sequence[str] = (),
    phases: dict | None = None,
) -> float:
    """Orders/s of `consumer.py --available-now` over the backlog: records over the batches' time.
    `phases` gets each of Spark's phases' share of that time."""
    batches = consumer_run(
        broker, topic, ["--available-now", *extra], backlog, peaks, python=python, spark_options=spark_options
    )
    if phases is not None:
        phases.update(phase_shares(batches))
    return sum(b.records for b in batches) / (sum(b.ms for b in batches) / 1000)


def bench_consumer(broker: LocalBroker, topic: str, args: argparse.Namespace) -> dict:
    peaks: list[float] = []

    def streaming() -> float:
        per_batch = max(args.backlog // 5, 1)
        batches = consumer_run(
            broker,
            topic,
            ["--trigger-interval", "0 seconds", "--max-offsets-per-trigger", str(per_batch)],
            args.backlog,
            peaks,
        )
        return statistics.median(b.records / (b.ms / 1000) for b in batches)

    seed_line = args.seed_line_python
    phases: dict[str, float] = {}  # of the last --available-now run
    return {
        "backlog_orders": args.backlog,
        **repeated(
            "orders_per_s", args.repeat, lambda: available_now(broker, topic, args.backlog, peaks, phases=phases)
        ),
        "available_now_phase_shares": phases,
        **repeated("streaming_orders_per_s", args.repeat, streaming),
        **repeated("batch_ceiling_orders_per_s", args.repeat, lambda: batch_ceiling(broker, topic)),
        "peak_rss_mb": max(peaks),
        "seed_line": seed_line
        and {  # the same backlog through the Spark 3.5 line's spark-submit and connector
            "pyspark": spark_version(seed_line),
            **repeated(
                "orders_per_s", args.repeat, lambda: available_now(broker, topic, args.backlog, peaks, seed_line)
            ),
            **repeated("batch_ceiling_orders_per_s", args.repeat, lambda: batch_ceiling(broker, topic, seed_line)),
        },
    }


def spark_version(python: Path) -> str:
    return subprocess.run(
        [python, "-c", "import pyspark; print(pyspark.__version__)"], capture_output=True, text=True, check=True
    ).stdout.strip()


def bench_cluster(broker: LocalBroker, topic: str, args: argparse.Namespace) -> dict:
    """`consumer.py --available-now` submitted to a Spark standalone cluster of 1, then 2 one-core
    workers (scripts/spark-local), on the same backlog as the local-mode figures."""
    figures = {}
    for workers in (1, 2):
        with tempfile.TemporaryDirectory() as state:
            cluster = SparkCluster(Path(state), *distinct_free_ports(2), workers=workers, cores=1, memory="1g")
            cluster.start()
            try:
                options = ["--master", cluster.url]
                figures[f"{workers}_workers"] = repeated(
                    "orders_per_s",
                    args.repeat,
                    lambda o=options: available_now(broker, topic, args.backlog, [], spark_options=o),
                )
            finally:
                cluster.stop()
    return {"backlog_orders": args.backlog, "cores_per_worker": 1, **figures}

"""Section 1, the producer: producer.py's orders/s, beside generation alone, sending alone (with
several kafka-python settings) and Kafka's own Java ProducerPerformance."""

from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import tempfile
import time
from datetime import datetime
from pathlib import Path

from bench.measuring import PeakRss, kafka_producer, new_topic, repeated
from producer import KAFKA_SETTINGS
from ventas.jars import ensure_kafka_libs
from ventas.lab.kafka_broker import LocalBroker
from ventas.lab.processes import pipeline_env, producer_command
from ventas.orders import OrderGenerator

LINGER_MS, BATCH_SIZE = KAFKA_SETTINGS["linger_ms"], KAFKA_SETTINGS["batch_size"]
PRODUCER_SETTINGS = {  # batching tried for the sending path, on top of producer.py's settings; the first is its own
    f"linger {LINGER_MS} ms, batch {BATCH_SIZE // 1024} KiB": {},
    "linger 5 ms, batch 64 KiB": {"linger_ms": 5, "batch_size": 64 * 1024},
    "linger 0, batch 16 KiB": {"linger_ms": 0, "batch_size": 16 * 1024},
    f"linger {LINGER_MS} ms, batch {BATCH_SIZE // 1024} KiB, gzip": {"compression_type": "gzip"},
}


def generation_only(count: int) -> float:
    generator = OrderGenerator(seed=1)
    started = time.perf_counter()
    for _ in range(count):
        generator.order(datetime.now()).to_json()
    return count / (time.perf_counter() - started)


def send_only(broker: LocalBroker, values: list[tuple[bytes, bytes]], settings: dict) -> float:
    topic = new_topic(broker)
    producer = kafka_producer(broker.bootstrap, **settings)
    acked = [0]
    started = time.perf_counter()
    for key, value in values:
        producer.send(topic, key=key, value=value).add_callback(lambda _: acked.__setitem__(0, acked[0] + 1))
    producer.flush()
    elapsed = time.perf_counter() - started
    producer.close()
    assert acked[0] == len(values), f"only {acked[0]} of {len(values)} acknowledged"
    return len(values) / elapsed


def producer_py(broker: LocalBroker, count: int, peaks: list[float]) -> float:
    topic = new_topic(broker)
    with tempfile.NamedTemporaryFile(suffix=".json") as summary:
        process = subprocess.Popen(
            producer_command(
                broker.bootstrap, topic, "--count", str(count), "--rate", "0", "--summary-file", summary.name
            ),
            stdout=subprocess.DEVNULL,
            env=pipeline_env(),
        )
        rss = PeakRss(process.pid)
        assert process.wait() == 0
        peaks.append(rss.stop())
        result = json.loads(Path(summary.name).read_text())
    assert result["orders_acknowledged"] == count
    return count / result["elapsed_s"]


def java_producer_performance(broker: LocalBroker, count: int, record_size: int) -> float:
    topic = new_topic(broker)
    result = subprocess.run(
        [
            "java",
            "-Xmx512m",
            "-cp",
            f"{ensure_kafka_libs()}/*",
            "org.apache.kafka.tools.ProducerPerformance",
            "--topic",
            topic,
            "--num-records",
            str(count),
            "--record-size",
            str(record_size),
            "--throughput",
            "-1",
            "--producer-props",
            f"bootstrap.servers={broker.bootstrap}",
            f"acks={KAFKA_SETTINGS['acks']}",
            f"enable.idempotence={str(KAFKA_SETTINGS['enable_idempotence']).lower()}",
            "linger.ms=5",
            "batch.size=65536",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    final = [line for line in result.stdout.splitlines() if f"{count} records sent" in line][-1]
    return float(re.search(r"([\d.]+) records/sec", final).group(1))


def bench_producer(broker: LocalBroker, args: argparse.Namespace) -> dict:
    generator = OrderGenerator(seed=2)
    orders = [generator.order(datetime.now()) for _ in range(args.producer_orders)]
    values = [(o.order_id.encode(), o.to_json()) for o in orders]
    record_size = round(statistics.mean(len(v) for _, v in values))
    settings = {
        name: repeated("orders_per_s", args.repeat, lambda s=s: send_only(broker, values, s))
        for name, s in PRODUCER_SETTINGS.items()
    }
    default = settings[next(iter(PRODUCER_SETTINGS))]
    peaks: list[float] = []
    result = {
        "record_size_bytes": record_size,
        **repeated("orders_per_s", args.repeat, lambda: producer_py(broker, args.producer_orders, peaks)),
        **repeated("generation_only_orders_per_s", args.repeat, lambda: generation_only(args.producer_orders)),
        "send_only_orders_per_s": default["orders_per_s"],
        "send_only_orders_per_s_range": default["orders_per_s_range"],
        "send_only_by_setting": settings,
        **repeated(
            "java_perf_records_per_s",
            args.repeat,
            lambda: java_producer_performance(broker, args.java_records, record_size),
        ),
    }
    result["one_core_bound_orders_per_s"] = round(
        1 / (1 / result["generation_only_orders_per_s"] + 1 / result["send_only_orders_per_s"]), 1
    )  # producer.py runs generation and kafka-python's send path on one core (the GIL): their times add up
    result["peak_rss_mb"] = max(peaks)
    return result

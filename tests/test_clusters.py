"""Scaling out and losing nodes, through real processes: a Spark standalone cluster (master and two
workers from the installed pyspark) and a 3-node Kafka cluster on 127.0.0.1. Every test compares the
consumer's printed table with the producers' ground truth, product by product, exactly."""

from __future__ import annotations

import contextlib
import json
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import (
    added_up,
    consumer_args,
    end_offsets,
    producer_args,
    run_producer,
    start_consumer,
    start_producer,
    summary_totals,
    wait_for_records,
    wait_for_table,
)
from ventas.lab.daemons import start_time
from ventas.lab.kafka_cluster import LocalCluster
from ventas.lab.kafka_topics import SINGLE, create_topics, partition_states
from ventas.lab.ports import distinct_free_ports, free_ports
from ventas.lab.processes import ROOT, stop
from ventas.lab.spark_local import SparkCluster

pytestmark = pytest.mark.integration
SPARK_LOCAL = str(ROOT / "scripts" / "spark-local")


@pytest.fixture
def spark_cluster(tmp_path: Path) -> Iterator[SparkCluster]:
    """A master and two one-core workers on free ports, stopped by PID after the test."""
    cluster = SparkCluster(tmp_path / "spark", *distinct_free_ports(2), workers=2, cores=1, memory="1g")
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


def executors_of(cluster: SparkCluster, worker: int) -> list[Path]:
    """The executor directories a worker made (app-ID/EXECUTOR-ID): one per executor it launched."""
    return sorted((cluster.state_dir / f"worker-{worker}").glob("app-*/*"))


def test_the_consumer_on_a_standalone_cluster_totals_three_producers_exactly(
    kafka_bootstrap: str, spark_cluster: SparkCluster, tmp_path: Path
) -> None:
    topic = f"ventas-six-{uuid.uuid4().hex[:12]}"
    create_topics(kafka_bootstrap, (topic,), 6, SINGLE)
    summaries = [tmp_path / f"summary-{i}.json" for i in range(3)]
    out = tmp_path / "consumer.txt"
    args = consumer_args(kafka_bootstrap, topic, tmp_path, "--trigger-interval", "1 second")
    consumer = start_consumer(args, out, ["--master", spark_cluster.url])
    producers = [
        start_producer(producer_args(kafka_bootstrap, topic, summary, count=1500, rate=150, seed=70 + i))
        for i, summary in enumerate(summaries)
    ]
    try:
        for producer in producers:
            assert producer.wait(timeout=300) == 0, producer.stderr.read()
        truth = added_up(*summaries)
        assert wait_for_table(out, consumer, truth) == truth
        assert sum(end_offsets(kafka_bootstrap, topic).values()) == 4500
    finally:
        stop(consumer)
        for producer in producers:
            stop(producer)
    assert "Traceback" not in out.read_text()
    assert executors_of(spark_cluster, 1) and executors_of(spark_cluster, 2)  # both workers ran executors


def streaming_and_loaded(
    bootstrap: str, topic: str, tmp_path: Path, spark_options: list[str], seed: int
) -> tuple[subprocess.Popen, subprocess.Popen, list[Path]]:
    """A streaming consumer that has shown the first orders, and a producer sending 3,000 more at a
    steady 150/s, 300 of them already in the topic: what follows happens mid-stream, however long
    Spark took to start. The consumer, the producer and both producers' summaries."""
    first, second = tmp_path / "first.json", tmp_path / "second.json"
    assert run_producer(*producer_args(bootstrap, topic, first, count=300, rate=0, seed=seed)).returncode == 0
    out = tmp_path / "consumer.txt"
    args = consumer_args(bootstrap, topic, tmp_path, "--trigger-interval", "1 second")
    consumer = start_consumer(args, out, spark_options)
    try:
        wait_for_table(out, consumer, summary_totals(first))
        producer = start_producer(producer_args(bootstrap, topic, second, count=3000, rate=150, seed=seed + 1))
        wait_for_records(bootstrap, topic, 600)
    except BaseException:
        stop(consumer)
        raise
    return consumer, producer, [first, second]


def test_the_broker_leading_partition_0_killed_mid_stream_loses_no_acknowledged_order(tmp_path: Path) -> None:
    kafka = LocalCluster(free_ports(3), 3, tmp_path / "kafka")
    topic, out = "ventas-events", tmp_path / "consumer.txt"
    kafka.start(partitions=3, topics=(topic,))
    consumer = producer = None
    try:
        consumer, producer, summaries = streaming_and_loaded(kafka.bootstrap, topic, tmp_path, [], seed=81)
        leader = partition_states(kafka.bootstrap, topic)[0].leader
        assert producer.poll() is None  # it is sending
        kafka.node(leader).kill()
        survivors = ",".join(node.bootstrap for node in kafka.nodes if node.node_id != leader)
        assert wait_for_partitions(survivors, topic, lambda states: states[0].leader not in (leader, -1))
        time.sleep(2)  # the producer goes on with the two nodes left
        kafka.node(leader).start()

        code = producer.wait(timeout=300)
        report = json.loads(summaries[1].read_text())
        assert report["orders_acknowledged"] + report["orders_failed"] == report["orders_sent"] == 3000
        assert code == (1 if report["orders_failed"] else 0), producer.stderr.read()
        # The topic holds exactly the acknowledged orders: none lost, none written twice by a retry.
        assert sum(end_offsets(kafka.bootstrap, topic).values()) == 300 + report["orders_acknowledged"]
        truth = added_up(*summaries)
        assert wait_for_table(out, consumer, truth) == truth
        # The restarted node is back in every partition's in-sync replicas: it caught up.
        full = wait_for_partitions(
            kafka.bootstrap, topic, lambda states: all(set(p.isr) == set(p.replicas) for p in states.values())
        )
        assert full, partition_states(kafka.bootstrap, topic)
    finally:
        for process in (consumer, producer):
            if process:
                stop(process)
        kafka.stop()
    assert "Traceback" not in out.read_text()


def wait_for_partitions(bootstrap: str, topic: str, condition, timeout_s: float = 60) -> bool:
    """Until `condition` holds for the partitions' states. A dead node the metadata still lists
    makes a request fail now and then (kafka-python may pick it): that is retried."""
    from kafka.errors import KafkaError

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with contextlib.suppress(KafkaError):
            if condition(partition_states(bootstrap, topic)):
                return True
        time.sleep(0.5)
    return False


def test_a_lost_worker_and_its_executors_leave_the_query_running_on_the_other(
    kafka_bootstrap: str, topic: str, spark_cluster: SparkCluster, tmp_path: Path
) -> None:
    out = tmp_path / "consumer.txt"
    options = ["--master", spark_cluster.url]
    consumer, producer, summaries = streaming_and_loaded(kafka_bootstrap, topic, tmp_path, options, seed=91)
    try:
        assert executors_of(spark_cluster, 2), "worker 2 runs no executor of the query"
        assert producer.poll() is None  # the query will have new orders to process without worker 2
        killed = spark_cluster.kill_worker(2)
        assert len(killed) >= 2  # the worker and its executor
        assert producer.wait(timeout=300) == 0, producer.stderr.read()
        truth = added_up(*summaries)
        assert wait_for_table(out, consumer, truth) == truth  # the same query, on worker 1 alone
        assert consumer.poll() is None
        assert [w["host"] for w in spark_cluster.alive_workers()] == ["127.0.0.1"]
        assert not any(start_time(pid) for pid in killed)
    finally:
        stop(consumer)
        stop(producer)
    assert "Traceback" not in out.read_text()


def spark_local(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([SPARK_LOCAL, *args], capture_output=True, text=True, timeout=180)


def test_spark_local_start_status_stop(tmp_path: Path) -> None:
    port, webui = map(str, distinct_free_ports(2))
    where = ["--port", port, "--webui-port", webui, "--state-dir", str(tmp_path)]
    started = spark_local("start", "--workers", "2", *where)
    try:
        assert started.returncode == 0, started.stderr
        assert started.stdout.splitlines() == [f"spark://127.0.0.1:{port}", f"http://127.0.0.1:{webui}"]
        status = spark_local("status", "--state-dir", str(tmp_path))  # the ports are found in the state dir
        assert status.returncode == 0, status.stdout
        assert status.stdout.splitlines()[0].startswith(f"master spark://127.0.0.1:{port} (web UI ")
        assert status.stdout.splitlines()[-1] == "2 workers alive: 2 cores, 2048 MB for executors"
        pids = [int(line.split("pid ")[1].split(")")[0]) for line in status.stdout.splitlines() if "(pid " in line]
        assert len(pids) == 3
    finally:
        stopped = spark_local("stop", "--state-dir", str(tmp_path))
    assert stopped.returncode == 0 and stopped.stdout.strip() == "stopped"
    assert not any(start_time(pid) for pid in pids)
    assert spark_local("status", "--state-dir", str(tmp_path)).returncode == 3


def test_spark_local_bad_memory_is_one_line() -> None:
    result = spark_local("start", "--memory", "lots")
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "spark-local: error: argument --memory: expected a size like 512m or 2g, got 'lots' (see --help)"
    )

"""`make bench`: throughput, latency and memory of the pipeline, next to reference implementations,
in one run on this machine, against a local broker the benchmark starts and stops itself.

Writes bench/results.json and the table in BENCHMARKS.md. Each throughput figure is the median of
--repeat runs (min and max shown). Latency: marker orders are sent every 0.25 s during a sustained
load from producer.py, whose achieved rate is recorded with each row; a marker's latency runs from its
acknowledgement by the broker to the first printed table that lists it; ours and naive run in
alternating order from one rate to the next. Sustained rate: the load stepped up, a fresh consumer
at each step, until the p95 exceeds 2 s. Nothing here asserts a target: it reports.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from consumer import QUERY
from producer import KAFKA_SETTINGS
from ventas.config import Parser
from ventas.jars import ensure_kafka_libs, kafka_version
from ventas.lab.kafka_broker import LocalBroker
from ventas.lab.ports import distinct_free_ports, free_port
from ventas.lab.postgres_local import LocalPostgres
from ventas.lab.processes import (
    line_env,
    pipeline_env,
    producer_command,
    spark_submit_command,
    start,
    stop,
)
from ventas.lab.spark_local import SparkCluster
from ventas.orders import OrderGenerator

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
SEED_LINE_PYTHON = ROOT / ".venv-spark3.5" / "bin" / "python"
LINGER_MS, BATCH_SIZE = KAFKA_SETTINGS["linger_ms"], KAFKA_SETTINGS["batch_size"]
PRODUCER_SETTINGS = {  # batching tried for the sending path, on top of producer.py's settings; the first is its own
    f"linger {LINGER_MS} ms, batch {BATCH_SIZE // 1024} KiB": {},
    "linger 5 ms, batch 64 KiB": {"linger_ms": 5, "batch_size": 64 * 1024},
    "linger 0, batch 16 KiB": {"linger_ms": 0, "batch_size": 16 * 1024},
    f"linger {LINGER_MS} ms, batch {BATCH_SIZE // 1024} KiB, gzip": {"compression_type": "gzip"},
}


# ---------------------------------------------------------------- measuring helpers


def summarize(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "runs": len(values)}


def repeated(name: str, times: int, measure: Callable[[], float]) -> dict:
    """`name`: the median of `times` measurements; `name_range`: min, max and the number of runs."""
    figure = summarize([measure() for _ in range(times)])
    return {name: round(figure.pop("median"), 1), f"{name}_range": figure}


def percentiles(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {
        "p50_s": round(ordered[len(ordered) // 2], 3),
        "p95_s": round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.95))], 3),
        "max_s": round(ordered[-1], 3),
        "markers": len(ordered),
    }


def tree_rss_mb(pid: int) -> float:
    """Resident memory of a process and all its descendants, in MB."""
    total, pending = 0, [pid]
    while pending:
        current = pending.pop()
        try:
            status = Path(f"/proc/{current}/status").read_text()
            total += int(re.search(r"VmRSS:\s+(\d+)", status).group(1))
            for task in Path(f"/proc/{current}/task").iterdir():
                pending += [int(c) for c in (task / "children").read_text().split()]
        except (OSError, AttributeError):
            continue
    return total / 1024


class PeakRss:
    """Polls a process tree's RSS in the background and keeps the peak."""

    def __init__(self, pid: int) -> None:
        self.peak_mb = 0.0
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._poll, args=(pid,), daemon=True)
        self._thread.start()

    def _poll(self, pid: int) -> None:
        while not self._done.is_set():
            self.peak_mb = max(self.peak_mb, tree_rss_mb(pid))
            self._done.wait(0.2)

    def stop(self) -> float:
        self._done.set()
        self._thread.join()
        return round(self.peak_mb, 1)


def new_topic(broker: LocalBroker, partitions: int = 2) -> str:
    topic = f"bench-{uuid.uuid4().hex[:8]}"
    broker.create_topics((topic,), partitions)
    return topic


def kafka_producer(bootstrap: str, **overrides):
    """A KafkaProducer with producer.py's settings, except `overrides`."""
    from kafka import KafkaProducer

    return KafkaProducer(bootstrap_servers=bootstrap, **(KAFKA_SETTINGS | overrides))


# ---------------------------------------------------------------- 1. producer


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


# ---------------------------------------------------------------- 2. consumer throughput


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


BATCH_LINE = re.compile(rf"{QUERY} batch (\d+): (\d+) records in (\d+) ms \([^;]*; ([^)]*)\)")
PHASE = re.compile(r"(\w+) (\d+) ms")


@dataclass(frozen=True)
class Batch:
    """A micro-batch as the consumer's INFO line reports it: records, time, and Spark's phases (ms)."""

    records: int
    ms: int
    phases: dict[str, int]


def batch_from(line: str) -> Batch | None:
    match = BATCH_LINE.search(line)
    if not match:
        return None
    phases = {phase: int(ms) for phase, ms in PHASE.findall(match.group(4))}
    return Batch(int(match.group(2)), int(match.group(3)), phases)


def phase_shares(batches: Sequence[Batch]) -> dict[str, float]:
    """Each phase's share of the batches' time, summed over them, longest first."""
    total = sum(batch.ms for batch in batches) or 1
    summed: Counter[str] = Counter()
    for batch in batches:
        summed.update(batch.phases)  # update, unlike +, keeps a phase that took 0 ms
    return {phase: round(ms / total, 3) for phase, ms in summed.most_common()}


def median_phases(batches: Sequence[Batch]) -> dict[str, float]:
    """The median batch time and each phase's median (ms), over the batches that read records."""
    read = [batch for batch in batches if batch.records]
    if not read:
        return {}
    phases = {phase for batch in read for phase in batch.phases}
    medians = {phase: statistics.median(batch.phases.get(phase, 0) for batch in read) for phase in phases}
    longest_first = sorted(medians.items(), key=lambda phase_ms: -phase_ms[1])
    return {"batch": statistics.median(batch.ms for batch in read), **dict(longest_first)}


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


# ---------------------------------------------------------------- 3. end-to-end latency


@contextmanager
def load(broker: LocalBroker, topic: str, rate: int, peaks: list[float]) -> Iterator[dict]:
    """producer.py sending `rate` orders/s for the duration; the dict it yields gets the rate the
    producer achieved (acknowledged orders per second over its run) once it has stopped."""
    achieved: dict = {}
    with tempfile.NamedTemporaryFile(suffix=".json") as summary:
        process = subprocess.Popen(
            producer_command(broker.bootstrap, topic, "--rate", str(rate), "--summary-file", summary.name),
            start_new_session=True,
            stdout=subprocess.DEVNULL,
            env=pipeline_env(),
        )
        rss = PeakRss(process.pid)
        try:
            yield achieved
        finally:
            stop(process)
            peaks.append(rss.stop())
            written = Path(summary.name).read_text()
            if written:
                result = json.loads(written)
                achieved["load_orders_per_s"] = round(result["orders_acknowledged"] / result["elapsed_s"], 1)


def watch_tables(process: subprocess.Popen, first_seen: dict[str, float], batches: list[Batch]) -> threading.Event:
    """Record when each product name first appears in a printed table row, and the batches the
    consumer reports once its query runs; the event is set at the first table."""
    running = threading.Event()

    def read() -> None:
        for line in process.stdout:
            if line.startswith("Batch: "):
                running.set()
            elif line.startswith("|marker-"):
                first_seen.setdefault(line[1:].split("|", 1)[0].strip(), time.time())
            elif running.is_set() and (batch := batch_from(line)):
                batches.append(batch)
        running.set()  # the consumer ended: nothing to wait for

    threading.Thread(target=read, daemon=True).start()
    return running


@dataclass(frozen=True)
class Measured:
    """A consumer measured under load: its command, TOPIC standing for each run's own topic; with
    `postgres`, its totals go to a new database of that server named after the topic."""

    command: list[str]
    postgres: LocalPostgres | None = None

    def for_topic(self, topic: str) -> list[str]:
        if self.postgres:
            self.postgres.create_database(topic)
        return [part.replace("TOPIC", topic) for part in self.command]


def latency_run(
    broker: LocalBroker,
    rate: int,
    consumer: Measured,
    args: argparse.Namespace,
    producer_peaks: list[float],
    driver_peaks: list[float],
    sustain: float | None = None,
) -> dict:
    """Markers' latency for `sustain` seconds (default --sustain) under a load of `rate` orders/s,
    started once the consumer has printed its first table, then --warmup seconds of load unmeasured."""
    topic = new_topic(broker)
    process = start(consumer.for_topic(topic), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    rss = PeakRss(process.pid)
    first_seen: dict[str, float] = {}
    batches: list[Batch] = []
    running = watch_tables(process, first_seen, batches)
    acked: dict[str, float] = {}
    markers = kafka_producer(broker.bootstrap, linger_ms=0)
    try:
        running.wait(timeout=300)  # Spark's start is not what we measure
        with load(broker, topic, rate, producer_peaks) as achieved:
            time.sleep(args.warmup)  # nor its first batches under load
            deadline = time.time() + (args.sustain if sustain is None else sustain)
            while time.time() < deadline:
                name = f"marker-{uuid.uuid4().hex[:8]}"
                value = json.dumps(
                    {
                        "order_id": name,
                        "customer_document": "000-00-0000",
                        "products": [{"name": name, "cantidad": 1, "price": 1}],
                        "sale_date": "01/01/2026 00:00:00",
                    }
                ).encode()
                markers.send(topic, key=name.encode(), value=value).get(timeout=30)
                acked[name] = time.time()
                time.sleep(0.25)
            drained = time.time() + args.drain
            while time.time() < drained and not acked.keys() <= first_seen.keys():
                time.sleep(0.2)
    finally:
        markers.close()
        stop(process)
        driver_peaks.append(rss.stop())
    seen = [first_seen[name] - at for name, at in acked.items() if name in first_seen]
    result = percentiles(seen) if seen else {"p50_s": None, "p95_s": None, "max_s": None, "markers": 0}
    result["markers_not_seen"] = len(acked) - len(seen)
    result["load_orders_per_s"] = achieved.get("load_orders_per_s")
    result["median_batch_ms"] = median_phases(batches)
    return result


CONSUMERS = ("ours", "ours, PostgreSQL", "naive")


def measured_consumers(
    broker: LocalBroker, state: str, postgres: LocalPostgres, args: argparse.Namespace
) -> dict[str, Measured]:
    """The consumers measured under load (--consumers), by name: ours as a user runs it (SQLite), ours
    with its totals in PostgreSQL, and the seed's naive one; ours with --spark-conf."""
    options = [part for setting in args.spark_conf for part in ("--conf", setting)]
    ours = spark_submit_command(
        [
            "--bootstrap-servers",
            broker.bootstrap,
            "--topic",
            "TOPIC",
            "--checkpoint-location",
            f"{state}/TOPIC/checkpoint",
            "--rejected-path",
            f"{state}/TOPIC/rejected",
            "--log-level",
            "INFO",  # a line per batch, with Spark's phases
        ],
        options=options,
    )
    consumers = {
        "ours": Measured([*ours, "--totals-db", f"{state}/TOPIC/totals.sqlite3"]),
        "ours, PostgreSQL": Measured([*ours, "--totals-db", postgres.database_url("TOPIC")], postgres),
        "naive": Measured(spark_submit_command([broker.bootstrap, "TOPIC"], BENCH / "naive_consumer.py")),
    }
    return {name: consumers[name] for name in CONSUMERS if name in args.consumers}


def bench_latency(broker: LocalBroker, postgres: LocalPostgres, args: argparse.Namespace) -> tuple[dict, dict]:
    with tempfile.TemporaryDirectory() as state:
        consumers = measured_consumers(broker, state, postgres, args)
        producer_peaks: list[float] = []
        driver_peaks: dict[str, list[float]] = {name: [] for name in consumers}
        latency = {}
        order = list(consumers)
        for rate in args.rates:  # rotating which runs first, so none always gets the warmer machine
            latency[str(rate)] = {
                name: latency_run(broker, rate, consumers[name], args, producer_peaks, driver_peaks[name])
                for name in order
            }
            latency[str(rate)]["first"] = order[0]
            achieved = ", ".join(f"{latency[str(rate)][name]['load_orders_per_s']}/s ({name})" for name in consumers)
            print(f"latency at {rate}/s: load achieved {achieved}", file=sys.stderr, flush=True)
            order = order[1:] + order[:1]
    memory = {
        "producer": max(producer_peaks),
        **{f"driver, {name}": max(peaks) for name, peaks in driver_peaks.items()},
    }
    return latency, memory


# ---------------------------------------------------------------- 4. sustained rate

SUSTAINED_P95_S = 2.0
LOAD_SHORTFALL = 0.95  # a step counts only if the load producer reached this share of its rate


def falls_short(run: dict, rate: int) -> str | None:
    """Why a step at `rate` was not sustained, or None when it was."""
    if run["markers_not_seen"]:
        return f"{run['markers_not_seen']} markers not printed within --drain"
    if run["p95_s"] > SUSTAINED_P95_S:
        return f"p95 {run['p95_s']} s"
    achieved = run["load_orders_per_s"] or 0
    if achieved < LOAD_SHORTFALL * rate:
        return f"the load producer reached {achieved}/s"
    return None


def bench_sustained(broker: LocalBroker, postgres: LocalPostgres, args: argparse.Namespace) -> dict:
    """For each consumer, the load stepped up through --sustained-rates, --sustained-for seconds of
    markers at each, until a step's p95 exceeds 2 s (or a marker is missed, or the load producer
    falls short of the rate): the highest step held, with its achieved rate, and the step that failed."""
    found = {}
    with tempfile.TemporaryDirectory() as state:
        for name, consumer in measured_consumers(broker, state, postgres, args).items():
            steps = []
            for rate in args.sustained_rates:
                run = latency_run(broker, rate, consumer, args, [], [], sustain=args.sustained_for)
                run["rate"], run["fell_short"] = rate, falls_short(run, rate)
                steps.append(run)
                print(
                    f"sustained, {name}: {rate}/s (achieved {run['load_orders_per_s']}/s) p95 {run['p95_s']} s"
                    f"{', not held: ' + run['fell_short'] if run['fell_short'] else ''}",
                    file=sys.stderr,
                    flush=True,
                )
                if run["fell_short"]:
                    break
            held = [step for step in steps if not step["fell_short"]]
            found[name] = {"held": held[-1] if held else None, "failed": steps[-1] if steps[-1]["fell_short"] else None}
    return found


# ---------------------------------------------------------------- report


def machine() -> dict:
    import kafka
    import pyspark

    memory_kb = int(re.search(r"MemTotal:\s+(\d+)", Path("/proc/meminfo").read_text()).group(1))
    java = subprocess.run(["java", "-version"], capture_output=True, text=True).stderr.splitlines()[0]
    return {
        "cores": os.cpu_count(),
        "memory_gib": round(memory_kb / 1024**2, 1),
        "cpu": platform.processor(),
        "python": platform.python_version(),
        "pyspark": pyspark.__version__,
        "kafka_broker": kafka_version(),
        "kafka_python": kafka.__version__,
        "java": java,
    }


def ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 3) if a and b else None


def fmt(figures: dict, name: str) -> str:
    spread = figures[f"{name}_range"]
    return f"{figures[name]:,.0f} ({spread['min']:,.0f} to {spread['max']:,.0f})"


def seed_line_rows(consumer: dict) -> list[str]:
    """The consumer's figures on the seed's Spark line, beside the default's, from the same backlog."""
    seed = consumer["seed_line"]
    if not seed:
        return ["The seed's Spark 3.5 line was not measured (no `.venv-spark3.5`: `make deps SPARK_LINE=3.5`).", ""]
    return [
        f"Spark lines, same backlog: pyspark {seed['pyspark']} beside the default above.",
        "",
        f"| run | pyspark {seed['pyspark']} | default | default / {seed['pyspark']} |",
        "|---|---|---|---|",
        *[
            f"| {label} | {fmt(seed, name)} | {fmt(consumer, name)} | {ratio(consumer[name], seed[name])} |"
            for label, name in (
                ("`consumer.py --available-now`", "orders_per_s"),
                ("batch ceiling", "batch_ceiling_orders_per_s"),
            )
        ],
        "",
    ]


def markdown(results: dict) -> str:
    m = results["machine"]
    runs = results["repeat"]
    lines = [
        "# Benchmarks",
        "",
        f"Measured by `make bench` ({results['measured_at']}) on {m['cores']} cores, {m['memory_gib']} GiB, "
        f"Python {m['python']}, pyspark {m['pyspark']}, Kafka broker {m['kafka_broker']}, kafka-python "
        f"{m['kafka_python']}, {m['java']}. Throughput: median (min to max) of {runs} runs.",
        "",
    ]
    for section, render in SECTIONS.items():
        if section in results:
            lines += render(results)
    return "\n".join(lines)


def producer_markdown(results: dict) -> list[str]:
    p = results["producer"]
    return [
        "## Producer (orders/s, acknowledged with acks=all)",
        "",
        "| path | orders/s |",
        "|---|---|",
        f"| `producer.py --rate 0` (generation + sending) | {fmt(p, 'orders_per_s')} |",
        f"| generation alone (Faker, no Kafka) | {fmt(p, 'generation_only_orders_per_s')} |",
        f"| sending alone (pre-generated orders, producer.py's settings) | {fmt(p, 'send_only_orders_per_s')} |",
        f"| one-core bound: 1 / (1 / generation + 1 / sending), from the medians | "
        f"{p['one_core_bound_orders_per_s']:,.0f} |",
        f"| Kafka's Java `ProducerPerformance`, {p['record_size_bytes']}-byte records, same acks | "
        f"{fmt(p, 'java_perf_records_per_s')} |",
        "",
        f"- producer.py / one-core bound: **{results['ratios']['producer_vs_one_core_bound']}**",
        f"- producer.py / generation alone: **{results['ratios']['producer_vs_generation']}**",
        f"- producer.py / Java ProducerPerformance: **{results['ratios']['producer_vs_java']}**",
        "",
        "Sending path by kafka-python setting:",
        "",
        "| setting | orders/s |",
        "|---|---|",
        *[f"| {name} | {fmt(figure, 'orders_per_s')} |" for name, figure in p["send_only_by_setting"].items()],
        "",
    ]


def consumer_markdown(results: dict) -> list[str]:
    c = results["consumer"]
    return [
        f"## Consumer ({c['backlog_orders']:,} orders of backlog)",
        "",
        "| run | orders/s per micro-batch |",
        "|---|---|",
        f"| `consumer.py --available-now` | {fmt(c, 'orders_per_s')} |",
        f"| `consumer.py` streaming, 5 micro-batches | {fmt(c, 'streaming_orders_per_s')} |",
        f"| same transformation as a Spark batch job (ceiling) | {fmt(c, 'batch_ceiling_orders_per_s')} |",
        "",
        f"- consumer / batch ceiling: **{results['ratios']['consumer_vs_ceiling']}** (target >= 0.85)",
        "",
        "Where `--available-now`'s batch time goes, by Spark's phases of the query (`addBatch` is the sink: the "
        "parse and aggregation job, the database transaction and the printed table):",
        "",
        "| phase | share of the batches' time |",
        "|---|---|",
        *[f"| {phase} | {share} |" for phase, share in c["available_now_phase_shares"].items()],
        "",
        *seed_line_rows(c),
    ]


def cluster_markdown(results: dict) -> list[str]:
    c = results["cluster"]
    lines = [
        f"## Consumer on a Spark standalone cluster (the same {c['backlog_orders']:,} orders of backlog)",
        "",
        "| `consumer.py --available-now` | orders/s per micro-batch |",
        "|---|---|",
    ]
    if "consumer" in results:
        local = fmt(results["consumer"], "orders_per_s")
        lines.append(f"| local mode (`local[*]`, driver and tasks in one JVM) | {local} |")
    cores = c["cores_per_worker"]
    lines += [
        f"| `--master spark://...`, 1 worker of {cores} core | {fmt(c['1_workers'], 'orders_per_s')} |",
        f"| `--master spark://...`, 2 workers of {cores} core each | {fmt(c['2_workers'], 'orders_per_s')} |",
        "",
        f"- 2 workers / 1 worker: **{results['ratios']['cluster_2_vs_1_workers']}**. What limits it on "
        f"{results['machine']['cores']} cores: a second worker adds a task slot but no CPU. The driver (planning "
        "each micro-batch, collecting the table), the broker serving the fetches and every executor JVM share "
        "the same cores, and each task crosses JVMs (serialization, RPC, shuffle over loopback), which local "
        "mode does not pay. More workers pay off with more cores, and at least as many topic partitions as "
        "task slots.",
        "",
    ]
    return lines


def p95(runs: dict, consumer: str) -> float | None:
    return runs.get(consumer, {}).get("p95_s")


def latency_markdown(results: dict) -> list[str]:
    lines = [
        "## End-to-end latency (broker acknowledgement -> first printed table listing the order)",
        "",
        "| rate (orders/s) | consumer | load achieved (orders/s) | p50 / p95 / max (s) | p95 naive / this |",
        "|---|---|---|---|---|",
    ]
    for rate, runs in results["latency"].items():
        for name, run in runs.items():
            if name != "first":
                first = " (ran first)" if name == runs["first"] else ""
                lines.append(
                    f"| {rate} | {name}{first} | {run['load_orders_per_s']} | {run['p50_s']} / {run['p95_s']} / "
                    f"{run['max_s']} | {ratio(p95(runs, 'naive'), run['p95_s'])} |"
                )
    lines += [
        "",
        "Ours: `consumer.py` as a user runs it (its totals in SQLite), and with `--totals-db postgresql://...` "
        "(a local server). Naive: the seed's code path with Spark's defaults (200 shuffle partitions, default "
        "trigger, console sink), `bench/naive_consumer.py`. Targets at 1,000/s: ours p95 <= 1.0 s, p50 <= 0.7 s.",
        "",
        *batch_phase_rows(results["latency"]),
    ]
    return lines


def batch_phase_rows(latency: dict) -> list[str]:
    """The median micro-batch of our consumers' latency runs, by Spark's phases: what a marker waits for."""
    runs = [
        (rate, name, run["median_batch_ms"])
        for rate, by_name in latency.items()
        for name, run in by_name.items()
        if name != "first" and run.get("median_batch_ms")
    ]
    if not runs:
        return []
    phases = list(dict.fromkeys(phase for *_, medians in runs for phase in medians if phase != "batch"))
    return [
        "Median micro-batch of our consumer in those runs, in ms, by Spark's phases (a marker waits for the batch "
        "running when it arrives, then for its own; `addBatch` is the sink: the parse and aggregation job, the "
        "database transaction and the printed table; `walCommit` and `commitOffsets` write the checkpoint):",
        "",
        f"| rate (orders/s) | consumer | batch | {' | '.join(phases)} |",
        f"|---|---|---|{'---|' * len(phases)}",
        *[
            f"| {rate} | {name} | {medians['batch']:g} | {' | '.join(f'{medians.get(p, 0):g}' for p in phases)} |"
            for rate, name, medians in runs
        ],
        "",
    ]


def sustained_markdown(results: dict) -> list[str]:
    def step(run: dict | None) -> str:
        if run is None:
            return "none"
        return f"{run['rate']:,} (achieved {run['load_orders_per_s']:,}), p95 {run['p95_s']} s"

    rates = ", ".join(f"{rate:,}" for rate in results["sustained_rates"])
    return [
        f"## Sustained rate (end-to-end p95 <= {SUSTAINED_P95_S:g} s for {results['sustained_for_s']:g} s)",
        "",
        "| consumer | highest rate held (orders/s) | first rate not held | why not |",
        "|---|---|---|---|",
        *[
            f"| {name} | {step(pair['held'])} | {step(pair['failed']) if pair['failed'] else 'all held'} | "
            f"{pair['failed']['fell_short'] if pair['failed'] else ''} |"
            for name, pair in results["sustained"].items()
        ],
        "",
        f"Rates stepped through: {rates} orders/s, one fresh topic and consumer each, measured as the latency rows "
        "are. A step is held when every marker is printed, the p95 is within the bound and the load producer "
        f"reaches {LOAD_SHORTFALL:.0%} of the rate (on this machine it shares the cores with the consumer and "
        "the broker).",
        "",
    ]


def memory_markdown(results: dict) -> list[str]:
    return [
        "## Peak memory (RSS, MB, process and children)",
        "",
        "| process | MB |",
        "|---|---|",
        *[f"| {name} | {value} |" for name, value in results["peak_rss_mb"].items()],
        "",
    ]


SECTIONS = {  # what --sections chooses from, in the order measured and shown
    "producer": producer_markdown,
    "consumer": consumer_markdown,
    "cluster": cluster_markdown,
    "latency": latency_markdown,
    "sustained": sustained_markdown,
    "peak_rss_mb": memory_markdown,
}


def main() -> None:
    parser = Parser(prog="bench.run", description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument(
        "--sections",
        nargs="+",
        choices=list(SECTIONS)[:-1],
        default=list(SECTIONS)[:-1],
        help="what to measure (default: everything); consumer and cluster read the same backlog",
    )
    parser.add_argument("--producer-orders", type=int, default=50_000)
    parser.add_argument("--java-records", type=int, default=300_000)
    parser.add_argument("--backlog", type=int, default=1_000_000)
    parser.add_argument("--rates", type=int, nargs="+", default=[100, 1000, 10000])
    parser.add_argument("--warmup", type=float, default=15.0, help="seconds of load before markers are sent")
    parser.add_argument("--sustain", type=float, default=20.0, help="seconds of markers at each rate")
    parser.add_argument("--drain", type=float, default=60.0, help="at most this long to wait for the last markers")
    parser.add_argument(
        "--sustained-rates",
        type=int,
        nargs="+",
        default=[1000, 2000, 3000, 4000, 5000, 6000, 8000, 10000],
        help="rates stepped through, lowest first, for the highest one sustained at p95 <= 2 s",
    )
    parser.add_argument("--sustained-for", type=float, default=60.0, help="seconds of markers at each step")
    parser.add_argument(
        "--consumers",
        nargs="+",
        choices=CONSUMERS,
        default=list(CONSUMERS),
        help="the consumers measured in the latency and sustained sections (default: all)",
    )
    parser.add_argument(
        "--spark-conf",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a Spark setting for our consumer's spark-submit (--conf), to measure its effect; repeatable",
    )
    parser.add_argument("--output", type=Path, default=BENCH / "results.json")
    parser.add_argument("--markdown", type=Path, default=ROOT / "BENCHMARKS.md")
    parser.add_argument(
        "--seed-line-python",
        type=Path,
        default=SEED_LINE_PYTHON if SEED_LINE_PYTHON.exists() else None,
        help="interpreter of the Spark 3.5 line's environment, measured beside the default "
        "(default: .venv-spark3.5/bin/python when it exists)",
    )
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so the broker below is stopped, by PID

    results: dict = {"measured_at": datetime.now().isoformat(timespec="seconds"), "repeat": args.repeat}
    with tempfile.TemporaryDirectory() as data_dir:
        broker = LocalBroker(free_port(), Path(data_dir) / "kafka")
        postgres = LocalPostgres(free_port(), Path(data_dir) / "postgres")
        broker.start()
        try:
            if {"latency", "sustained"} & set(args.sections):
                postgres.start()
            if "producer" in args.sections:
                print("producer ...", file=sys.stderr, flush=True)
                results["producer"] = bench_producer(broker, args)
            backlog = fill_backlog(broker, args.backlog) if {"consumer", "cluster"} & set(args.sections) else ""
            if "consumer" in args.sections:
                print("consumer ...", file=sys.stderr, flush=True)
                results["consumer"] = bench_consumer(broker, backlog, args)
            if "cluster" in args.sections:
                print("consumer on a standalone cluster, 1 and 2 workers ...", file=sys.stderr, flush=True)
                results["cluster"] = bench_cluster(broker, backlog, args)
            if "latency" in args.sections:
                print("latency ...", file=sys.stderr, flush=True)
                results["latency"], memory = bench_latency(broker, postgres, args)
            if "sustained" in args.sections:
                print("sustained rate ...", file=sys.stderr, flush=True)
                results["sustained"] = bench_sustained(broker, postgres, args)
                results["sustained_rates"], results["sustained_for_s"] = args.sustained_rates, args.sustained_for
        finally:
            broker.stop()
            postgres.remove()
    results["machine"] = machine()
    results["peak_rss_mb"] = peak_memory(results, memory if "latency" in results else {})
    results["ratios"] = ratios(results)
    args.output.write_text(json.dumps(results, indent=2) + "\n")
    table = markdown(results)
    args.markdown.write_text(table)
    print(table)


def peak_memory(results: dict, latency_memory: dict) -> dict:
    named = {
        "producer (--rate 0)": results.get("producer", {}).get("peak_rss_mb"),
        "producer (latency load)": latency_memory.get("producer"),
        "spark driver, consumer throughput": results.get("consumer", {}).get("peak_rss_mb"),
        **{f"spark {name} (latency)": mb for name, mb in latency_memory.items() if name.startswith("driver")},
    }
    return {name: mb for name, mb in named.items() if mb is not None}


def ratios(results: dict) -> dict:
    """The ratios the report states, for the sections measured."""
    found = {}
    if producer := results.get("producer"):
        found["producer_vs_one_core_bound"] = ratio(producer["orders_per_s"], producer["one_core_bound_orders_per_s"])
        found["producer_vs_generation"] = ratio(producer["orders_per_s"], producer["generation_only_orders_per_s"])
        found["producer_vs_java"] = ratio(producer["orders_per_s"], producer["java_perf_records_per_s"])
    if consumer := results.get("consumer"):
        found["consumer_vs_ceiling"] = ratio(consumer["orders_per_s"], consumer["batch_ceiling_orders_per_s"])
    if cluster := results.get("cluster"):
        found["cluster_2_vs_1_workers"] = ratio(
            cluster["2_workers"]["orders_per_s"], cluster["1_workers"]["orders_per_s"]
        )
    if latency := results.get("latency"):
        found["latency_p95_naive_vs_ours"] = {
            rate: ratio(p95(runs, "naive"), p95(runs, "ours")) for rate, runs in latency.items()
        }
    return found


if __name__ == "__main__":
    main()

"""Sections 3 and 4, under a sustained load from producer.py: the end-to-end latency of marker orders
at each rate, for our consumer (totals in SQLite, in PostgreSQL) and the seed's naive one; and the
highest rate each sustains with a p95 within SUSTAINED_P95_S."""

from __future__ import annotations

import argparse
import contextlib
import json
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from bench.measuring import BENCH, Batch, PeakRss, batch_from, kafka_producer, median_phases, new_topic, percentiles
from ventas.lab.kafka_broker import LocalBroker
from ventas.lab.ports import free_port
from ventas.lab.postgres_local import LocalPostgres
from ventas.lab.processes import pipeline_env, producer_command, spark_submit_command, start, stop

SUSTAINED_P95_S = 2.0
LOAD_SHORTFALL = 0.95  # a step counts only if the load producer reached this share of its rate


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
    scraped: str | None = None  # a URL (its /metrics) fetched every second while it runs, as Prometheus would

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
    scrapes = scraping(consumer.scraped) if consumer.scraped else None
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
        if scrapes:
            scrapes["stop"].set()
        stop(process)
        driver_peaks.append(rss.stop())
    seen = [first_seen[name] - at for name, at in acked.items() if name in first_seen]
    result = percentiles(seen) if seen else {"p50_s": None, "p95_s": None, "max_s": None, "markers": 0}
    result["markers_not_seen"] = len(acked) - len(seen)
    result["load_orders_per_s"] = achieved.get("load_orders_per_s")
    result["median_batch_ms"] = median_phases(batches)
    if scrapes:
        result["scrapes"] = scrapes["answered"]
    return result


def scraping(url: str, every_s: float = 1.0) -> dict:
    """GET `url` every `every_s` seconds in a thread until the dict's "stop" event is set; its
    "answered" counts the scrapes that got an answer."""
    state: dict = {"stop": threading.Event(), "answered": 0}

    def scrape() -> None:
        while not state["stop"].wait(every_s):
            with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=5) as response:
                response.read()
                state["answered"] += 1

    threading.Thread(target=scrape, daemon=True).start()
    return state


SCRAPED = "ours, /metrics scraped every 1 s"
NO_WINDOWS = "ours, windows off (--window 0)"
CONSUMERS = ("ours", NO_WINDOWS, SCRAPED, "ours, PostgreSQL", "naive")


def page_and_metrics(port: int | None = None) -> list[str]:
    """Our consumer's flags for its page, /metrics and /healthz on one port (a free one by default), as
    `make demo` serves them, whatever METRICS_PORT the environment has."""
    port = port or free_port()
    return ["--dashboard-port", str(port), "--metrics-port", str(port)]


def measured_consumers(
    broker: LocalBroker, state: str, postgres: LocalPostgres, args: argparse.Namespace
) -> dict[str, Measured]:
    """The consumers measured under load (--consumers), by name: ours as a user runs it (SQLite), the same
    without sales per window (what the windows cost), with its /metrics scraped every second, ours with its
    totals in PostgreSQL, and the seed's naive one; ours with --spark-conf. Ours serve their dashboard and
    metrics on a free port each."""
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
    sqlite = ["--totals-db", f"{state}/TOPIC/totals.sqlite3"]
    scraped_port = free_port()
    consumers = {
        "ours": Measured([*ours, *sqlite, *page_and_metrics()]),
        NO_WINDOWS: Measured([*ours, *sqlite, "--window", "0", *page_and_metrics()]),
        SCRAPED: Measured(
            [*ours, *sqlite, *page_and_metrics(scraped_port)], scraped=f"http://127.0.0.1:{scraped_port}/metrics"
        ),
        "ours, PostgreSQL": Measured(
            [*ours, "--totals-db", postgres.database_url("TOPIC"), *page_and_metrics()], postgres
        ),
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
            if name in (SCRAPED, NO_WINDOWS):  # their costs are measured in the latency section
                continue
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

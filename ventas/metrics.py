"""The consumer as a service to watch: Prometheus metrics at /metrics and a health check at /healthz,
served beside the dashboard page, from the same state (ventas/dashboard.py's Monitoring).

The metrics are rendered by the official client library (prometheus_client) from that state at each
scrape, so a scrape costs the query nothing. Money is exact in the totals database and on the page;
`ventas_product_sales` is a float, for graphs. The alert rules in conf/prometheus/alerts.yml read
these names, and `ventas_stalled_after_seconds` carries the consumer's --stalled-after to them.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from http import HTTPStatus

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, ProcessCollector, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric

from ventas.dashboard import DashboardState, Route
from ventas.monitoring import BATCH_SECONDS_BOUNDS, DEPENDENCIES, Monitoring
from ventas.outages import clock_time, waited_for
from ventas.totals_db import StoredTotals

METRICS_PATH, HEALTH_PATH = "/metrics", "/healthz"


def health(watched: Monitoring, stalled_after_s: float, now: float) -> tuple[bool, str]:
    """Whether the query is healthy, and why not in one line: it failed; it waits for Kafka or the
    totals database; it has made no progress (not even an idle one) for longer than `stalled_after_s`,
    as before the query notices that Kafka is gone; or it has been behind the latest offsets without
    committing a batch for that long."""
    if watched.failure:
        return False, f"the query failed: {watched.failure}"
    for waiting in watched.waiting.values():
        since = f"{clock_time(waiting.since)} ({waited_for(now - waiting.since)})"
        return False, f"waiting for {waiting.display} since {since}: {waiting.reason}"
    progress_at = watched.progress_at or watched.started_at
    if now - progress_at > stalled_after_s:
        since = "since the consumer started" if watched.progress_at is None else "from the query"
        return False, f"stalled: no progress {since} for {now - progress_at:.0f} s (more than {stalled_after_s:g} s)"
    behind = sum(watched.behind.values())
    committed_at = max(watched.committed_at or 0.0, watched.started_at)
    if behind and now - committed_at > stalled_after_s:
        return False, (
            f"stalled: {behind} records behind and no batch committed for {now - committed_at:.0f} s "
            f"(more than {stalled_after_s:g} s)"
        )
    last = "no batch yet" if watched.batch_id is None else f"batch {watched.batch_id} committed"
    return True, f"ok: {last}; {behind} records behind"


class ConsumerCollector:
    """A prometheus_client collector: the consumer's metrics, read from the state at each scrape."""

    def __init__(self, state: DashboardState, topic: str, stalled_after_s: float) -> None:
        self.state, self.topic, self.stalled_after_s = state, topic, stalled_after_s

    def collect(self) -> Iterator[Metric]:
        watched = self.state.monitoring()
        stored = watched.stored or StoredTotals()
        yield counter("ventas_orders", "Valid orders counted into the totals", stored.orders)
        yield counter(
            "ventas_late_orders",
            "Valid orders more than --allowed-lateness behind the newest sale_date, counted in their windows",
            stored.late,
        )
        yield counter(
            "ventas_undated_orders",
            "Valid orders without a usable sale_date, in the totals but no window",
            stored.undated,
        )
        yield counter(
            "ventas_future_orders",
            "Valid orders with a sale_date more than --allowed-future ahead of the clock, in the totals but no window",
            stored.future,
        )
        rejected = CounterMetricFamily("ventas_rejected_records", "Records rejected, by reason", labels=["reason"])
        for reason, records in sorted(stored.rejected.items()):
            rejected.add_metric([reason], records)
        yield rejected
        sales = GaugeMetricFamily(
            "ventas_product_sales",
            "Total sales per product (sum of cantidad * price; exact in the database)",
            labels=["product"],
        )
        for product, total in sorted(stored.totals.items()):
            sales.add_metric([product], float(total))
        yield sales
        yield gauge("ventas_last_batch_id", "Id of the last micro-batch counted", watched.batch_id)
        yield gauge(
            "ventas_last_batch_commit_timestamp_seconds", "When the last batch was committed", watched.committed_at
        )
        yield gauge(
            "ventas_end_to_end_lag_seconds",
            "The last batch's commit after the newest Kafka record timestamp in it",
            watched.lag_s,
        )
        yield gauge(
            "ventas_last_progress_timestamp_seconds",
            "The query's last progress report, idle ones included",
            watched.progress_at,
        )
        yield gauge(
            "ventas_input_records_per_second", "Records arriving, as of the last batch", watched.input_rows_per_s
        )
        yield gauge(
            "ventas_processed_records_per_second",
            "Records processed, as of the last batch",
            watched.processed_rows_per_s,
        )
        behind = GaugeMetricFamily(
            "ventas_kafka_records_behind",
            "Records between the last batch's end and the latest offset",
            labels=["topic", "partition"],
        )
        for partition, records in sorted(watched.behind.items()):
            behind.add_metric([self.topic, str(partition)], records)
        yield behind
        yield gauge(
            "ventas_kafka_total_records_behind",
            "Records behind the latest offsets, all partitions",
            sum(watched.behind.values()),
        )
        up = GaugeMetricFamily(
            "ventas_dependency_up", "0 while the consumer waits for this dependency, else 1", labels=["dependency"]
        )
        retries = CounterMetricFamily(
            "ventas_dependency_retries", "Tries to reach a dependency while waiting for it", labels=["dependency"]
        )
        for dependency in DEPENDENCIES:
            up.add_metric([dependency], int(dependency not in watched.waiting))
            retries.add_metric([dependency], watched.retries[dependency])
        yield up
        yield retries
        yield batch_seconds(watched)
        yield gauge("ventas_stalled_after_seconds", "The consumer's --stalled-after threshold", self.stalled_after_s)
        healthy, _ = health(watched, self.stalled_after_s, time.time())
        yield gauge("ventas_healthy", "1 when /healthz answers 200", int(healthy))


def counter(name: str, documentation: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(name, documentation, value=value)


def gauge(name: str, documentation: str, value: float | None) -> GaugeMetricFamily:
    """A gauge; without a sample while its value is not known yet (Prometheus then has no series)."""
    family = GaugeMetricFamily(name, documentation)
    if value is not None:
        family.add_metric([], value)
    return family


def batch_seconds(watched: Monitoring) -> HistogramMetricFamily:
    cumulative, buckets = 0, []
    for bound, count in zip([*map(str, BATCH_SECONDS_BOUNDS), "+Inf"], watched.batch_seconds_counts, strict=True):
        cumulative += count
        buckets.append((bound, cumulative))
    return HistogramMetricFamily(
        "ventas_batch_duration_seconds",
        "Micro-batch durations (Spark's triggerExecution)",
        buckets=buckets,
        sum_value=watched.batch_seconds_sum,
    )


def routes(state: DashboardState, topic: str, stalled_after_s: float) -> dict[str, Route]:
    """/metrics and /healthz for the dashboard's server."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ConsumerCollector(state, topic, stalled_after_s))
    ProcessCollector(registry=registry)  # process_cpu_seconds_total, process_resident_memory_bytes, ...

    def metrics() -> tuple[HTTPStatus, bytes, str]:
        return HTTPStatus.OK, generate_latest(registry), CONTENT_TYPE_LATEST

    def healthz() -> tuple[HTTPStatus, bytes, str]:
        healthy, reason = health(state.monitoring(), stalled_after_s, time.time())
        return (
            (HTTPStatus.OK if healthy else HTTPStatus.SERVICE_UNAVAILABLE),
            f"{reason}\n".encode(),
            "text/plain; charset=utf-8",
        )

    return {METRICS_PATH: metrics, HEALTH_PATH: healthz}

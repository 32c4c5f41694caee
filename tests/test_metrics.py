"""The consumer's /metrics and /healthz on their own: the metrics as Prometheus parses them, product names
that are hostile to the text format, and every verdict of the health check."""

from __future__ import annotations

import json
import re
import time
import urllib.error
import urllib.request
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from prometheus_client.parser import text_string_to_metric_families

from ventas.dashboard import DashboardState, serving
from ventas.lab.ports import free_port
from ventas.lab.processes import ROOT
from ventas.metrics import health, routes
from ventas.monitoring import Monitoring, partitions_behind
from ventas.totals_db import StoredTotals

# Names the text format must escape (quotes, backslashes, newlines) or that would be markup on a page.
HOSTILE_NAMES = ["<img src=x onerror=alert(1)>", 'Say "cheese"', "back\\slash", "two\nlines", "Café ☕", "a} b{c=1"]
PROGRESS = {
    "batchId": 7,
    "numInputRows": 250,
    "inputRowsPerSecond": 124.5,
    "processedRowsPerSecond": 980.4,
    "durationMs": {"triggerExecution": 700},
    "sources": [
        {
            "endOffset": {"ventas-events": {"0": 100, "1": 90}},
            "latestOffset": {"ventas-events": {"0": 103, "1": 90}},
            "metrics": {"maxOffsetsBehindLatest": "3"},
        }
    ],
}
STORED = StoredTotals(
    "checkpoint-id",
    "/tmp/checkpoint",
    4,
    {**{name: Decimal("1.50") for name in HOSTILE_NAMES}, "Laptop": Decimal("123456789012345.67")},
    13,
    {"missing order_id": 2, "not valid UTF-8": 1},
    "2025-05-12T15:33:35+00:00",
    late=3,
    undated=1,
    future=2,
)


def scraped(state: DashboardState, stalled_after_s: float = 60) -> dict[str, dict[tuple, float]]:
    """/metrics as Prometheus reads it: each sample's name and labels, and its value."""
    _, body, content_type = routes(state, "ventas-events", stalled_after_s)["/metrics"]()
    assert content_type.startswith("text/plain; version=")  # the text format Prometheus scrapes
    samples: dict[str, dict[tuple, float]] = {}
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            samples.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return samples


def test_the_metrics_are_the_committed_counts_and_the_querys_progress() -> None:
    state = DashboardState("ventas-events")
    state.show_totals(STORED)
    state.show_progress(PROGRESS)
    metrics = scraped(state)
    assert metrics["ventas_orders_total"] == {(): 13}
    assert (metrics["ventas_late_orders_total"], metrics["ventas_undated_orders_total"]) == ({(): 3}, {(): 1})
    assert metrics["ventas_future_orders_total"] == {(): 2}
    assert metrics["ventas_rejected_records_total"] == {
        (("reason", "missing order_id"),): 2,
        (("reason", "not valid UTF-8"),): 1,
    }
    assert metrics["ventas_last_batch_id"] == {(): 4}
    assert metrics["ventas_last_batch_commit_timestamp_seconds"] == {(): 1747064015.0}
    assert metrics["ventas_kafka_records_behind"] == {
        (("partition", "0"), ("topic", "ventas-events")): 3,
        (("partition", "1"), ("topic", "ventas-events")): 0,
    }
    assert metrics["ventas_kafka_total_records_behind"] == {(): 3}
    assert metrics["ventas_input_records_per_second"] == {(): 124.5}
    assert metrics["ventas_processed_records_per_second"] == {(): 980.4}
    assert metrics["ventas_batch_duration_seconds_bucket"][(("le", "0.5"),)] == 0
    assert metrics["ventas_batch_duration_seconds_bucket"][(("le", "1.0"),)] == 1
    assert metrics["ventas_batch_duration_seconds_count"] == {(): 1}
    assert metrics["ventas_batch_duration_seconds_sum"] == {(): 0.7}
    assert metrics["ventas_stalled_after_seconds"] == {(): 60}
    assert metrics["ventas_healthy"] == {(): 1}
    assert "process_resident_memory_bytes" in metrics
    assert "ventas_end_to_end_lag_seconds" not in metrics  # not known before a batch brings its records' times


def test_product_names_come_back_exactly_from_the_text_format() -> None:
    state = DashboardState("ventas-events")
    state.show_totals(STORED)
    sales = {dict(labels)["product"]: value for labels, value in scraped(state)["ventas_product_sales"].items()}
    assert sales == {**dict.fromkeys(HOSTILE_NAMES, 1.5), "Laptop": pytest.approx(123456789012345.67)}


def test_records_behind_come_from_the_end_and_latest_offsets_of_the_kafka_source() -> None:
    assert partitions_behind(PROGRESS) == {0: 3, 1: 0}
    as_text = {"sources": [{k: str(v).replace("'", '"') for k, v in PROGRESS["sources"][0].items() if k != "metrics"}]}
    assert partitions_behind(as_text) == {0: 3, 1: 0}
    assert partitions_behind({"sources": [{}]}) == {}  # a source that reports no offsets: nothing made up


def test_an_idle_query_is_behind_by_nothing() -> None:
    state = DashboardState("ventas-events")
    state.show_progress(PROGRESS)
    state.show_idle()
    assert state.monitoring().behind == {0: 0, 1: 0}


@pytest.mark.parametrize(
    ("watched", "now", "verdict"),
    [
        (Monitoring(started_at=0), 59, (True, "ok: no batch yet; 0 records behind")),
        (
            Monitoring(started_at=0),
            61,
            (False, "stalled: no progress since the consumer started for 61 s (more than 60 s)"),
        ),
        (
            Monitoring(started_at=0, progress_at=50, stored=StoredTotals(batch_id=3), committed_at=50),
            100,
            (True, "ok: batch 3 committed; 0 records behind"),
        ),
        (
            Monitoring(started_at=0, progress_at=10),
            100,
            (False, "stalled: no progress from the query for 90 s (more than 60 s)"),
        ),
        (
            Monitoring(started_at=0, progress_at=99, committed_at=20, behind={0: 5, 1: 2}),
            100,
            (False, "stalled: 7 records behind and no batch committed for 80 s (more than 60 s)"),
        ),
        # A restarted consumer's last commit is an earlier run's: its wait counts from its own start.
        (
            Monitoring(started_at=90, progress_at=99, committed_at=20, behind={0: 5}),
            100,
            (True, "ok: no batch yet; 5 records behind"),
        ),
        (
            Monitoring(started_at=0, progress_at=99, failure="the totals database is unreachable"),
            100,
            (False, "the query failed: the totals database is unreachable"),
        ),
    ],
)
def test_health_says_why_in_one_line(watched: Monitoring, now: float, verdict: tuple[bool, str]) -> None:
    assert health(watched, 60, now) == verdict


def test_healthz_answers_200_then_503_with_the_reason() -> None:
    state = DashboardState("ventas-events")
    state.show_progress(PROGRESS)
    with serving(state, "127.0.0.1", free_port(), routes(state, "ventas-events", 60)) as address:
        assert address
        with urllib.request.urlopen(address + "healthz", timeout=10) as response:
            assert (response.status, response.read()) == (200, b"ok: no batch yet; 3 records behind\n")
        state.show_failure("the totals database is unreachable")
        with pytest.raises(urllib.error.HTTPError) as failed:
            urllib.request.urlopen(address + "healthz", timeout=10)
        assert (failed.value.code, failed.value.read()) == (
            503,
            b"the query failed: the totals database is unreachable\n",
        )
        assert scraped(state)["ventas_healthy"] == {(): 0}


def test_a_wait_for_a_dependency_shows_in_health_metrics_and_page() -> None:
    state = DashboardState("ventas-events")
    state.show_progress(PROGRESS)
    state.show_waiting("kafka", "Kafka at 127.0.0.1:9092", "no Kafka broker reachable at 127.0.0.1:9092 after 3s")
    state.count_retry("kafka")
    healthy, reason = health(state.monitoring(), 60, time.time() + 150)
    assert not healthy
    assert re.fullmatch(
        r"waiting for Kafka at 127\.0\.0\.1:9092 since \d\d:\d\d:\d\d \(2 min\): no Kafka broker .*", reason
    ), reason
    metrics = scraped(state)
    assert metrics["ventas_dependency_up"] == {(("dependency", "kafka"),): 0, (("dependency", "totals_db"),): 1}
    assert metrics["ventas_dependency_retries_total"][(("dependency", "kafka"),)] == 1
    assert json.loads(state.snapshot()[1])["waiting"].startswith("Waiting for Kafka at 127.0.0.1:9092 since ")
    state.show_back("kafka")
    assert health(state.monitoring(), 60, time.time())[0]
    assert scraped(state)["ventas_dependency_up"][(("dependency", "kafka"),)] == 1
    assert json.loads(state.snapshot()[1])["waiting"] is None


def test_the_docs_list_every_metric_served_and_no_other() -> None:
    state = DashboardState("ventas-events")
    state.show_totals(STORED, newest_record_at=datetime(2025, 5, 12, 15, 33, 34, tzinfo=UTC))
    state.show_progress(PROGRESS)
    assert scraped(state)["ventas_end_to_end_lag_seconds"] == {(): 1.0}
    _, body, _ = routes(state, "ventas-events", 60)["/metrics"]()
    served = {family.name for family in text_string_to_metric_families(body.decode())}
    documented = re.findall(r"`(ventas_[a-z_]+)", (ROOT / "docs" / "monitoring.md").read_text())
    assert {name.removesuffix("_total") for name in documented} == {
        name for name in served if name.startswith("ventas_")
    }

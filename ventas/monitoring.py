"""What the consumer's /metrics and /healthz read (ventas/metrics.py), kept by the dashboard's state
beside what its page shows: plain values, updated by the sink and the query listener."""

from __future__ import annotations

import json
from bisect import bisect_left
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ventas.totals_db import StoredTotals

BATCH_SECONDS_BOUNDS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)  # the batch duration histogram's buckets
DEPENDENCIES = ("kafka", "totals_db")  # what the consumer waits for when it cannot reach it


@dataclass(frozen=True)
class Waiting:
    """A wait for a dependency: whom (as the console names it), why, since when (Unix seconds)."""

    display: str
    reason: str
    since: float


@dataclass
class Monitoring:
    """What /metrics and /healthz read beside the page (ventas/metrics.py renders it); times are Unix
    seconds. Counts are the totals database's, since the checkpoint's first batch."""

    started_at: float
    stored: StoredTotals | None = None  # as committed after the last batch (or found at start)
    committed_at: float | None = None
    lag_s: float | None = None  # the last batch's commit after the newest Kafka timestamp in it
    progress_at: float | None = None  # the query's last progress report, idle ones included
    behind: dict[int, int] = field(default_factory=dict)  # records behind the latest offset, per partition
    input_rows_per_s: float | None = None
    processed_rows_per_s: float | None = None
    batch_seconds_counts: list[int] = field(default_factory=lambda: [0] * (len(BATCH_SECONDS_BOUNDS) + 1))
    batch_seconds_sum: float = 0.0
    failure: str | None = None
    waiting: dict[str, Waiting] = field(default_factory=dict)  # by dependency, while it cannot be reached
    retries: dict[str, int] = field(default_factory=lambda: dict.fromkeys(DEPENDENCIES, 0))

    @property
    def batch_id(self) -> int | None:
        return self.stored.batch_id if self.stored else None

    def add_batch_seconds(self, seconds: float) -> None:
        self.batch_seconds_counts[bisect_left(BATCH_SECONDS_BOUNDS, seconds)] += 1
        self.batch_seconds_sum += seconds


def partitions_behind(progress: Mapping[str, Any]) -> dict[int, int]:
    """Records between the offsets a batch read up to and the latest ones, per partition of the Kafka
    source (progress' endOffset and latestOffset: {topic: {partition: offset}})."""
    source = (progress.get("sources") or [{}])[0]
    end, latest = (_offsets(source.get(key)) for key in ("endOffset", "latestOffset"))
    return {partition: max(0, latest[partition] - offset) for partition, offset in end.items() if partition in latest}


def _offsets(value: Any) -> dict[int, int]:
    if isinstance(value, str):  # some Spark versions give the offsets as JSON text
        value = json.loads(value)
    return {int(p): int(o) for topic in (value or {}).values() for p, o in topic.items()}

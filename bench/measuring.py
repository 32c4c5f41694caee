"""What the benchmark's sections measure with: medians and percentiles of repeated runs, a process
tree's peak memory, fresh topics and producers with producer.py's settings, and the consumer's
INFO line for each micro-batch read back (records, time, Spark's phases)."""

from __future__ import annotations

import re
import statistics
import threading
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from consumer import QUERY
from producer import KAFKA_SETTINGS
from ventas.lab.kafka_broker import LocalBroker

BENCH = Path(__file__).resolve().parent


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

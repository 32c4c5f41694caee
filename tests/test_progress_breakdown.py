"""bench.progress_breakdown: where a query's batch time goes, read from Spark's event log."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bench.progress_breakdown import PROGRESS_EVENT, breakdown, markdown, progresses
from tests.helpers import consumer_args, run_consumer, run_producer
from ventas.lab.processes import pipeline_env


def run_breakdown(*event_logs: str) -> subprocess.CompletedProcess:
    """`python -m bench.progress_breakdown` with the repository on PYTHONPATH, from any directory."""
    return subprocess.run(
        [sys.executable, "-m", "bench.progress_breakdown", *event_logs],
        capture_output=True,
        text=True,
        env=pipeline_env(),
    )


def progress_line(name: str, records: int, duration_ms: dict, commit_ms: list[int] = ()) -> str:
    operators = [{"numRowsTotal": 3, "commitTimeMs": ms, "allUpdatesTimeMs": 1} for ms in commit_ms]
    sources = [{"numInputRows": records - records // 2}, {"numInputRows": records // 2}]  # one per topic partition
    progress = {"name": name, "sources": sources, "durationMs": duration_ms, "stateOperators": operators}
    return json.dumps({"Event": PROGRESS_EVENT, "progress": progress})


def test_phases_of_the_batches_that_read_records_are_summed() -> None:
    lines = [
        json.dumps({"Event": "SparkListenerJobStart", "Job ID": 1}),
        progress_line("totals", 100, {"triggerExecution": 400, "addBatch": 300, "walCommit": 50}, [20, 30]),
        progress_line("totals", 0, {"triggerExecution": 9, "latestOffset": 9}),  # an empty batch: not counted
        progress_line("rejected", 100, {"triggerExecution": 999, "addBatch": 999}),  # another query
        progress_line("totals", 50, {"triggerExecution": 600, "addBatch": 500, "walCommit": 40}, [10]),
        progress_line("totals", 70, {"triggerExecution": 700})[:90],  # a running application's last line
    ]
    total = breakdown(progresses(lines), "totals")
    assert total["records"] == 150 and total["batches"] == 2
    assert total["ms"] == {
        "triggerExecution": 1000,
        "addBatch": 800,
        "walCommit": 90,
        "state commitTimeMs": 60,
        "state allUpdatesTimeMs": 3,
    }
    table = markdown(total, "totals").splitlines()
    assert table[0] == "query `totals`: 150 records in 2 batches, 1,000 ms (150 records/s)"
    assert "| addBatch | 800 | 0.800 |" in table and "| state commitTimeMs | 60 | 0.060 |" in table


def test_an_unreadable_or_compressed_log_is_one_line(tmp_path: Path) -> None:
    compressed = tmp_path / "app-1.zstd"
    compressed.write_bytes(b"\x28\xb5\x2f\xfd\xff\xfe")
    for path, message in [
        (tmp_path / "absent", "cannot read"),
        (compressed, "is not a plain-text event log: run with spark.eventLog.compress=false"),
    ]:
        result = run_breakdown(str(path))
        assert result.returncode == 1 and result.stdout == ""
        assert result.stderr.startswith("bench.progress_breakdown: error: ") and message in result.stderr
        assert len(result.stderr.splitlines()) == 1


@pytest.mark.integration
def test_the_consumers_event_log_gives_its_batches_phases(kafka_bootstrap: str, topic: str, tmp_path: Path) -> None:
    produced = run_producer("--bootstrap-servers", kafka_bootstrap, "--topic", topic, "--count", "300", "--rate", "0")
    assert produced.returncode == 0, produced.stderr
    events = tmp_path / "events"
    events.mkdir()
    options = [
        *("--conf", "spark.eventLog.enabled=true", "--conf", f"spark.eventLog.dir={events}"),
        *("--conf", "spark.eventLog.compress=false"),
    ]
    args = consumer_args(kafka_bootstrap, topic, tmp_path, "--available-now", "--max-offsets-per-trigger", "100")
    consumer = run_consumer(*args, spark_options=options)
    assert consumer.returncode == 0, consumer.stderr[-3000:]
    logs = [str(path) for path in events.iterdir()]  # Spark 4: one rolling log directory; 3.5: one file
    result = run_breakdown(*logs)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("query `sales`: 300 records in ") and " batches, " in lines[0]
    phases = {line.split(" | ")[0].strip("| ") for line in lines if line.startswith("| ")}
    assert {"triggerExecution", "addBatch", "walCommit", "commitOffsets"} <= phases
    assert "state commitTimeMs" not in phases  # the running totals are in the database, not in Spark's state

"""A smoke run of the benchmark with tiny sizes: it keeps working and writes every figure.
No timing is asserted here; the figures live in BENCHMARKS.md."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from bench.measure_latency import CONSUMERS, NO_WINDOWS, SCRAPED
from bench.run import SEED_LINE_PYTHON
from ventas.lab.processes import start, stop

pytestmark = pytest.mark.integration
SMOKE_TIMEOUT_S = 1800  # a hang guard, not a speed goal


@pytest.mark.timeout(SMOKE_TIMEOUT_S + 60)  # pyproject's 900 s would cut the guard short
def test_bench_runs_end_to_end_and_writes_every_figure(tmp_path: Path, postgres_bindir: Path) -> None:
    output, markdown = tmp_path / "results.json", tmp_path / "BENCHMARKS.md"
    bench = start(
        [
            sys.executable,
            "-m",
            "bench.run",
            "--repeat",
            "1",
            "--producer-orders",
            "500",
            "--java-records",
            "2000",
            "--backlog",
            "3000",
            "--rates",
            "100",
            "--warmup",
            "25",
            "--sustain",
            "3",
            "--drain",
            "90",
            "--sustained-rates",
            "100",
            "--sustained-for",
            "3",
            "--output",
            str(output),
            "--markdown",
            str(markdown),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:  # about 10 Spark starts: over 10 minutes on a loaded machine
        _, stderr = bench.communicate(timeout=SMOKE_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        stop(bench, signal.SIGTERM)  # the bench stops its broker and consumers by PID
        raise
    assert bench.returncode == 0, stderr[-3000:]
    figures = json.loads(output.read_text())
    for section, key in [
        ("producer", "orders_per_s"),
        ("producer", "generation_only_orders_per_s"),
        ("producer", "send_only_orders_per_s"),
        ("producer", "java_perf_records_per_s"),
        ("consumer", "orders_per_s"),
        ("consumer", "batch_ceiling_orders_per_s"),
    ]:
        assert figures[section][key] > 0, (section, key)
    if SEED_LINE_PYTHON.exists():  # `make test` builds it first
        seed_line = figures["consumer"]["seed_line"]
        assert seed_line["pyspark"].startswith("3.5.")
        assert seed_line["orders_per_s"] > 0 and seed_line["batch_ceiling_orders_per_s"] > 0
    for workers in ("1_workers", "2_workers"):  # the consumer on a standalone cluster, same backlog
        assert figures["cluster"][workers]["orders_per_s"] > 0, workers
    assert figures["cluster"]["backlog_orders"] == figures["consumer"]["backlog_orders"] == 3000
    for consumer in CONSUMERS:
        latency = figures["latency"]["100"][consumer]
        assert latency["markers"] >= 1 and 0 < latency["p50_s"] <= latency["p95_s"] <= latency["max_s"]
        assert latency["load_orders_per_s"] > 0  # what the load producer achieved, printed beside the row
    assert figures["latency"]["100"]["first"] == "ours"
    assert "latency at 100/s: load achieved " in stderr
    assert "| `--master spark://...`, 2 workers of 1 core each | " in markdown.read_text()
    for consumer, pair in figures["sustained"].items():  # one step each: held, or failed with its reason
        step = pair["held"] or pair["failed"]
        assert step["rate"] == 100 and step["markers"] >= 1 and step["load_orders_per_s"] > 0, consumer
        assert (pair["failed"] is None) == (pair["held"] is step), consumer
    assert set(figures["sustained"]) == set(CONSUMERS) - {SCRAPED, NO_WINDOWS}  # their costs: the latency rows'
    assert figures["latency"]["100"][SCRAPED]["scrapes"] >= 1
    assert "## Sustained rate (end-to-end p95 <= 2 s for 3 s)" in markdown.read_text()
    assert figures["ratios"]["producer_vs_one_core_bound"] > 0
    assert all(mb > 0 for mb in figures["peak_rss_mb"].values())
    assert figures["machine"]["cores"] >= 1
    assert figures["consumer"]["available_now_phase_shares"]["addBatch"] > 0  # Spark's phases, from INFO lines
    for consumer in CONSUMERS[:2]:
        median_batch = figures["latency"]["100"][consumer]["median_batch_ms"]
        assert median_batch["batch"] >= median_batch["addBatch"] > 0, consumer
        assert f"| 100 | {consumer} | {median_batch['batch']:g} | " in markdown.read_text()
    rows = [line for line in markdown.read_text().splitlines() if line.startswith("| 100 |") and " / " in line]
    for row, name in zip(rows, CONSUMERS, strict=True):
        first = " (ran first)" if name == "ours" else ""
        scrapes = f" ({figures['latency']['100'][name]['scrapes']} scrapes answered)" if name == SCRAPED else ""
        assert row.startswith(
            f"| 100 | {name}{scrapes}{first} | {figures['latency']['100'][name]['load_orders_per_s']} |"
        )

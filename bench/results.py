"""What results.json holds beside the sections' figures: the machine, each process's peak memory,
and the ratios the report states."""

from __future__ import annotations

import os
import platform
import re
import subprocess
from pathlib import Path

from ventas.jars import kafka_version


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


def p95(runs: dict, consumer: str) -> float | None:
    return runs.get(consumer, {}).get("p95_s")


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

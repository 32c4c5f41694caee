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
import signal
import sys
import tempfile
from datetime import datetime
from pathlib import Path

from bench.measure_consumer import bench_cluster, bench_consumer, fill_backlog
from bench.measure_latency import CONSUMERS, bench_latency, bench_sustained
from bench.measure_producer import bench_producer
from bench.measuring import BENCH
from bench.report import SECTIONS, markdown
from bench.results import machine, peak_memory, ratios
from ventas.config import Parser
from ventas.lab.kafka_broker import LocalBroker
from ventas.lab.ports import free_port
from ventas.lab.postgres_local import LocalPostgres

ROOT = BENCH.parent
SEED_LINE_PYTHON = ROOT / ".venv-spark3.5" / "bin" / "python"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
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
    return parser.parse_args(argv)


def measure(args: argparse.Namespace) -> dict:
    """The sections chosen, against a broker (and a PostgreSQL server) started for the run and
    stopped after it; then the machine, peak memory and the ratios."""
    results: dict = {"measured_at": datetime.now().isoformat(timespec="seconds"), "repeat": args.repeat}
    with tempfile.TemporaryDirectory() as data_dir:
        broker = LocalBroker(free_port(), Path(data_dir) / "kafka")
        postgres = LocalPostgres(free_port(), Path(data_dir) / "postgres")
        broker.start()
        try:
            sections, latency_memory = measure_sections(broker, postgres, args)
        finally:
            broker.stop()
            postgres.remove()
    results.update(sections)
    results["machine"] = machine()
    results["peak_rss_mb"] = peak_memory(results, latency_memory)
    results["ratios"] = ratios(results)
    return results


def measure_sections(broker: LocalBroker, postgres: LocalPostgres, args: argparse.Namespace) -> tuple[dict, dict]:
    """Each section chosen, in SECTIONS' order, by its results' keys; and the latency runs' peak memory."""
    chosen = set(args.sections)
    if {"latency", "sustained"} & chosen:
        postgres.start()
    found: dict = {}
    latency_memory: dict = {}
    if "producer" in chosen:
        print("producer ...", file=sys.stderr, flush=True)
        found["producer"] = bench_producer(broker, args)
    backlog = fill_backlog(broker, args.backlog) if {"consumer", "cluster"} & chosen else ""
    if "consumer" in chosen:
        print("consumer ...", file=sys.stderr, flush=True)
        found["consumer"] = bench_consumer(broker, backlog, args)
    if "cluster" in chosen:
        print("consumer on a standalone cluster, 1 and 2 workers ...", file=sys.stderr, flush=True)
        found["cluster"] = bench_cluster(broker, backlog, args)
    if "latency" in chosen:
        print("latency ...", file=sys.stderr, flush=True)
        found["latency"], latency_memory = bench_latency(broker, postgres, args)
    if "sustained" in chosen:
        print("sustained rate ...", file=sys.stderr, flush=True)
        found["sustained"] = bench_sustained(broker, postgres, args)
        found["sustained_rates"], found["sustained_for_s"] = args.sustained_rates, args.sustained_for
    return found, latency_memory


def main() -> None:
    args = parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so the broker below is stopped, by PID
    results = measure(args)
    args.output.write_text(json.dumps(results, indent=2) + "\n")
    table = markdown(results)
    args.markdown.write_text(table)
    print(table)


if __name__ == "__main__":
    main()

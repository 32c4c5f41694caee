"""BENCHMARKS.md from results.json: a header on the machine, then a section for each one measured."""

from __future__ import annotations

from bench.measure_latency import LOAD_SHORTFALL, SUSTAINED_P95_S
from bench.results import p95, ratio


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
                label = name + (f" ({run['scrapes']} scrapes answered)" if "scrapes" in run else "") + first
                lines.append(
                    f"| {rate} | {label} | {run['load_orders_per_s']} | {run['p50_s']} / {run['p95_s']} / "
                    f"{run['max_s']} | {ratio(p95(runs, 'naive'), run['p95_s'])} |"
                )
    lines += [
        "",
        "Ours: `consumer.py` as a user runs it (its totals in SQLite), and with `--totals-db postgresql://...` "
        "(a local server); each serves its dashboard and /metrics, and one is scraped every second as Prometheus "
        "would. Naive: the seed's code path with Spark's defaults (200 shuffle partitions, default "
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


SECTIONS = {  # in the order measured and shown; --sections chooses from all but peak memory, which every run has
    "producer": producer_markdown,
    "consumer": consumer_markdown,
    "cluster": cluster_markdown,
    "latency": latency_markdown,
    "sustained": sustained_markdown,
    "peak_rss_mb": memory_markdown,
}

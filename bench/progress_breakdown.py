"""Where a streaming query's batch time goes, from Spark's own query progress in an event log.

Run the consumer with an uncompressed event log, then read it here:

    spark-submit --conf spark.eventLog.enabled=true --conf spark.eventLog.dir=/tmp/events \\
      --conf spark.eventLog.compress=false ... consumer.py --available-now ...
    python -m bench.progress_breakdown /tmp/events/*

Prints, for the batches that read records, each phase of Spark's `durationMs` summed over the
batches and its share of the batches' time (`triggerExecution`), and the state store's commit time.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Iterator
from pathlib import Path

from ventas.config import Parser, UserError, fail

PROGRESS_EVENT = "org.apache.spark.sql.streaming.StreamingQueryListener$QueryProgressEvent"
STATE_TIMES = {"allUpdatesTimeMs", "allRemovalsTimeMs", "commitTimeMs"}


def progresses(lines: Iterable[str]) -> Iterator[dict]:
    """The query progress of each batch in an event log's lines, in order. The log of a running
    application may end in a line still being written: that line is left out."""
    for line in lines:
        if PROGRESS_EVENT in line:
            try:
                progress = json.loads(line)["progress"]
            except json.JSONDecodeError:
                continue
            yield progress


def breakdown(batches: Iterable[dict], query: str) -> dict:
    """Phases of `query`'s batches that read records, summed: records, batches, ms per phase
    (`durationMs`), and the state operators' times summed over their tasks as `state <name>`."""
    total: dict = {"records": 0, "batches": 0, "ms": Counter()}
    for progress in batches:
        if progress.get("name") != query:
            continue
        records = sum(source["numInputRows"] for source in progress["sources"])
        if not records:
            continue
        total["records"] += records
        total["batches"] += 1
        total["ms"].update(progress["durationMs"])
        for operator in progress.get("stateOperators", []):
            for name in STATE_TIMES & operator.keys():
                total["ms"][f"state {name}"] += operator[name]
    return total


def markdown(total: dict, query: str) -> str:
    batch_ms = total["ms"].get("triggerExecution", 0)
    rate = total["records"] / (batch_ms / 1000) if batch_ms else 0
    lines = [
        f"query `{query}`: {total['records']:,} records in {total['batches']} batches, "
        f"{batch_ms:,} ms ({rate:,.0f} records/s)",
        "",
        "| phase | ms | share of the batches' time |",
        "|---|---|---|",
    ]
    for phase, ms in total["ms"].most_common():
        share = f"{ms / batch_ms:.3f}" if batch_ms else "-"
        lines.append(f"| {phase} | {ms:,} | {share} |")
    lines.append("")
    lines.append("State times are summed over the state store's tasks, which run in parallel inside `addBatch`.")
    return "\n".join(lines)


def event_files(path: Path) -> list[Path]:
    """An event log's files in order: the file itself, or a rolling log directory's `events_N_*` parts
    (Spark 4 writes `eventlog_v2_APP/`)."""
    if not path.is_dir():
        return [path]
    return sorted(path.glob("events_*"), key=lambda part: int(part.name.split("_")[1]))


def read_progresses(paths: Iterable[Path]) -> list[dict]:
    """Every batch's progress in these event logs; a file that cannot be read is a UserError."""
    batches = []
    for path in (file for given in paths for file in event_files(given)):
        try:
            with path.open(encoding="utf-8") as lines:
                batches.extend(progresses(lines))
        except OSError as error:
            raise UserError(f"cannot read {path}: {error.strerror}") from None
        except UnicodeDecodeError:
            raise UserError(f"{path} is not a plain-text event log: run with spark.eventLog.compress=false") from None
    return batches


def main() -> None:
    parser = Parser(prog="bench.progress_breakdown", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "event_logs", nargs="+", type=Path, help="uncompressed Spark event logs (files, or rolling log directories)"
    )
    parser.add_argument("--query", default="sales", help="the query's name (default %(default)s)")
    args = parser.parse_args()
    try:
        total = breakdown(read_progresses(args.event_logs), args.query)
        if not total["batches"]:
            raise UserError(f"no batch of query {args.query!r} that read records in these event logs")
    except UserError as error:
        fail(parser.prog, error)
    print(markdown(total, args.query))


if __name__ == "__main__":
    main()

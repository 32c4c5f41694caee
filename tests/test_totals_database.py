"""The consumer's totals in a real database (SQLite, PostgreSQL), through the real broker and real
spark-submit: what it prints is what the database holds, each batch counted once through crashes in
the window between the two commits, a database stopped mid-stream, another checkpoint, an upgrade."""

from __future__ import annotations

import contextlib
import os
import signal
import sqlite3
import subprocess
import time
from decimal import Decimal
from pathlib import Path

import pyspark
import pytest

from tests.helpers import (
    consumer_args,
    final_totals,
    printed_lines,
    printed_tables,
    producer_args,
    query_id,
    run_consumer,
    run_producer,
    start_consumer,
    start_producer,
    still_running,
    stored_totals,
    summary_totals,
    wait_for_records,
    wait_for_table,
)
from ventas.consumer_settings import TOTALS_FILE
from ventas.lab.daemons import process_tree
from ventas.lab.kafka_broker import LocalBroker
from ventas.lab.ports import free_port
from ventas.lab.processes import ROOT, pipeline_env, signal_group, spark_submit_command, stop

pytestmark = pytest.mark.integration

# The last version that kept the totals in Spark's state store (complete mode).
STATE_STORE_VERSION = "81bd7a5"


def produce(bootstrap: str, topic: str, summary: Path, count: int, seed: int) -> dict[str, Decimal]:
    assert run_producer(*producer_args(bootstrap, topic, summary, count, 0, seed)).returncode == 0
    return summary_totals(summary)


def added(*totals: dict[str, Decimal]) -> dict[str, Decimal]:
    return {name: sum(t.get(name, Decimal(0)) for t in totals) for name in set().union(*totals)}


def test_the_database_holds_the_printed_table_and_a_restart_prints_it_at_once(
    kafka_bootstrap: str, topic: str, tmp_path: Path
) -> None:
    truth = produce(kafka_bootstrap, topic, tmp_path / "summary.json", 500, 31)
    assert final_totals(kafka_bootstrap, topic, tmp_path) == truth
    database = tmp_path / "totals.sqlite3"
    assert stored_totals(database) == truth
    with contextlib.closing(sqlite3.connect(database)) as shell:
        assert shell.execute("SELECT batch_id, orders FROM stream_progress").fetchone() == (0, 500)

    # Nothing new in the topic: a streaming consumer shows the stored table as soon as it runs.
    out = tmp_path / "streaming.txt"
    consumer = start_consumer(consumer_args(kafka_bootstrap, topic, tmp_path), out)
    try:
        assert wait_for_table(out, consumer, truth, timeout_s=120) == truth
        assert "Batch: 0\n" in out.read_text()
    finally:
        assert stop(consumer, signal.SIGTERM) == 0
    # Stopped before a batch of its own: it says where the totals stand, as a stop after a batch does.
    assert out.read_text().splitlines()[-1] == "consumer: stopped after batch 0", out.read_text()[-3000:]


def test_a_kill_between_the_databases_commit_and_sparks_counts_nothing_twice(
    kafka_bootstrap: str, topic: str, tmp_path: Path
) -> None:
    """The consumer's processes are frozen (SIGSTOP) as soon as the database holds a new batch; when
    Spark's commit log does not have it yet, they are killed there, in the window between the two
    commits. The restarted query runs that batch again, and the database does not count it twice."""
    summary, database = tmp_path / "summary.json", tmp_path / "totals.sqlite3"
    commits = tmp_path / "checkpoint" / "sales" / "commits"
    producer = start_producer(producer_args(kafka_bootstrap, topic, summary, count=10**9, rate=300, seed=33))
    killed_in_window = []
    try:
        wait_for_records(kafka_bootstrap, topic, 100)
        for attempt in range(3):
            out = tmp_path / f"consumer-{attempt}.txt"
            consumer = start_consumer(
                consumer_args(kafka_bootstrap, topic, tmp_path, "--trigger-interval", "0 seconds"), out
            )
            try:
                counted = wait_for_new_batch(database, consumer, after=last_counted(database))
                signal_group(consumer, signal.SIGSTOP)
                if not (commits / str(counted)).exists():
                    killed_in_window.append(counted)
                signal_group(consumer, signal.SIGKILL)
                consumer.wait(60)
            finally:
                with contextlib.suppress(ProcessLookupError):
                    signal_group(consumer, signal.SIGKILL)
            if killed_in_window:
                break
        assert stop(producer, signal.SIGTERM) == 0
    finally:
        stop(producer)
    assert killed_in_window, "no kill landed between the two commits in 3 attempts"
    assert final_totals(kafka_bootstrap, topic, tmp_path) == summary_totals(summary)
    assert stored_totals(database) == summary_totals(summary)


def last_counted(database: Path) -> int:
    if not database.exists():
        return -1
    with contextlib.closing(sqlite3.connect(database)) as shell, contextlib.suppress(sqlite3.OperationalError):
        row = shell.execute("SELECT batch_id FROM stream_progress").fetchone()  # no such table yet: -1
        return row[0] if row else -1
    return -1


def wait_for_new_batch(database: Path, consumer: subprocess.Popen, after: int, timeout_s: float = 180) -> int:
    """Polls the database every millisecond for a batch counted after `after`."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and consumer.poll() is None:
        counted = last_counted(database)
        if counted > after:
            return counted
        time.sleep(0.001)
    raise AssertionError(f"no batch after {after} counted in {timeout_s} s (exit code {consumer.poll()})")


def test_a_second_consumer_with_another_checkpoint_is_refused(kafka_bootstrap: str, topic: str, tmp_path: Path) -> None:
    truth = produce(kafka_bootstrap, topic, tmp_path / "summary.json", 100, 37)
    assert final_totals(kafka_bootstrap, topic, tmp_path) == truth
    database = tmp_path / "totals.sqlite3"
    other = consumer_args(kafka_bootstrap, topic, tmp_path / "other", "--available-now", "--totals-db", str(database))
    result = run_consumer(*other)
    assert result.returncode == 1
    errors = [line for line in printed_lines(result) if "error" in line.lower()]
    assert len(errors) == 1 and errors[0].startswith(
        f"consumer.py: error: the totals database {database} holds the totals of another checkpoint "
        f"({tmp_path}/checkpoint, query id "
    ), errors
    assert stored_totals(database) == truth


def test_without_totals_db_each_checkpoint_has_totals_of_its_own(own_broker: LocalBroker, tmp_path: Path) -> None:
    """Two consumers of the seed's topic with checkpoints of their own and no --totals-db, then `make demo`
    (the default checkpoint, on a broker of its own): none meets another's totals."""
    topic, state = "ventas-events", tmp_path / "state"
    truth = produce(own_broker.bootstrap, topic, tmp_path / "summary.json", 100, 39)
    env = {"XDG_STATE_HOME": str(state)}
    for name in ("first", "second"):
        checkpoint = ["--checkpoint-location", str(tmp_path / name), "--available-now"]
        result = run_consumer("--bootstrap-servers", own_broker.bootstrap, "--topic", topic, *checkpoint, env=env)
        assert result.returncode == 0, f"{name}: {result.stdout}{result.stderr}"
        assert printed_tables(result.stdout)[-1] == truth, name
    out, demo_db = tmp_path / "demo.txt", state / "ventas" / "totals" / f"{topic}.sqlite3"
    demo_env = {**env, "KAFKA_PORT": str(free_port()), "DASHBOARD_PORT": "0", "PRODUCER_RATE": "50"}
    with out.open("w") as sink:
        demo = subprocess.Popen(
            ["make", "--no-print-directory", "demo"],
            cwd=ROOT,
            env=pipeline_env(demo_env),
            stdout=sink,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    tree = set()
    try:
        wait_for_table(out, demo, timeout_s=300)
        tree = process_tree(demo.pid)
        os.kill(demo.pid, signal.SIGTERM)  # as a supervisor stops make
        demo.wait(120)
    finally:
        signal_group(demo, signal.SIGKILL)
    said = out.read_text()
    assert f"demo: totals database {demo_db}" in said and "error" not in said.lower(), said[-3000:]
    assert still_running(tree) == [], said[-3000:]
    assert stored_totals(demo_db) == printed_tables(said)[-1]
    databases = [tmp_path / "first" / TOTALS_FILE, tmp_path / "second" / TOTALS_FILE]
    assert [stored_totals(database) for database in databases] == [truth] * 2
    assert len({query_id(database) for database in [*databases, demo_db]}) == 3


def test_an_earlier_versions_checkpoint_is_imported_once(kafka_bootstrap: str, topic: str, tmp_path: Path) -> None:
    """A checkpoint written by the version that kept the totals in Spark's state store: the upgraded
    consumer imports its totals into the database and reads on from where it stopped."""
    earlier = tmp_path / "earlier"
    earlier.mkdir()
    archive = subprocess.run(["git", "archive", STATE_STORE_VERSION], cwd=ROOT, capture_output=True, check=True)
    subprocess.run(["tar", "-x", "-C", str(earlier)], input=archive.stdout, check=True)
    first = produce(kafka_bootstrap, topic, tmp_path / "first.json", 300, 39)
    legacy_args = consumer_args(kafka_bootstrap, topic, tmp_path, "--available-now")
    at = legacy_args.index("--totals-db")  # a flag the earlier version does not have
    del legacy_args[at : at + 2]
    legacy = subprocess.run(
        spark_submit_command(legacy_args, script=earlier / "consumer.py"),
        capture_output=True,
        text=True,
        env={**pipeline_env(), "PYTHONPATH": str(earlier)},
        timeout=300,
    )
    assert legacy.returncode == 0, legacy.stdout[-2000:] + legacy.stderr[-2000:]
    assert printed_tables(legacy.stdout)[-1] == first

    second = produce(kafka_bootstrap, topic, tmp_path / "second.json", 200, 40)
    upgraded = run_consumer(*consumer_args(kafka_bootstrap, topic, tmp_path, "--available-now"))
    if pyspark.__version__ < "4":  # Spark 3.5 has no reader for the state store: one line, the way out
        location = tmp_path / "checkpoint"
        assert upgraded.returncode == 1
        assert [line for line in printed_lines(upgraded) if "error" in line] == [
            f"consumer.py: error: checkpoint {location} holds the totals of an earlier version in Spark's state "
            f"store, which Spark {pyspark.__version__} cannot read outside its query: run this consumer once on "
            f"Spark 4 (the default line of make) to import them, or delete the checkpoint to recount the topic: "
            f"rm -r {location}"
        ]
        return
    assert upgraded.returncode == 0, upgraded.stdout[-2000:] + upgraded.stderr[-2000:]
    assert f"consumer: imported the totals of batch 0 from {tmp_path}/checkpoint/totals" in upgraded.stdout
    tables = printed_tables(upgraded.stdout)
    assert tables[0] == first and tables[-1] == added(first, second)
    assert stored_totals(tmp_path / "totals.sqlite3") == added(first, second)
    again = run_consumer(*consumer_args(kafka_bootstrap, topic, tmp_path, "--available-now"))
    assert "imported" not in again.stdout and printed_tables(again.stdout) == [added(first, second)]

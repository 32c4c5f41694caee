"""Stops as users make them: Ctrl-C in a terminal, SIGTERM from a supervisor, a closed terminal, at
any moment, then a restart. Real broker, real spark-submit; the totals are compared with the
producer's ground truth, exactly. Waits are bounded, nothing asserts a duration."""

from __future__ import annotations

import contextlib
import json
import os
import random
import re
import shutil
import signal
import subprocess
import threading
import time
import urllib.request
from decimal import Decimal
from itertools import pairwise
from pathlib import Path

import pytest
from pyspark.errors import StreamingQueryException

from tests.helpers import (
    Terminal,
    consumer_args,
    consumer_to_stop,
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
    where_it_hangs,
)
from ventas.dashboard import url
from ventas.lab.daemons import process_tree
from ventas.lab.kafka_broker import LocalBroker
from ventas.lab.ports import distinct_free_ports, free_port
from ventas.lab.processes import ROOT, pipeline_env, signal_group, stop

pytestmark = pytest.mark.integration

STOP_CYCLES = int(os.environ.get("STOP_CYCLES", "6"))
STOPPED = re.compile(r"^consumer: stopped after batch \d+$", re.MULTILINE)
AT_ONCE = re.compile(r"^consumer: stopped( after batch \d+)? \(at once\)$", re.MULTILINE)


def assert_never_decreasing(tables: list[dict[str, Decimal]]) -> None:
    """Every product's total only grows from one printed table to the next (prices are >= 0)."""
    for before, after in pairwise(tables):
        assert all(after.get(name, Decimal(-1)) >= total for name, total in before.items()), (before, after)


def test_stopped_at_random_moments_and_restarted_the_totals_stay_exact(
    kafka_bootstrap: str, topic: str, tmp_path: Path
) -> None:
    """Alternately a real Ctrl-C (a pseudo-terminal) and SIGTERM to the process group, at a random
    moment of a consumer under steady load; back-to-back batches in half the cycles, and every third
    stop a double one (stop at once), so that stops cut batches short. STOP_CYCLES runs more cycles,
    STOP_SEED replays one run's moments."""
    seed = int(os.environ.get("STOP_SEED") or random.randrange(1_000_000))
    moments = random.Random(seed)
    summary = tmp_path / "summary.json"
    producer = start_producer(producer_args(kafka_bootstrap, topic, summary, count=10**9, rate=300, seed=71))
    tables = []
    try:
        for cycle in range(STOP_CYCLES):
            ctrl_c, at_once = cycle % 2 == 0, cycle % 3 == 2
            trigger = "0 seconds" if cycle % 4 >= 2 else "1 second"
            args = consumer_args(kafka_bootstrap, topic, tmp_path, "--trigger-interval", trigger)
            out = tmp_path / f"consumer-{cycle}.txt"
            consumer, send_stop = consumer_to_stop(args, out, ctrl_c)
            how = f"{'Ctrl-C' if ctrl_c else 'SIGTERM'}{' twice' if at_once else ''}, trigger {trigger}"
            context = f"STOP_SEED={seed}, cycle {cycle} ({how})"
            try:
                wait_for_table(out, consumer)
                time.sleep(moments.uniform(0, 3))
                for _ in range(2 if at_once else 1):
                    send_stop()
                    time.sleep(moments.uniform(0, 0.5))
                code = consumer.wait(90)
            finally:
                stop(consumer, signal.SIGKILL)
            text = out.read_text()
            assert code == 0, f"{context}: {text[-3000:]}"
            # The second signal of a double stop comes up to 0.5 s after the first: the graceful stop may
            # have ended by then (no batch was running, or the one running ended), and says so.
            said = STOPPED.search(text) or (at_once and AT_ONCE.search(text))
            assert said, f"{context}: {text[-3000:]}"
            assert not re.search(r"Traceback|ERROR|Exception in thread", text), f"{context}: {text[-3000:]}"
            tables += printed_tables(text)
        assert stop(producer, signal.SIGTERM) == 0, producer.stderr.read()
    finally:
        stop(producer)
    assert_never_decreasing(tables)
    assert final_totals(kafka_bootstrap, topic, tmp_path) == summary_totals(summary), f"STOP_SEED={seed}"


@pytest.mark.parametrize("second", ["after the notice", "right after the first"])
def test_a_second_signal_during_a_long_batch_stops_the_consumer_at_once(
    kafka_bootstrap: str, topic: str, tmp_path: Path, second: str
) -> None:
    """SIGTERM while the first batch reads a large backlog: the consumer waits for the batch and says
    so; a second SIGTERM abandons it at once. That batch was not committed: the next start runs it
    again and the totals are exact. Right after the first, the second signal comes before the batch's
    job has started (a job started after a stop once ran to its end: see cancel_jobs_until_stopped)."""
    summary = tmp_path / "summary.json"
    produced = run_producer(*producer_args(kafka_bootstrap, topic, summary, count=300_000, rate=0, seed=29))
    assert produced.returncode == 0, produced.stderr
    out, totals_log = tmp_path / "consumer.txt", tmp_path / "checkpoint" / "sales"
    consumer = start_consumer(consumer_args(kafka_bootstrap, topic, tmp_path), out)
    events: list[tuple[float, str]] = []  # what happened when, for a failure to explain itself
    try:
        deadline = time.monotonic() + 120
        while not (totals_log / "offsets" / "0").exists() and time.monotonic() < deadline:  # batch 0 planned
            time.sleep(0.05)
        signal_group(consumer, signal.SIGTERM)
        events.append((time.time(), "first SIGTERM"))
        if second == "after the notice":
            while "Ctrl-C again to stop at once" not in out.read_text() and time.monotonic() < deadline:
                time.sleep(0.1)
            events.append((time.time(), "the consumer says it waits for batch 0"))
        else:
            time.sleep(0.2)
        signal_group(consumer, signal.SIGTERM)
        events.append((time.time(), "second SIGTERM"))
        # A stop at once abandons the batch, then shuts Spark down in order: seconds, ~1 min overloaded.
        deadline = time.monotonic() + 300
        while consumer.poll() is None and time.monotonic() < deadline:
            if "Batch: 0" in out.read_text() and not any("table" in what for _, what in events):
                events.append((time.time(), "batch 0's table printed"))
            time.sleep(0.1)
        if consumer.poll() is None:
            pytest.fail(f"the consumer did not stop at once:\n{where_it_hangs(consumer, out)}")
        code = consumer.returncode
        events.append((time.time(), f"the consumer exited {code}"))
    finally:
        stop(consumer, signal.SIGKILL)
    for log_entry in ("offsets/0", "commits/0"):
        if (written := totals_log / log_entry).exists():
            events.append((written.stat().st_mtime, f"{log_entry} written"))
    text = out.read_text()
    story = "\n".join(f"{when - events[0][0]:+7.1f} s  {what}" for when, what in sorted(events))
    failure = f"{text[-3000:]}\n{story}"
    if second == "after the notice":
        assert "consumer: stopping: waiting for batch 0 of query sales to finish" in text, failure
    assert code == 0 and re.search(r"^consumer: stopped \(at once\)$", text, re.MULTILINE), failure
    assert not re.search(r"Traceback|ERROR|Exception in thread", text), failure
    assert not (totals_log / "commits" / "0").exists(), failure
    assert final_totals(kafka_bootstrap, topic, tmp_path) == summary_totals(summary)


@pytest.mark.parametrize("how", ["SIGTERM", "Ctrl-C"])
def test_a_signal_while_the_consumer_shuts_down_after_a_stop_changes_nothing(
    kafka_bootstrap: str, topic: str, tmp_path: Path, how: str
) -> None:
    """Two quick Ctrl-Cs (or SIGTERMs), the second after the first stop has ended the queries: it
    finds Spark shutting down, and the consumer still exits 0 with its one line (SIGTERM once made the JVM exit 143)."""
    produced = run_producer(
        *producer_args(kafka_bootstrap, topic, tmp_path / "summary.json", count=200, rate=0, seed=31)
    )
    assert produced.returncode == 0, produced.stderr
    out = tmp_path / "consumer.txt"
    args = consumer_args(kafka_bootstrap, topic, tmp_path)
    consumer, send_stop = consumer_to_stop(args, out, ctrl_c=how == "Ctrl-C")
    try:
        wait_for_table(out, consumer)
        send_stop()
        deadline = time.monotonic() + 60
        while not STOPPED.search(out.read_text()) and consumer.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        assert consumer.poll() is None, "the consumer ended before the second signal: nothing was tested"
        send_stop()
        code = consumer.wait(60)
    finally:
        stop(consumer, signal.SIGKILL)
    text = out.read_text()
    assert code == 0 and STOPPED.search(text), text[-3000:]
    assert not re.search(r"Traceback|ERROR|Exception in thread", text), text[-3000:]


def test_a_query_stop_that_outlasts_the_stop_timeout_says_so_and_returns(spark, capsys) -> None:
    """A query whose batch does not end (here a foreachBatch function that waits): its stop() gives up
    after spark.sql.streaming.stopTimeout, and the consumer says so in one line instead of waiting."""
    from ventas.stopping import STOP_TIMEOUT, stop_query

    in_batch, release = threading.Event(), threading.Event()

    def held(batch, batch_id: int) -> None:
        in_batch.set()
        release.wait(120)

    query = spark.readStream.format("rate").load().writeStream.foreachBatch(held).queryName("held").start()
    try:
        assert in_batch.wait(120), "no batch started"
        spark.conf.set(STOP_TIMEOUT, "1000")
        stop_query(spark, query)
        said = capsys.readouterr().err
    finally:
        release.set()
        spark.conf.unset(STOP_TIMEOUT)
        with contextlib.suppress(StreamingQueryException):
            query.awaitTermination(120)
    assert re.fullmatch(r"consumer: query held did not stop in 1 s: .*TimeoutException.*\n", said), said


def test_make_demo_stopped_and_started_again_continues_the_totals(tmp_path: Path) -> None:
    """`make demo` three times on one machine state: stopped by Ctrl-C, by closing its terminal
    (SIGHUP), by a supervisor's SIGTERM. Each start continues the totals, each stop leaves no process."""
    dashboard_port, kafka_port = distinct_free_ports(2)
    dashboard = url("127.0.0.1", dashboard_port)
    env = {
        "XDG_STATE_HOME": str(tmp_path / "state"),
        "KAFKA_PORT": str(kafka_port),
        "PRODUCER_RATE": "400",
        "DASHBOARD_PORT": str(dashboard_port),
    }
    database = tmp_path / "state" / "ventas" / "totals" / "ventas-events.sqlite3"
    previous: list[dict[str, Decimal]] = []
    for run, how in enumerate(("Ctrl-C", "terminal closed", "SIGTERM")):
        out = tmp_path / f"demo-{run}.txt"
        # As in a terminal window: an interactive shell leads the session and runs make as a job; when
        # the window closes, the shell gets SIGHUP from the kernel and passes it on to its jobs.
        terminal = Terminal(
            ["bash", "--norc", "--noprofile", "-i", "-c", "make --no-print-directory demo; exit"], out, env
        )
        try:
            wait_for_table(out, terminal.process, timeout_s=300)
            said = out.read_text().splitlines()
            # The demo's own lines come first (no make echo, no Ivy report): the broker, then the dashboard.
            assert said[0].startswith("demo: Kafka broker at "), said[:5]
            page = f"demo: dashboard at {dashboard} (live totals, in a browser)"
            assert said[1] == f"{page}; Prometheus metrics at {dashboard}metrics"
            assert said[2] == f"demo: totals database {database}"
            assert not any(":: resolving dependencies ::" in line for line in said)
            with urllib.request.urlopen(dashboard + "data.json", timeout=10) as page:
                assert json.load(page)["products"], "the dashboard shows no totals"
            with urllib.request.urlopen(dashboard + "metrics", timeout=10) as metrics:
                assert b"\nventas_orders_total " in metrics.read(), "no orders counted in the metrics"
            if run == 0:  # a second demo meanwhile, in another terminal: the broker is up, the checkpoint taken
                second = subprocess.run(
                    ["make", "--no-print-directory", "demo"],
                    capture_output=True,
                    text=True,
                    cwd=ROOT,
                    env=pipeline_env(env),
                    timeout=300,
                    stdin=subprocess.DEVNULL,
                )
                said = second.stdout + second.stderr
                assert second.returncode != 0 and "(already running)" in said, said
                assert "is in use by consumer pid" in said and "demo: error: the consumer exited with code 1" in said
            time.sleep(random.uniform(1, 4))
            tree = process_tree(terminal.process.pid)
            assert len(tree) >= 7, tree  # bash, make, the demo, broker, producer, spark-submit's JVM, driver
            if how == "Ctrl-C":
                terminal.ctrl_c()
            elif how == "terminal closed":
                terminal.close()
            else:  # a supervisor stops the command it started
                make = next(pid for pid, _ in tree if Path(f"/proc/{pid}/cmdline").read_bytes().startswith(b"make\0"))
                os.kill(make, signal.SIGTERM)
            terminal.wait(120)
            assert still_running(tree, timeout_s=90) == [], how
        finally:
            for pid, _ in process_tree(terminal.process.pid):
                os.kill(pid, signal.SIGKILL)
        text = out.read_text()
        assert "Traceback" not in text, f"{how}: {text[-3000:]}"
        tables = printed_tables(text)
        if how != "terminal closed":  # what it printed after the terminal closed went nowhere
            assert "consumer: stopped after batch" in text
            assert "demo: stopped producer, consumer and Kafka broker" in text
            assert stored_totals(database) == tables[-1]  # what `sqlite3 FILE` shows is the last table printed
        if previous:
            assert_never_decreasing([previous[-1], tables[0]])
            assert sum(tables[0].values()) > sum(previous[-1].values()) / 2  # continued, not recounting
        previous = tables


def test_a_second_consumer_refuses_a_checkpoint_in_use(kafka_bootstrap: str, topic: str, tmp_path: Path) -> None:
    assert run_producer(*producer_args(kafka_bootstrap, topic, tmp_path / "s.json", 100, 0, 81)).returncode == 0
    out = tmp_path / "first.txt"
    first = start_consumer(consumer_args(kafka_bootstrap, topic, tmp_path), out)
    try:
        wait_for_table(out, first)
        second = run_consumer(*consumer_args(kafka_bootstrap, topic, tmp_path, "--available-now"))
        drivers = {pid for pid, _ in process_tree(first.pid)}
    finally:
        assert stop(first, signal.SIGTERM) == 0
    assert second.returncode == 1
    errors = [line for line in printed_lines(second) if "error" in line.lower()]
    assert len(errors) == 1, printed_lines(second)
    match = re.fullmatch(
        rf"consumer.py: error: checkpoint {tmp_path}/checkpoint is in use by consumer pid (\d+) on \S+: stop "
        r"that consumer first, or give this one another --checkpoint-location \(two consumers must never share "
        r"a checkpoint\)",
        errors[0],
    )
    assert match and int(match[1]) in drivers, errors[0]
    # Once the first has stopped, the checkpoint is free again.
    assert run_consumer(*consumer_args(kafka_bootstrap, topic, tmp_path, "--available-now")).returncode == 0


def latest(directory: Path, suffix: str = "") -> Path:
    return max(directory.glob(f"[0-9]*{suffix}"), key=lambda p: int(p.name.split(".")[0]))


@pytest.mark.parametrize("damage", ["offsets emptied", "commit emptied"])
def test_a_damaged_checkpoint_is_one_line_and_exit_1(
    kafka_bootstrap: str, topic: str, tmp_path: Path, damage: str
) -> None:
    """As a machine crash or a full disk leaves a checkpoint; deleted to recount, its totals database
    is refused until it is emptied too."""
    assert run_producer(*producer_args(kafka_bootstrap, topic, tmp_path / "s.json", 300, 0, 91)).returncode == 0
    assert final_totals(kafka_bootstrap, topic, tmp_path)
    log_name = "offsets" if damage == "offsets emptied" else "commits"
    latest(tmp_path / "checkpoint" / "sales" / log_name).write_bytes(b"")
    problem = f"sales: {log_name}/0 is empty or unreadable"
    more = tmp_path / "more.json"
    assert run_producer(*producer_args(kafka_bootstrap, topic, more, 100, 0, 92)).returncode == 0

    result = run_consumer(*consumer_args(kafka_bootstrap, topic, tmp_path, "--available-now", "--log-level", "INFO"))
    assert result.returncode == 1, result.stdout[-3000:] + result.stderr[-3000:]
    lines = printed_lines(result)
    errors = [line for line in lines if line.startswith("consumer.py: error:")]
    assert len(errors) == 1, lines[-20:]
    location = tmp_path / "checkpoint"
    assert errors[0].startswith(f"consumer.py: error: checkpoint {location} is damaged: "), errors[0]
    assert problem in errors[0]
    assert errors[0].endswith(f"delete it to recount the topic from --starting-offsets: rm -r {location}")
    stack_trace = re.compile(r"\tat |(Caused by: )?[\w.$]+(Exception|Error)\b")
    assert not [line for line in lines if stack_trace.match(line)], lines[-20:]

    shutil.rmtree(location)  # the way out the line gives; the database still holds the old checkpoint's totals
    refused = run_consumer(*consumer_args(kafka_bootstrap, topic, tmp_path, "--available-now"))
    database = tmp_path / "totals.sqlite3"
    assert refused.returncode == 1
    assert [line for line in printed_lines(refused) if line.startswith("consumer.py: error:")] == [
        f"consumer.py: error: the totals database {database} holds the totals of an earlier checkpoint at "
        f"{location} (query id {query_id(database)}), not of the one there now: give this consumer a --totals-db "
        f"of its own, or recount into this one (rm {database} {database}-wal {database}-shm)"
    ]
    for file in tmp_path.glob("totals.sqlite3*"):
        file.unlink()
    first, second = summary_totals(tmp_path / "s.json"), summary_totals(more)
    expected = {name: first.get(name, 0) + second.get(name, 0) for name in first.keys() | second.keys()}
    assert final_totals(kafka_bootstrap, topic, tmp_path) == expected


def test_a_second_signal_stops_a_producer_waiting_for_a_dead_broker(tmp_path: Path) -> None:
    broker = LocalBroker(free_port(), tmp_path / "broker")
    broker.start(topics=("ventas-events",))
    summary = tmp_path / "summary.json"
    producer = start_producer(producer_args(broker.bootstrap, "ventas-events", summary, 10**9, 200, 101))
    try:
        wait_for_records(broker.bootstrap, "ventas-events", 200)
        broker.kill()
        time.sleep(2)  # orders sent since then wait for a broker that is gone
        producer.send_signal(signal.SIGTERM)
        time.sleep(4)
        assert producer.poll() is None  # still waiting for acknowledgements (up to 2 minutes)
        producer.send_signal(signal.SIGTERM)
        code = producer.wait(30)
    finally:
        stop(producer, signal.SIGKILL)
        broker.stop()
    stdout, stderr = producer.communicate()
    assert code == 1, stderr
    assert "Ctrl-C again to stop at once" in stderr and "Traceback" not in stderr
    report = json.loads(summary.read_text())
    assert report["orders_failed"] > 0
    assert report["orders_acknowledged"] + report["orders_failed"] == report["orders_sent"]
    assert f"{report['orders_failed']} failed" in stdout

"""Running the project's commands the way a user does, and reading what they print or publish."""

from __future__ import annotations

import contextlib
import json
import os
import pty
import re
import select
import signal
import sqlite3
import subprocess
import sys
import termios
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from decimal import Decimal
from pathlib import Path
from subprocess import CompletedProcess

from ventas.config import true_or_false
from ventas.lab.daemons import process_tree, start_time
from ventas.lab.processes import ROOT, pipeline_env, signal_group, spark_submit_command
from ventas.totals_db import add_money

TIMEOUT_S = 300
SEED_SAMPLE = (
    b'{"order_id": "b253f149-3f22-413c-9427-a79c38d65a2c", "customer_document": "431-61-5633", '
    b'"products": [{"name": "Smartwatch", "cantidad": 3, "price": 1401}, '
    b'{"name": "Laptop", "cantidad": 1, "price": 2000}], "sale_date": "12/05/2025 15:33:35"}'
)


def apt_install(*packages: str) -> None:
    """Debian packages a test needs, installed with apt-get (CI runs as root); the package lists are
    fetched first only when they are missing or stale."""
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "-q", "--no-install-recommends", *packages]
    if subprocess.run(install, env=env, capture_output=True).returncode != 0:
        subprocess.run(["apt-get", "update", "-q"], env=env, capture_output=True, check=True)
        result = subprocess.run(install, env=env, capture_output=True, text=True)
        assert result.returncode == 0, f"could not install {' '.join(packages)}: {result.stderr[-2000:]}"


def local_script(name: str, *args: str, timeout: float = 180) -> CompletedProcess:
    """scripts/NAME (kafka-local, postgres-local) as a user with this test run's environment activated runs it."""
    env = {**os.environ, "VIRTUAL_ENV": str(Path(sys.executable).parent.parent)}
    return subprocess.run([ROOT / "scripts" / name, *args], capture_output=True, text=True, timeout=timeout, env=env)


def run_producer(*args: str, timeout: float = TIMEOUT_S, env: dict[str, str] | None = None) -> CompletedProcess:
    return subprocess.run(
        [sys.executable, str(ROOT / "producer.py"), *args],
        capture_output=True,
        text=True,
        env=pipeline_env(env),
        timeout=timeout,
    )


def run_consumer(
    *args: str, timeout: float = TIMEOUT_S, env: dict[str, str] | None = None, spark_options: Sequence[str] = ()
) -> CompletedProcess:
    """`spark-submit consumer.py ARGS` to its end; `spark_options` go to spark-submit (`--conf ...`)."""
    return subprocess.run(
        spark_submit_command(args, options=spark_options),
        capture_output=True,
        text=True,
        env=pipeline_env(env),
        timeout=timeout,
    )


def consumer_args(bootstrap: str, topic: str, state: Path, *extra: str) -> list[str]:
    return [
        "--bootstrap-servers",
        bootstrap,
        "--topic",
        topic,
        "--checkpoint-location",
        str(state / "checkpoint"),
        "--rejected-path",
        str(state / "rejected"),
        "--totals-db",
        str(state / "totals.sqlite3"),
        *extra,
    ]


def final_totals(bootstrap: str, topic: str, state: Path, *extra: str) -> dict[str, Decimal]:
    """What the consumer prints after catching up on everything, from the same checkpoint."""
    result = run_consumer(*consumer_args(bootstrap, topic, state, "--available-now", *extra))
    assert result.returncode == 0, result.stdout + result.stderr
    return printed_tables(result.stdout)[-1]


def printed_tables(stdout: str) -> list[dict[str, Decimal]]:
    """Every totals table the consumer printed, oldest first, as {product: total}."""
    tables = []
    for block in re.split(r"^-{43}\nBatch: \d+\n-{43}\n", stdout, flags=re.MULTILINE)[1:]:
        rows = [line for line in block.splitlines() if line.startswith("|")][1:]
        tables.append(
            {cells[0].rstrip(): Decimal(cells[1].strip()) for cells in (row.strip("|").rsplit("|", 1) for row in rows)}
        )
    return tables


def stored_totals(database: Path) -> dict[str, Decimal]:
    """The product totals in a consumer's SQLite database, as a user's `sqlite3` shell reads them."""
    with contextlib.closing(sqlite3.connect(database)) as db:
        return {product: Decimal(total) for product, total in db.execute("SELECT * FROM product_totals")}


def postgres_totals(url: str) -> dict[str, Decimal]:
    """The product totals in a consumer's PostgreSQL database."""
    import psycopg

    with psycopg.connect(url) as connection:
        return dict(connection.execute("SELECT product, total_sales FROM product_totals").fetchall())


def query_id(database: Path) -> str:
    """The id of the query (the checkpoint) whose totals a SQLite totals database holds."""
    with contextlib.closing(sqlite3.connect(database)) as db:
        return db.execute("SELECT checkpoint_id FROM stream_progress").fetchone()[0]


def summary_totals(path: Path) -> dict[str, Decimal]:
    return {name: Decimal(total) for name, total in json.loads(path.read_text())["totals"].items()}


def added_up(*summaries: Path) -> dict[str, Decimal]:
    """The ground truths of several producer runs, added up."""
    totals: dict[str, Decimal] = {}
    for summary in summaries:
        totals = add_money(totals, summary_totals(summary))
    return totals


# The consumers these tests start inherit KEEP_REJECTED: `make test` runs the seed line's tests with
# the quarantine off, so that every count of rejects is checked both ways.
KEEPS_REJECTED = true_or_false(os.environ.get("KEEP_REJECTED", "true"))


def rejected_rows(path: Path) -> list[dict]:
    """The quarantined records under a --rejected-path (none when the consumers do not keep them)."""
    if not KEEPS_REJECTED:
        assert not path.exists(), f"{path} written with KEEP_REJECTED=false"
    return [json.loads(line) for file in sorted(path.glob("batch_id=*/*.json")) for line in file.open()]


def rejected_by_reason(output: str) -> Counter[str]:
    """The records rejected, by reason, from the consumer's lines
    `Rejected: N records in batch B (T since start): n reason, ...; kept in PATH`."""
    counted: Counter[str] = Counter()
    for reasons in re.findall(r"^Rejected: \d+ records in batch \d+ \(\d+ since start\): ([^;]*);", output, re.M):
        counted.update({reason: int(n) for n, reason in (item.split(" ", 1) for item in reasons.split(", "))})
    return counted


def send_values(bootstrap: str, topic: str, values: list[bytes | None]) -> None:
    from kafka import KafkaProducer

    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all")
    for value in values:
        producer.send(topic, key=b"test", value=value)
    producer.flush()
    producer.close()


def read_topic(bootstrap: str, topic: str) -> list:
    """Every record in the topic, ending when no record arrives for a few seconds."""
    from kafka import KafkaConsumer

    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        consumer_timeout_ms=5000,
    )
    try:
        return list(consumer)
    finally:
        consumer.close()


def topic_totals(bootstrap: str, topic: str) -> tuple[int, dict[str, Decimal]]:
    """The records the topic holds, all orders, and their sales per product: the ground truth when the
    producer cannot know whether an order whose answer it never got was written."""
    records = read_topic(bootstrap, topic)
    assert len(records) == sum(end_offsets(bootstrap, topic).values()), "the topic was not read to its end"
    totals: Counter[str] = Counter()
    for record in records:
        for line in json.loads(record.value, parse_float=Decimal)["products"]:
            totals[line["name"]] += line["cantidad"] * Decimal(line["price"])
    return len(records), {product: total.quantize(Decimal("0.01")) for product, total in totals.items()}


def end_offsets(bootstrap: str, topic: str) -> dict:
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=bootstrap)
    ends = consumer.end_offsets([TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic)])
    consumer.close()
    return ends


def wait_for_records(bootstrap: str, topic: str, at_least: int, timeout_s: float = 60) -> None:
    """Until the topic holds `at_least` records: a producer started is not yet a producer sending (a
    loaded machine can take seconds to start one)."""
    deadline = time.monotonic() + timeout_s
    while (held := sum(end_offsets(bootstrap, topic).values())) < at_least:
        assert time.monotonic() < deadline, f"the topic holds {held} records after {timeout_s:g} s, not {at_least}"
        time.sleep(0.2)


def exact_json(obj: object) -> str:
    """json.dumps that writes Decimal as an exact number literal (the json module cannot)."""
    if isinstance(obj, Decimal):
        return format(obj, "f")
    if isinstance(obj, dict):
        return "{" + ", ".join(f"{json.dumps(k)}: {exact_json(v)}" for k, v in obj.items()) + "}"
    if isinstance(obj, list | tuple):
        return "[" + ", ".join(exact_json(v) for v in obj) + "]"
    return json.dumps(obj)


def printed_lines(result: CompletedProcess) -> list[str]:
    """Everything the consumer printed (spark-submit sends the Python driver's stderr to stdout)."""
    output = result.stdout + result.stderr
    assert "Traceback" not in output
    return output.splitlines()


def driver_output(result: CompletedProcess) -> list[str]:
    """The lines the consumer itself printed through spark-submit, which sends the Python driver's stdout
    and stderr to its stdout (run with --jars, spark-submit adds nothing of its own)."""
    assert "consumer.py" not in result.stderr and "Traceback" not in result.stderr
    return result.stdout.splitlines()


def start_consumer(args: list[str], out: Path, spark_options: Sequence[str] = ()) -> subprocess.Popen:
    """A streaming consumer in its own process group, stdout and stderr into `out`; `spark_options`
    go to spark-submit (`--master spark://...`)."""
    with out.open("a") as sink:
        return subprocess.Popen(
            spark_submit_command(args, options=spark_options),
            stdout=sink,
            stderr=subprocess.STDOUT,
            env=pipeline_env(),
            start_new_session=True,
        )


def where_it_hangs(consumer: subprocess.Popen, out: Path) -> str:
    """For a consumer that did not end in time: its JVM's threads (jstack) and its Python driver's
    (the driver prints them into `out` on SIGUSR1)."""
    jvm = subprocess.run(["jstack", str(consumer.pid)], capture_output=True, text=True, timeout=60)
    for pid, _ in process_tree(consumer.pid):
        with contextlib.suppress(OSError):  # the driver: `python .../consumer.py ARGS`, a child of the JVM
            if pid != consumer.pid and b"consumer.py" in Path(f"/proc/{pid}/cmdline").read_bytes():
                os.kill(pid, signal.SIGUSR1)
    time.sleep(2)
    return f"{out.read_text()[-6000:]}\n---- jstack {consumer.pid}:\n{jvm.stdout}{jvm.stderr}"


def start_producer(args: list[str]) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, str(ROOT / "producer.py"), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=pipeline_env(),
    )


def start_logging_producer(err: Path, *args: str) -> subprocess.Popen:
    """producer.py ARGS with its progress lines (--log-level INFO) and status lines written to `err`,
    to be read while it runs."""
    with err.open("w") as sink:
        return subprocess.Popen(
            [sys.executable, str(ROOT / "producer.py"), *args, "--log-level", "INFO"],
            stdout=subprocess.PIPE,
            stderr=sink,
            text=True,
            env=pipeline_env(),
        )


def lines_with(out: Path, text: str) -> list[str]:
    """The lines of a file a process writes that contain `text`."""
    return [line for line in out.read_text().splitlines() if text in line]


def wait_for_line(out: Path, process: subprocess.Popen, text: str, timeout_s: float = 120, count: int = 1) -> str:
    """The `count`-th line of `out` with `text` in it, once the running `process` has written it."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if len(lines := lines_with(out, text)) >= count:
            return lines[count - 1]
        assert process.poll() is None, f"exited with {process.returncode}: {out.read_text()[-3000:]}"
        time.sleep(0.2)
    raise AssertionError(f"no line with {text!r} after {timeout_s:g} s: {out.read_text()[-3000:]}")


def wait_for_table(
    out: Path, process: subprocess.Popen, expected: dict[str, Decimal] | None = None, timeout_s: float = 180
) -> dict[str, Decimal]:
    """The newest table printed in `out` once it equals `expected` (or once any non-empty one appears)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and process.poll() is None:
        tables = printed_tables(out.read_text())
        if (expected is None and tables and tables[-1]) or (expected is not None and expected in tables):
            return tables[-1]
        time.sleep(0.5)
    if process.poll() is None:  # still running: a JVM thread dump (SIGQUIT) into `out`, to see where it waits
        os.kill(process.pid, signal.SIGQUIT)
        time.sleep(2)
    text = out.read_text()
    raise AssertionError(
        f"no table {expected or ''} in the consumer's output (exit code {process.poll()}, JVM threads in {out}): "
        f"{printed_tables(text)[-2:]}; its last lines: {text[-1500:]}"
    )


def producer_args(bootstrap: str, topic: str, summary: Path, count: int, rate: int, seed: int) -> list[str]:
    return [
        "--bootstrap-servers",
        bootstrap,
        "--topic",
        topic,
        "--count",
        str(count),
        "--rate",
        str(rate),
        "--seed",
        str(seed),
        "--summary-file",
        str(summary),
    ]


class Terminal:
    """A command run as a terminal's foreground job: a pseudo-terminal is its controlling terminal,
    so Ctrl-C reaches its whole process group as SIGINT and closing the terminal sends SIGHUP, as
    for a user (a background job of a non-interactive shell would ignore SIGINT). Everything it
    prints goes to `out`."""

    def __init__(self, command: list[str], out: Path, env: dict[str, str] | None = None) -> None:
        self.out = out
        out.touch()
        self.master, terminal = pty.openpty()
        attributes = termios.tcgetattr(terminal)
        attributes[3] &= ~termios.ECHO  # no "^C" echoed into the output that the tests parse
        termios.tcsetattr(terminal, termios.TCSANOW, attributes)
        self.process = subprocess.Popen(
            ["setsid", "--ctty", *command],  # a new session, with the terminal as its controlling one
            stdin=terminal,
            stdout=terminal,
            stderr=terminal,
            cwd=ROOT,
            env=pipeline_env(env),
        )
        os.close(terminal)
        self._closing = threading.Event()
        self._reader = threading.Thread(target=self._copy_output, daemon=True)
        self._reader.start()

    def _copy_output(self) -> None:
        """Copy what the job prints until the terminal is closed (here, so that no read is still
        blocked on it: that would keep it open) or nothing holds it open any more."""
        with self.out.open("ab") as sink:
            while not self._closing.is_set():
                if not select.select([self.master], [], [], 0.1)[0]:
                    continue
                try:
                    data = os.read(self.master, 65536)
                except OSError:  # EIO: every process of the job has closed the terminal
                    break
                if not data:
                    break
                sink.write(data.replace(b"\r\n", b"\n"))
                sink.flush()
        os.close(self.master)

    def ctrl_c(self) -> None:
        os.write(self.master, b"\x03")

    def close(self) -> None:
        """Close the terminal window: the kernel sends SIGHUP to the session leader."""
        self._closing.set()
        self._reader.join(5)

    def wait(self, timeout_s: float = 120) -> int:
        code = self.process.wait(timeout_s)
        self._reader.join(5)
        return code


def consumer_to_stop(args: list[str], out: Path, ctrl_c: bool) -> tuple[subprocess.Popen, Callable[[], None]]:
    """A streaming consumer and the stop a user gives it: Ctrl-C in its terminal, or a supervisor's
    SIGTERM to its process group."""
    if ctrl_c:
        terminal = Terminal(spark_submit_command(args), out)
        return terminal.process, terminal.ctrl_c
    consumer = start_consumer(args, out)
    return consumer, lambda: signal_group(consumer, signal.SIGTERM)


def still_running(processes: set[tuple[int, str]], timeout_s: float = 60) -> list[str]:
    """Command lines of those processes that still run once `timeout_s` has passed (or sooner, once
    none runs)."""
    deadline = time.monotonic() + timeout_s
    while True:
        running = []
        for pid, start in processes:
            with contextlib.suppress(OSError):
                if start_time(pid) == start:
                    running.append(Path(f"/proc/{pid}/cmdline").read_text().replace("\0", " ")[:200])
        if not running or time.monotonic() >= deadline:
            return running
        time.sleep(0.2)


def summary_windows(path: Path) -> dict[str, tuple[int, int, dict[str, Decimal]]]:
    """The producer's per-window ground truth in its --summary-file: window start (ISO, UTC) ->
    (orders, late orders, exact totals per product)."""
    return {
        start: (window["orders"], window["late_orders"], {name: Decimal(t) for name, t in window["totals"].items()})
        for start, window in json.loads(path.read_text())["windows"].items()
    }

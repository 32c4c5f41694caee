"""Starting and stopping the pipeline's own processes (producer, spark-submit) by PID."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from ventas.config import UserError
from ventas.jars import ROOT, spark_kafka_jars


def pipeline_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """Environment for the project's commands: this interpreter for PySpark, the quiet Spark logging
    of conf/, the driver and its UI on 127.0.0.1 (Spark's default is every interface) and the
    repository on PYTHONPATH."""
    env = dict(os.environ)
    env.setdefault("PYSPARK_PYTHON", sys.executable)
    env.setdefault("SPARK_CONF_DIR", str(ROOT / "conf"))
    env.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env.update(extra or {})
    return env


def spark_submit_command(
    args: Sequence[str],
    script: Path = ROOT / "consumer.py",
    python: Path | None = None,
    options: Sequence[str] = (),
) -> list[str]:
    """`spark-submit OPTIONS --jars <connector jars> consumer.py ARGS` with the installed pyspark's
    spark-submit: the jars `make deps` cached, so no Ivy resolution (nor its report) at every start.
    OPTIONS are spark-submit's own (`--master spark://...`). `python`: the interpreter of another
    environment (the seed's Spark line), whose spark-submit and jars are used; run the command with
    line_env(python)."""
    if python is None:
        python, jars = Path(sys.executable), ",".join(map(str, spark_kafka_jars()))
    else:
        listed = subprocess.run([python, "-m", "ventas.jars", "--print-jars"], capture_output=True, text=True)
        if listed.returncode != 0:
            raise UserError(f"{python} -m ventas.jars failed: {listed.stderr.strip()}")
        jars = listed.stdout.strip()
    return [str(python.parent / "spark-submit"), *options, "--jars", jars, str(script), *args]


def line_env(python: Path) -> dict[str, str]:
    """The environment for spark_submit_command(..., python): its driver runs that interpreter."""
    return {"PYSPARK_PYTHON": str(python)}


def producer_command(bootstrap_servers: str, topic: str, *args: str) -> list[str]:
    """`python producer.py --bootstrap-servers B --topic T ARGS` with this interpreter."""
    return [
        sys.executable,
        str(ROOT / "producer.py"),
        "--bootstrap-servers",
        bootstrap_servers,
        "--topic",
        topic,
        *args,
    ]


def start(command: Sequence[str], env: dict[str, str] | None = None, **kwargs) -> subprocess.Popen:
    """Start a command in its own process group, so that it can be signalled as a whole."""
    return subprocess.Popen(list(command), env=pipeline_env(env), start_new_session=True, **kwargs)


def signal_group(process: subprocess.Popen, signum: int) -> None:
    """Signal a process's whole group if it leads one (spark-submit's JVM and its Python driver), as a
    terminal's Ctrl-C would; else the process alone."""
    with contextlib.suppress(ProcessLookupError):
        if os.getpgid(process.pid) == process.pid:
            os.killpg(process.pid, signum)
        else:
            process.send_signal(signum)


def stop_all(
    processes: Sequence[subprocess.Popen],
    sig: int = signal.SIGINT,
    timeout_s: float = 60.0,
    again: threading.Event | None = None,
) -> list[int]:
    """Signal every running process at once and wait for all of them; pass the signal on a second
    time when `again` is set (a second Ctrl-C: stop at once); SIGKILL what still runs after
    `timeout_s`. Returns the exit codes."""
    running = [p for p in processes if p.poll() is None]
    for process in running:
        signal_group(process, sig)
    deadline = time.monotonic() + timeout_s
    repeated = False
    while any(p.poll() is None for p in running) and time.monotonic() < deadline:
        if again is not None and again.is_set() and not repeated:
            for process in running:
                if process.poll() is None:
                    signal_group(process, sig)
            repeated = True
        time.sleep(0.1)
    for process in running:
        if process.poll() is None:
            signal_group(process, signal.SIGKILL)
    return [p.wait() for p in processes]


def stop(process: subprocess.Popen, sig: int = signal.SIGINT, timeout_s: float = 60.0) -> int:
    """Stop one process as stop_all does."""
    return stop_all([process], sig, timeout_s)[0]

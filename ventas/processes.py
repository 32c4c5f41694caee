"""Starting and stopping the pipeline's own processes (producer, spark-submit) by PID."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from ventas.jars import spark_kafka_package

ROOT = Path(__file__).resolve().parent.parent


def pipeline_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """Environment for the project's commands: this interpreter for PySpark, the quiet Spark logging
    of conf/ and the repository on PYTHONPATH."""
    env = dict(os.environ)
    env.setdefault("PYSPARK_PYTHON", sys.executable)
    env.setdefault("SPARK_CONF_DIR", str(ROOT / "conf"))
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env.update(extra or {})
    return env


def spark_submit_command(args: Sequence[str], script: Path = ROOT / "consumer.py") -> list[str]:
    """`spark-submit --packages <connector> consumer.py ARGS` with the installed pyspark's spark-submit."""
    spark_submit = Path(sys.executable).parent / "spark-submit"
    return [str(spark_submit), "--packages", spark_kafka_package(), str(script), *args]


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


def start(command: Sequence[str], **kwargs) -> subprocess.Popen:
    """Start a command in its own process group, so that it can be signalled as a whole."""
    return subprocess.Popen(list(command), env=pipeline_env(), start_new_session=True, **kwargs)


def stop(process: subprocess.Popen, sig: int = signal.SIGINT, timeout_s: float = 60.0) -> int:
    """Signal a process (its whole group, if it leads one: spark-submit's JVM and Python driver) as a
    terminal's Ctrl-C would; SIGKILL it if it does not exit in time."""

    def send(signum: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            if os.getpgid(process.pid) == process.pid:
                os.killpg(process.pid, signum)
            else:
                process.send_signal(signum)

    if process.poll() is None:
        send(sig)
        try:
            return process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            send(signal.SIGKILL)
    return process.wait()

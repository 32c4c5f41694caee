"""A Spark standalone cluster on 127.0.0.1 from the installed pyspark: a master and N workers.

`scripts/spark-local start|stop|status [--workers N] [--cores C] [--memory M]`. The master and
each worker are JVMs started with the pyspark package's own `bin/spark-class` (no Docker, no
separate Spark download), bound to 127.0.0.1. Their config, logs, PIDs and the workers' work
directories (executor logs) live in --state-dir; they are stopped by PID. Submit to the printed
master URL: `spark-submit --master spark://127.0.0.1:7077 ... consumer.py`.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from ventas.config import STATE_HOME, Parser, UserError, env, fail, positive_int
from ventas.lab import daemons
from ventas.lab.ports import HOST, distinct_free_ports, port_is_free
from ventas.lab.processes import pipeline_env

DEFAULT_PORT = 7077
DEFAULT_WEBUI_PORT = 8080
MASTER = "org.apache.spark.deploy.master.Master"
WORKER = "org.apache.spark.deploy.worker.Worker"

# The daemons' own logging, into their log files: INFO shows workers registering and executors
# launched and lost, which is what one reads them for.
LOG4J2_PROPERTIES = """\
rootLogger.level = info
rootLogger.appenderRef.stdout.ref = console
appender.console.type = Console
appender.console.name = console
appender.console.target = SYSTEM_ERR
appender.console.layout.type = PatternLayout
appender.console.layout.pattern = %d{yy/MM/dd HH:mm:ss} %p %c{1}: %m%n%ex
"""


def default_state_dir(port: int) -> Path:
    return STATE_HOME / f"spark-{port}"


def spark_class() -> Path:
    """bin/spark-class of the installed pyspark package."""
    spec = importlib.util.find_spec("pyspark")
    if spec is None or spec.origin is None:
        raise UserError("pyspark is not installed: run make deps")
    return Path(spec.origin).parent / "bin" / "spark-class"


@dataclass
class Daemon:
    """The master or one worker: `NAME.conf` (its Spark properties, and the marker that identifies its
    JVM), `NAME.log` and `NAME.json` (PID) in the state directory."""

    name: str
    state_dir: Path

    @property
    def properties(self) -> Path:
        return self.state_dir / f"{self.name}.conf"

    @property
    def log_file(self) -> Path:
        return self.state_dir / f"{self.name}.log"

    @property
    def _state_file(self) -> Path:
        return self.state_dir / f"{self.name}.json"

    def pid(self) -> int | None:
        return daemons.recorded_pid(self._state_file, self.properties)

    def launch(self, main_class: str, args: list[str], properties: dict[str, str]) -> subprocess.Popen:
        self.properties.write_text("".join(f"{key} {value}\n" for key, value in properties.items()))
        conf_dir = self.state_dir / "conf"
        conf_dir.mkdir(exist_ok=True)
        (conf_dir / "log4j2.properties").write_text(LOG4J2_PROPERTIES)
        with self.log_file.open("ab") as log:
            process = subprocess.Popen(
                [str(spark_class()), main_class, *args, "--properties-file", str(self.properties)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=pipeline_env({"SPARK_CONF_DIR": str(conf_dir)}),  # SPARK_LOCAL_IP=127.0.0.1: UIs too
                start_new_session=True,
            )
        self._state_file.write_text(json.dumps({"pid": process.pid}))
        return process

    def forget(self) -> None:
        """Remove the PID record of a stopped daemon."""
        self._state_file.unlink(missing_ok=True)


@dataclass
class SparkCluster:
    """A standalone master on `port` (web UI on `webui_port`) and `workers` workers of `cores` cores
    and `memory` each, all state in `state_dir`."""

    state_dir: Path
    port: int = DEFAULT_PORT
    webui_port: int = DEFAULT_WEBUI_PORT
    workers: int = 2
    cores: int = 1
    memory: str = "1g"

    @property
    def url(self) -> str:
        return f"spark://{HOST}:{self.port}"

    @property
    def webui(self) -> str:
        return f"http://{HOST}:{self.webui_port}"

    @property
    def master(self) -> Daemon:
        return Daemon("master", self.state_dir)

    def worker(self, index: int) -> Daemon:
        """Worker `index`, from 1."""
        return Daemon(f"worker-{index}", self.state_dir)

    @property
    def _layout_file(self) -> Path:
        return self.state_dir / "master-ports.json"

    def with_recorded_ports(self) -> SparkCluster:
        """This cluster with the ports its master was last started on (for stop and status)."""
        try:
            ports = json.loads(self._layout_file.read_text())
        except OSError:
            return self
        return SparkCluster(self.state_dir, ports["port"], ports["webui_port"], self.workers, self.cores, self.memory)

    def started_workers(self) -> list[Daemon]:
        """Every worker this state directory has records of, running or not."""
        names = sorted(p.stem for p in self.state_dir.glob("worker-*.conf"))
        return [Daemon(name, self.state_dir) for name in names]

    def start(self, timeout_s: float = 90.0) -> bool:
        """Start the master and workers 1..N that do not run; wait until N workers are alive. True
        when anything was started."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        launched = []
        if self.master.pid() is None:
            for port, flag in ((self.port, "--port"), (self.webui_port, "--webui-port")):
                if not port_is_free(port):
                    raise UserError(f"port {port} on {HOST} is taken: stop what uses it or pass {flag}")
            master_args = ["--host", HOST, "--port", str(self.port), "--webui-port", str(self.webui_port)]
            launched.append(self.master.launch(MASTER, master_args, {"spark.master.rest.enabled": "false"}))
            self._layout_file.write_text(json.dumps({"port": self.port, "webui_port": self.webui_port}))
        webui_ports = distinct_free_ports(self.workers, avoid=[self.port, self.webui_port])
        for index, webui_port in enumerate(webui_ports, start=1):
            worker = self.worker(index)
            if worker.pid() is None:
                work_dir = self.state_dir / worker.name
                work_dir.mkdir(exist_ok=True)
                args = [
                    *("--host", HOST, "--webui-port", str(webui_port)),
                    *("--cores", str(self.cores), "--memory", self.memory, "--work-dir", str(work_dir)),
                    self.url,
                ]
                launched.append(worker.launch(WORKER, args, {}))
        try:
            self._wait_for_workers(launched, timeout_s)
        except UserError:
            self.stop()
            raise
        return bool(launched)

    def _wait_for_workers(self, launched: list[subprocess.Popen], timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for process in launched:
                if process.poll() is not None:
                    raise UserError(f"a Spark daemon exited with code {process.returncode}: see {self.state_dir}/*.log")
            if len(self.alive_workers()) >= self.workers:
                return
            time.sleep(0.5)
        raise UserError(
            f"{self.workers} Spark workers did not register in {timeout_s:.0f} s: see {self.state_dir}/*.log"
        )

    def alive_workers(self) -> list[dict]:
        """The workers the master counts as alive (its web UI's JSON), or none while it is not up."""
        try:
            with urllib.request.urlopen(f"{self.webui}/json/", timeout=5) as response:
                workers = json.load(response)["workers"]
        except (OSError, ValueError, KeyError):
            return []
        return [worker for worker in workers if worker.get("state") == "ALIVE"]

    def stop(self) -> bool:
        """Workers first (each stops its executors), then the master. True when anything ran."""
        workers = self.started_workers()
        stopped = daemons.stop(*(worker.pid for worker in workers), timeout_s=30)
        stopped = daemons.stop(self.master.pid, timeout_s=30) or stopped
        for daemon in (*workers, self.master):
            daemon.forget()
        return stopped

    def kill_worker(self, index: int) -> list[int]:
        """SIGKILL worker `index` and its executors at once, as a lost machine would; their PIDs."""
        pid = self.worker(index).pid()
        if pid is None:
            raise UserError(f"worker {index} is not running")
        return daemons.kill_tree(pid)


def _report(cluster: SparkCluster) -> list[str]:
    pid = cluster.master.pid()
    lines = [
        f"master {cluster.url} (web UI {cluster.webui}): " + (f"running (pid {pid})" if pid else "not running"),
    ]
    alive = cluster.alive_workers()
    for worker in cluster.started_workers():
        worker_pid = worker.pid()
        state = f"running (pid {worker_pid})" if worker_pid else "not running"
        lines.append(f"{worker.name}: {state}, log {worker.log_file}")
    lines.append(
        f"{len(alive)} workers alive: {sum(w['cores'] for w in alive)} cores, "
        f"{sum(w['memory'] for w in alive)} MB for executors"
    )
    return lines


def add_master_arguments(parser: Parser, prefix: str = "") -> None:
    """--PREFIXport and --PREFIXwebui-port of the master: spark-local's, and the cluster demo's."""
    parser.add_argument(
        f"--{prefix}port",
        type=positive_int,
        default=env("SPARK_MASTER_PORT", str(DEFAULT_PORT)),
        help="master port on 127.0.0.1 (env SPARK_MASTER_PORT; default %(default)s)",
    )
    parser.add_argument(
        f"--{prefix}webui-port",
        type=positive_int,
        default=env("SPARK_MASTER_WEBUI_PORT", str(DEFAULT_WEBUI_PORT)),
        help="master web UI port (env SPARK_MASTER_WEBUI_PORT; default %(default)s)",
    )


def main(argv: list[str] | None = None) -> None:
    parser = Parser(prog="spark-local", description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=["start", "stop", "status"])
    parser.add_argument(
        "--workers",
        type=positive_int,
        default=env("SPARK_WORKERS", "2"),
        help="workers that start starts (env SPARK_WORKERS; default %(default)s)",
    )
    parser.add_argument(
        "--cores",
        type=positive_int,
        default=env("SPARK_WORKER_CORES", "1"),
        help="cores each worker offers to executors (env SPARK_WORKER_CORES; default %(default)s)",
    )
    parser.add_argument(
        "--memory",
        type=memory,
        default=env("SPARK_WORKER_MEMORY", "1g"),
        help="memory each worker offers to executors, at least spark.executor.memory (1g by default) "
        "(env SPARK_WORKER_MEMORY; default %(default)s)",
    )
    add_master_arguments(parser)
    parser.add_argument(
        "--state-dir",
        type=Path,
        default=None,
        help=f"config, logs, PIDs and work directories (default {default_state_dir(DEFAULT_PORT).parent}/spark-PORT)",
    )
    parser.add_argument("--timeout", type=float, default=90.0, help="seconds to wait for the workers to register")
    args = parser.parse_args(argv)
    cluster = SparkCluster(
        (args.state_dir or default_state_dir(args.port)).resolve(),
        args.port,
        args.webui_port,
        args.workers,
        args.cores,
        args.memory,
    )
    if args.command != "start" or cluster.with_recorded_ports().master.pid():
        cluster = cluster.with_recorded_ports()
    try:
        run(args.command, cluster, args.timeout)
    except UserError as error:
        fail(parser.prog, error)


def run(command: str, cluster: SparkCluster, timeout_s: float) -> None:
    if command == "start":
        started = cluster.start(timeout_s)
        print(f"Spark master {'started' if started else 'already running'}:", file=sys.stderr)
        for line in _report(cluster):
            print(f"  {line}", file=sys.stderr)
        print(cluster.url)
        print(cluster.webui)
    elif command == "stop":
        print("stopped" if cluster.stop() else f"not running (state dir {cluster.state_dir})")
    else:
        for line in _report(cluster):
            print(line)
        if cluster.master.pid() is None:
            sys.exit(3)


def memory(text: str) -> str:
    """argparse type: a Spark memory size such as 512m or 2g."""
    number, unit = text[:-1], text[-1:].lower()
    if not number.isdigit() or int(number) < 1 or unit not in ("m", "g"):
        raise argparse.ArgumentTypeError(f"expected a size like 512m or 2g, got {text!r}")
    return text


if __name__ == "__main__":
    main()

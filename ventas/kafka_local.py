"""A real single-node Apache Kafka 4.0 broker (KRaft, broker+controller) run from cached jars.

`scripts/kafka-local start|stop|status [--port N] [--data-dir DIR]`. Each broker is addressed by
its data directory, which holds its config, log, data and a `broker.json` with the PID, so
several brokers can run side by side (tests, benchmarks) and `start` twice starts only one.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from ventas import secure_broker
from ventas.config import DEFAULT_TOPIC, STATE_HOME, Parser, UserError, env, fail, positive_int
from ventas.jars import ensure_kafka_libs
from ventas.secure_broker import STRANGER, WRITER
from ventas.security import KafkaSecurity, connect

HOST = "127.0.0.1"
DEFAULT_PORT = 9092
STATE_FILE = "broker.json"
READY_POLL_S = 2.0  # how often a starting broker is checked for having exited

LOG4J2_PROPERTIES = """\
status = error
appender.out.type = Console
appender.out.name = out
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.out.ref = out
logger.state.name = state.change.logger
logger.state.level = WARN
"""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def port_is_free(port: int) -> bool:
    """True unless something listens on the port (connections left in TIME_WAIT do not count)."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((HOST, port))
        except OSError:
            return False
        return True


def new_cluster_id() -> str:
    """A random KRaft cluster id (base64 of a UUID), never starting with '-', which the storage
    tool's argument parser would take for an option (Kafka's own Uuid.randomUuid avoids it too)."""
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cluster_id.startswith("-"):
            return cluster_id


def default_data_dir(port: int) -> Path:
    return STATE_HOME / f"kafka-{port}"


@dataclass
class LocalBroker:
    """One broker, identified by its data directory."""

    port: int
    data_dir: Path
    secure: bool = False  # SASL_SSL, mutual TLS and SASL_PLAINTEXT listeners, a throwaway CA, ACLs

    @property
    def bootstrap(self) -> str:
        return f"{HOST}:{self.port}"

    @property
    def log_file(self) -> Path:
        return self.data_dir / "broker.log"

    @property
    def _state_file(self) -> Path:
        return self.data_dir / STATE_FILE

    @property
    def _properties(self) -> Path:
        return self.data_dir / "server.properties"

    def pid(self) -> int | None:
        """The PID of this broker's running JVM, or None (a stale or reused PID does not count)."""
        try:
            pid = json.loads(self._state_file.read_text())["pid"]
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except (OSError, ValueError, KeyError):
            return None
        return pid if str(self._properties).encode() in cmdline else None

    @property
    def admin_bootstrap(self) -> str:
        """Where this project's own admin calls go: the client port, or for a secure broker its
        PLAINTEXT listener for local administration (a super user, bound to 127.0.0.1)."""
        if not self.secure:
            return self.bootstrap
        return f"{HOST}:{json.loads(self._state_file.read_text())['admin_port']}"

    def client_properties(self, user: str, listener: str = "SASL_SSL") -> Path:
        """A secure broker's client settings for `user` (WRITER or STRANGER) on one of its
        listeners (secure_broker.LISTENERS), for --client-properties."""
        return secure_broker.properties_file(self.data_dir, user, listener)

    def listener_bootstrap(self, listener: str) -> str:
        """A secure broker's address for one of its client listeners (secure_broker.LISTENERS)."""
        return f"{HOST}:{json.loads(self._state_file.read_text())['listeners'][listener]}"

    def start(self, partitions: int = 1, timeout_s: float = 90.0, topics: tuple[str, ...] = ()) -> bool:
        """Start the broker unless it already runs; create `topics`. True when it was started."""
        pid = self.pid()
        if pid is None:
            self._launch(timeout_s)
        self.create_topics(topics, partitions)
        if self.secure:
            secure_broker.grant(self.admin_bootstrap, WRITER, topics)
        return pid is None

    def _launch(self, timeout_s: float) -> None:
        java = shutil.which("java")
        if java is None:
            raise UserError("java not found on PATH: install Java 17 (e.g. apt-get install openjdk-17-jre-headless)")
        if not port_is_free(self.port):
            raise UserError(f"port {self.port} on {HOST} is taken: stop what uses it or pass --port")
        libs = ensure_kafka_libs()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        controller_port = free_port()
        ports = {"SASL_SSL": self.port, **{name: free_port() for name in ("SSL", "SASL_PLAINTEXT", "ADMIN")}}
        admin_port = ports["ADMIN"] if self.secure else self.port
        logs_dir = self.data_dir / "logs"
        if self.secure:
            listeners = secure_broker.listener_config(self.data_dir, HOST, ports)
        else:
            listeners = [
                f"listeners=PLAINTEXT://{HOST}:{self.port},CONTROLLER://{HOST}:{controller_port}",
                f"advertised.listeners=PLAINTEXT://{HOST}:{self.port}",
                "inter.broker.listener.name=PLAINTEXT",
                "listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
            ]
        self._properties.write_text(
            "\n".join(
                [
                    "process.roles=broker,controller",
                    "node.id=1",
                    f"controller.quorum.voters=1@{HOST}:{controller_port}",
                    "controller.listener.names=CONTROLLER",
                    *(line.replace("CONTROLLER_PORT", str(controller_port)) for line in listeners),
                    f"log.dirs={logs_dir}",
                    "num.partitions=1",
                    "offsets.topic.replication.factor=1",
                    "transaction.state.log.replication.factor=1",
                    "transaction.state.log.min.isr=1",
                    "share.coordinator.state.topic.replication.factor=1",
                    "share.coordinator.state.topic.min.isr=1",
                    "group.initial.rebalance.delay.ms=0",
                    "",
                ]
            )
        )
        log4j = self.data_dir / "log4j2.properties"
        log4j.write_text(LOG4J2_PROPERTIES)
        jvm = [
            java,
            "-Xms256m",
            "-Xmx1g",
            "-XX:+UseG1GC",
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={log4j}",
            "-cp",
            f"{libs}/*",
        ]
        if not (logs_dir / "meta.properties").exists():
            cluster_id = new_cluster_id()
            formatted = subprocess.run(
                [
                    *jvm,
                    "kafka.tools.StorageTool",
                    "format",
                    "-t",
                    cluster_id,
                    "-c",
                    str(self._properties),
                    *(secure_broker.scram_arguments(self.data_dir) if self.secure else []),
                ],
                capture_output=True,
                text=True,
            )
            if formatted.returncode != 0:
                raise UserError(f"formatting {logs_dir} failed: {formatted.stderr.strip().splitlines()[-1:]}")
        with self.log_file.open("ab") as log:
            process = subprocess.Popen(
                [*jvm, "kafka.Kafka", str(self._properties)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        state = {"pid": process.pid, "port": self.port, "admin_port": admin_port}
        if self.secure:
            state["listeners"] = {name: ports[name] for name in secure_broker.LISTENERS}
        self._state_file.write_text(json.dumps(state))
        self._wait_until_ready(process, timeout_s)

    def _wait_until_ready(self, process: subprocess.Popen, timeout_s: float) -> None:
        from kafka import KafkaAdminClient

        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise UserError(f"the Kafka broker exited with code {process.returncode}: see {self.log_file}")
            try:
                connect(KafkaAdminClient, self.admin_bootstrap, KafkaSecurity(), READY_POLL_S).close()
                return
            except UserError:  # not listening yet
                continue
        self.stop()
        raise UserError(f"the Kafka broker did not come up in {timeout_s:.0f} seconds: see {self.log_file}")

    def create_topics(self, topics: tuple[str, ...], partitions: int) -> None:
        """Create each topic that does not exist yet, and wait until every partition has a leader."""
        from kafka import KafkaAdminClient
        from kafka.errors import TopicAlreadyExistsError

        if not topics:
            return
        admin = KafkaAdminClient(bootstrap_servers=self.admin_bootstrap)
        try:
            missing = sorted(set(topics) - set(admin.list_topics()))
            if missing:
                created = admin.create_topics(
                    {topic: {"num_partitions": partitions, "replication_factor": 1} for topic in missing},
                    raise_errors=False,
                )
                failed = [  # one created meanwhile by another process is just as good
                    f"{result['name']}: {result['error_message'] or result['error_code']}"
                    for result in created["topics"]
                    if result["error_code"] not in (0, TopicAlreadyExistsError.errno)
                ]
                if failed:
                    raise UserError(f"creating topics failed: {'; '.join(failed)}")
                admin.wait_for_topics(missing)
        finally:
            admin.close()

    def stop(self, timeout_s: float = 60.0) -> bool:
        """Stop the broker by its recorded PID and wait for it to exit. True when it was running."""
        pid = self.pid()
        if pid is None:
            return False
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        while self.pid() is not None and time.monotonic() < deadline:
            time.sleep(0.2)
        if self.pid() is not None:
            os.kill(pid, signal.SIGKILL)
            while self.pid() is not None:
                time.sleep(0.1)
        self._state_file.unlink(missing_ok=True)
        return True

    def kill(self) -> None:
        """SIGKILL the broker, as a crash would (for fault tests)."""
        pid = self.pid()
        if pid is not None:
            os.kill(pid, signal.SIGKILL)
            while self.pid() is not None:
                time.sleep(0.1)


def main(argv: list[str] | None = None) -> None:
    parser = Parser(prog="kafka-local", description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=["start", "stop", "status"])
    parser.add_argument(
        "--port",
        type=positive_int,
        default=env("KAFKA_PORT", str(DEFAULT_PORT)),
        help="client port on 127.0.0.1 (env KAFKA_PORT; default %(default)s)",
    )
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help=f"broker config, data and log (default {default_data_dir(DEFAULT_PORT).parent}/kafka-PORT)",
    )
    parser.add_argument(
        "--topic",
        default=env("KAFKA_TOPIC", DEFAULT_TOPIC),
        help="topic created on start if absent (env KAFKA_TOPIC; default %(default)s)",
    )
    parser.add_argument(
        "--partitions",
        type=positive_int,
        default=env("KAFKA_PARTITIONS", "2"),
        help="partitions of that topic (env KAFKA_PARTITIONS; default %(default)s)",
    )
    parser.add_argument("--timeout", type=float, default=90.0, help="seconds to wait for the broker to come up")
    parser.add_argument(
        "--secure",
        action="store_true",
        help="SASL_SSL, mutual-TLS and SASL_PLAINTEXT listeners with a throwaway CA, SCRAM/PLAIN users "
        "and ACLs (see ventas/secure_broker.py)",
    )
    args = parser.parse_args(argv)
    broker = LocalBroker(args.port, (args.data_dir or default_data_dir(args.port)).resolve(), args.secure)
    try:
        if args.command == "start":
            started = broker.start(args.partitions, args.timeout, (args.topic,))
            state = "started" if started else "already running"
            print(
                f"Kafka broker {state} at {broker.bootstrap} (pid {broker.pid()}, log {broker.log_file})",
                file=sys.stderr,
            )
            if broker.secure:
                for listener in secure_broker.LISTENERS:
                    for user in (WRITER, STRANGER):
                        if broker.client_properties(user, listener).exists():
                            print(
                                f"{listener} at {broker.listener_bootstrap(listener)}, user {user}: "
                                f"--client-properties {broker.client_properties(user, listener)}",
                                file=sys.stderr,
                            )
            print(broker.bootstrap)
        elif args.command == "stop":
            print("stopped" if broker.stop() else f"not running (data dir {broker.data_dir})")
        else:
            pid = broker.pid()
            if pid is None:
                print(f"not running (data dir {broker.data_dir})")
                sys.exit(3)
            print(f"running at {broker.bootstrap} (pid {pid}, data dir {broker.data_dir})")
    except UserError as error:
        fail(parser.prog, error)


if __name__ == "__main__":
    main()

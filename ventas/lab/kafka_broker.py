"""One local Apache Kafka 4.0 broker (KRaft) on 127.0.0.1, run from cached jars: alone, or one node
of a LocalCluster (ventas/lab/kafka_cluster.py).

A broker is addressed by its data directory, which holds its config, log, data and a `broker.json`
with the PID, so several brokers can run side by side (tests, benchmarks) and starting one twice
starts it once.
"""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from ventas.config import STATE_HOME, UserError
from ventas.jars import ensure_kafka_libs
from ventas.lab import daemons, secure_broker
from ventas.lab.kafka_topics import SINGLE, Quorum, create_topics
from ventas.lab.ports import HOST, distinct_free_ports, free_port, port_is_free
from ventas.lab.secure_broker import WRITER
from ventas.security import KafkaSecurity, connect

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


def new_cluster_id() -> str:
    """A random KRaft cluster id (base64 of a UUID), never starting with '-', which the storage
    tool's argument parser would take for an option (Kafka's own Uuid.randomUuid avoids it too)."""
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cluster_id.startswith("-"):
            return cluster_id


def default_data_dir(port: int, brokers: int = 1) -> Path:
    """kafka-PORT for a single broker, kafka-PORT-cluster for a cluster: `make demo` and
    `make demo-cluster` can follow each other on the same port."""
    return STATE_HOME / (f"kafka-{port}" if brokers == 1 else f"kafka-{port}-cluster")


def java_on_path() -> str:
    java = shutil.which("java")
    if java is None:
        raise UserError("java not found on PATH: install Java 17 (e.g. apt-get install openjdk-17-jre-headless)")
    return java


@dataclass
class LocalBroker:
    """One broker, identified by its data directory: alone, or node `node_id` of a cluster's `quorum`."""

    port: int
    data_dir: Path
    secure: bool = False  # SASL_SSL, mutual TLS and SASL_PLAINTEXT listeners, a throwaway CA, ACLs
    node_id: int = 1
    quorum: Quorum = SINGLE

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

    @property
    def _logs_dir(self) -> Path:
        return self.data_dir / "logs"

    def pid(self) -> int | None:
        """The PID of this broker's running JVM, or None (a stale or reused PID does not count)."""
        return daemons.recorded_pid(self._state_file, self._properties)

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
            self.wait_until_ready(self.launch(), timeout_s)
        self.create_topics(topics, partitions)
        if self.secure:
            secure_broker.grant(self.admin_bootstrap, WRITER, topics)
        return pid is None

    def launch(self) -> subprocess.Popen:
        """Start the JVM without waiting: the nodes of a cluster become ready only together."""
        java = java_on_path()
        if not port_is_free(self.port):
            raise UserError(f"port {self.port} on {HOST} is taken: stop what uses it or pass --port")
        libs = ensure_kafka_libs()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        controller_port, voters = self._controller()
        ports = self._listener_ports(controller_port)
        self._properties.write_text(self._server_properties(controller_port, voters, ports))
        jvm = self._jvm_command(java, libs)
        self._format_storage(jvm)
        process = self._start_jvm(jvm)
        self._record_state(process, ports)
        return process

    def _controller(self) -> tuple[int | None, str]:
        """This node's controller port (None for a broker-only node of a cluster) and the quorum's
        voters; a single broker is a quorum of its own, on a port picked now."""
        if self.quorum.size > 1:
            return self.quorum.controllers.get(self.node_id), self.quorum.voters
        controller_port = free_port(avoid=[self.port])
        return controller_port, f"{self.node_id}@{HOST}:{controller_port}"

    def _listener_ports(self, controller_port: int | None) -> dict[str, int]:
        """The client port (under SASL_SSL, whatever the protocol) and, for a secure broker (a single
        one: --secure leaves out --brokers), the ports of its other listeners, picked now."""
        ports = {"SASL_SSL": self.port}
        if self.secure:
            others = distinct_free_ports(3, avoid=[self.port, controller_port])
            ports.update(zip(("SSL", "SASL_PLAINTEXT", "ADMIN"), others, strict=True))
        return ports

    def _listener_lines(self, controller_port: int | None, ports: dict[str, int]) -> list[str]:
        if self.secure:
            return secure_broker.listener_config(self.data_dir, HOST, ports)
        own = f",CONTROLLER://{HOST}:{controller_port}" if controller_port else ""  # a broker-only node has none
        return [
            f"listeners=PLAINTEXT://{HOST}:{self.port}{own}",
            f"advertised.listeners=PLAINTEXT://{HOST}:{self.port}",
            "inter.broker.listener.name=PLAINTEXT",
            "listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
        ]

    def _server_properties(self, controller_port: int | None, voters: str, ports: dict[str, int]) -> str:
        """server.properties: roles, quorum, listeners, and replication as the cluster's size allows."""
        replication, min_isr = self.quorum.replication_factor, self.quorum.min_insync_replicas
        listeners = self._listener_lines(controller_port, ports)
        return "\n".join(
            [
                f"process.roles={'broker,controller' if controller_port else 'broker'}",
                f"node.id={self.node_id}",
                f"controller.quorum.voters={voters}",
                "controller.listener.names=CONTROLLER",
                *(line.replace("CONTROLLER_PORT", str(controller_port)) for line in listeners),
                f"log.dirs={self._logs_dir}",
                "num.partitions=1",
                f"default.replication.factor={replication}",
                f"min.insync.replicas={min_isr}",
                f"offsets.topic.replication.factor={replication}",
                f"transaction.state.log.replication.factor={replication}",
                f"transaction.state.log.min.isr={min_isr}",
                f"share.coordinator.state.topic.replication.factor={replication}",
                f"share.coordinator.state.topic.min.isr={min_isr}",
                "group.initial.rebalance.delay.ms=0",
                "",
            ]
        )

    def _jvm_command(self, java: str, libs: Path) -> list[str]:
        """The JVM's command line up to the main class, logging as log4j2.properties (written here) says."""
        log4j = self.data_dir / "log4j2.properties"
        log4j.write_text(LOG4J2_PROPERTIES)
        return [
            java,
            "-Xms256m",
            "-Xmx1g",
            "-XX:+UseG1GC",
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={log4j}",
            "-cp",
            f"{libs}/*",
        ]

    def _format_storage(self, jvm: list[str]) -> None:
        """At the first start, format the log directory with the cluster's id (a new one for a single
        broker) and, for a secure broker, its users' SCRAM credentials."""
        if (self._logs_dir / "meta.properties").exists():
            return
        cluster_id = self.quorum.cluster_id or new_cluster_id()
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
            raise UserError(f"formatting {self._logs_dir} failed: {formatted.stderr.strip().splitlines()[-1:]}")

    def _start_jvm(self, jvm: list[str]) -> subprocess.Popen:
        """kafka.Kafka in a session of its own, its output appended to the broker's log."""
        with self.log_file.open("ab") as log:
            return subprocess.Popen(
                [*jvm, "kafka.Kafka", str(self._properties)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def _record_state(self, process: subprocess.Popen, ports: dict[str, int]) -> None:
        """broker.json: the PID (see pid), the client and admin ports, a secure broker's listeners."""
        admin_port = ports["ADMIN"] if self.secure else self.port
        state = {"pid": process.pid, "port": self.port, "admin_port": admin_port}
        if self.secure:
            state["listeners"] = {name: ports[name] for name in secure_broker.LISTENERS}
        self._state_file.write_text(json.dumps(state))

    def wait_until_ready(self, process: subprocess.Popen, timeout_s: float) -> None:
        """Until the broker serves clients, which a KRaft broker does once the quorum has unfenced it."""
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
        """Create each topic that does not exist yet."""
        create_topics(self.admin_bootstrap, topics, partitions, self.quorum)

    def stop(self, timeout_s: float = 60.0) -> bool:
        """Stop the broker by its recorded PID and wait for it to exit. True when it was running."""
        stopped = daemons.stop(self.pid, timeout_s=timeout_s)
        self.forget()
        return stopped

    def forget(self) -> None:
        """Remove the PID record of a stopped broker."""
        self._state_file.unlink(missing_ok=True)

    def kill(self) -> None:
        """SIGKILL the broker, as a crash would (for fault tests)."""
        daemons.kill(self.pid)

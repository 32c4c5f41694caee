"""A real Apache Kafka 4.0 broker (KRaft), or a cluster of N of them, run from cached jars on 127.0.0.1.

`scripts/kafka-local start|stop|status [--brokers N] [--port P] [--data-dir DIR]`. Each broker is
addressed by its data directory, which holds its config, log, data and a `broker.json` with the
PID, so several brokers can run side by side (tests, benchmarks) and `start` twice starts only one.
A cluster of N nodes keeps one such directory per node (`node-1`, ...) and a `cluster.json` in
--data-dir; node i listens for clients on port P+i-1. From 3 nodes on, nodes 1 to 3 are combined
broker and controller nodes (the KRaft quorum's voters) and any further node is a broker only: a
quorum of 3 survives the loss of any one node, and more voters would only slow every metadata
commit. A 2-node cluster has one controller, node 1 (a quorum of 2 could lose neither node).
"""

from __future__ import annotations

import argparse
import base64
import json
import random
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

from ventas import daemons, secure_broker
from ventas.config import DEFAULT_TOPIC, STATE_HOME, Parser, UserError, env, fail, positive_int
from ventas.jars import ensure_kafka_libs
from ventas.secure_broker import STRANGER, WRITER
from ventas.security import KafkaSecurity, connect

HOST = "127.0.0.1"
DEFAULT_PORT = 9092
STATE_FILE = "broker.json"
READY_POLL_S = 2.0  # how often a starting broker is checked for having exited
CLUSTER_FILE = "cluster.json"
TOPICS_CREATED_S = 60.0  # for a new cluster's metadata to name every node
EPHEMERAL_PORT_RANGE = Path("/proc/sys/net/ipv4/ip_local_port_range")
VOTERS = 3  # controllers of a cluster of 3 nodes or more: the quorum survives one lost node

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


def free_port(avoid: Collection[int] = ()) -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now, not in `avoid` (see free_ports)."""
    return free_ports(1, avoid)


def free_ports(count: int, avoid: Collection[int] = ()) -> int:
    """The first of `count` consecutive TCP ports on 127.0.0.1 that nothing listens on, none in
    `avoid` (ports already given to servers that do not listen yet), picked at random below the
    kernel's ephemeral range. Every outgoing connection takes its local port from that range, so a
    port picked there (as binding port 0 does) can be taken by some client's socket before the
    server that was to listen on it binds it."""
    ephemeral_from = _ephemeral_ports_from()
    candidates = range(max(1024, ephemeral_from // 2), ephemeral_from - count + 1)
    while True:
        ports = range(first := _PORT_PICKER.choice(candidates), first + count)
        if not any(port in avoid for port in ports) and all(map(port_is_free, ports)):
            return first


def distinct_free_ports(count: int, avoid: Collection[int] = ()) -> list[int]:
    """`count` free ports for servers started one after another: none in `avoid` and no two alike,
    since none of them listens yet when the next is picked."""
    picked: list[int] = []
    for _ in range(count):
        picked.append(free_port([*avoid, *picked]))
    return picked


_PORT_PICKER = random.SystemRandom()  # not the global generator, which tests may seed alike in each process


def _ephemeral_ports_from() -> int:
    try:
        return int(EPHEMERAL_PORT_RANGE.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768  # Linux's default; BSD and macOS start higher, at 49152


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


def default_data_dir(port: int, brokers: int = 1) -> Path:
    """kafka-PORT for a single broker, kafka-PORT-cluster for a cluster: `make demo` and
    `make demo-cluster` can follow each other on the same port."""
    return STATE_HOME / (f"kafka-{port}" if brokers == 1 else f"kafka-{port}-cluster")


@dataclass(frozen=True)
class Quorum:
    """What the nodes of one cluster share: its id, its size and its controllers' ports by node id."""

    cluster_id: str
    size: int
    controllers: dict[int, int]

    @property
    def replication_factor(self) -> int:
        return min(3, self.size)

    @property
    def min_insync_replicas(self) -> int:
        """2 from 3 nodes on: an acknowledged record is on two nodes, and one node may be down."""
        return 2 if self.size >= 3 else 1

    @property
    def voters(self) -> str:
        return ",".join(f"{node}@{HOST}:{port}" for node, port in sorted(self.controllers.items()))


SINGLE = Quorum("", 1, {})


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
        java = shutil.which("java")
        if java is None:
            raise UserError("java not found on PATH: install Java 17 (e.g. apt-get install openjdk-17-jre-headless)")
        if not port_is_free(self.port):
            raise UserError(f"port {self.port} on {HOST} is taken: stop what uses it or pass --port")
        libs = ensure_kafka_libs()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if self.quorum.size > 1:
            controller_port, voters = self.quorum.controllers.get(self.node_id), self.quorum.voters
        else:
            controller_port = free_port(avoid=[self.port])
            voters = f"{self.node_id}@{HOST}:{controller_port}"
        ports = {"SASL_SSL": self.port}
        if self.secure:  # a single broker (--secure leaves out --brokers)
            others = distinct_free_ports(3, avoid=[self.port, controller_port])
            ports.update(zip(("SSL", "SASL_PLAINTEXT", "ADMIN"), others, strict=True))
        admin_port = ports["ADMIN"] if self.secure else self.port
        logs_dir = self.data_dir / "logs"
        replication, min_isr = self.quorum.replication_factor, self.quorum.min_insync_replicas
        if self.secure:
            listeners = secure_broker.listener_config(self.data_dir, HOST, ports)
        else:
            own = f",CONTROLLER://{HOST}:{controller_port}" if controller_port else ""  # a broker-only node has none
            listeners = [
                f"listeners=PLAINTEXT://{HOST}:{self.port}{own}",
                f"advertised.listeners=PLAINTEXT://{HOST}:{self.port}",
                "inter.broker.listener.name=PLAINTEXT",
                "listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
            ]
        self._properties.write_text(
            "\n".join(
                [
                    f"process.roles={'broker,controller' if controller_port else 'broker'}",
                    f"node.id={self.node_id}",
                    f"controller.quorum.voters={voters}",
                    "controller.listener.names=CONTROLLER",
                    *(line.replace("CONTROLLER_PORT", str(controller_port)) for line in listeners),
                    f"log.dirs={logs_dir}",
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
        return process

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


def create_topics(bootstrap: str, topics: tuple[str, ...], partitions: int, quorum: Quorum) -> None:
    """Create each topic that does not exist yet, replicated as the cluster's size allows, and wait
    until every partition has a leader. Right after a cluster starts, a node's metadata can still lack
    another node (seen: `UnknownBrokerIdError: 3` for the node named as controller): a new admin
    client asks again, for up to TOPICS_CREATED_S."""
    from kafka.errors import KafkaError, UnknownBrokerIdError

    if not topics:
        return
    deadline = time.monotonic() + TOPICS_CREATED_S
    while True:
        try:
            return _create_missing_topics(bootstrap, topics, partitions, quorum)
        except KafkaError as error:
            if not (error.retriable or isinstance(error, UnknownBrokerIdError)) or time.monotonic() > deadline:
                raise
            time.sleep(1)


def _create_missing_topics(bootstrap: str, topics: tuple[str, ...], partitions: int, quorum: Quorum) -> None:
    from kafka import KafkaAdminClient
    from kafka.errors import TopicAlreadyExistsError

    configs = {"min.insync.replicas": str(quorum.min_insync_replicas)} if quorum.size > 1 else {}
    admin = KafkaAdminClient(bootstrap_servers=bootstrap.split(","))
    try:
        missing = sorted(set(topics) - set(admin.list_topics()))
        if missing:
            created = admin.create_topics(
                {
                    topic: {
                        "num_partitions": partitions,
                        "replication_factor": quorum.replication_factor,
                        "configs": configs,
                    }
                    for topic in missing
                },
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


@dataclass(frozen=True)
class PartitionState:
    leader: int  # -1 while the partition has none
    replicas: tuple[int, ...]
    isr: tuple[int, ...]


def partition_states(bootstrap: str, topic: str) -> dict[int, PartitionState]:
    """Leader, replicas and in-sync replicas of each partition, from the cluster's metadata.
    kafka-python 2.x names the fields partition/leader/replicas/isr, 3.x partition_index/leader_id/
    replica_nodes/isr_nodes (the protocol's own names)."""
    from kafka import KafkaAdminClient

    # a short timeout: a node just lost may still be in the metadata, and a request to it fails
    admin = KafkaAdminClient(bootstrap_servers=bootstrap.split(","), request_timeout_ms=5000)
    deadline = time.monotonic() + TOPICS_CREATED_S
    try:
        # A node other than the one that created the topic may not know it yet: ask again until it does.
        while not ((described := admin.describe_topics([topic])[0])["partitions"]) and time.monotonic() < deadline:
            time.sleep(0.5)
    finally:
        admin.close()
    states = {}
    for p in described["partitions"]:
        index = p.get("partition_index", p.get("partition"))
        states[index] = PartitionState(
            leader=p.get("leader_id", p.get("leader")),
            replicas=tuple(p.get("replica_nodes", p.get("replicas"))),
            isr=tuple(p.get("isr_nodes", p.get("isr"))),
        )
    return states


@dataclass
class LocalCluster:
    """N brokers on 127.0.0.1, client ports `port` to `port`+N-1, one data directory each under
    `data_dir`; `cluster.json` there keeps the cluster id and the controllers' ports."""

    port: int
    size: int
    data_dir: Path

    @property
    def _layout_file(self) -> Path:
        return self.data_dir / CLUSTER_FILE

    @property
    def quorum(self) -> Quorum:
        if not self._layout_file.exists():
            return SINGLE
        layout = json.loads(self._layout_file.read_text())
        controllers = {int(node): port for node, port in layout["controllers"].items()}
        return Quorum(layout["cluster_id"], layout["size"], controllers)

    @property
    def nodes(self) -> list[LocalBroker]:
        quorum = self.quorum
        return [
            LocalBroker(self.port + i, self.data_dir / f"node-{i + 1}", node_id=i + 1, quorum=quorum)
            for i in range(self.size)
        ]

    @property
    def bootstrap(self) -> str:
        return ",".join(node.bootstrap for node in self.nodes)

    def node(self, node_id: int) -> LocalBroker:
        return self.nodes[node_id - 1]

    @classmethod
    def found_in(cls, data_dir: Path) -> LocalCluster | None:
        """The cluster that `data_dir` holds, if it holds one."""
        try:
            layout = json.loads((data_dir / CLUSTER_FILE).read_text())
        except OSError:
            return None
        return cls(layout["port"], layout["size"], data_dir)

    def _write_layout(self) -> None:
        """A new cluster id the first time; fresh controller ports whenever no node runs (the quorum's
        addresses are static configuration, so a node started while others run must keep them)."""
        if any(node.pid() for node in self.nodes):
            return
        quorum = self.quorum
        cluster_id = quorum.cluster_id or new_cluster_id()
        voters = VOTERS if self.size >= VOTERS else 1  # two voters could lose neither: one is no worse
        # None of them on a node's client port, nor two alike (once, two nodes got the same one).
        ports = distinct_free_ports(voters, avoid=range(self.port, self.port + self.size))
        controllers = {str(node): port for node, port in enumerate(ports, start=1)}
        layout = {"cluster_id": cluster_id, "size": self.size, "controllers": controllers, "port": self.port}
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._layout_file.write_text(json.dumps(layout))

    def start(self, partitions: int = 1, timeout_s: float = 90.0, topics: tuple[str, ...] = ()) -> bool:
        """Start every node that does not run, wait until all serve, create `topics`. True when a node
        was started."""
        found = LocalCluster.found_in(self.data_dir)
        if found and found.size != self.size:
            raise UserError(f"{self.data_dir} holds a {found.size}-node cluster: pass --brokers {found.size}")
        if (self.data_dir / STATE_FILE).exists() or (self.data_dir / "logs").exists():
            raise UserError(f"{self.data_dir} holds a single broker: give the cluster another --data-dir")
        self._write_layout()
        stopped = [node for node in self.nodes if node.pid() is None]
        launched = []
        try:
            for node in stopped:
                launched.append((node, node.launch()))
            for node, process in launched:
                node.wait_until_ready(process, timeout_s)
        except UserError:
            for node, _ in launched:
                node.stop()
            raise
        create_topics(self.bootstrap, topics, partitions, self.quorum)
        return bool(stopped)

    def stop(self, timeout_s: float = 60.0) -> bool:
        """Stop every node by PID, all at once. True when any ran."""
        nodes = self.nodes
        stopped = daemons.stop(*(node.pid for node in nodes), timeout_s=timeout_s)
        for node in nodes:
            node.forget()
        return stopped


def _print_started(broker: LocalBroker, started: bool) -> None:
    state = "started" if started else "already running"
    print(f"Kafka broker {state} at {broker.bootstrap} (pid {broker.pid()}, log {broker.log_file})", file=sys.stderr)
    if broker.secure:
        for listener in secure_broker.LISTENERS:
            for user in (WRITER, STRANGER):
                if broker.client_properties(user, listener).exists():
                    print(
                        f"{listener} at {broker.listener_bootstrap(listener)}, user {user}: "
                        f"--client-properties {broker.client_properties(user, listener)}",
                        file=sys.stderr,
                    )


def _node_line(node: LocalBroker) -> str:
    pid = node.pid()
    state = f"running (pid {pid})" if pid else "not running"
    return f"node {node.node_id} at {node.bootstrap}: {state}, data dir {node.data_dir}"


def main(argv: list[str] | None = None) -> None:
    parser = Parser(prog="kafka-local", description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=["start", "stop", "status"])
    parser.add_argument(
        "--brokers",
        type=positive_int,
        default=env("KAFKA_BROKERS", "1"),
        help="nodes of the cluster that start creates; stop and status find them in --data-dir "
        "(env KAFKA_BROKERS; default %(default)s)",
    )
    parser.add_argument(
        "--port",
        type=positive_int,
        default=env("KAFKA_PORT", str(DEFAULT_PORT)),
        help="client port on 127.0.0.1; node i of a cluster uses PORT+i-1 (env KAFKA_PORT; default %(default)s)",
    )
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help=f"broker config, data and log, one node-N directory per node of a cluster "
        f"(default {default_data_dir(DEFAULT_PORT).parent}/kafka-PORT, or kafka-PORT-cluster)",
    )
    parser.add_argument(
        "--topic",
        default=env("KAFKA_TOPIC", DEFAULT_TOPIC),
        help="topic created on start if absent, replicated on min(3, N) nodes, min.insync.replicas=2 "
        "from 3 nodes on (env KAFKA_TOPIC; default %(default)s)",
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
        "and ACLs (see ventas/secure_broker.py); single broker only",
    )
    args = parser.parse_args(argv)
    data_dir = (args.data_dir or _default_dir(args.command, args.port, args.brokers)).resolve()
    cluster = LocalCluster.found_in(data_dir)
    if args.command == "start" and (args.brokers > 1 or cluster):
        if args.secure:
            parser.error("--secure runs a single broker: leave out --brokers")
        cluster = LocalCluster(args.port, args.brokers, data_dir)  # start refuses a size other than the one found
    try:
        if cluster is not None:
            _cluster_command(args.command, cluster, args)
        else:
            _broker_command(args.command, LocalBroker(args.port, data_dir, args.secure), args)
    except UserError as error:
        fail(parser.prog, error)


def _default_dir(command: str, port: int, brokers: int) -> Path:
    """Where start puts the broker or cluster; stop and status without --brokers look for a
    cluster on that port when no single broker runs there."""
    single, cluster = default_data_dir(port), default_data_dir(port, brokers=max(brokers, 2))
    if brokers > 1 or (command != "start" and not LocalBroker(port, single).pid() and cluster.exists()):
        return cluster
    return single


def _broker_command(command: str, broker: LocalBroker, args: argparse.Namespace) -> None:
    if command == "start":
        _print_started(broker, broker.start(args.partitions, args.timeout, (args.topic,)))
        print(broker.bootstrap)
    elif command == "stop":
        print("stopped" if broker.stop() else f"not running (data dir {broker.data_dir})")
    else:
        pid = broker.pid()
        if pid is None:
            print(f"not running (data dir {broker.data_dir})")
            sys.exit(3)
        print(f"running at {broker.bootstrap} (pid {pid}, data dir {broker.data_dir})")


def _cluster_command(command: str, cluster: LocalCluster, args: argparse.Namespace) -> None:
    if command == "start":
        started = cluster.start(args.partitions, args.timeout, (args.topic,))
        print(f"Kafka cluster of {cluster.size} nodes {'started' if started else 'already running'}:", file=sys.stderr)
        for node in cluster.nodes:
            print(f"  {_node_line(node)}, log {node.log_file}", file=sys.stderr)
        print(cluster.bootstrap)
    elif command == "stop":
        print("stopped" if cluster.stop() else f"not running (data dir {cluster.data_dir})")
    else:
        for node in cluster.nodes:
            print(_node_line(node))
        if not all(node.pid() for node in cluster.nodes):
            sys.exit(3)


if __name__ == "__main__":
    main()

"""The local broker: a real Kafka 4.0 that a client can write to and read from, managed by PID."""

from __future__ import annotations

import socket
import subprocess
from pathlib import Path

import pytest

from tests.helpers import local_script, read_topic
from ventas.lab.kafka_broker import LocalBroker
from ventas.lab.ports import free_port

pytestmark = pytest.mark.integration


def kafka_local(*args: str) -> subprocess.CompletedProcess:
    return local_script("kafka-local", *args)


def java_processes_using(data_dir: Path) -> list[str]:
    ps = subprocess.run(["pgrep", "-af", "kafka.Kafka"], capture_output=True, text=True).stdout
    return [line for line in ps.splitlines() if str(data_dir) in line]


def test_a_record_written_with_kafka_python_reads_back(kafka_bootstrap: str, topic: str) -> None:
    from kafka import KafkaProducer

    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
    producer.send(topic, key=b"k", value=b'{"hola": "mundo"}').get(timeout=30)
    producer.close()

    records = read_topic(kafka_bootstrap, topic)
    assert [(r.key, r.value) for r in records] == [(b"k", b'{"hola": "mundo"}')]


def test_start_status_stop_twice_leaves_nothing_running(tmp_path: Path) -> None:
    port, data_dir = str(free_port()), tmp_path / "broker"
    for _ in range(2):
        started = kafka_local("start", "--port", port, "--data-dir", str(data_dir), "--topic", "ventas-events")
        assert started.returncode == 0, started.stderr
        assert started.stdout.strip() == f"127.0.0.1:{port}"
        again = kafka_local("start", "--port", port, "--data-dir", str(data_dir))
        assert again.returncode == 0 and "already running" in again.stderr
        assert len(java_processes_using(data_dir)) == 1

        status = kafka_local("status", "--port", port, "--data-dir", str(data_dir))
        assert status.returncode == 0 and f"running at 127.0.0.1:{port}" in status.stdout
        assert "ventas-events" in {r for r in _topics(f"127.0.0.1:{port}")}

        stopped = kafka_local("stop", "--port", port, "--data-dir", str(data_dir))
        assert stopped.returncode == 0 and stopped.stdout.strip() == "stopped"
        assert java_processes_using(data_dir) == []
        assert kafka_local("status", "--port", port, "--data-dir", str(data_dir)).returncode == 3


def _topics(bootstrap: str) -> list[str]:
    from kafka import KafkaAdminClient

    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        return admin.list_topics()
    finally:
        admin.close()


def test_ports_are_picked_at_random_below_the_ephemeral_range_and_free(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Client sockets take their local ports from the kernel's ephemeral range, so a port picked
    there can be taken before the broker binds it (seen: a cluster node's `Address already in use`
    while another test run connected to its brokers)."""
    from ventas.lab import ports

    port_range = tmp_path / "ip_local_port_range"
    port_range.write_text("40000\t60999\n")
    monkeypatch.setattr(ports, "EPHEMERAL_PORT_RANGE", port_range)
    firsts = [ports.free_ports(3) for _ in range(200)]
    assert all(first >= 20000 and first + 2 < 40000 for first in firsts)
    assert len(set(firsts)) > 150  # at random: two runs starting at once rarely meet

    taken = ports.free_port()
    with socket.create_server(("127.0.0.1", taken)):
        picks, pick_at_random = iter([taken - 1]), ports._PORT_PICKER.choice
        monkeypatch.setattr(
            ports._PORT_PICKER, "choice", lambda candidates: next(picks, None) or pick_at_random(candidates)
        )
        first = ports.free_ports(3)  # not taken - 1: taken - 1 to taken + 1 holds a listener
    assert first != taken - 1 and taken not in range(first, first + 3)


def test_ports_picked_for_servers_not_listening_yet_are_all_different(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A cluster's controller ports are picked before any node listens: a pick that only checks that
    nothing listens can give two controllers, or a controller and a node's client port, the same port
    (seen: node 3 `Address already in use` on node 2's controller port). The picker here proposes
    exactly those ports first."""
    from ventas.lab import ports
    from ventas.lab.kafka_cluster import LocalCluster

    port = ports.free_ports(3)
    controller = ports.free_port(avoid=range(port, port + 3))
    proposals, pick_at_random = (
        [port + 1, controller, controller, port + 2, controller],
        ports._PORT_PICKER.choice,
    )
    monkeypatch.setattr(
        ports._PORT_PICKER, "choice", lambda candidates: proposals.pop(0) if proposals else pick_at_random(candidates)
    )
    cluster = LocalCluster(port, 3, tmp_path)
    cluster._write_layout()
    controllers = list(cluster.quorum.controllers.values())
    assert proposals == [] and controllers[0] == controller  # every proposal was made, the first free one kept
    assert len(set(controllers)) == 3 and not set(controllers) & set(range(port, port + 3)), controllers


def test_topic_creation_asks_again_while_a_new_clusters_metadata_lacks_a_node(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Seen once in the 10x loop: a 3-node cluster just started named node 3 as controller while the
    metadata the admin client had did not list node 3 yet."""
    from kafka.errors import TopicAuthorizationFailedError, UnknownBrokerIdError

    from ventas.lab import kafka_topics

    outcomes = [UnknownBrokerIdError(3), None]

    def create_once(*_: object) -> None:
        if error := outcomes.pop(0):
            raise error

    monkeypatch.setattr(kafka_topics, "_create_missing_topics", create_once)
    monkeypatch.setattr(kafka_topics.time, "sleep", lambda _: None)
    quorum = kafka_topics.Quorum("id", 3, {})
    kafka_topics.create_topics("127.0.0.1:1", ("t",), 1, quorum)
    assert outcomes == []  # asked again, then created

    outcomes[:] = [TopicAuthorizationFailedError(), None]
    with pytest.raises(TopicAuthorizationFailedError):  # not a matter of time: no second try
        kafka_topics.create_topics("127.0.0.1:1", ("t",), 1, quorum)
    assert outcomes == [None]


@pytest.mark.parametrize("script", ["kafka-local", "postgres-local"])
def test_port_taken_is_one_clear_line(tmp_path: Path, script: str) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        result = local_script(script, "start", "--port", str(port), "--data-dir", str(tmp_path))
    assert result.returncode == 1
    assert (
        result.stderr.strip() == f"{script}: error: port {port} on 127.0.0.1 is taken: stop what uses it or pass --port"
    )


def test_broker_that_cannot_start_names_its_log(tmp_path: Path) -> None:
    broker = LocalBroker(free_port(), tmp_path)
    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / "meta.properties").write_text("garbage=1\n")  # an unusable data dir
    result = kafka_local("start", "--port", str(broker.port), "--data-dir", str(tmp_path), "--timeout", "60")
    assert result.returncode == 1
    assert str(broker.log_file) in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert java_processes_using(tmp_path) == []


def test_cluster_ids_never_look_like_an_option() -> None:
    from ventas.lab.kafka_broker import new_cluster_id

    ids = [new_cluster_id() for _ in range(5000)]  # about 78 would start with '-' if unchecked
    assert not any(i.startswith("-") for i in ids) and len(set(ids)) == len(ids)


def test_a_three_node_cluster_starts_reports_each_node_and_stops(tmp_path: Path) -> None:
    from ventas.jars import ensure_kafka_libs
    from ventas.lab.kafka_topics import partition_states
    from ventas.lab.ports import free_ports

    port, data_dir = free_ports(3), tmp_path / "cluster"
    where = ["--port", str(port), "--data-dir", str(data_dir)]
    started = kafka_local("start", "--brokers", "3", *where, "--topic", "ventas-events", "--partitions", "3")
    try:
        assert started.returncode == 0, started.stderr
        bootstrap = started.stdout.strip()
        assert bootstrap == f"127.0.0.1:{port},127.0.0.1:{port + 1},127.0.0.1:{port + 2}"
        status = kafka_local("status", "--data-dir", str(data_dir))  # the cluster is found in its data dir
        assert status.returncode == 0, status.stdout
        lines = status.stdout.splitlines()
        assert [line.split(": running (pid ")[0] for line in lines] == [
            f"node {i + 1} at 127.0.0.1:{port + i}" for i in range(3)
        ]
        assert all(len(java_processes_using(data_dir / f"node-{i}")) == 1 for i in (1, 2, 3))
        states = partition_states(bootstrap, "ventas-events")
        assert sorted(states) == [0, 1, 2] and all(len(set(s.replicas)) == 3 for s in states.values())
        describe = ["--bootstrap-server", bootstrap, "--entity-type", "topics", "--entity-name", "ventas-events"]
        configs = subprocess.run(
            ["java", "-cp", f"{ensure_kafka_libs()}/*", "kafka.admin.ConfigCommand", *describe, "--describe"],
            capture_output=True,
            text=True,
        ).stdout
        assert "min.insync.replicas=2 " in configs, configs
        mismatch = kafka_local("start", "--brokers", "2", *where)
        assert mismatch.returncode == 1
        assert mismatch.stderr.strip() == f"kafka-local: error: {data_dir} holds a 3-node cluster: pass --brokers 3"
    finally:
        stopped = kafka_local("stop", "--data-dir", str(data_dir))
    assert stopped.returncode == 0 and stopped.stdout.strip() == "stopped"
    assert java_processes_using(data_dir) == []
    assert kafka_local("status", "--data-dir", str(data_dir)).returncode == 3

"""A real Apache Kafka 4.0 broker (KRaft), or a cluster of N of them, run from cached jars on 127.0.0.1.

`scripts/kafka-local start|stop|status [--brokers N] [--port P] [--data-dir DIR]`: a single broker
(ventas/lab/kafka_broker.py), or with --brokers N a cluster (ventas/lab/kafka_cluster.py), whose nodes
listen for clients on ports P to P+N-1; stop and status find a cluster in its --data-dir.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ventas.config import DEFAULT_TOPIC, Parser, UserError, env, fail, positive_int
from ventas.lab import secure_broker
from ventas.lab.kafka_broker import DEFAULT_PORT, LocalBroker, default_data_dir
from ventas.lab.kafka_cluster import LocalCluster
from ventas.lab.secure_broker import STRANGER, WRITER


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
        "and ACLs (see ventas/lab/secure_broker.py); single broker only",
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

"""A local Kafka cluster of N nodes (LocalBroker), one data directory each (`node-1`, ...) under the
cluster's own, which keeps a `cluster.json`; node i listens for clients on port P+i-1. From 3 nodes on,
nodes 1 to 3 are combined broker and controller nodes (the KRaft quorum's voters) and any further node
is a broker only: a quorum of 3 survives the loss of any one node, and more voters would only slow
every metadata commit. A 2-node cluster has one controller, node 1 (a quorum of 2 could lose neither
node).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from ventas.config import UserError
from ventas.lab import daemons
from ventas.lab.kafka_broker import STATE_FILE, LocalBroker, new_cluster_id
from ventas.lab.kafka_topics import SINGLE, Quorum, create_topics
from ventas.lab.ports import distinct_free_ports

CLUSTER_FILE = "cluster.json"
VOTERS = 3  # controllers of a cluster of 3 nodes or more: the quorum survives one lost node


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

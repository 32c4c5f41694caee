"""The shape of a local KRaft cluster (Quorum) and the topics on it: created replicated as its size
allows, and their partitions' leaders and replicas read back from its metadata."""

from __future__ import annotations

import time
from dataclasses import dataclass

from ventas.config import UserError
from ventas.lab.ports import HOST

TOPICS_CREATED_S = 60.0  # for a new cluster's metadata to name every node


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

"""Free TCP ports on 127.0.0.1 for the local servers (Kafka nodes, Spark master and workers, PostgreSQL)."""

from __future__ import annotations

import random
import socket
from collections.abc import Collection
from pathlib import Path

HOST = "127.0.0.1"
EPHEMERAL_PORT_RANGE = Path("/proc/sys/net/ipv4/ip_local_port_range")


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

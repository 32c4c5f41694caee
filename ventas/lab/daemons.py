"""The project's long-running local servers (Kafka nodes, Spark master and workers, PostgreSQL), known by PID.

Each one records its PID in a JSON state file; a PID counts only while its process's command line
still holds a marker of that server (its config path), so a stale or reused PID is never signalled.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

PidOf = Callable[[], int | None]


def recorded_pid(state_file: Path, marker: Path | str) -> int | None:
    """The PID in `state_file` if that process runs with `marker` as an argument, else None."""
    try:
        pid = json.loads(state_file.read_text())["pid"]
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except (OSError, ValueError, KeyError):
        return None
    return pid if str(marker).encode() in cmdline else None


def stop(*pids_of: PidOf, timeout_s: float = 60.0, signum: int = signal.SIGTERM) -> bool:
    """Signal the processes at once (SIGTERM, or the server's own stop signal) and wait for them to
    exit; SIGKILL what still runs after `timeout_s`. At once: a KRaft node stopping after the others
    would wait for a quorum that is gone. True when any ran."""
    running = [(pid_of, pid) for pid_of in pids_of if (pid := pid_of()) is not None]
    for _, pid in running:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signum)
    deadline = time.monotonic() + timeout_s
    while any(pid_of() is not None for pid_of, _ in running) and time.monotonic() < deadline:
        time.sleep(0.2)
    for pid_of, _ in running:
        kill(pid_of)
    return bool(running)


def kill(pid_of: PidOf) -> None:
    """SIGKILL the process, as a crash would, and wait until it is gone."""
    pid = pid_of()
    if pid is not None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        while pid_of() is not None:
            time.sleep(0.1)


def kill_tree(root_pid: int) -> list[int]:
    """SIGKILL the process and all its descendants at once, as a lost machine would, and wait until
    they are gone; their PIDs. Those that are this process's children are reaped: a zombie keeps its
    PID, and PostgreSQL takes a postmaster.pid that names a zombie for a server still running."""
    tree = process_tree(root_pid)
    for pid, _ in tree:
        with contextlib.suppress(ProcessLookupError):  # one that exited meanwhile
            os.kill(pid, signal.SIGKILL)
    wait_gone(tree)
    for pid, _ in tree:
        with contextlib.suppress(ChildProcessError):  # not a child of this process
            os.waitpid(pid, os.WNOHANG)
    return sorted(pid for pid, _ in tree)


def process_tree(root_pid: int) -> set[tuple[int, str]]:
    """The process and all its descendants, as (pid, start time) so that a reused PID is not mistaken
    for one of them; processes that started their own session are included."""
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            parents[int(stat.parent.name)] = int(fields[1])
    tree, frontier = {root_pid}, [root_pid]
    while frontier:
        children = [pid for pid, parent in parents.items() if parent in frontier]
        tree.update(children)
        frontier = children
    return {(pid, start) for pid in tree if (start := start_time(pid))}


def start_time(pid: int) -> str | None:
    with contextlib.suppress(OSError):
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        if fields[0] != "Z":
            return fields[19]
    return None


def wait_gone(processes: set[tuple[int, str]], timeout_s: float = 30.0) -> None:
    """Until none of these (pid, start time) processes runs any more, or `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while any(start_time(pid) == start for pid, start in processes) and time.monotonic() < deadline:
        time.sleep(0.1)

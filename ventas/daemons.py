"""The project's long-running local servers (Kafka nodes, Spark master and workers), known by PID.

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


def recorded_pid(state_file: Path, marker: Path) -> int | None:
    """The PID in `state_file` if that process runs with `marker` in its command line, else None."""
    try:
        pid = json.loads(state_file.read_text())["pid"]
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except (OSError, ValueError, KeyError):
        return None
    return pid if str(marker).encode() in cmdline else None


def stop(*pids_of: PidOf, timeout_s: float = 60.0) -> bool:
    """SIGTERM the processes at once and wait for them to exit; SIGKILL what still runs after
    `timeout_s`. At once: a KRaft node stopping after the others would wait for a quorum that is
    gone. True when any ran."""
    running = [(pid_of, pid) for pid_of in pids_of if (pid := pid_of()) is not None]
    for _, pid in running:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
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

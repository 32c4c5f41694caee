"""The consumer's local checkpoint: one consumer at a time, and a consistency check before a start.

Spark does not notice a second process writing the same checkpoint, and a checkpoint left
inconsistent (a full disk, a machine crash, an older version of this project that recorded a batch
as committed without its state) fails the query with a page of Java stack trace on every start.
Both are caught here first and reported in one line.

The check reads the layout Spark writes for each query (`<query>/offsets`, `commits`, `sources`,
and `state/<operator>/<partition>/<version>.delta|.snapshot` of the default state store): the
latest committed batch needs its offsets, and every state partition must be able to load the
version that batch produced (a snapshot and the deltas after it). Other state store layouts
(RocksDB) are not checked here; Spark's own error is summarised then.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import socket
from pathlib import Path

from ventas.config import UserError

LOCK_FILE = "consumer.lock"
STATE_FILE = re.compile(r"(\d+)\.(delta|snapshot)")


def lock(location: Path) -> int:
    """Hold an exclusive lock on the checkpoint for as long as this process lives; the file names
    the holder, so a second consumer can say which process it would have collided with."""
    fd = os.open(location / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "another process"
        os.close(fd)
        raise UserError(
            f"checkpoint {location} is in use by {holder}: stop that consumer first, or give this one "
            "another --checkpoint-location (two consumers must never share a checkpoint)"
        ) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"consumer pid {os.getpid()} on {socket.gethostname()}\n".encode(), 0)
    return fd


def _recount(location: Path | str) -> str:
    return f"delete it to recount the topic from --starting-offsets: rm -r {location}"


def damaged(location: Path | str, problem: str) -> UserError:
    return UserError(f"checkpoint {location} is damaged: {problem}; {_recount(location)}")


def check(location: Path) -> None:
    """Raise a one-line UserError when a query checkpoint under `location` cannot be resumed."""
    for query in sorted(p for p in location.iterdir() if (p / "offsets").is_dir()):
        problem = _query_problem(query)
        if problem:
            raise damaged(location, f"{query.name}: {problem}")


def _numbered(directory: Path) -> dict[int, Path]:
    """The entries of `directory` named by a batch id or partition number (Spark's temp and .crc
    files start with a dot and are left out)."""
    if not directory.is_dir():
        return {}
    return {int(p.name): p for p in directory.iterdir() if p.name.isdigit()}


def _unreadable(log_file: Path) -> bool:
    """True unless the file is a metadata log entry: a version line, then JSON lines."""
    try:
        lines = log_file.read_text().lstrip("\0").splitlines()
        if not lines or not re.fullmatch(r"v\d+", lines[0]):
            return True
        for line in lines[1:]:
            json.loads(line)
    except (OSError, UnicodeDecodeError, ValueError):
        return True
    return False


def _query_problem(query: Path) -> str | None:
    offsets, commits = _numbered(query / "offsets"), _numbered(query / "commits")
    logged = [offsets[b] for b in sorted(offsets)[-2:]] + [commits[b] for b in sorted(commits)[-1:]]
    logged += [file for source in _numbered(query / "sources").values() for file in _numbered(source).values()]
    for log_file in logged:
        if _unreadable(log_file):
            return f"{log_file.relative_to(query)} is empty or unreadable"
    if not commits:
        return None
    committed = max(commits)
    if committed not in offsets:
        return f"batch {committed} is committed but offsets/{committed} is missing"
    return _state_problem(query, committed + 1, _shuffle_partitions(offsets[committed]))


def _shuffle_partitions(offsets_file: Path) -> int | None:
    """The state partition count the query was started with (recorded in each offsets entry)."""
    conf = json.loads(offsets_file.read_text().splitlines()[1]).get("conf", {})
    partitions = conf.get("spark.sql.shuffle.partitions")
    return int(partitions) if partitions else None


def _state_problem(query: Path, version: int, partitions: int | None) -> str | None:
    """Why some state partition cannot load `version`, the one the latest committed batch wrote."""
    for operator_id, operator in sorted(_numbered(query / "state").items()):
        stores = _numbered(operator)
        expected = range(partitions) if partitions else sorted(stores)
        for partition in expected:
            where = f"state/{operator_id}/{partition}"
            if partition not in stores:
                return f"batch {version - 1} is committed but {where} is missing"
            files = {}
            for file in stores[partition].iterdir():
                match = STATE_FILE.fullmatch(file.name)
                if match:
                    files[int(match[1]), match[2]] = file
                elif not file.name.startswith((".", "_")) and not file.name.endswith(".crc"):
                    return None  # another state store's layout (Spark 4.1 adds a checksum, N.delta.crc)
            problem = _version_problem(files, version)
            if problem:
                return f"batch {version - 1} is committed but {where}/{problem}"
    return None


def _version_problem(files: dict[tuple[int, str], Path], version: int) -> str | None:
    """None when a snapshot and the deltas after it rebuild `version`; else the file that is missing
    or empty (the newest snapshot that could serve is tried first)."""
    with contextlib.suppress(OSError):
        empty = next((f for f in files.values() if f.stat().st_size == 0), None)
        if empty:
            return f"{empty.name} is empty"
    snapshots = sorted((v for v, kind in files if kind == "snapshot" and v <= version), reverse=True)
    for base in [*snapshots, 0]:
        missing = [v for v in range(base + 1, version + 1) if (v, "delta") not in files]
        if not missing:
            return None
    return f"{missing[-1]}.delta does not exist"

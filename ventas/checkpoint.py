"""The consumer's checkpoint: one consumer at a time, a consistency check before a start, and its
logs read wherever it is.

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
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlparse

from py4j.protocol import Py4JError

from ventas.config import UserError
from ventas.totals_db import NO_BATCH

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

LOCK_FILE = "consumer.lock"
STATE_FILE = re.compile(r"(\d+)\.(delta|snapshot)")


def local_path(location: str) -> Path | None:
    """The local directory behind a location, or None for remote storage (hdfs://, s3a://, ...)."""
    parsed = urlparse(location)
    if parsed.scheme in ("", "file"):
        return Path(parsed.path if parsed.scheme else location).expanduser().resolve()
    return None


def claim(location: str) -> None:
    """Lock a local checkpoint for this process and check that it can be resumed (remote storage:
    the user keeps to one consumer per checkpoint, see docs/operations.md)."""
    local = local_path(location)
    if local is not None:
        lock(local)  # released when this process exits, however it exits
        check(local)


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


class CheckpointLogs:
    """The metadata, offset and commit logs of the checkpoint's queries, read through Hadoop's file
    system as Spark reads them, wherever the checkpoint is."""

    def __init__(self, spark: SparkSession, checkpoint_location: str) -> None:
        self.jvm, self.conf = spark._jvm, spark._jsc.hadoopConfiguration()
        self.location = checkpoint_location.rstrip("/")

    def _path(self, relative: str):
        path = self.jvm.org.apache.hadoop.fs.Path(f"{self.location}/{relative}")
        return path, path.getFileSystem(self.conf)

    def _text(self, relative: str) -> str | None:
        path, file_system = self._path(relative)
        if not file_system.exists(path):
            return None
        stream = file_system.open(path)
        try:
            return self.jvm.org.apache.commons.io.IOUtils.toString(stream, "UTF-8")
        finally:
            stream.close()

    def query_id(self, query: str) -> str | None:
        """The query's id, which Spark keeps in its `metadata` file from the first start on: it names
        the checkpoint. None for a query never started."""
        text = self._text(f"{query}/metadata")
        return json.loads(text)["id"] if text else None

    def last_batch(self, query: str, log_name: str) -> int:
        path, file_system = self._path(f"{query}/{log_name}")
        if not file_system.exists(path):
            return NO_BATCH
        names = [status.getPath().getName() for status in file_system.listStatus(path)]
        return max((int(name) for name in names if name.isdigit()), default=NO_BATCH)

    def committed_offsets(self, query: str, topic: str) -> dict[int, int]:
        """The Kafka offsets up to which the query's last committed batch read, per partition."""
        batch = self.last_batch(query, "commits")
        text = self._text(f"{query}/offsets/{batch}") if batch > NO_BATCH else None
        if not text:
            return {}
        return {int(p): offset for p, offset in json.loads(text.splitlines()[-1]).get(topic, {}).items()}

    def is_behind(self, query: str, topic: str, latest: Mapping[int, int], start: Mapping[int, int] | None) -> bool:
        """Whether the query's committed offsets fall short of the topic's `latest` offsets. `start`: where
        the query started, when known (None: a query that never committed a batch, started from other
        than the earliest offsets, may rightly have found nothing to read)."""
        committed = self.committed_offsets(query, topic) or start
        if committed is None:
            return False
        return any(committed.get(partition, 0) < end for partition, end in latest.items())


# A local checkpoint is written through Hadoop's FileSystem API rather than FileContext, which without
# Hadoop's native library (pip's pyspark has none) forks chmod and readlink for each file: measured,
# about 190 ms of a micro-batch's offset and commit log writes on 2 cores, down to about 60. A local
# rename is atomic either way; FileSystem checks for an existing file before renaming rather than in
# the rename, and lock() keeps a second writer out.
FILE_MANAGER = "spark.sql.streaming.checkpointFileManagerClass"
FILE_SYSTEM_MANAGERS = (  # Spark 4.1 moved it into a package of its own
    "org.apache.spark.sql.execution.streaming.checkpointing.FileSystemBasedCheckpointFileManager",
    "org.apache.spark.sql.execution.streaming.FileSystemBasedCheckpointFileManager",
)


def local_file_manager(spark: SparkSession) -> str:
    """The FileSystem-based checkpoint file manager's class in this Spark version."""
    for name in FILE_SYSTEM_MANAGERS:
        try:
            spark.sparkContext._jvm.java.lang.Class.forName(name)
        except Py4JError:
            continue
        return name
    raise RuntimeError(f"none of {FILE_SYSTEM_MANAGERS} in this Spark")

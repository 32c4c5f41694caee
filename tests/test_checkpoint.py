"""ventas/checkpoint.py on checkpoints laid out as Spark writes them (no Spark needed): the lock and
each kind of damage the consistency check reports. tests/test_stops.py runs it through spark-submit."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import pytest

from ventas import checkpoint
from ventas.config import UserError

OFFSETS = 'v1\n{"batchWatermarkMs":0,"conf":{"spark.sql.shuffle.partitions":"2"}}\n{"t":{"0":5}}\n'
COMMIT = 'v1\n{"nextBatchWatermarkMs":0}\n'


def write_query(root: Path, batches: int, state_versions: range | None = None, partitions: int = 2) -> Path:
    """A query checkpoint with `batches` committed batches and, unless None, a delta file for every
    state version in `state_versions` of every partition."""
    query = root / "totals"
    for batch in range(batches):
        (query / "offsets").mkdir(parents=True, exist_ok=True)
        (query / "commits").mkdir(parents=True, exist_ok=True)
        (query / "offsets" / str(batch)).write_text(OFFSETS)
        (query / "commits" / str(batch)).write_text(COMMIT)
    (query / "sources" / "0").mkdir(parents=True)
    (query / "sources" / "0" / "0").write_text('\0v1\n{"t":{"0":0}}')
    for partition in range(partitions) if state_versions is not None else ():
        store = query / "state" / "0" / str(partition)
        store.mkdir(parents=True)
        (store / ".1.delta.crc").write_bytes(b"crc")
        for version in state_versions:
            (store / f"{version}.delta").write_bytes(b"LZ4Block")
    return query


def write_in_every_store(query: Path, name: str) -> None:
    for store in (query / "state" / "0").iterdir():
        (store / name).write_bytes(b"LZ4Block")


def problem(root: Path) -> str:
    with pytest.raises(UserError) as error:
        checkpoint.check(root)
    message = str(error.value)
    assert message.startswith(f"checkpoint {root} is damaged: ")
    assert message.endswith(f"; delete it to recount the topic from --starting-offsets: rm -r {root}")
    return message.removeprefix(f"checkpoint {root} is damaged: ").split(";")[0]


def test_a_consistent_checkpoint_passes(tmp_path: Path) -> None:
    write_query(tmp_path, batches=3, state_versions=range(1, 4))
    (tmp_path / "latest-totals.json").write_text("{}")
    checkpoint.check(tmp_path)


def test_an_uncommitted_last_batch_is_fine(tmp_path: Path) -> None:
    query = write_query(tmp_path, batches=3, state_versions=range(1, 4))
    (query / "offsets" / "3").write_text(OFFSETS)  # batch 3 planned, not run: Spark runs it again
    (query / "state" / "0" / "1" / "4.delta").write_bytes(b"partial")  # and writes this again
    checkpoint.check(tmp_path)


def test_a_new_or_empty_checkpoint_passes(tmp_path: Path) -> None:
    checkpoint.check(tmp_path)
    write_query(tmp_path, batches=0)
    checkpoint.check(tmp_path)


def test_a_committed_batch_without_its_state_is_damage(tmp_path: Path) -> None:
    query = write_query(tmp_path, batches=48, state_versions=range(1, 49))
    (query / "state" / "0" / "1" / "48.delta").unlink()  # what the foreachBatch bug left behind
    assert problem(tmp_path) == "totals: batch 47 is committed but state/0/1/48.delta does not exist"


def test_a_snapshot_and_the_deltas_after_it_are_enough(tmp_path: Path) -> None:
    """Spark's maintenance deletes old deltas once a snapshot covers them."""
    query = write_query(tmp_path, batches=300, state_versions=range(201, 301))
    write_in_every_store(query, "200.snapshot")
    checkpoint.check(tmp_path)
    (query / "state" / "0" / "0" / "250.delta").unlink()
    assert problem(tmp_path) == "totals: batch 299 is committed but state/0/0/250.delta does not exist"


def test_an_empty_state_file_is_damage(tmp_path: Path) -> None:
    query = write_query(tmp_path, batches=2, state_versions=range(1, 3))
    (query / "state" / "0" / "0" / "2.delta").write_bytes(b"")  # a machine crash before the data reached disk
    assert problem(tmp_path) == "totals: batch 1 is committed but state/0/0/2.delta is empty"


def test_a_missing_state_partition_is_damage(tmp_path: Path) -> None:
    write_query(tmp_path, batches=2, state_versions=range(1, 3), partitions=1)  # the offsets say 2
    assert problem(tmp_path) == "totals: batch 1 is committed but state/0/1 is missing"


@pytest.mark.parametrize(
    ("damaged_file", "content"),
    [("commits/2", ""), ("offsets/2", "v1\n{not json"), ("offsets/1", "garbage"), ("sources/0/0", "")],
)
def test_an_unreadable_log_entry_is_damage(tmp_path: Path, damaged_file: str, content: str) -> None:
    query = write_query(tmp_path, batches=3, state_versions=range(1, 4))
    (query / damaged_file).write_text(content)
    assert problem(tmp_path) == f"totals: {damaged_file} is empty or unreadable"


def test_a_commit_without_its_offsets_is_damage(tmp_path: Path) -> None:
    query = write_query(tmp_path, batches=3, state_versions=range(1, 4))
    (query / "offsets" / "2").unlink()
    assert problem(tmp_path) == "totals: batch 2 is committed but offsets/2 is missing"


def test_another_state_store_layout_is_left_to_spark(tmp_path: Path) -> None:
    query = write_query(tmp_path, batches=3, state_versions=range(1, 2))
    write_in_every_store(query, "3.zip")
    checkpoint.check(tmp_path)


def test_the_lock_names_its_holder_and_is_released_with_it(tmp_path: Path) -> None:
    held = checkpoint.lock(tmp_path)
    try:
        with pytest.raises(UserError) as error:
            checkpoint.lock(tmp_path)  # flock: a second open file is refused, even in one process
        assert str(error.value).startswith(
            f"checkpoint {tmp_path} is in use by consumer pid {os.getpid()} on {socket.gethostname()}: "
        )
    finally:
        os.close(held)
    os.close(checkpoint.lock(tmp_path))


def test_the_lock_file_is_not_taken_for_a_query(tmp_path: Path) -> None:
    os.close(checkpoint.lock(tmp_path))
    (tmp_path / "latest-totals.json").write_text(json.dumps({"batch_id": 0}))
    checkpoint.check(tmp_path)

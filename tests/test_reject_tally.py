"""The rejected records of each batch, told from the totals query's running counts, across restarts."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

from consumer import Counts, RejectTally, Snapshot


def test_each_batch_gets_what_its_running_counts_added() -> None:
    tally = RejectTally()
    assert tally.count(0, Counts(5, {"missing order_id": 2})) == {"missing order_id": 2}
    assert tally.count(1, Counts(9, {"missing order_id": 2})) == {}
    assert tally.count(2, Counts(9, {"missing order_id": 3, "tombstone (null value)": 1})) == {
        "missing order_id": 1,
        "tombstone (null value)": 1,
    }


def test_a_batch_run_again_is_counted_against_the_counts_before_it() -> None:
    tally = RejectTally()
    tally.count(0, Counts(1, {"missing order_id": 2}))
    assert tally.count(1, Counts(1, {"missing order_id": 5})) == {"missing order_id": 3}
    assert tally.count(1, Counts(1, {"missing order_id": 5})) == {"missing order_id": 3}  # not committed: again
    assert tally.count(2, Counts(1, {"missing order_id": 6})) == {"missing order_id": 1}


def test_a_restart_counts_on_from_the_last_table_printed(tmp_path: Path) -> None:
    printed = Snapshot(7, {"Laptop": Decimal("2000.00")}, "2026-11-26T10:00:00+00:00", Counts(4, {"x": 3}), {"x": 1})
    printed.write(str(tmp_path))
    latest = Snapshot.read(str(tmp_path))
    assert latest == printed

    # Batch 7 printed but not committed before the stop: it runs again and rejects the same 2.
    assert RejectTally.resuming(latest).count(7, Counts(4, {"x": 3})) == {"x": 2}
    # Batch 7 committed: the next one is counted from its counts.
    assert RejectTally.resuming(latest).count(8, Counts(6, {"x": 4})) == {"x": 1}
    assert RejectTally.resuming(Snapshot.read(str(tmp_path / "new"))).count(0, Counts(0, {"x": 1})) == {"x": 1}

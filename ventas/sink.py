"""The query's sink: each micro-batch parsed, summed and counted once, its rejected records set aside,
and what it adds committed to the totals database with its batch id, then printed."""

from __future__ import annotations

import threading
import time
from datetime import datetime, timedelta

from pyspark.sql import DataFrame
from pyspark.sql.streaming import StreamingQuery

from ventas.config import UserError
from ventas.dashboard import DashboardState
from ventas.outages import Dependency, Waits, WaitStopped
from ventas.sale_windows import WindowSettings, chart_start, describe
from ventas.signals import StopRequest, print_status
from ventas.spark_workarounds import BatchCutShort, short_error_on_stop
from ventas.table import format_batch
from ventas.totals_db import NO_BATCH, BatchCounts, StoredTotals, TotalsDb
from ventas.transforms import batch_counts, batch_totals, parse_orders, rejected_records
from ventas.upgrade import LEGACY_QUERY, LegacyTotals


class TotalsSink:
    """foreachBatch function of the query: parses the batch's records, sums and counts them in one
    aggregation, writes its rejected records to the quarantine (only when it has some), adds it to the
    totals database in one transaction with its batch id, then prints the committed table and shows it
    on the dashboard.

    It lets any exception through: returning normally tells Spark the batch is complete, and Spark
    then records it as committed. A batch that Spark runs again after a crash between the database's
    commit and its own finds its id in the database and is not counted twice."""

    def __init__(
        self,
        db: TotalsDb,
        rejected_path: str | None,
        dashboard: DashboardState | None,
        stop: StopRequest,
        windows: WindowSettings,
        waits: Waits,
    ) -> None:
        self.db = db
        self.waits = waits
        self.db_dependency = Dependency("totals_db", f"the totals database {db.display}")
        self.windows = windows
        self.newest_sale_at: datetime | None = None  # of the batches committed, for the next one's late orders
        self.rejected_path = rejected_path
        self.rejects_kept = f"kept in {rejected_path}" if rejected_path else "not kept (--keep-rejected false)"
        self.dashboard = dashboard
        self.stop = stop
        self.checkpoint_id: str | None = None  # set once the database is claimed for the query's checkpoint
        self.claimed, self.refused = threading.Event(), threading.Event()
        self.shown_at_start = False
        self.last_batch: int | None = None  # of the last table printed
        self.failure: str | None = None  # what failed the query, in one line, when it was the database

    def __call__(self, batch: DataFrame, batch_id: int) -> None:
        # The query may start its first batch before run() claims the database, whose newest sale_date
        # tells which of the batch's orders are late.
        while not self.claimed.wait(0.1):
            if self.stop.requested.is_set() or self.refused.is_set():
                raise BatchCutShort(batch_id)
        window_s = self.windows.length_s
        with short_error_on_stop(self.stop, batch_id):
            parsed = parse_orders(batch)
            future_after = int(time.time()) + self.windows.allowed_future_s  # this machine's clock, per batch
            totals = batch_totals(parsed, window_s, self._late_before(), future_after)
            counts = batch_counts(totals.collect(), windows=bool(window_s))
            if counts.rejected and self.rejected_path:
                rejects = rejected_records(parsed).coalesce(1).write.mode("overwrite")
                rejects.json(f"{self.rejected_path}/batch_id={batch_id}")  # a batch run again rewrites its own
        try:
            stored, _ = self.waits.retry(
                self.db_dependency, lambda: self.db.commit(self.checkpoint_id, batch_id, counts)
            )
            self.newest_sale_at = stored.newest_sale_at
            print(format_batch(batch_id, stored.totals), flush=True)
            if counts.rejected or counts.late or counts.undated or counts.future:
                print(self._set_aside_line(batch_id, counts, stored), flush=True)
            if self.dashboard:
                self.dashboard.show_totals(stored, counts.newest_record_at)
                self._show_windows()
        except WaitStopped:
            raise BatchCutShort(batch_id) from None
        except UserError as error:  # a database that is not this checkpoint's, or --give-up-after
            self.failure = f"{error}; batch {batch_id} was not counted, and runs again on the next start"
            raise
        self.last_batch = batch_id

    def _late_before(self) -> int | None:
        """Unix seconds: a sale_date before it is late (None: no batch had a sale_date yet)."""
        if self.newest_sale_at is None:
            return None
        return int((self.newest_sale_at - timedelta(seconds=self.windows.allowed_lateness_s)).timestamp())

    def _set_aside_line(self, batch_id: int, counts: BatchCounts, stored: StoredTotals) -> str:
        """One line for what a batch did not simply add: records rejected, orders late, without a usable
        sale_date or in the future."""
        parts = []
        if counts.rejected:
            reasons = ", ".join(f"{n} {reason}" for reason, n in sorted(counts.rejected.items()))
            in_batch = f"{sum(counts.rejected.values())} records in batch {batch_id}"
            parts.append(f"Rejected: {in_batch} ({stored.rejected_total} since start): {reasons}; {self.rejects_kept}")
        if counts.late:
            parts.append(
                f"Late: {counts.late} orders in batch {batch_id} ({stored.late} since start), more than "
                f"{describe(self.windows.allowed_lateness_s)} behind the newest sale_date, counted in their windows"
            )
        if counts.undated:
            parts.append(
                f"Undated: {counts.undated} orders in batch {batch_id} ({stored.undated} since start) without a "
                "usable sale_date, counted in the product totals only"
            )
        if counts.future:
            parts.append(
                f"Future: {counts.future} orders in batch {batch_id} ({stored.future} since start) with a sale_date "
                f"more than {describe(self.windows.allowed_future_s)} ahead of this machine's clock, counted in the "
                "product totals only"
            )
        return ". ".join(parts)

    def _show_windows(self) -> None:
        if self.dashboard and self.windows.length_s and self.newest_sale_at:
            start = chart_start(self.newest_sale_at, self.windows.length_s)
            windows = self.waits.retry(self.db_dependency, lambda: self.db.windows_since(start))
            self.dashboard.show_windows(windows, self.windows.length_s)

    def claim(self, query: StreamingQuery, location: str, legacy: LegacyTotals | None) -> None:
        """Once the query has started (its id names the checkpoint): claim the database for its checkpoint,
        importing an earlier version's totals if given, and print the table stored there."""
        if self.claimed.is_set():
            return
        stored = self.db.claim(str(query.id), location, legacy.counts if legacy else None)
        if legacy:
            print_status(
                f"consumer: imported the totals of batch {legacy.batch_id} from {location}/{LEGACY_QUERY} (Spark's "
                f"state store, where earlier versions kept them) into {self.db.display}"
            )
        self.checkpoint_id = stored.checkpoint_id
        self.newest_sale_at = stored.newest_sale_at
        self.claimed.set()
        if stored.batch_id > NO_BATCH or stored.orders or stored.rejected:
            print(format_batch(max(stored.batch_id, 0), stored.totals), flush=True)
            if self.dashboard:
                self.dashboard.show_totals(stored)
                self._show_windows()
            self.shown_at_start = True
            # A stop before this run's first batch says where the totals stand, as after any batch.
            self.last_batch = stored.batch_id if stored.batch_id > NO_BATCH else None

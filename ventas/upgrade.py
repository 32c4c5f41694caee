"""Upgrading from the versions of this consumer that kept the totals in Spark's state store, in the
checkpoint of a complete-mode query named `totals`: their totals are imported into the totals
database once, and the new query starts from the old one's committed offsets."""

from __future__ import annotations

import json
from dataclasses import dataclass

from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from schemas import TOTAL_SALES_COLUMN
from ventas import checkpoint
from ventas.checkpoint import CheckpointLogs
from ventas.config import UserError
from ventas.spark_workarounds import start_state_store_coordinator
from ventas.totals_db import NO_BATCH, BatchCounts
from ventas.transforms import RECORDS, batch_counts

LEGACY_QUERY = "totals"


@dataclass(frozen=True)
class LegacyTotals:
    """The totals an earlier version's checkpoint holds, as of its last committed batch."""

    batch_id: int
    counts: BatchCounts
    offsets: dict[int, int]  # where that batch ended: this query starts there

    def starting_offsets(self, topic: str) -> str:
        return json.dumps({topic: {str(partition): offset for partition, offset in self.offsets.items()}})


def legacy_totals(spark: SparkSession, logs: CheckpointLogs, topic: str) -> LegacyTotals | None:
    """The running totals of an earlier version's checkpoint, read with Spark's state data source;
    None when the checkpoint has none."""
    batch = logs.last_batch(LEGACY_QUERY, "commits")
    if batch == NO_BATCH:
        return None
    start_state_store_coordinator(spark)
    try:
        state = spark.read.format("statestore").option("batchId", batch).load(f"{logs.location}/{LEGACY_QUERY}")
        # The state's rows are batch_totals' rows, their aggregation buffers named sum and count.
        rows = state.select("key.*", F.col("value.sum").alias(TOTAL_SALES_COLUMN), F.col("value.count").alias(RECORDS))
        counts = batch_counts(rows.collect())
    except Exception as error:  # the reader's AnalysisException or a failed job's Py4JJavaError
        if "DATA_SOURCE_NOT_FOUND" in str(error):  # the state data source came with Spark 4.0
            raise UserError(
                f"checkpoint {logs.location} holds the totals of an earlier version in Spark's state store, which "
                f"Spark {spark.version} cannot read outside its query: run this consumer once on Spark 4 (the default "
                f"line of make) to import them, or delete the checkpoint to recount the topic: rm -r {logs.location}"
            ) from None
        raise checkpoint.damaged(
            logs.location,
            f"the totals of earlier versions, in {LEGACY_QUERY}/state, could not be imported "
            f"({str(error).strip().splitlines()[0][:300]})",
        ) from None
    return LegacyTotals(batch, counts, logs.committed_offsets(LEGACY_QUERY, topic))


def set_aside_legacy_quarantine(rejected_path: str | None) -> None:
    """Earlier versions numbered the quarantine's directories by another query's batches; they move
    to `before-upgrade/`, so that this query's batches of the same numbers do not overwrite them."""
    local = checkpoint.local_path(rejected_path) if rejected_path else None
    if local is None or not local.is_dir():
        return
    for directory in local.glob("batch_id=*"):
        (local / "before-upgrade").mkdir(exist_ok=True)
        directory.rename(local / "before-upgrade" / directory.name)

"""What the streaming query reports: a line per micro-batch (at INFO) and the dashboard's progress, and
one line a user can act on when it fails."""

from __future__ import annotations

import json
import logging
import re

from pyspark.sql.streaming import StreamingQueryListener

from ventas import checkpoint
from ventas.dashboard import DashboardState

log = logging.getLogger("consumer")

DATA_LOSS_HELP = (
    "data may have been lost: offsets not processed yet were deleted from Kafka (retention, or a deleted "
    "topic); rerun with --fail-on-data-loss false to go on without them, or delete the checkpoint to recount "
    "what is left"
)


class ProgressListener(StreamingQueryListener):
    """Each finished micro-batch of the query: one INFO line (records read, time taken, throughput,
    the time of each of Spark's phases, longest first), and its progress to the dashboard."""

    def __init__(self, dashboard: DashboardState | None) -> None:
        self.dashboard = dashboard

    def onQueryStarted(self, event) -> None:
        pass

    def onQueryProgress(self, event) -> None:
        progress = json.loads(event.progress.json)  # the shape of query.lastProgress, in every Spark version
        phases = sorted(
            ((phase, ms) for phase, ms in progress["durationMs"].items() if phase != "triggerExecution"),
            key=lambda phase_ms: -phase_ms[1],
        )
        log.info(
            "%s batch %d: %d records in %d ms (%.0f records/s; %s)",
            progress["name"],
            progress["batchId"],
            progress["numInputRows"],
            progress["durationMs"].get("triggerExecution", 0),
            progress.get("processedRowsPerSecond") or 0.0,
            ", ".join(f"{phase} {ms} ms" for phase, ms in phases),
        )
        if self.dashboard:
            self.dashboard.show_progress(progress)

    def onQueryIdle(self, event) -> None:
        if self.dashboard:
            self.dashboard.show_idle()

    def onQueryTerminated(self, event) -> None:
        pass


def failure_message(error_text: str, checkpoint_location: str) -> str:
    """One line for a failed query: what a user can act on, not Spark's nested stack traces."""
    if "Some data may have been lost" in error_text:
        return f"the streaming query failed: {DATA_LOSS_HELP}"
    causes = re.findall(r"Caused by: ([^\n]+)", error_text)
    cause = (causes[-1] if causes else " ".join(error_text.strip().splitlines()[:2]))[:500]
    location = str(checkpoint.local_path(checkpoint_location) or checkpoint_location)
    if location in cause:  # a file of the checkpoint is missing or unreadable
        return str(checkpoint.damaged(location, cause))
    return f"the streaming query failed: {cause}"

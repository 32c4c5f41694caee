"""Where the consumer works around Spark's bugs, each with the version that fixes it (if any yet) and
the test that shows it is still needed. docs/spark-versions.md tells users what they would see."""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable, Iterator, Mapping

from py4j.protocol import Py4JJavaError
from pyspark.errors import StreamingQueryException
from pyspark.sql import SparkSession
from pyspark.sql.streaming import StreamingQuery

from ventas.config import UserError
from ventas.signals import StopRequest

log = logging.getLogger("consumer")

# -------------------------------------------------------------------- SPARK-55271
# Spark 4.1.1's Kafka source fails the first batch of a restarted query when that batch was planned
# (offsets/N written) but not committed before the stop: it reports the source's progress before it
# ever read the latest offsets. The batch has run and been committed by then, so the query is simply
# started again. Fixed after 4.1.1 (apache/spark#56526). Needed while
# tests/test_faults.py::test_a_batch_planned_but_not_committed_before_a_stop_runs_on_the_next_start[streaming]
# fails without it on the default Spark line.
SPARK_55271 = 'Cannot invoke "scala.collection.IterableOps.map(scala.Function1)" because the return value of'
SPARK_55271_RESTARTS = 3  # per run: one is enough (the next first batch is planned afresh)


def is_spark_55271(error: StreamingQueryException, restarts_so_far: int) -> bool:
    """Whether a failed query is to be started again for SPARK-55271 (at most SPARK_55271_RESTARTS times)."""
    return SPARK_55271 in str(error) and restarts_so_far < SPARK_55271_RESTARTS


def wait_until_released(failed: StreamingQuery) -> None:
    """Wait until Spark has let a failed query go. Spark sets the query's error before its thread stops
    the sources and removes the query from the session's active ones: awaitTermination(timeout) can
    raise in between, and a query started again under the same name is then refused ("a query with
    that name is already active"). awaitTermination() without a timeout returns once the thread is
    done. Not fixed as of Spark 4.1.1; seen in the test named for SPARK-55271 above."""
    with contextlib.suppress(StreamingQueryException):
        failed.awaitTermination()


# -------------------------------------------------------------------- AvailableNow ends early
# Spark 4.1.1's AvailableNow trigger can end before the offsets the topic had at start: after a batch a
# stop left planned but not committed, it runs that batch alone (its Kafka source reads the latest
# offsets later since SPARK-53560); and now and then, on a busy machine, it ends having read nothing.
# Not fixed as of 4.1.1; Spark 3.5 needs one run. Needed while
# tests/test_faults.py::test_a_batch_planned_but_not_committed_before_a_stop_runs_on_the_next_start[available-now]
# fails without it.
AVAILABLE_NOW_RUNS = 3  # on 4.1.1 a second run has always sufficed


def read_until_caught_up(
    behind: Callable[[], bool], run_again: Callable[[], StreamingQuery], stop: StopRequest, latest: Mapping[int, int]
) -> StreamingQuery | None:
    """--available-now: run the query again while it has ended `behind` the topic's `latest` offsets
    at start; the last query run, or None when it did not need to run again."""
    query = None
    for _ in range(AVAILABLE_NOW_RUNS - 1):
        if not behind() or stop.requested.is_set():
            return query
        log.info("the query ended before the topic's latest offsets at start; running it again")
        query = run_again()
    if behind():
        raise UserError(
            f"--available-now: the query ended {AVAILABLE_NOW_RUNS} times before the latest offsets the "
            f"topic had at start ({dict(latest)}); run it again"
        )
    return query


# -------------------------------------------------------------------- a stop's error, kept short
class BatchCutShort(Exception):
    """A foreachBatch function's Spark job cancelled by a stop. Raised in place of Py4J's error, whose
    long text (a Java stack trace) overflows the stack of Spark's check for an interrupted query (the
    regex StreamExecution.PROXY_ERROR recurses once per character, in 3.5 and 4.1.1 alike; not fixed)
    and prints a thousand-line StackOverflowError. Needed while
    tests/test_stops.py::test_a_second_signal_during_a_long_batch_stops_the_consumer_at_once fails
    without it."""

    def __init__(self, batch_id: int) -> None:
        super().__init__(f"batch {batch_id} was cut short by a stop; it runs again on the next start")


@contextlib.contextmanager
def short_error_on_stop(stop: StopRequest, batch_id: int) -> Iterator[None]:
    """The JVM calls of a foreachBatch function (run on the query's own thread, which a stop
    interrupts): failing on a stop, they raise BatchCutShort; otherwise their error as it is. Either
    way the batch fails and is not committed."""
    try:
        yield
    except Py4JJavaError:
        if not stop.requested.is_set():
            raise
        raise BatchCutShort(batch_id) from None


# -------------------------------------------------------------------- a job started after the cancel
JOBS_CANCELLED_EVERY_S = 0.2


def cancel_jobs_until_stopped(spark: SparkSession, query: StreamingQuery, stopping: threading.Thread) -> None:
    """query.stop() cancels the query's jobs once, before it interrupts the query's thread; a job the
    thread starts after that runs to its end if the interrupt does not reach it (a collect started
    just after a stop ran for 100 s and was committed). So the jobs are cancelled again until the
    `stopping` thread, which calls stop(), ends. Not fixed as of 4.1.1; needed while
    tests/test_stops.py::test_a_second_signal_during_a_long_batch_stops_the_consumer_at_once fails
    without it (now and then: it is a race)."""
    job_group = str(query.runId)  # the query's thread runs its batches' jobs in this group
    while stopping.is_alive():
        spark.sparkContext.cancelJobGroup(job_group)
        stopping.join(JOBS_CANCELLED_EVERY_S)


# -------------------------------------------------------------------- the state reader's coordinator
def start_state_store_coordinator(spark: SparkSession) -> None:
    """Spark 4's `statestore` reader outside a streaming query fails with `RpcEndpointNotFoundException:
    StateStoreCoordinator` unless the session's StreamingQueryManager, which starts that coordinator,
    exists. Not fixed as of 4.1.1; needed while
    tests/test_totals_database.py::test_an_earlier_versions_checkpoint_is_imported_once fails without it."""
    spark.streams.active  # noqa: B018 -- touching the manager creates it

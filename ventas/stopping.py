"""How the consumer stops: between two micro-batches when it can, never with a batch half counted.

A stop signal asks the driver to stop; the batch in progress finishes, unless a second signal or
the grace period abandons it, and then Spark runs it again on the next start. Either way Spark
records a batch as committed only once its foreachBatch function has returned.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator

from py4j.protocol import Py4JJavaError
from pyspark.sql import SparkSession
from pyspark.sql.streaming import StreamingQuery

from ventas.signals import STOP_NOTICE_AFTER_S, StopRequest, print_status
from ventas.spark_workarounds import cancel_jobs_until_stopped

STOP_GRACE_S = 30.0  # then the batch in progress is abandoned, to be run again on the next start
TASKS_END_S = 10.0  # for the tasks of an abandoned batch to end once its query has stopped
# For a stopped query's thread to end (its batch's job cancelled, its source closed): seconds, but a
# double stop once took 55 s on 2 cores under ten times their load. Past it, the stop goes on and
# Spark's shutdown makes that thread print a stack trace.
QUERY_STOP_S = 120.0
STOP_TIMEOUT = "spark.sql.streaming.stopTimeout"


class JvmSignalForwarder:
    """A `sun.misc.SignalHandler` implemented here through py4j: the JVM's SIGTERM becomes a stop
    request to this driver, where the JVM's own handler would exit at once under the running query."""

    class Java:
        implements = ("sun.misc.SignalHandler",)

    def __init__(self, stop: StopRequest) -> None:
        self.stop = stop

    def handle(self, sig) -> None:
        self.stop.receive("spark-submit's JVM")


@contextlib.contextmanager
def stop_signals_to_this_driver(spark: SparkSession, stop: StopRequest) -> Iterator[None]:
    """While the query runs, spark-submit's JVM leaves stopping to this driver. It ignores SIGINT and
    SIGHUP, which a terminal sends to the whole job, this driver included; the processes the JVM
    starts inherit that, so a Ctrl-C cannot fail a batch by killing one. It hands SIGTERM, which a
    supervisor (`docker stop`, `kill PID`) may send to the JVM alone, over to this driver."""
    from pyspark.java_gateway import ensure_callback_server_started

    context = spark.sparkContext
    ensure_callback_server_started(context._gateway)
    jvm = context._jvm
    ignore = jvm.sun.misc.SignalHandler.SIG_IGN
    handlers = {"INT": ignore, "HUP": ignore, "TERM": JvmSignalForwarder(stop)}
    previous = {name: jvm.sun.misc.Signal.handle(jvm.sun.misc.Signal(name), h) for name, h in handlers.items()}
    try:
        yield
    finally:
        # After a stop, the JVM ignores further signals: the stop they ask for is under way, and its own
        # handler would end the process with 128+signal (a quick second Ctrl-C or SIGTERM lands here).
        # Otherwise a signal that comes once this driver is done is the JVM's own again.
        for name, handler in previous.items():
            jvm.sun.misc.Signal.handle(jvm.sun.misc.Signal(name), ignore if stop.requested.is_set() else handler)


def stop_query(spark: SparkSession, query: StreamingQuery) -> None:
    """query.stop(): Spark cancels the query's jobs, interrupts its thread and waits for the thread at
    most spark.sql.streaming.stopTimeout; past that, one line, and the consumer goes on to end (a batch
    still commits whole, or not at all)."""

    def stop_and_wait() -> None:
        try:
            query.stop()
        except Py4JJavaError as error:
            timeout = spark.conf.get(STOP_TIMEOUT)
            waited = f"{int(timeout) / 1000:g} s" if timeout.isdigit() else timeout
            print_status(f"consumer: query {query.name} did not stop in {waited}: {error.java_exception}")

    stopping = threading.Thread(target=stop_and_wait, name=f"stop query {query.name}")
    stopping.start()
    cancel_jobs_until_stopped(spark, query, stopping)


def stop_between_batches(spark: SparkSession, query: StreamingQuery, stop: StopRequest) -> None:
    """Stop the query once its batch in progress, if any, has finished; sooner on a second stop signal
    or after STOP_GRACE_S."""
    started = time.monotonic()
    finished = _last_batch_id(query)
    noticed = False
    while (
        query.isActive
        and query.status["isTriggerActive"]
        and _last_batch_id(query) == finished
        and time.monotonic() - started < STOP_GRACE_S
        and not stop.immediate.wait(0.1)
    ):
        if not noticed and time.monotonic() - started >= STOP_NOTICE_AFTER_S:
            print_status(
                f"consumer: stopping: waiting for batch {finished + 1} of query {query.name} to finish "
                f"(at most {STOP_GRACE_S:.0f} s; Ctrl-C again to stop at once)"
            )
            noticed = True
    # Tasks cut short (a batch just started, or abandoned) make Spark log errors of its own; what
    # matters is the query's outcome, which the consumer reports.
    spark.sparkContext.setLogLevel("OFF")
    stop_query(spark, query)
    # stop() cancels the batch's job, but its tasks end in their own time; stopping the SparkContext
    # under a running task makes Spark's scheduler log a stack trace.
    tracker = spark.sparkContext.statusTracker()
    stopped = time.monotonic()
    while tracker.getActiveStageIds() and time.monotonic() - stopped < TASKS_END_S:
        time.sleep(0.05)


def _last_batch_id(query: StreamingQuery) -> int:
    progress = query.lastProgress
    return progress["batchId"] if progress else -1

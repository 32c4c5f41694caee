"""Running total sales per product from the `ventas-events` Kafka topic (Spark Structured Streaming).

    spark-submit --packages org.apache.spark:spark-sql-kafka-0-10_2.13:<pyspark version> consumer.py

(`_2.12` with pyspark 3.5; `python -m ventas.jars --print-package` prints the one to use.)

The pipeline, one streaming query that reads each Kafka record once:

    session    create_session()
    source     kafka_stream()                       the topic's records
    parse      transforms.parse_orders()            orders with the schema of schemas.py, or a reject reason
    aggregate  transforms.batch_totals()            sum(cantidad * price) per product, exactly (decimal),
                                                    and per window of sale_date; valid orders, late ones
                                                    and rejects by reason; one aggregation
    sink       sink.TotalsSink, by query_writer()   per micro-batch: rejects set aside, the sums added to
                                                    the totals database (SQLite or PostgreSQL) in one
                                                    transaction with the batch id, the table printed
    run        run_query(), then stopping.stop_between_batches() on Ctrl-C or SIGTERM

Parse and aggregate run inside the sink, on each micro-batch. A batch Spark runs again after a crash
is never counted twice; a rejected record never reaches the totals and never stops the query.
"""

from __future__ import annotations

import faulthandler
import logging
import re
import signal
from collections.abc import Callable, Mapping

from py4j.protocol import Py4JError
from pyspark.errors import StreamingQueryException
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql.streaming import DataStreamWriter, StreamingQuery

from ventas import checkpoint, metrics, transforms
from ventas.checkpoint import CheckpointLogs
from ventas.config import UserError, env, fail, setup_logging
from ventas.consumer_settings import ConsumerSettings, build_parser, settings_from
from ventas.dashboard import DashboardState, serving
from ventas.kafka_topic import latest_offsets, probe_topic
from ventas.metrics import HEALTH_PATH, METRICS_PATH
from ventas.outages import Dependency, Unavailable, Waits, WaitStopped
from ventas.query_reports import ProgressListener, failure_message
from ventas.security import REDACTED_SPARK_OPTIONS, REDACTED_SPARK_STRINGS
from ventas.signals import StopRequest, print_status
from ventas.sink import TotalsSink
from ventas.spark_workarounds import is_spark_55271, read_until_caught_up, wait_until_released
from ventas.stopping import QUERY_STOP_S, STOP_TIMEOUT, stop_between_batches, stop_query, stop_signals_to_this_driver
from ventas.table import format_batch
from ventas.totals_db import TotalsDb
from ventas.upgrade import legacy_totals, set_aside_legacy_quarantine

log = logging.getLogger("consumer")

KAFKA_API_TIMEOUT_MS, KAFKA_REQUEST_TIMEOUT_MS = "20000", "10000"
# A Kafka client's error for a broker that did not answer in time (driver or executor side).
KAFKA_TIMEOUT = re.compile(r"TimeoutException|DisconnectException|Timed out waiting")
QUERY = "sales"  # the query's name, and its checkpoint's directory under --checkpoint-location
SQL_DEFAULTS = {  # each overridden by the same --conf of spark-submit
    # A micro-batch's sums over a handful of products need no 200 shuffle partitions: each one is a
    # task every micro-batch. Fixed in the checkpoint at the first run.
    "spark.sql.shuffle.partitions": "4",
    # How long query.stop() waits for the query's thread: without limit by Spark's default, and a stop must end.
    STOP_TIMEOUT: str(int(QUERY_STOP_S * 1000)),
    # Batches run back to back (--trigger-interval 0 seconds) under load; with nothing to read, the query
    # asks Kafka 4 times a second, not Spark's 100 (every 10 ms), which kept consumer and broker busy.
    "spark.sql.streaming.pollingDelay": "250ms",
    **transforms.SESSION_CONF,
}


def create_session(local_checkpoint: bool = False, sale_date_zone: str | None = None) -> SparkSession:
    """The session with this project's defaults where spark-submit's --conf did not set them;
    `local_checkpoint`: the query's checkpoint is on the local file system; `sale_date_zone`: the zone
    sale_date is read in (None: this machine's, Spark's default)."""
    spark = (
        SparkSession.builder.appName("ventas-events-totals")
        .config("spark.ui.showConsoleProgress", "false")  # the table is what the console shows
        # Source options carrying credentials (JAAS password, client key) never show in plans or the UI.
        .config("spark.sql.redaction.options.regex", REDACTED_SPARK_OPTIONS)
        .config("spark.sql.redaction.string.regex", REDACTED_SPARK_STRINGS)
        .getOrCreate()
    )
    spark.sparkContext.setLogLevel(env("SPARK_LOG_LEVEL", "ERROR"))
    defaults = dict(SQL_DEFAULTS)
    if local_checkpoint:
        defaults[checkpoint.FILE_MANAGER] = checkpoint.local_file_manager(spark)
    if sale_date_zone:
        spark.conf.set("spark.sql.session.timeZone", sale_date_zone)  # the flag, over any --conf
    submitted = spark.sparkContext.getConf()
    for key, value in defaults.items():
        if not submitted.contains(key):
            spark.conf.set(key, value)
    return spark


def kafka_stream(spark: SparkSession, settings: ConsumerSettings, starting_offsets: str) -> DataFrame:
    """The topic's records, as Spark's Kafka source gives them (binary key and value)."""
    reader = (
        spark.readStream.format("kafka")
        .option("kafka.bootstrap.servers", settings.bootstrap_servers)
        .option("subscribe", settings.topic)
        .option("startingOffsets", starting_offsets)
        .option("failOnDataLoss", str(settings.fail_on_data_loss).lower())
        # Kafka gone fails the query after Spark's own tries (fetchOffset.numRetries: 3), each waiting this
        # long rather than the client's default minute; run_query then waits for the broker.
        .option("kafka.default.api.timeout.ms", KAFKA_API_TIMEOUT_MS)
        .option("kafka.request.timeout.ms", KAFKA_REQUEST_TIMEOUT_MS)  # at most the one above, or no client
        # A batch reading its records when Kafka goes fails after as long, not spark.network.timeout's 2 minutes.
        .option("kafkaConsumer.pollTimeoutMs", KAFKA_API_TIMEOUT_MS)
        .options(**settings.security.spark_options())
    )
    if settings.max_offsets_per_trigger:
        reader = reader.option("maxOffsetsPerTrigger", settings.max_offsets_per_trigger)
    try:
        return reader.load()
    except Exception as error:  # AnalysisException when the connector jar is missing
        if "Failed to find data source: kafka" in str(error):
            from ventas.jars import spark_kafka_package

            raise UserError(
                "the Spark Kafka connector is not on the classpath: run with "
                f"spark-submit --packages {spark_kafka_package()} consumer.py"
            ) from None
        raise


def query_writer(records: DataFrame, sink: TotalsSink, settings: ConsumerSettings) -> DataStreamWriter:
    """The one query: each micro-batch of Kafka records handed to the sink, which parses, sums and
    commits it. Not parsed here: foreachBatch hands the sink its batch as an RDD of this plan's rows,
    so a parse before it would run apart from the aggregation (measured: 1.5 times the batch time)."""
    trigger = {"availableNow": True} if settings.available_now else {"processingTime": settings.trigger_interval}
    return (
        records.writeStream.foreachBatch(sink)
        .option("checkpointLocation", f"{settings.checkpoint_location}/{QUERY}")
        .queryName(QUERY)
        .trigger(**trigger)
    )


def run_query(
    writer: DataStreamWriter,
    stop: StopRequest,
    started: Callable[[StreamingQuery], None],
    outage_over: Callable[[StreamingQueryException], bool],
) -> StreamingQuery:
    """Start the query, `started` called with it, and wait until it ends (--available-now), fails, or a
    stop is requested. A query that failed for an outage is started again from its checkpoint once
    `outage_over` has waited it out (False: it failed for another reason, raised)."""
    query = writer.start()
    started(query)
    spark_55271_restarts = 0
    while query.isActive and not stop.requested.is_set():
        try:
            query.awaitTermination(0.5)  # raises StreamingQueryException if the query failed
        except StreamingQueryException as error:
            # A stop signal to the whole process group can kill a process the JVM had started for the
            # batch (Hadoop's chmod): that batch failed, uncommitted, and runs again on the next start.
            if stop.requested.is_set():
                break
            if is_spark_55271(error, spark_55271_restarts):
                log.info("query %s: started again after Spark's SPARK-55271", query.name)
                spark_55271_restarts += 1
            else:
                try:
                    if not outage_over(error):
                        raise
                except WaitStopped:
                    break
            wait_until_released(query)
            query = writer.start()
            started(query)
    return query


def kafka_outage_over(
    settings: ConsumerSettings, sink: TotalsSink, waits: Waits
) -> Callable[[StreamingQueryException], bool]:
    """For run_query: whether the query failed because Kafka could not be reached, then once it can
    again. A failure the sink explained (the totals database) is not Kafka's."""
    kafka = Dependency("kafka", f"Kafka at {settings.bootstrap_servers}")

    def probe() -> None:
        probe_topic(settings.bootstrap_servers, settings.topic, settings.security)

    def outage_over(error: StreamingQueryException) -> bool:
        if sink.failure:
            return False
        try:
            probe()
        except Unavailable as unreachable:
            waits.wait(kafka, probe, str(unreachable))
            return True
        # Back already, or gone for less than a probe: a Kafka client's timeout is an outage too.
        if not KAFKA_TIMEOUT.search(str(error)):
            return False
        print_status(f"consumer: the query timed out reaching {kafka.display}; started again from its checkpoint")
        return True

    return outage_over


def run(
    settings: ConsumerSettings,
    latest: Mapping[int, int] | None,
    stop: StopRequest,
    dashboard: DashboardState | None,
    db: TotalsDb,
) -> None:
    """Run the query until it ends (--available-now), fails, or a stop signal arrives. `latest`: the
    topic's latest offsets at start, when known."""
    local_checkpoint = checkpoint.local_path(settings.checkpoint_location) is not None
    spark = create_session(local_checkpoint, settings.sale_date_zone)
    stop.install()  # again: SparkContext installs a SIGINT handler of its own
    waits = Waits(stop, settings.give_up_after, dashboard)
    sink = TotalsSink(db, settings.rejected_path, dashboard, stop, settings.windows, waits)
    outage_over = kafka_outage_over(settings, sink, waits)
    try:
        with stop_signals_to_this_driver(spark, stop):
            if dashboard or log.isEnabledFor(logging.INFO):
                spark.streams.addListener(ProgressListener(dashboard))
            logs = CheckpointLogs(spark, settings.checkpoint_location)
            stored = db.check(logs.query_id(QUERY), settings.checkpoint_location, logs.last_batch(QUERY, "commits"))
            legacy = legacy_totals(spark, logs, settings.topic) if stored.checkpoint_id is None else None
            if legacy:
                set_aside_legacy_quarantine(settings.rejected_path)
            starting_offsets = legacy.starting_offsets(settings.topic) if legacy else settings.starting_offsets
            writer = query_writer(kafka_stream(spark, settings, starting_offsets), sink, settings)

            def started(query: StreamingQuery) -> None:
                try:
                    sink.claim(query, settings.checkpoint_location, legacy)
                except UserError:
                    sink.refused.set()
                    spark.sparkContext.setLogLevel("OFF")
                    stop_query(spark, query)
                    raise

            query = run_query(writer, stop, started, outage_over)
            if settings.available_now and latest is not None:
                start = legacy.offsets if legacy else {} if settings.starting_offsets == "earliest" else None
                query = (
                    read_until_caught_up(
                        lambda: logs.is_behind(QUERY, settings.topic, latest, start),
                        lambda: run_query(writer, stop, started, outage_over),
                        stop,
                        latest,
                    )
                    or query
                )
            if not stop.requested.is_set():
                if settings.available_now and sink.last_batch is None and not sink.shown_at_start:
                    print(format_batch(0, {}), flush=True)
                return
            stop_between_batches(spark, query, stop)
        # A batch that the stop cut short failed, as Spark saw it, so it was not committed and runs again
        # on the next start; Spark does not recognise every such failure as its own interruption.
        if query.exception():
            log.info("query %s ended while stopping: %s", query.name, str(query.exception()).splitlines()[0])
        after = "" if sink.last_batch is None else f" after batch {sink.last_batch}"
        print_status(f"consumer: stopped{after}" + (" (at once)" if stop.immediate.is_set() else ""))
    except StreamingQueryException as error:
        # A query still active is stopped first, quietly: cut short by spark.stop(), its batch would log
        # Spark's errors and stack traces under the one line that says what failed.
        spark.sparkContext.setLogLevel("OFF")
        for active in spark.streams.active:
            stop_query(spark, active)
        failure = sink.failure or failure_message(str(error), settings.checkpoint_location)
        if dashboard:
            dashboard.show_failure(failure)
        raise UserError(failure) from None
    finally:
        spark.stop()


def main(argv: list[str] | None = None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    setup_logging(args.log_level)
    # `kill -USR1 PID` (this driver, a child of spark-submit's JVM) prints where each thread is, as
    # `jstack` does for the JVM: what a consumer that seems stuck is waiting for.
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    stop = StopRequest()
    stop.install()
    try:
        settings = settings_from(args)
        checkpoint.claim(settings.checkpoint_location)
        latest = latest_offsets(settings.bootstrap_servers, settings.topic, settings.connect_timeout, settings.security)
        db = TotalsDb.open(settings.totals_db)
        try:
            db.use_windows(settings.windows)
            if stop.requested.is_set():
                print_status("consumer: stopped before the query started")
                return
            dashboard = DashboardState(settings.topic)
            if (stored := db.read()).checkpoint_id:
                dashboard.show_totals(stored)
            served = metrics.routes(dashboard, settings.topic, settings.stalled_after)
            host, page_port, metrics_port = settings.dashboard_host, settings.dashboard_port, settings.metrics_port
            together = metrics_port == page_port
            with (
                serving(dashboard, host, page_port, served if together else None) as page,
                serving(dashboard, host, 0 if together else metrics_port, served, page=False) as apart,
            ):
                if address := (page if together else apart):
                    print_status(
                        f"consumer: metrics at {address}{METRICS_PATH[1:]}, health at {address}{HEALTH_PATH[1:]}"
                    )
                run(settings, latest, stop, dashboard if page or address else None, db)
        finally:
            db.close()
    except UserError as error:
        fail(parser.prog, error)
    except Py4JError:  # the JVM is gone: a stop signal reached it while its handlers were its own
        if not stop.requested.is_set():
            raise
        print_status("consumer: stopped")


if __name__ == "__main__":
    main()

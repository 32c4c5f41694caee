"""Running total sales per product from the `ventas-events` Kafka topic (Spark Structured Streaming).

    spark-submit --packages org.apache.spark:spark-sql-kafka-0-10_2.13:<pyspark version> consumer.py

(`_2.12` with pyspark 3.5; `python -m ventas.jars --print-package` prints the one to use.)

Each record is read and parsed once, with the schema of schemas.py; its `products` exploded, and
`cantidad * price` summed per product name, exactly (decimal), per micro-batch. Each micro-batch's
sums are added to the running totals in a database (SQLite, or PostgreSQL with --totals-db) in one
transaction that records the batch id, so a batch Spark runs again is never counted twice; the
complete table is printed after every micro-batch. Records that are not a valid order are counted by
reason in the same aggregation and written, with the reason, to --rejected-path (unless
--keep-rejected false); they never reach the totals and never stop the query.
"""

from __future__ import annotations

import argparse
import contextlib
import faulthandler
import functools
import json
import logging
import os
import re
import signal
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from urllib.parse import urlparse

from py4j.protocol import Py4JError, Py4JJavaError
from pyspark.errors import StreamingQueryException
from pyspark.sql import Column, DataFrame, Row, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.streaming import DataStreamWriter, StreamingQuery, StreamingQueryListener
from pyspark.sql.types import ArrayType, StringType

from schemas import (
    CANTIDAD,
    CORRUPT_RECORD,
    CUSTOMER_DOCUMENT,
    MONEY,
    NAME,
    ORDER_ID,
    PRICE,
    PRICE_DECIMALS,
    PRODUCT_COLUMN,
    PRODUCTS,
    QUANTITY,
    SALE_DATE,
    TOTAL_SALES_COLUMN,
    TOTALS_SCHEMA,
    consumer_read_schema,
)
from ventas import checkpoint
from ventas.config import (
    EXIT_USAGE,
    STATE_HOME,
    Parser,
    UserError,
    add_kafka_arguments,
    env,
    fail,
    positive_int,
    setup_logging,
    true_or_false,
)
from ventas.dashboard import DashboardState, add_dashboard_arguments, serving
from ventas.security import REDACTED_SPARK_OPTIONS, REDACTED_SPARK_STRINGS, KafkaSecurity, connect, load_security
from ventas.signals import STOP_NOTICE_AFTER_S, StopRequest, say
from ventas.table import format_batch
from ventas.totals_db import NO_BATCH, BatchCounts, StoredTotals, TotalsDb, TotalsDbError

log = logging.getLogger("consumer")

REJECT_REASON = "reject_reason"
INVALID_UTF8 = "not valid UTF-8"
ORDER = "order"
QUERY = "sales"  # the query's name, and its checkpoint's directory under --checkpoint-location
# The rows of batch_totals: what each one counts, and how many records it counted.
KIND, RECORDS = "kind", "records"
PRODUCT_KIND, ORDERS_KIND, REJECTED_KIND = "product", "orders", "rejected"
MAX_PRICE = Decimal(10) ** (MONEY.precision - MONEY.scale) - Decimal(1).scaleb(-MONEY.scale)
STOP_GRACE_S = 30.0  # then the batch in progress is abandoned, to be run again on the next start
TASKS_END_S = 10.0  # for the tasks of an abandoned batch to end once its query has stopped
JOBS_CANCELLED_EVERY_S = 0.2  # while a query stops
# For a stopped query's thread to end (its batch's job cancelled, its source closed, its state stores
# released): seconds, but a double stop once took 55 s on 2 cores under ten times their load, and once
# over 10 s for one query. Past it, the stop goes on and Spark's shutdown makes that thread print a stack trace.
QUERY_STOP_S = 120.0
STOP_TIMEOUT = "spark.sql.streaming.stopTimeout"
SQL_DEFAULTS = {  # each overridden by the same --conf of spark-submit
    # A micro-batch's sums over a handful of products need no 200 shuffle partitions: each one is a
    # task every micro-batch. Fixed in the checkpoint at the first run.
    "spark.sql.shuffle.partitions": "4",
    # How long query.stop() waits for the query's thread: without limit by Spark's default, and a stop must end.
    STOP_TIMEOUT: str(int(QUERY_STOP_S * 1000)),
    # Batches run back to back (--trigger-interval 0 seconds) under load; with nothing to read, the query
    # asks Kafka 4 times a second, not Spark's 100 (every 10 ms), which kept consumer and broker busy.
    "spark.sql.streaming.pollingDelay": "250ms",
}


# ---------------------------------------------------------------- pure transformations


def _is_bad_line(line: Column) -> Column:
    """True unless the product line has a name, a whole quantity >= 1 and a price >= 0 in cents."""
    cantidad, legacy_quantity, price = line[CANTIDAD], line[QUANTITY], line[PRICE]
    quantity = F.coalesce(cantidad, legacy_quantity)
    missing = line.isNull() | line[NAME].isNull() | quantity.isNull() | price.isNull()
    invalid = (
        (F.length(F.trim(line[NAME])) == 0)
        | (quantity < 1)
        | (cantidad.isNotNull() & legacy_quantity.isNotNull() & (cantidad != legacy_quantity))
        | (price < 0)
        | (price > MAX_PRICE)
        | (price != F.round(price, PRICE_DECIMALS))
    )
    return F.when(missing, True).otherwise(invalid)


# Spark's JSON reader gives a string field that holds a number, true/false, an array or an object
# the JSON text of that value. That text always has this shape, so a value without it was a JSON
# string; one with it (a string such as "true" or "4.5" too) is looked up again in the raw JSON, where
# only a string keeps its quotes.
LOOKS_LIKE_JSON = r'(?s)^(true|false|-?[0-9]+(\.[0-9]+)?([eE][-+]?[0-9]+)?|-?Infinity|NaN|[\[{"].*)$'


def _appears_once(json_object: Column, key: str) -> Column:
    return F.size(F.filter(F.json_object_keys(json_object), lambda k: k == key)) == 1


def _written_as_string(json_object: Column, key: str) -> Column:
    """True when `key` appears once in the JSON object, with a JSON string as its value.

    get_json_object keeps a string's quotes under a `[*]` wildcard, so the object is wrapped in an
    array; it takes the first of a repeated key where Spark's reader takes the last, hence once."""
    wrapped = F.concat(F.lit("["), F.get_json_object(json_object, "$"), F.lit("]"))
    quoted = F.get_json_object(wrapped, f"$[*].{key}").startswith('"')
    return F.coalesce(_appears_once(json_object, key) & quoted, F.lit(False))


def _not_a_json_string(text: Column, order: Column, key: str) -> Column:
    """True when the order's field `key` was given, not as a JSON string."""
    value = order[key]
    return F.when(value.isNull() | ~value.rlike(LOOKS_LIKE_JSON), False).otherwise(~_written_as_string(text, key))


def _raw_lines(text: Column) -> Column:
    """The JSON text of each product line."""
    return F.from_json(F.get_json_object(text, f"$.{PRODUCTS}"), ArrayType(StringType()))


def _a_name_is_not_a_json_string(text: Column, order: Column) -> Column:
    """True when a product's name was not a JSON string; the raw lines are read only when a name
    looks like JSON text."""
    suspect = F.exists(order[PRODUCTS], lambda line: line[NAME].rlike(LOOKS_LIKE_JSON))
    names_are_strings = _appears_once(text, PRODUCTS) & F.forall(
        _raw_lines(text), lambda line: _written_as_string(line, NAME)
    )
    return F.when(suspect, ~F.coalesce(names_are_strings, F.lit(False))).otherwise(False)


# Spark's JSON reader takes a decimal written as a string ("price": "1.5") as that number. Inside a
# JSON string a quote is escaped, so only a key "price" with a string value matches this.
A_PRICE_AS_STRING = rf'"{PRICE}"\s*:\s*"'


def _a_price_is_a_json_string(text: Column) -> Column:
    """True when a product's price was written as a JSON string; the raw lines are read only when the
    text has a "price" key with a string value."""
    quoted = F.exists(_raw_lines(text), lambda line: _written_as_string(line, PRICE))
    return F.when(text.rlike(A_PRICE_AS_STRING), F.coalesce(quoted, F.lit(False))).otherwise(False)


def _not_utf8(value: Column, text: Column) -> Column:
    """True when the bytes are not valid UTF-8 (Spark's cast to string keeps them as they are). Spark 4
    checks them in place; Spark 3.5 encodes the text again and compares, a copy of every value."""
    if hasattr(F, "is_valid_utf8"):
        return ~F.is_valid_utf8(text)
    return F.encode(text, "UTF-8") != value


def parse_orders(kafka_rows: DataFrame) -> DataFrame:
    """Kafka rows (binary `value`) -> the same rows plus `order` (the parsed struct) and
    `reject_reason`, null for a valid order and a short reason for anything else."""
    order, reason = _order_and_reject_reason()
    # The parse comes out of a generator (one row in, one row out): Spark's optimizer would otherwise
    # push a filter on the reason below it, copying the whole JSON parse into each of the reason's
    # conditions, once per condition a valid order passes.
    parsed = kafka_rows.select("*", F.inline(F.array(F.struct(order.alias(ORDER)))))
    return parsed.withColumn(REJECT_REASON, reason)


@functools.cache
def _order_and_reject_reason() -> tuple[Column, Column]:
    """parse_orders' two columns, built once: the sink parses every micro-batch, and building these
    expressions call by call through py4j took longer than Spark's planning of them."""
    value = F.col("value")
    text = value.cast("string")
    order = F.from_json(text, consumer_read_schema(), {"columnNameOfCorruptRecord": CORRUPT_RECORD})
    order_col = F.col(ORDER)
    reason = (
        F.when(value.isNull(), "tombstone (null value)")
        .when(_not_utf8(value, text), INVALID_UTF8)
        .when(order_col.isNull() | order_col[CORRUPT_RECORD].isNotNull(), "not a JSON object of the order schema")
        .when(F.coalesce(F.length(F.trim(order_col[ORDER_ID])), F.lit(0)) == 0, "missing order_id")
        .when(_not_a_json_string(text, order_col, ORDER_ID), "order_id is not a JSON string")
        .when(_not_a_json_string(text, order_col, CUSTOMER_DOCUMENT), "customer_document is not a JSON string")
        .when(_not_a_json_string(text, order_col, SALE_DATE), "sale_date is not a JSON string")
        .when(order_col[PRODUCTS].isNull(), "missing products array")
        .when(F.exists(order_col[PRODUCTS], _is_bad_line), "invalid product line")
        .when(_a_name_is_not_a_json_string(text, order_col), "product name is not a JSON string")
        .when(_a_price_is_a_json_string(text), "price is not a JSON number")
    )
    return order, reason


def rejected_records(parsed: DataFrame) -> DataFrame:
    """The rejected rows as a user inspects them: where they came from, why, and the raw value."""
    value = F.col("value")
    is_text = F.col(REJECT_REASON) != INVALID_UTF8  # decided once, in parse_orders
    return parsed.where(F.col(REJECT_REASON).isNotNull()).select(
        "topic",
        "partition",
        "offset",
        "timestamp",
        F.col("key").cast("string").alias("key"),
        F.col(REJECT_REASON).alias("reason"),
        F.when(is_text, value.cast("string")).alias("value"),
        F.when(~is_text, F.base64(value)).alias("value_base64"),
    )


def batch_totals(parsed: DataFrame) -> DataFrame:
    """Everything a micro-batch adds to the totals, in one aggregation over one parse: `kind`
    "product" rows hold each product's `Total Sales` (sum of cantidad * price, decimal(38,2)); the
    "orders" row counts valid orders in `records`; a "rejected" row per reason (in `Product`) counts
    the records rejected for it."""
    return (
        parsed.select(F.inline(_batch_entries()))
        .groupBy(KIND, PRODUCT_COLUMN)
        .agg(F.sum(TOTAL_SALES_COLUMN).alias(TOTAL_SALES_COLUMN), F.count(F.lit(1)).alias(RECORDS))
    )


@functools.cache
def _batch_entries() -> Column:
    """What a parsed record adds, as an array of (kind, product, amount); built once, as parse_orders'
    columns are."""
    total = TOTALS_SCHEMA[TOTAL_SALES_COLUMN].dataType
    no_amount = F.lit(None).cast(total)

    def entry(kind: str, key: Column, amount: Column) -> Column:
        return F.struct(F.lit(kind).alias(KIND), key.alias(PRODUCT_COLUMN), amount.alias(TOTAL_SALES_COLUMN))

    def line_entry(line: Column) -> Column:
        quantity = F.coalesce(line[CANTIDAD], line[QUANTITY])
        return entry(PRODUCT_KIND, line[NAME], (quantity * line[PRICE].cast(MONEY)).cast(total))

    valid_order = F.concat(
        F.transform(F.col(ORDER)[PRODUCTS], line_entry),
        F.array(entry(ORDERS_KIND, F.lit(None).cast("string"), no_amount)),
    )
    rejected = F.array(entry(REJECTED_KIND, F.col(REJECT_REASON), no_amount))
    return F.when(F.col(REJECT_REASON).isNull(), valid_order).otherwise(rejected)


def sales_totals(parsed: DataFrame) -> DataFrame:
    """Valid orders -> `Product`, `Total Sales`: the product rows of batch_totals."""
    return batch_totals(parsed).where(F.col(KIND) == PRODUCT_KIND).select(PRODUCT_COLUMN, TOTAL_SALES_COLUMN)


# ---------------------------------------------------------------- I/O


def build_parser() -> Parser:
    parser = Parser(prog="consumer.py", description=__doc__.split("\n\n")[0])
    add_kafka_arguments(parser)
    parser.add_argument(
        "--starting-offsets",
        default=env("STARTING_OFFSETS", "earliest"),
        help="where a new query starts: earliest, latest or Spark's JSON offsets; ignored once "
        "the checkpoint exists (env STARTING_OFFSETS; default %(default)s)",
    )
    parser.add_argument(
        "--checkpoint-location",
        default=env("CHECKPOINT_LOCATION"),
        help="the query's checkpoint (the Kafka offsets of every micro-batch); delete it, and empty the "
        "totals database, to start over "
        f"(env CHECKPOINT_LOCATION; default {STATE_HOME}/checkpoints/TOPIC)",
    )
    parser.add_argument(
        "--totals-db",
        default=env("TOTALS_DB"),
        help="where the running totals are kept: a SQLite file, or postgresql://USER@HOST:PORT/DATABASE "
        "(password from PGPASSWORD or ~/.pgpass) (env TOTALS_DB; "
        f"default {STATE_HOME}/totals/TOPIC.sqlite3)",
    )
    parser.add_argument(
        "--rejected-path",
        default=env("REJECTED_PATH"),
        help="where rejected records are written as JSON lines "
        f"(env REJECTED_PATH; default {STATE_HOME}/rejected/TOPIC)",
    )
    parser.add_argument(
        "--keep-rejected",
        type=true_or_false,
        default=env("KEEP_REJECTED", "true"),
        help="write rejected records to --rejected-path; false only counts them, by reason, and reads "
        "each record once (env KEEP_REJECTED; default %(default)s)",
    )
    parser.add_argument(
        "--trigger-interval",
        type=interval,
        default=env("TRIGGER_INTERVAL", "0 seconds"),
        help="processing-time trigger, e.g. '5 seconds'; '0 seconds' runs batches back to back "
        "(env TRIGGER_INTERVAL; default %(default)s)",
    )
    parser.add_argument(
        "--available-now",
        nargs="?",
        const=True,
        type=true_or_false,
        default=env("AVAILABLE_NOW", "false"),
        help="process everything in the topic now, print the final table and exit (env AVAILABLE_NOW)",
    )
    parser.add_argument(
        "--max-offsets-per-trigger",
        type=positive_int,
        default=env("MAX_OFFSETS_PER_TRIGGER"),
        help="cap on records per micro-batch (env MAX_OFFSETS_PER_TRIGGER; default no cap)",
    )
    parser.add_argument(
        "--fail-on-data-loss",
        type=true_or_false,
        default=env("FAIL_ON_DATA_LOSS", "true"),
        help="stop when offsets not yet processed were deleted from Kafka (retention) "
        "(env FAIL_ON_DATA_LOSS; default %(default)s)",
    )
    add_dashboard_arguments(parser)
    return parser


def interval(text: str) -> str:
    """argparse type: a processing-time interval as Spark reads it ('500 milliseconds', '5 seconds')."""
    if not re.fullmatch(r"\s*\d+\s*(millisecond|second|minute|hour|day)s?\s*", text, flags=re.IGNORECASE):
        raise argparse.ArgumentTypeError(f"not an interval like '5 seconds': {text!r}")
    return text.strip()


def resolve_paths(args: argparse.Namespace) -> None:
    args.checkpoint_location = args.checkpoint_location or str(STATE_HOME / "checkpoints" / args.topic)
    args.totals_db = args.totals_db or str(STATE_HOME / "totals" / f"{args.topic}.sqlite3")
    args.rejected_path = (
        (args.rejected_path or str(STATE_HOME / "rejected" / args.topic)) if args.keep_rejected else None
    )
    for name in ("checkpoint_location", "rejected_path"):
        path = getattr(args, name)
        if path is not None and (local := _local_path(path)) is not None:
            try:
                local.mkdir(parents=True, exist_ok=True)
            except OSError as error:
                raise UserError(f"--{name.replace('_', '-')} {path}: {error.strerror}", EXIT_USAGE) from None
            if not os.access(local, os.R_OK | os.W_OK | os.X_OK):
                raise UserError(f"--{name.replace('_', '-')} {path}: not readable and writable", EXIT_USAGE)


def _local_path(location: str) -> Path | None:
    """The local directory behind a location, or None for remote storage (hdfs://, s3a://, ...)."""
    parsed = urlparse(location)
    if parsed.scheme in ("", "file"):
        return Path(parsed.path if parsed.scheme else location).expanduser().resolve()
    return None


def check_topic(bootstrap_servers: str, topic: str, timeout_s: float, security: KafkaSecurity) -> dict[int, int] | None:
    """Fail fast, in one line, when the broker is unreachable or the topic missing (the Kafka source
    itself would retry for minutes); the topic's latest offset per partition. Skipped (None) when
    kafka-python is not installed on the driver."""
    try:
        from kafka import KafkaConsumer, TopicPartition
    except ImportError:
        return None
    timeout_ms = int(timeout_s * 1000)
    client = connect(
        KafkaConsumer, bootstrap_servers, security, timeout_s, request_timeout_ms=max(timeout_ms, 1000) + 1
    )
    try:
        if topic not in client.topics():
            if security.uses_sasl:  # Kafka does not tell a missing topic from one the user may not see
                raise UserError(
                    f"topic {topic!r} not found on {bootstrap_servers}, or user {security.username!r} "
                    f"is not authorized to use topic {topic!r}"
                )
            raise UserError(f"topic {topic!r} not found on {bootstrap_servers} (scripts/kafka-local start creates it)")
        partitions = [TopicPartition(topic, p) for p in client.partitions_for_topic(topic) or ()]
        return {tp.partition: end for tp, end in client.end_offsets(partitions).items()}
    finally:
        client.close()


class BatchCutShort(Exception):
    """A foreachBatch function's Spark job cancelled by a stop. Raised in place of Py4J's error, whose
    long text (a Java stack trace) overflows the stack of Spark's check for an interrupted query (the
    regex StreamExecution.PROXY_ERROR recurses once per character) and kills the query's thread."""


@contextlib.contextmanager
def cut_short_by(stop: StopRequest, batch_id: int) -> Iterator[None]:
    """The JVM calls of a foreachBatch function (run on the query's own thread, which a stop
    interrupts): failing on a stop, they raise BatchCutShort; otherwise their error as it is. Either
    way the batch fails and is not committed."""
    try:
        yield
    except Py4JJavaError:
        if not stop.requested.is_set():
            raise
        raise BatchCutShort(f"batch {batch_id} was cut short by a stop; it runs again on the next start") from None


class TotalsSink:
    """foreachBatch function of the query: parses the batch's records, sums and counts them in one
    aggregation, writes its rejected records to the quarantine (only when it has some), adds it to the
    totals database in one transaction with its batch id, then prints the committed table and shows it
    on the dashboard.

    It lets any exception through: returning normally tells Spark the batch is complete, and Spark
    then records it as committed. A batch that Spark runs again after a crash between the database's
    commit and its own finds its id in the database and is not counted twice."""

    def __init__(
        self, db: TotalsDb, rejected_path: str | None, dashboard: DashboardState | None, stop: StopRequest
    ) -> None:
        self.db = db
        self.rejected_path = rejected_path
        self.kept_in = f"kept in {rejected_path}" if rejected_path else "not kept (--keep-rejected false)"
        self.dashboard = dashboard
        self.stop = stop
        self.checkpoint_id: str | None = None  # set once the database is claimed for the query's checkpoint
        self.claimed, self.refused = threading.Event(), threading.Event()
        self.shown_at_start = False
        self.last_batch: int | None = None
        self.failure: str | None = None  # what failed the query, in one line, when it was the database

    def __call__(self, batch: DataFrame, batch_id: int) -> None:
        with cut_short_by(self.stop, batch_id):
            parsed = parse_orders(batch)
            counts = batch_counts(batch_totals(parsed).collect())
            if counts.rejected and self.rejected_path:
                rejects = rejected_records(parsed).coalesce(1).write.mode("overwrite")
                rejects.json(f"{self.rejected_path}/batch_id={batch_id}")  # a batch run again rewrites its own
        while not self.claimed.wait(0.1):  # the query may start its first batch before run() claims the database
            if self.stop.requested.is_set() or self.refused.is_set():
                raise BatchCutShort(f"batch {batch_id} was cut short by a stop; it runs again on the next start")
        try:
            stored, _ = self.db.commit(self.checkpoint_id, batch_id, counts)
        except TotalsDbError as error:
            self.failure = f"{error}; batch {batch_id} was not counted, and runs again on the next start"
            raise
        print(format_batch(batch_id, stored.totals), flush=True)
        if counts.rejected:
            reasons = ", ".join(f"{n} {reason}" for reason, n in sorted(counts.rejected.items()))
            in_batch = f"{sum(counts.rejected.values())} records in batch {batch_id}"
            print(f"Rejected: {in_batch} ({stored.rejected_total} since start): {reasons}; {self.kept_in}", flush=True)
        show_on(self.dashboard, stored)
        self.last_batch = batch_id

    def claim(self, query: StreamingQuery, location: str, legacy: LegacyTotals | None) -> None:
        """Once the query has started (its id names the checkpoint): claim the database for its checkpoint,
        importing an earlier version's totals if given, and print the table stored there."""
        if self.claimed.is_set():
            return
        stored = self.db.claim(str(query.id), location, legacy.counts if legacy else None)
        if legacy:
            say(
                f"consumer: imported the totals of batch {legacy.batch_id} from {location}/{LEGACY_QUERY} (Spark's "
                f"state store, where earlier versions kept them) into {self.db.display}"
            )
        self.checkpoint_id = stored.checkpoint_id
        self.claimed.set()
        if stored.batch_id > NO_BATCH or stored.orders or stored.rejected:
            print(format_batch(max(stored.batch_id, 0), stored.totals), flush=True)
            show_on(self.dashboard, stored)
            self.shown_at_start = True


def batch_counts(rows: list[Row]) -> BatchCounts:
    """The rows of batch_totals, collected, as what the batch adds to the totals."""
    return BatchCounts(
        {row[PRODUCT_COLUMN]: row[TOTAL_SALES_COLUMN] for row in rows if row[KIND] == PRODUCT_KIND},
        sum(row[RECORDS] for row in rows if row[KIND] == ORDERS_KIND),
        {row[PRODUCT_COLUMN]: row[RECORDS] for row in rows if row[KIND] == REJECTED_KIND},
    )


def show_on(dashboard: DashboardState | None, stored: StoredTotals) -> None:
    if dashboard:
        dashboard.show_totals(stored.batch_id, stored.totals, stored.orders, stored.rejected_total, stored.committed_at)


def create_session(local_checkpoint: bool = False) -> SparkSession:
    """The session with this project's defaults where spark-submit's --conf did not set them;
    `local_checkpoint`: the query's checkpoint is on the local file system."""
    spark = (
        SparkSession.builder.appName("ventas-events-totals")
        .config("spark.ui.showConsoleProgress", "false")  # the table is what the console shows
        # Source options carrying credentials (JAAS password, client key) never show in plans or the UI.
        .config("spark.sql.redaction.options.regex", REDACTED_SPARK_OPTIONS)
        .config("spark.sql.redaction.string.regex", REDACTED_SPARK_STRINGS)
        .getOrCreate()
    )
    spark.sparkContext.setLogLevel(env("SPARK_LOG_LEVEL", "ERROR"))
    submitted = spark.sparkContext.getConf()
    defaults = (
        {**SQL_DEFAULTS, CHECKPOINT_FILE_MANAGER: local_checkpoint_file_manager(spark)}
        if local_checkpoint
        else SQL_DEFAULTS
    )
    for key, value in defaults.items():
        if not submitted.contains(key):
            spark.conf.set(key, value)
    return spark


# A local checkpoint written through Hadoop's FileSystem API rather than FileContext, which without
# Hadoop's native library (pip's pyspark has none) forks chmod and readlink for each file: measured,
# about 190 ms of a micro-batch's offset and commit log writes on 2 cores, down to about 60. A local
# rename is atomic either way; FileSystem checks for an existing file before renaming rather than in
# the rename, and claim_checkpoint's lock keeps a second writer out.
CHECKPOINT_FILE_MANAGER = "spark.sql.streaming.checkpointFileManagerClass"
FILE_SYSTEM_CHECKPOINT_MANAGERS = (  # Spark 4.1 moved it into a package of its own
    "org.apache.spark.sql.execution.streaming.checkpointing.FileSystemBasedCheckpointFileManager",
    "org.apache.spark.sql.execution.streaming.FileSystemBasedCheckpointFileManager",
)


def local_checkpoint_file_manager(spark: SparkSession) -> str:
    """The FileSystem-based checkpoint file manager's class in this Spark version."""
    for name in FILE_SYSTEM_CHECKPOINT_MANAGERS:
        try:
            spark.sparkContext._jvm.java.lang.Class.forName(name)
        except Py4JError:
            continue
        return name
    raise RuntimeError(f"none of {FILE_SYSTEM_CHECKPOINT_MANAGERS} in this Spark")


def kafka_stream(spark: SparkSession, args: argparse.Namespace, starting_offsets: str) -> DataFrame:
    reader = (
        spark.readStream.format("kafka")
        .option("kafka.bootstrap.servers", args.bootstrap_servers)
        .option("subscribe", args.topic)
        .option("startingOffsets", starting_offsets)
        .option("failOnDataLoss", str(args.fail_on_data_loss).lower())
        .options(**args.security.spark_options())
    )
    if args.max_offsets_per_trigger:
        reader = reader.option("maxOffsetsPerTrigger", args.max_offsets_per_trigger)
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


def query_writer(
    spark: SparkSession, args: argparse.Namespace, sink: TotalsSink, starting_offsets: str
) -> DataStreamWriter:
    """The one query: each micro-batch of Kafka records handed to the sink, which parses them once;
    ready to start (and to start again, see SPARK_55271)."""
    # Not parsed here: foreachBatch hands the sink its batch as an RDD of this plan's rows, so a parse
    # before it runs apart from the aggregation (measured: 1.5 times the batch time).
    records = kafka_stream(spark, args, starting_offsets)
    trigger = {"availableNow": True} if args.available_now else {"processingTime": args.trigger_interval}
    return (
        records.writeStream.foreachBatch(sink)
        .option("checkpointLocation", f"{args.checkpoint_location}/{QUERY}")
        .queryName(QUERY)
        .trigger(**trigger)
    )


# Spark 4.1.1's Kafka source fails the first batch of a restarted query when that batch was planned
# (offsets/N written) but not committed before the stop: it reports the source's progress before it
# ever read the latest offsets (SPARK-55271, fixed after 4.1.1). The batch itself has run and been
# committed by then, so the query is simply started again.
SPARK_55271 = 'Cannot invoke "scala.collection.IterableOps.map(scala.Function1)" because the return value of'
SPARK_55271_RESTARTS = 3  # per query: one is enough (the next first batch is planned afresh)


DATA_LOSS_HELP = (
    "data may have been lost: offsets not processed yet were deleted from Kafka (retention, or a deleted "
    "topic); rerun with --fail-on-data-loss false to go on without them, or delete the checkpoint to recount "
    "what is left"
)


def failure_message(error_text: str, checkpoint_location: str) -> str:
    """One line for a failed query: what a user can act on, not Spark's nested stack traces."""
    if "Some data may have been lost" in error_text:
        return f"the streaming query failed: {DATA_LOSS_HELP}"
    causes = re.findall(r"Caused by: ([^\n]+)", error_text)
    cause = (causes[-1] if causes else " ".join(error_text.strip().splitlines()[:2]))[:500]
    location = str(_local_path(checkpoint_location) or checkpoint_location)
    if location in cause:  # a file of the checkpoint is missing or unreadable
        return str(checkpoint.damaged(location, cause))
    return f"the streaming query failed: {cause}"


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


class JvmSignalForwarder:
    """A `sun.misc.SignalHandler` implemented here through py4j: the JVM's SIGTERM becomes a stop
    request to this driver, where the JVM's own handler would exit at once under the running queries."""

    class Java:
        implements = ("sun.misc.SignalHandler",)

    def __init__(self, stop: StopRequest) -> None:
        self.stop = stop

    def handle(self, sig) -> None:
        self.stop.receive("spark-submit's JVM")


@contextlib.contextmanager
def stop_signals_left_to_the_driver(spark: SparkSession, stop: StopRequest) -> Iterator[None]:
    """While the queries run, spark-submit's JVM leaves stopping to this driver. It ignores SIGINT and
    SIGHUP, which a terminal sends to the whole job, this driver included; the processes the JVM
    starts (Hadoop runs `chmod` for every checkpoint file) inherit that, so a Ctrl-C cannot fail a
    batch by killing one. It hands SIGTERM, which a supervisor (`docker stop`, `kill PID`) may send
    to the JVM alone, over to this driver."""
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


def _last_batch_id(query: StreamingQuery) -> int:
    progress = query.lastProgress
    return progress["batchId"] if progress else -1


def stop_query(spark: SparkSession, query: StreamingQuery) -> None:
    """query.stop(): Spark cancels the query's jobs, interrupts its thread and waits for the thread at
    most spark.sql.streaming.stopTimeout; past that, one line, and the consumer goes on to end (a batch
    still commits with its state, or not at all). Spark cancels the jobs once, before the interrupt,
    and a job the thread starts after that runs to its end if the interrupt does not reach it: a batch
    whose foreachBatch function started its collect just after a stop at once ran for 100 s and was
    committed (loop iteration 3 of #13). So the query's jobs are cancelled again until its thread ends."""

    def stop_and_wait() -> None:
        try:
            query.stop()
        except Py4JJavaError as error:
            timeout = spark.conf.get(STOP_TIMEOUT)
            waited = f"{int(timeout) / 1000:g} s" if timeout.isdigit() else timeout
            say(f"consumer: query {query.name} did not stop in {waited}: {error.java_exception}")

    job_group = str(query.runId)  # the query's thread runs its batches' jobs in this group
    stopping = threading.Thread(target=stop_and_wait, name=f"stop query {query.name}")
    stopping.start()
    while stopping.is_alive():
        spark.sparkContext.cancelJobGroup(job_group)
        stopping.join(JOBS_CANCELLED_EVERY_S)


def stop_queries(spark: SparkSession, queries: list[StreamingQuery], stop: StopRequest) -> None:
    """Stop each query between two micro-batches: the batch in progress finishes, unless a second
    stop signal or the grace period abandons it, and Spark runs it again on the next start. Either
    way Spark records a batch as committed only once its foreachBatch function has returned."""
    started = time.monotonic()
    noticed = False
    for query in queries:
        finished = _last_batch_id(query)
        while (
            query.isActive
            and query.status["isTriggerActive"]
            and _last_batch_id(query) == finished
            and time.monotonic() - started < STOP_GRACE_S
            and not stop.immediate.wait(0.1)
        ):
            if not noticed and time.monotonic() - started >= STOP_NOTICE_AFTER_S:
                say(
                    f"consumer: stopping: waiting for batch {finished + 1} of query {query.name} to finish "
                    f"(at most {STOP_GRACE_S:.0f} s; Ctrl-C again to stop at once)"
                )
                noticed = True
        # Tasks cut short (a batch just started, or abandoned) make Spark log errors of its own; what
        # matters is the query's outcome, which run() reports.
        spark.sparkContext.setLogLevel("OFF")
        stop_query(spark, query)
    # stop() cancels the batch's job, but its tasks end in their own time; stopping the SparkContext
    # under a running task makes Spark's scheduler log a stack trace.
    tracker = spark.sparkContext.statusTracker()
    stopped = time.monotonic()
    while tracker.getActiveStageIds() and time.monotonic() - stopped < TASKS_END_S:
        time.sleep(0.05)


def let_go(failed: StreamingQuery) -> None:
    """Wait until Spark has let a failed query go. It sets the query's error before its thread stops
    the sources and removes the query from the session's active ones: awaitTermination(timeout) can
    raise in between, and a query started again then under the same name is refused ("a query with
    that name is already active"; loop iteration 9 of #13 saw it). awaitTermination() without a
    timeout returns once the thread is done."""
    with contextlib.suppress(StreamingQueryException):
        failed.awaitTermination()


def run_queries(
    writers: list[DataStreamWriter], stop: StopRequest, started: Callable[[StreamingQuery], None]
) -> list[StreamingQuery]:
    """Start the queries, `started` called with each, and wait until they end (--available-now), one
    fails, or a stop is requested."""
    queries = []
    for writer in writers:
        queries.append(writer.start())
        started(queries[-1])
    restarts = [0] * len(queries)
    while not stop.requested.is_set() and any(q.isActive for q in queries):
        for i, query in enumerate(queries):
            try:
                query.awaitTermination(0.5)  # raises StreamingQueryException if the query failed
            except StreamingQueryException as error:
                # A stop signal to the whole process group can kill a process the JVM had started
                # for the batch (Hadoop's chmod): that batch failed, uncommitted; see run().
                if stop.requested.is_set():
                    continue
                if SPARK_55271 not in str(error) or restarts[i] == SPARK_55271_RESTARTS:
                    raise
                log.info("query %s: started again after Spark's SPARK-55271", query.name)
                restarts[i] += 1
                let_go(query)
                queries[i] = writers[i].start()
                started(queries[i])
    return queries


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


# Earlier versions of this consumer kept the totals in Spark's state store, in the checkpoint of a
# complete-mode query of this name.
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
    spark.streams.active  # noqa: B018 -- the state reader needs the state store coordinator this creates
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
    local = _local_path(rejected_path) if rejected_path else None
    if local is None or not local.is_dir():
        return
    for directory in local.glob("batch_id=*"):
        (local / "before-upgrade").mkdir(exist_ok=True)
        directory.rename(local / "before-upgrade" / directory.name)


def is_behind(logs: CheckpointLogs, args: argparse.Namespace, start: Mapping[int, int] | None) -> bool:
    """Whether the query's committed offsets have not reached the topic's latest offsets at start.
    `start`: where the query started, when known (None: a query that never committed a batch, started
    from other than the earliest offsets, may rightly have found nothing to read)."""
    committed = logs.committed_offsets(QUERY, args.topic) or start
    if committed is None:
        return False
    return any(committed.get(partition, 0) < end for partition, end in args.latest_offsets.items())


AVAILABLE_NOW_RUNS = 3  # one is enough on Spark 3.5; on 4.1.1 a second run has always sufficed


def read_on(
    logs: CheckpointLogs,
    args: argparse.Namespace,
    writer: DataStreamWriter,
    start: Mapping[int, int] | None,
    stop: StopRequest,
    started: Callable[[StreamingQuery], None],
) -> list[StreamingQuery]:
    """--available-now: run the query again while it has ended before the offsets the topic had at
    start. Spark 4.1.1's AvailableNow trigger can end early: after a batch a stop left planned but
    not committed, it runs that batch alone; and now and then it ends with nothing read at all."""
    queries: list[StreamingQuery] = []
    for _ in range(AVAILABLE_NOW_RUNS - 1):
        if not is_behind(logs, args, start) or stop.requested.is_set():
            return queries
        log.info("query %s ended before the topic's latest offsets at start; running it again", QUERY)
        queries = run_queries([writer], stop, started)
    if is_behind(logs, args, start):
        raise UserError(
            f"--available-now: query {QUERY} ended {AVAILABLE_NOW_RUNS} times before the latest offsets the "
            f"topic had at start ({args.latest_offsets}); run it again"
        )
    return queries


def run(args: argparse.Namespace, stop: StopRequest, dashboard: DashboardState | None, db: TotalsDb) -> None:
    """Run the query until it ends (--available-now), fails, or a stop signal arrives; keep the
    dashboard, if it is served, up to date."""
    spark = create_session(local_checkpoint=_local_path(args.checkpoint_location) is not None)
    stop.install()  # again: SparkContext installs a SIGINT handler of its own
    sink = TotalsSink(db, args.rejected_path, dashboard, stop)
    try:
        with stop_signals_left_to_the_driver(spark, stop):
            if dashboard or log.isEnabledFor(logging.INFO):
                spark.streams.addListener(ProgressListener(dashboard))
            logs = CheckpointLogs(spark, args.checkpoint_location)
            committed = logs.last_batch(QUERY, "commits")
            stored = db.check(logs.query_id(QUERY), args.checkpoint_location, committed)
            legacy = legacy_totals(spark, logs, args.topic) if stored.checkpoint_id is None else None
            if legacy:
                set_aside_legacy_quarantine(args.rejected_path)
            writer = query_writer(
                spark, args, sink, legacy.starting_offsets(args.topic) if legacy else args.starting_offsets
            )

            def started(query: StreamingQuery) -> None:
                try:
                    sink.claim(query, args.checkpoint_location, legacy)
                except UserError:
                    sink.refused.set()
                    spark.sparkContext.setLogLevel("OFF")
                    stop_query(spark, query)
                    raise

            queries = run_queries([writer], stop, started)
            if args.available_now and args.latest_offsets is not None:
                start = legacy.offsets if legacy else {} if args.starting_offsets == "earliest" else None
                queries = read_on(logs, args, writer, start, stop, started) or queries
            if not stop.requested.is_set():
                if args.available_now and sink.last_batch is None and not sink.shown_at_start:
                    print(format_batch(0, {}), flush=True)
                return
            stop_queries(spark, queries, stop)
        # A batch that the stop cut short failed, as Spark saw it, so it was not committed and runs again
        # on the next start; Spark does not recognise every such failure as its own interruption (nor
        # a signal to the whole process group that killed a process the JVM had started for it).
        for query in queries:
            if query.exception():
                log.info("query %s ended while stopping: %s", query.name, str(query.exception()).splitlines()[0])
        say(
            "consumer: stopped"
            + ("" if sink.last_batch is None else f" after batch {sink.last_batch}")
            + ("" if not stop.immediate.is_set() else " (at once)")
        )
    except StreamingQueryException as error:
        # A query still active is stopped first, quietly: cut short by spark.stop(), its batch would log
        # Spark's errors and stack traces under the one line that says what failed.
        spark.sparkContext.setLogLevel("OFF")
        for query in spark.streams.active:
            stop_query(spark, query)
        raise UserError(sink.failure or failure_message(str(error), args.checkpoint_location)) from None
    finally:
        spark.stop()


def claim_checkpoint(location: str) -> None:
    """Lock a local checkpoint for this process and check that it can be resumed (remote storage:
    the user keeps to one consumer per checkpoint, see docs/operations.md)."""
    local = _local_path(location)
    if local is not None:
        checkpoint.lock(local)  # released when this process exits, however it exits
        checkpoint.check(local)


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
        resolve_paths(args)
        claim_checkpoint(args.checkpoint_location)
        args.security = load_security(args.client_properties)
        args.latest_offsets = check_topic(args.bootstrap_servers, args.topic, args.connect_timeout, args.security)
        db = TotalsDb.open(args.totals_db)
        try:
            if stop.requested.is_set():
                say("consumer: stopped before the query started")
                return
            dashboard = DashboardState(args.topic)
            if (stored := db.read()).checkpoint_id:
                show_on(dashboard, stored)
            with serving(dashboard, args.dashboard_host, args.dashboard_port) as address:
                run(args, stop, dashboard if address else None, db)
        finally:
            db.close()
    except UserError as error:
        fail(parser.prog, error)
    except Py4JError:  # the JVM is gone: a stop signal reached it while its handlers were its own
        if not stop.requested.is_set():
            raise
        say("consumer: stopped")


if __name__ == "__main__":
    main()

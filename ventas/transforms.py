"""The pipeline's transformations, DataFrame -> DataFrame, apart from any I/O: Kafka records parsed
into orders or rejected records, and what a micro-batch adds to the totals.

Every record is parsed once. A record is rejected for the first of REJECT_RULES it breaks; a valid
order's product lines are exploded and `cantidad * price` summed per product, exactly (decimal), and,
with windows (ventas/sale_windows.py), per window of the order's `sale_date` too.
"""

from __future__ import annotations

import functools
from collections import defaultdict
from datetime import UTC, datetime
from decimal import Decimal

from pyspark.sql import Column, DataFrame, Row
from pyspark.sql import functions as F

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
    SALE_DATE_FORMAT,
    TOTAL_SALES_COLUMN,
    TOTALS_SCHEMA,
    consumer_read_schema,
)
from ventas.strict_json import a_name_is_not_a_json_string, a_price_is_a_json_string, not_a_json_string, not_utf8
from ventas.totals_db import BatchCounts, WindowCounts, add_money

ORDER = "order"
REJECT_REASON = "reject_reason"
INVALID_UTF8 = "not valid UTF-8"
# The rows of batch_totals: what each one counts (in which window of sale_date), how many records it
# counted, the newest Kafka timestamp and sale_date (Unix seconds) among them, and the late orders and
# the orders in the future.
KIND, RECORDS, NEWEST_RECORD = "kind", "records", "newest_record"
WINDOW_START, SALE_SECONDS, NEWEST_SALE, LATE_ORDERS = "window_start", "sale_seconds", "newest_sale", "late_orders"
FUTURE_ORDERS = "future_orders"
PRODUCT_KIND, ORDERS_KIND, REJECTED_KIND = "product", "orders", "rejected"
# Sale times in Unix seconds, as a decimal: the late threshold is compared with them without a cast.
SECONDS = "decimal(18,0)"
MAX_PRICE = Decimal(10) ** (MONEY.precision - MONEY.scale) - Decimal(1).scaleb(-MONEY.scale)
# What these transformations need of the session: Spark 3.5's default policy raises, rather than gives
# null, for a sale_date its pre-3.0 parser would have read (31/02/2025); 4.x defaults to this one.
SESSION_CONF = {"spark.sql.legacy.timeParserPolicy": "CORRECTED"}


def parse_orders(kafka_rows: DataFrame) -> DataFrame:
    """Kafka rows (binary `value`) -> the same rows plus `order` (the parsed struct) and
    `reject_reason`, null for a valid order and a short reason for anything else."""
    # The parse comes out of a generator (one row in, one row out): Spark's optimizer would otherwise
    # push a filter on the reason below it, copying the whole JSON parse into each of the reason's
    # conditions, once per condition a valid order passes.
    parsed = kafka_rows.select("*", F.inline(F.array(F.struct(_order().alias(ORDER)))))
    return parsed.withColumn(REJECT_REASON, _reject_reason())


def reject_reasons() -> list[str]:
    """Every reason a record can be rejected for, in the order they are checked."""
    return [reason for reason, _ in _reject_rules()]


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


def batch_totals(
    parsed: DataFrame, window_s: int = 0, late_before: int | None = None, future_after: int | None = None
) -> DataFrame:
    """Everything a micro-batch adds to the totals, in one aggregation over one parse: `kind`
    "product" rows hold each product's `Total Sales` (sum of cantidad * price, decimal(38,2)); the
    "orders" rows count valid orders in `records`; a "rejected" row per reason (in `Product`) counts
    the records rejected for it. Each row has the newest Kafka `timestamp` among its records.

    With `window_s` (seconds), product and orders rows are per `window_start` (Unix seconds) of the
    order's sale_date, null for an order without a usable one; orders rows also hold the newest sale_date
    and count the orders whose sale_date is before `late_before` (Unix seconds), the late ones. An order
    whose sale_date is after `future_after` (Unix seconds) is in the future: in no window (its rows'
    `window_start` is null) and counted in the orders rows' `future_orders`."""
    sale = F.col(SALE_SECONDS)
    in_future = sale > _seconds_literal(future_after)  # null, so false, without a threshold or a sale_date
    return (
        parsed.select(F.inline(_batch_entries(window_s)))
        .withColumn(WINDOW_START, F.when(in_future, None).otherwise(F.col(WINDOW_START)))
        .groupBy(KIND, PRODUCT_COLUMN, WINDOW_START)
        .agg(
            F.sum(TOTAL_SALES_COLUMN).alias(TOTAL_SALES_COLUMN),
            F.count(F.lit(1)).alias(RECORDS),
            F.max("timestamp").alias(NEWEST_RECORD),
            F.max(sale).alias(NEWEST_SALE),
            F.count(F.when(sale < _seconds_literal(late_before), 1)).alias(LATE_ORDERS),
            F.count(F.when(in_future, 1)).alias(FUTURE_ORDERS),
        )
    )


def _seconds_literal(seconds: int | None) -> Column:
    """A threshold of Unix seconds, as a decimal literal compared with a decimal column: Spark passes it to
    its generated code by reference. A long (or a cast Spark's optimizer unwraps into one) is written into
    the code, compiled anew for each batch's threshold (test_a_new_threshold_compiles_no_new_code)."""
    return F.lit(None if seconds is None else Decimal(seconds)).cast(SECONDS)


def sales_totals(parsed: DataFrame) -> DataFrame:
    """Valid orders -> `Product`, `Total Sales`: the product rows of batch_totals."""
    return batch_totals(parsed).where(F.col(KIND) == PRODUCT_KIND).select(PRODUCT_COLUMN, TOTAL_SALES_COLUMN)


def batch_counts(rows: list[Row], windows: bool = False) -> BatchCounts:
    """The rows of batch_totals, collected, as what the batch adds to the totals; `windows`: they were
    summed per window (an orders row without one counts undated orders and those in the future)."""
    # Spark gives a timestamp as a naive datetime in this process's time zone; rows read from an earlier
    # version's state have none.
    fields = [row.asDict() for row in rows]
    newest = [row.get(NEWEST_RECORD) for row in fields]
    newest_record_at = max((when.astimezone(UTC) for when in newest if when is not None), default=None)
    totals: dict[str, Decimal] = {}
    by_window: dict[datetime, WindowCounts] = defaultdict(WindowCounts)
    orders = undated = future = 0
    sale_seconds = []
    for row in fields:
        start = row.get(WINDOW_START)
        window = None if start is None else datetime.fromtimestamp(start, UTC)
        if row[KIND] == PRODUCT_KIND:
            sales = {row[PRODUCT_COLUMN]: row[TOTAL_SALES_COLUMN]}
            totals = add_money(totals, sales)
            if window:
                by_window[window] = by_window[window].plus(WindowCounts(totals=sales))
        elif row[KIND] == ORDERS_KIND:
            orders += row[RECORDS]
            if window:
                by_window[window] = by_window[window].plus(WindowCounts(row[RECORDS], row[LATE_ORDERS]))
                sale_seconds.append(int(row[NEWEST_SALE]))
            elif windows:
                in_future = row.get(FUTURE_ORDERS) or 0  # none in rows of an earlier version's state
                future += in_future
                undated += row[RECORDS] - in_future
    return BatchCounts(
        totals,
        orders,
        {row[PRODUCT_COLUMN]: row[RECORDS] for row in fields if row[KIND] == REJECTED_KIND},
        newest_record_at,
        dict(by_window),
        undated,
        datetime.fromtimestamp(max(sale_seconds), UTC) if sale_seconds else None,
        future,
    )


# The columns below are built once: the sink parses every micro-batch, and building these expressions
# call by call through py4j took longer than Spark's planning of them.


@functools.cache
def _order() -> Column:
    text = F.col("value").cast("string")
    return F.from_json(text, consumer_read_schema(), {"columnNameOfCorruptRecord": CORRUPT_RECORD})


@functools.cache
def _reject_rules() -> tuple[tuple[str, Column], ...]:
    """Each reason with the condition that rejects a record for it; the first that holds names it."""
    value, order = F.col("value"), F.col(ORDER)
    text = value.cast("string")
    return (
        ("tombstone (null value)", value.isNull()),
        (INVALID_UTF8, not_utf8(value, text)),
        ("not a JSON object of the order schema", order.isNull() | order[CORRUPT_RECORD].isNotNull()),
        ("missing order_id", F.coalesce(F.length(F.trim(order[ORDER_ID])), F.lit(0)) == 0),
        ("order_id is not a JSON string", not_a_json_string(text, order, ORDER_ID)),
        ("customer_document is not a JSON string", not_a_json_string(text, order, CUSTOMER_DOCUMENT)),
        ("sale_date is not a JSON string", not_a_json_string(text, order, SALE_DATE)),
        ("missing products array", order[PRODUCTS].isNull()),
        ("invalid product line", F.exists(order[PRODUCTS], _is_bad_line)),
        ("product name is not a JSON string", a_name_is_not_a_json_string(text, order)),
        ("price is not a JSON number", a_price_is_a_json_string(text)),
    )


@functools.cache
def _reject_reason() -> Column:
    (first_reason, first_condition), *rules = _reject_rules()
    reason = F.when(first_condition, first_reason)
    for name, condition in rules:
        reason = reason.when(condition, name)
    return reason


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


@functools.cache
def _batch_entries(window_s: int) -> Column:
    """What a parsed record adds, as an array of (kind, product, amount, timestamp, window start, sale
    seconds); window start and sale seconds only with windows (`window_s` > 0)."""
    total = TOTALS_SCHEMA[TOTAL_SALES_COLUMN].dataType
    no_amount = F.lit(None).cast(total)
    no_seconds, no_sale_seconds = F.lit(None).cast("long"), F.lit(None).cast(SECONDS)
    if window_s:
        # Strictly the seed's format, in the session's time zone (--sale-date-zone); null if unusable.
        seconds = F.unix_seconds(F.try_to_timestamp(F.col(ORDER)[SALE_DATE], F.lit(SALE_DATE_FORMAT)))
        window, sale_seconds = seconds - F.pmod(seconds, F.lit(window_s)), seconds.cast(SECONDS)
    else:
        window, sale_seconds = no_seconds, no_sale_seconds

    def entry(
        kind: str, key: Column, amount: Column, start: Column = no_seconds, seconds: Column = no_sale_seconds
    ) -> Column:
        return F.struct(
            F.lit(kind).alias(KIND),
            key.alias(PRODUCT_COLUMN),
            amount.alias(TOTAL_SALES_COLUMN),
            F.col("timestamp").alias("timestamp"),
            start.alias(WINDOW_START),
            seconds.alias(SALE_SECONDS),
        )

    def line_entry(line: Column) -> Column:
        quantity = F.coalesce(line[CANTIDAD], line[QUANTITY])
        amount = (quantity * line[PRICE].cast(MONEY)).cast(total)
        return entry(PRODUCT_KIND, line[NAME], amount, window, sale_seconds)  # sale seconds: is it in the future

    valid_order = F.concat(
        F.transform(F.col(ORDER)[PRODUCTS], line_entry),
        F.array(entry(ORDERS_KIND, F.lit(None).cast("string"), no_amount, window, sale_seconds)),
    )
    rejected = F.array(entry(REJECTED_KIND, F.col(REJECT_REASON), no_amount))
    return F.when(F.col(REJECT_REASON).isNull(), valid_order).otherwise(rejected)

"""The consumer's parse/validate/aggregate, on static DataFrames (no Kafka, no streaming)."""

from __future__ import annotations

from collections import Counter
from decimal import Decimal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pyspark.testing.utils import assertDataFrameEqual

from schemas import TOTALS_SCHEMA
from tests.helpers import SEED_SAMPLE, exact_json
from tests.reject_examples import REJECT_EXAMPLES, order
from ventas.table import format_table
from ventas.transforms import MAX_PRICE, batch_totals, parse_orders, reject_reasons, rejected_records, sales_totals


def kafka_rows(spark, values: list[bytes | None]):
    rows = [("ventas-events", 0, offset, b"k", value) for offset, value in enumerate(values)]
    return spark.createDataFrame(rows, "topic string, partition int, offset long, key binary, value binary").selectExpr(
        "*", "current_timestamp() as timestamp"
    )


def totals(spark, values: list[bytes | None]) -> dict[str, Decimal]:
    return {r["Product"]: r["Total Sales"] for r in sales_totals(parse_orders(kafka_rows(spark, values))).collect()}


def test_the_seed_sample_gives_the_seed_totals(spark) -> None:
    result = sales_totals(parse_orders(kafka_rows(spark, [SEED_SAMPLE])))
    expected = spark.createDataFrame([("Smartwatch", Decimal("4203")), ("Laptop", Decimal("2000"))], TOTALS_SCHEMA)
    assertDataFrameEqual(result, expected)


def test_cents_add_up_exactly(spark) -> None:
    values = [order({"name": "Charger", "cantidad": 1, "price": Decimal("0.10")}) for _ in range(3)]
    assert totals(spark, values) == {"Charger": Decimal("0.30")}


def test_the_original_producers_quantity_field_counts_too(spark) -> None:
    values = [
        order({"name": "Laptop", "quantity": 2, "price": 2000}),
        order({"name": "Laptop", "cantidad": 1, "quantity": 1, "price": 2000}),
    ]
    assert totals(spark, values) == {"Laptop": Decimal("6000")}


def test_an_order_with_no_products_is_valid_and_adds_nothing(spark) -> None:
    assert totals(spark, [order()]) == {}
    assert rejected_records(parse_orders(kafka_rows(spark, [order()]))).count() == 0


def test_every_kind_of_garbage_is_rejected_whole_with_its_reason(spark) -> None:
    valid = order({"name": "Laptop", "cantidad": 1, "price": 2000}, {"name": "Mouse", "cantidad": 2, "price": 10})
    # A bad line spoils its whole order: the good line beside it is not counted either.
    spoiled = order({"name": "Laptop", "cantidad": 1, "price": 2000}, {"name": "Mouse", "cantidad": 0, "price": 10})
    garbage = {**REJECT_EXAMPLES, spoiled: "invalid product line"}
    parsed = parse_orders(kafka_rows(spark, [valid, *garbage, valid]))

    assert {r["Product"]: r["Total Sales"] for r in sales_totals(parsed).collect()} == {
        "Laptop": Decimal("4000"),
        "Mouse": Decimal("40"),
    }
    rejected = rejected_records(parsed).collect()
    assert len(rejected) == len(garbage)
    by_offset = {r["offset"]: r for r in rejected}
    for offset, (value, reason) in enumerate(garbage.items(), start=1):
        assert by_offset[offset]["reason"] == reason, value
        if value is not None and reason != "not valid UTF-8":
            assert by_offset[offset]["value"] == value.decode()
    invalid_utf8 = next(r for r in rejected if r["reason"] == "not valid UTF-8")
    assert invalid_utf8["value"] is None and invalid_utf8["value_base64"]


def test_the_examples_show_every_reject_reason(spark) -> None:
    """The examples that docs/consumer.md shows cover every rule parse_orders checks, and no other."""
    assert set(REJECT_EXAMPLES.values()) == set(reject_reasons())


def test_the_totals_aggregation_also_counts_valid_orders_and_rejects_by_reason(spark) -> None:
    valid = order({"name": "Laptop", "cantidad": 1, "price": 2000})
    no_products = order()
    values = [valid, *REJECT_EXAMPLES, no_products, valid]
    rows = batch_totals(parse_orders(kafka_rows(spark, values))).collect()

    counted = {(r["kind"], r["Product"]): r["records"] for r in rows if r["kind"] != "product"}
    assert counted == {
        ("orders", None): 3,
        **{("rejected", reason): n for reason, n in Counter(REJECT_EXAMPLES.values()).items()},
    }
    assert [(r["Product"], r["Total Sales"], r["records"]) for r in rows if r["kind"] == "product"] == [
        ("Laptop", Decimal("4000.00"), 2)
    ]


# The largest valid line: the most an int quantity and a price of decimal(18,2) allow. A total of many
# such lines is past any single one, and past the decimal(29,2) of a line's amount.
LARGEST_LINE = {"name": "Yacht", "cantidad": 2**31 - 1, "price": MAX_PRICE}
LARGEST_TOTAL = (2**31 - 1) * MAX_PRICE


@pytest.fixture
def ansi_sql(spark):
    """ANSI SQL mode, as Spark 4 runs by default (Spark 3.5 does not): an overflowing cast or sum fails
    the query instead of giving null."""
    before = spark.conf.get("spark.sql.ansi.enabled")
    spark.conf.set("spark.sql.ansi.enabled", "true")
    yield spark
    spark.conf.set("spark.sql.ansi.enabled", before)


def test_no_bad_record_fails_the_query_in_ansi_mode(ansi_sql) -> None:
    """Overflowing numbers, huge decimals and strings in number fields are rejected, not errors."""
    overflowing = {
        order({"name": "Yacht", "cantidad": 2**31, "price": 1}): "not a JSON object of the order schema",
        order({"name": "Yacht", "cantidad": -(2**63) - 1, "price": 1}): "not a JSON object of the order schema",
        order({"name": "Yacht", "cantidad": 1, "price": Decimal("1e38")}): "not a JSON object of the order schema",
        order({"name": "Yacht", "cantidad": 1, "price": MAX_PRICE + Decimal("0.01")}): "invalid product line",
        order({"name": "Yacht", "cantidad": 1, "price": Decimal("0.001")}): "invalid product line",
        order({"name": "Yacht", "cantidad": "1", "price": 1}): "not a JSON object of the order schema",
        order({"name": "Yacht", "cantidad": 1, "price": "1"}): "price is not a JSON number",
        order({"name": "Yacht", "cantidad": 1, "price": "1.50"}): "price is not a JSON number",
        order({"name": "Yacht", "cantidad": 1, "price": "NaN"}): "not a JSON object of the order schema",
    }
    values = [*REJECT_EXAMPLES, *overflowing, order(LARGEST_LINE)]
    parsed = parse_orders(kafka_rows(ansi_sql, values))

    assert {r["Product"]: r["Total Sales"] for r in sales_totals(parsed).collect()} == {"Yacht": LARGEST_TOTAL}
    reasons = {r["offset"]: r["reason"] for r in rejected_records(parsed).collect()}
    assert [reasons[offset] for offset in range(len(REJECT_EXAMPLES), len(values) - 1)] == list(overflowing.values())


def test_sums_grow_past_any_single_record_exactly_in_ansi_mode(ansi_sql) -> None:
    summed = totals(ansi_sql, [order(LARGEST_LINE, LARGEST_LINE, order_id=str(i)) for i in range(500)])
    assert summed == {"Yacht": 1000 * LARGEST_TOTAL}
    assert Decimal(10) ** 27 < summed["Yacht"]  # more than a line's decimal(29,2) amount can hold


@pytest.mark.parametrize("query", [batch_totals, rejected_records])
def test_each_value_is_parsed_once(spark, query) -> None:
    """Not once more for each check of the reject reason (a filter pushed below the parse copies it)."""
    plan = query(parse_orders(kafka_rows(spark, [SEED_SAMPLE])))._jdf.queryExecution().optimizedPlan().toString()
    assert len([node for node in plan.splitlines() if "from_json(StructField(order_id" in node]) == 1


def test_strings_that_look_like_json_are_names_like_any_other(spark) -> None:
    names = ["true", "100.0", "1e5", "-3", "[1]", "{}", '"quoted"', "NaN", "4K Monitor"]
    values = [
        exact_json(
            {
                "order_id": name,
                "customer_document": name,
                "products": [{"name": name, "cantidad": 1, "price": 1}],
                "sale_date": name,
            }
        ).encode()
        for name in names
    ]
    assert totals(spark, values) == dict.fromkeys(names, Decimal(1))


def test_the_table_shows_every_row_untruncated_highest_first() -> None:
    long_name = "Cafetera Espresso Automática con Molinillo Integrado y Espumador de Leche"
    table = format_table({"B": Decimal("10.00"), "A": Decimal("10.00"), long_name: Decimal("99.50")})
    assert table.splitlines() == [
        f"+{'-' * len(long_name)}+-----------+",
        f"|{'Product'.ljust(len(long_name))}|Total Sales|",
        f"+{'-' * len(long_name)}+-----------+",
        f"|{long_name}|99.50      |",
        f"|{'A'.ljust(len(long_name))}|10.00      |",
        f"|{'B'.ljust(len(long_name))}|10.00      |",
        f"+{'-' * len(long_name)}+-----------+",
    ]


money = st.decimals(min_value=0, max_value=Decimal("99999999.99"), places=2)
# Strings, some of which look like JSON, and values of every other JSON type, which the reader would
# turn into text: only strings make a valid name, order_id, customer_document or sale_date.
strings = st.one_of(
    st.text(min_size=1, max_size=12).filter(lambda s: s.strip()),
    st.sampled_from(["true", "false", "100.0", "1e5", "-3", "[1, 2]", "{}", '"x"', "NaN", "4K Monitor"]),
)
not_strings = st.one_of(
    st.booleans(),
    st.integers(min_value=-(10**20), max_value=10**20),
    st.floats(allow_nan=False, allow_infinity=False),
    st.lists(st.integers(), max_size=2),
    st.dictionaries(st.sampled_from(["a", "name"]), st.integers(), max_size=2),
)
line_items = st.fixed_dictionaries(
    {
        "name": st.one_of(strings, strings, not_strings),
        "cantidad": st.integers(min_value=1, max_value=10**6),
        "price": money,
    }
)
optional = st.one_of(st.none(), strings, not_strings)
generated_orders = st.fixed_dictionaries(
    {"order_id": st.one_of(strings, strings, not_strings), "products": st.lists(line_items, max_size=5)},
    optional={"customer_document": optional, "sale_date": optional},
)


def is_valid(order: dict) -> bool:
    """The rule of docs/consumer.md for the fields generated here."""
    return (
        isinstance(order["order_id"], str)
        and all(isinstance(order.get(field), str | None) for field in ("customer_document", "sale_date"))
        and all(isinstance(line["name"], str) for line in order["products"])
    )


@pytest.mark.filterwarnings("ignore")
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(generated_orders, max_size=30))
def test_totals_and_rejections_equal_a_plain_python_computation(spark, generated: list[dict]) -> None:
    expected: dict[str, Decimal] = {}
    for order_ in filter(is_valid, generated):
        for line in order_["products"]:
            expected[line["name"]] = expected.get(line["name"], Decimal(0)) + line["cantidad"] * line["price"]
    parsed = parse_orders(kafka_rows(spark, [exact_json(order_).encode() for order_ in generated]))
    assert {r["Product"]: r["Total Sales"] for r in sales_totals(parsed).collect()} == expected
    rejected = {r["offset"] for r in rejected_records(parsed).collect()}
    assert rejected == {offset for offset, order_ in enumerate(generated) if not is_valid(order_)}

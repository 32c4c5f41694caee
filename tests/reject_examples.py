"""Example records and the reason each is rejected for: the validation rules in one table, which
tests/test_transform.py runs through parse_orders and docs/consumer.md shows (tests/test_docs.py checks
that it shows this table, as `python -m tests.reject_examples` prints it)."""

from __future__ import annotations

from tests.helpers import exact_json


def order(*lines: dict, order_id: str = "o-1", sale_date: str | None = "12/05/2025 15:33:35") -> bytes:
    """An order of these product lines; without a sale_date field when it is None."""
    fields = {"order_id": order_id, "customer_document": "431-61-5633", "products": list(lines)}
    return exact_json(fields if sale_date is None else {**fields, "sale_date": sale_date}).encode()


def short_order(*lines: dict, order_id: str = "o-1") -> bytes:
    """An order with only the fields the totals read, so that the table stays readable."""
    return exact_json({"order_id": order_id, "products": list(lines)}).encode()


REJECT_EXAMPLES: dict[bytes | None, str] = {
    b"not json at all": "not a JSON object of the order schema",
    b'{"order_id": "x", "products": [': "not a JSON object of the order schema",
    b"[1, 2, 3]": "not a JSON object of the order schema",
    b'"a string"': "not a JSON object of the order schema",
    b"42": "not a JSON object of the order schema",
    b"null": "not a JSON object of the order schema",
    b"": "not a JSON object of the order schema",
    b'{"order_id": "x", "products": {"name": "Laptop"}}': "not a JSON object of the order schema",
    short_order({"name": "Laptop", "cantidad": "3", "price": 1}): "not a JSON object of the order schema",
    short_order({"name": "Laptop", "cantidad": 1.5, "price": 1}): "not a JSON object of the order schema",
    short_order({"name": "Laptop", "cantidad": 10**12, "price": 1}): "not a JSON object of the order schema",
    short_order({"name": "Laptop", "cantidad": 1, "price": 1}).replace(
        b'"price": 1', b'"price": 1e400'
    ): "not a JSON object of the order schema",
    "é".encode("latin-1").join(
        [b'{"order_id": "x", "products": [{"name": "Caf', b'", "cantidad": 1, "price": 1}]}']
    ): "not valid UTF-8",
    short_order({"name": "Laptop", "cantidad": 1, "price": 1}, order_id=""): "missing order_id",
    b'{"products": []}': "missing order_id",
    b'{"order_id": "x"}': "missing products array",
    b'{"order_id": "x", "products": null}': "missing products array",
    short_order({"name": "Laptop", "cantidad": 0, "price": 1}): "invalid product line",
    short_order({"name": "Laptop", "cantidad": -2, "price": 1}): "invalid product line",
    short_order({"name": "Laptop", "cantidad": 1, "price": -1}): "invalid product line",
    short_order({"name": "Laptop", "cantidad": 1, "price": None}): "invalid product line",
    short_order({"name": "Laptop", "cantidad": 1}): "invalid product line",
    short_order({"name": "", "cantidad": 1, "price": 1}): "invalid product line",
    short_order({"cantidad": 1, "price": 1}): "invalid product line",
    short_order({"name": "Laptop", "cantidad": 1, "quantity": 2, "price": 1}): "invalid product line",
    short_order({"name": "Laptop", "cantidad": 1, "price": 1}).replace(
        b'"price": 1', b'"price": 0.125'
    ): "invalid product line",
    short_order({"name": "Laptop", "cantidad": 1, "price": 1}).replace(
        b'"price": 1', b'"price": 12345678901234567.5'
    ): "invalid product line",
    None: "tombstone (null value)",
    # Spark's JSON reader would give these string fields the JSON text of the value
    **{
        exact_json({"order_id": value, "products": []}).encode(): "order_id is not a JSON string"
        for value in (True, 42, 100.0, [1], {"a": "b"})
    },
    **{
        short_order({"name": value, "cantidad": 1, "price": 1}): "product name is not a JSON string"
        for value in (True, False, 100.0, -7, 1e400, ["Laptop"], {"name": "Laptop"})
    },
    short_order({"name": "Mouse", "cantidad": 1, "price": 1}).replace(b'"Mouse"', b"NaN"): (
        "product name is not a JSON string"
    ),
    short_order({"name": "Laptop", "cantidad": 1, "price": 1}).replace(
        b'"name": "Laptop"', b'"name": "true", "name": true'
    ): "product name is not a JSON string",
    short_order({"name": "Laptop", "cantidad": 1, "price": "2000"}): "price is not a JSON number",
    short_order({"name": "Laptop", "cantidad": 1, "price": 2000}, {"name": "Mouse", "cantidad": 1, "price": "9.99"}): (
        "price is not a JSON number"
    ),
    b'{"order_id": "1", "order_id": 1, "products": []}': "order_id is not a JSON string",
    exact_json({"order_id": "o", "customer_document": 431615633, "products": []}).encode(): (
        "customer_document is not a JSON string"
    ),
    exact_json({"order_id": "o", "products": [], "sale_date": [12, 5, 2025]}).encode(): (
        "sale_date is not a JSON string"
    ),
}


def markdown_table(examples: dict[bytes | None, str] = REJECT_EXAMPLES) -> str:
    """The examples as a Markdown table: the Kafka value as text (bytes that are not UTF-8 as \\xNN),
    and its reason."""
    rows = ["| Kafka record value | reason |", "|---|---|"]
    for value, reason in examples.items():
        if value is None:
            shown = "(none: a tombstone)"
        elif not value:
            shown = "(empty)"
        else:
            text = value.decode("utf-8", "backslashreplace").replace("|", "\\|")
            shown = f"`{text}`"
        rows.append(f"| {shown} | {reason} |")
    return "\n".join(rows) + "\n"


if __name__ == "__main__":
    print(markdown_table(), end="")

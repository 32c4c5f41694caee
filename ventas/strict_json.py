"""Checks that hold the consumer to strict JSON where Spark's JSON reader is lenient.

Spark's reader gives a string field that holds a number, true/false, an array or an object the JSON
text of that value, and reads a decimal written as a string ("price": "1.5") as that number. These
column expressions look at the raw JSON text of the record to tell such values apart.
"""

from __future__ import annotations

from pyspark.sql import Column
from pyspark.sql import functions as F
from pyspark.sql.types import ArrayType, StringType

from schemas import NAME, PRICE, PRODUCTS

# The JSON text Spark gives a string field for any other JSON value has this shape, so a value
# without it was a JSON string; one with it (a string such as "true" or "4.5" too) is looked up again
# in the raw JSON, where only a string keeps its quotes.
LOOKS_LIKE_JSON = r'(?s)^(true|false|-?[0-9]+(\.[0-9]+)?([eE][-+]?[0-9]+)?|-?Infinity|NaN|[\[{"].*)$'
# Inside a JSON string a quote is escaped, so only a key "price" with a string value matches this.
A_PRICE_AS_STRING = rf'"{PRICE}"\s*:\s*"'


def _appears_once(json_object: Column, key: str) -> Column:
    return F.size(F.filter(F.json_object_keys(json_object), lambda k: k == key)) == 1


def _written_as_string(json_object: Column, key: str) -> Column:
    """True when `key` appears once in the JSON object, with a JSON string as its value.

    get_json_object keeps a string's quotes under a `[*]` wildcard, so the object is wrapped in an
    array; it takes the first of a repeated key where Spark's reader takes the last, hence once."""
    wrapped = F.concat(F.lit("["), F.get_json_object(json_object, "$"), F.lit("]"))
    quoted = F.get_json_object(wrapped, f"$[*].{key}").startswith('"')
    return F.coalesce(_appears_once(json_object, key) & quoted, F.lit(False))


def _raw_lines(text: Column) -> Column:
    """The JSON text of each product line."""
    return F.from_json(F.get_json_object(text, f"$.{PRODUCTS}"), ArrayType(StringType()))


def not_a_json_string(text: Column, order: Column, key: str) -> Column:
    """True when the order's field `key` was given, not as a JSON string."""
    value = order[key]
    return F.when(value.isNull() | ~value.rlike(LOOKS_LIKE_JSON), False).otherwise(~_written_as_string(text, key))


def a_name_is_not_a_json_string(text: Column, order: Column) -> Column:
    """True when a product's name was not a JSON string; the raw lines are read only when a name
    looks like JSON text."""
    suspect = F.exists(order[PRODUCTS], lambda line: line[NAME].rlike(LOOKS_LIKE_JSON))
    names_are_strings = _appears_once(text, PRODUCTS) & F.forall(
        _raw_lines(text), lambda line: _written_as_string(line, NAME)
    )
    return F.when(suspect, ~F.coalesce(names_are_strings, F.lit(False))).otherwise(False)


def a_price_is_a_json_string(text: Column) -> Column:
    """True when a product's price was written as a JSON string; the raw lines are read only when the
    text has a "price" key with a string value."""
    quoted = F.exists(_raw_lines(text), lambda line: _written_as_string(line, PRICE))
    return F.when(text.rlike(A_PRICE_AS_STRING), F.coalesce(quoted, F.lit(False))).otherwise(False)


def not_utf8(value: Column, text: Column) -> Column:
    """True when the bytes are not valid UTF-8 (Spark's cast to string keeps them as they are). Spark 4
    checks them in place; Spark 3.5 encodes the text again and compares, a copy of every value."""
    if hasattr(F, "is_valid_utf8"):
        return ~F.is_valid_utf8(text)
    return F.encode(text, "UTF-8") != value

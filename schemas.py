"""The one definition of a `ventas-events` message, used by the consumer and the producer's tests.

A message is one JSON object per Kafka record (UTF-8):

    {"order_id": "b253f149-...", "customer_document": "431-61-5633",
     "products": [{"name": "Smartwatch", "cantidad": 3, "price": 1401}, ...],
     "sale_date": "12/05/2025 15:33:35"}

`price` is money in currency units with at most two decimals (an integer as in the seed, or
cents such as 89.99); it is read as a decimal, never a float. `sale_date` is
`dd/MM/yyyy HH:mm:ss` (SALE_DATE_FORMAT, Spark pattern; SALE_DATE_STRFTIME for Python).
"""

from pyspark.sql.types import (
    ArrayType,
    DecimalType,
    IntegerType,
    StringType,
    StructField,
    StructType,
)

SALE_DATE_FORMAT = "dd/MM/yyyy HH:mm:ss"
SALE_DATE_STRFTIME = "%d/%m/%Y %H:%M:%S"

# Money: a price fits 16 integer digits and cents. Prices are read at a finer scale first so
# that a price with sub-cent digits is detected and rejected instead of silently rounded.
MONEY = DecimalType(18, 2)
PRICE_AS_READ = DecimalType(38, 18)
PRICE_DECIMALS = MONEY.scale

# Field names, written once.
ORDER_ID = "order_id"
CUSTOMER_DOCUMENT = "customer_document"
PRODUCTS = "products"
SALE_DATE = "sale_date"
NAME = "name"
CANTIDAD = "cantidad"
QUANTITY = "quantity"  # the original producer's name for `cantidad`; the consumer accepts both
PRICE = "price"
CORRUPT_RECORD = "_corrupt_record"

# Output columns of the consumer's table.
PRODUCT_COLUMN = "Product"
TOTAL_SALES_COLUMN = "Total Sales"

PRODUCT_SCHEMA = StructType(
    [
        StructField(NAME, StringType()),
        StructField(CANTIDAD, IntegerType()),
        StructField(PRICE, PRICE_AS_READ),
    ]
)

ORDER_SCHEMA = StructType(
    [
        StructField(ORDER_ID, StringType()),
        StructField(CUSTOMER_DOCUMENT, StringType()),
        StructField(PRODUCTS, ArrayType(PRODUCT_SCHEMA)),
        StructField(SALE_DATE, StringType()),
    ]
)


def consumer_read_schema() -> StructType:
    """ORDER_SCHEMA widened for reading a stream: the legacy `quantity` field, and the corrupt-record
    column that Spark fills with the raw text whenever any value does not fit its type."""
    product = StructType([*PRODUCT_SCHEMA.fields, StructField(QUANTITY, IntegerType())])
    fields = [StructField(f.name, ArrayType(product)) if f.name == PRODUCTS else f for f in ORDER_SCHEMA.fields]
    return StructType([*fields, StructField(CORRUPT_RECORD, StringType())])


TOTALS_SCHEMA = StructType(
    [
        StructField(PRODUCT_COLUMN, StringType()),
        StructField(TOTAL_SALES_COLUMN, DecimalType(38, 2)),
    ]
)

"""The seed's consumer as a tutorial writes it, with Spark's defaults (200 shuffle partitions, the
default trigger, float prices): the reference our consumer's latency is compared with.

Only change: the console sink shows every row (numRows), so the benchmark can see each marker.
"""

import sys

from pyspark.sql import SparkSession
from pyspark.sql.functions import col, explode, from_json
from pyspark.sql.functions import sum as sum_
from pyspark.sql.types import ArrayType, DoubleType, IntegerType, StringType, StructField, StructType

bootstrap, topic = sys.argv[1], sys.argv[2]
spark = SparkSession.builder.appName("naive-ventas-consumer").getOrCreate()
spark.sparkContext.setLogLevel("ERROR")
schema = StructType(
    [
        StructField("order_id", StringType()),
        StructField("customer_document", StringType()),
        StructField(
            "products",
            ArrayType(
                StructType(
                    [
                        StructField("name", StringType()),
                        StructField("cantidad", IntegerType()),
                        StructField("price", DoubleType()),
                    ]
                )
            ),
        ),
        StructField("sale_date", StringType()),
    ]
)
orders = (
    spark.readStream.format("kafka")
    .option("kafka.bootstrap.servers", bootstrap)
    .option("subscribe", topic)
    .option("startingOffsets", "earliest")
    .load()
    .select(from_json(col("value").cast("string"), schema).alias("data"))
    .select("data.*")
)
totals = (
    orders.select(explode(col("products")).alias("product"))
    .select(col("product.name").alias("Product"), (col("product.cantidad") * col("product.price")).alias("amount"))
    .groupBy("Product")
    .agg(sum_("amount").alias("Total Sales"))
)
totals.writeStream.outputMode("complete").format("console").option("numRows", 100000).option(
    "truncate", "false"
).start().awaitTermination()

"""The consumer's transformation (with its default windows) as a plain Spark batch job over the same
Kafka records: the compute ceiling of this machine. Prints `ceiling: N records in S s` for
bench.measure_consumer, whose spark-submit runs this file with the repository on PYTHONPATH
(ventas.lab.processes.pipeline_env), so that `consumer` imports."""

import sys
import time

from consumer import create_session
from ventas.sale_windows import DEFAULT_WINDOW, duration
from ventas.transforms import batch_totals, parse_orders

bootstrap, topic = sys.argv[1], sys.argv[2]
spark = create_session()
raw = (
    spark.read.format("kafka")
    .option("kafka.bootstrap.servers", bootstrap)
    .option("subscribe", topic)
    .option("startingOffsets", "earliest")
    .option("endingOffsets", "latest")
    .load()
)
started = time.perf_counter()
count = raw.count()
listed = time.perf_counter()
rows = batch_totals(parse_orders(raw), duration(DEFAULT_WINDOW)).collect()  # per window, as the consumer by default
elapsed = time.perf_counter() - listed
print(f"ceiling: {count} records in {elapsed:.3f} s ({len(rows)} rows; count took {listed - started:.3f} s)")
spark.stop()

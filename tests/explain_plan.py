"""Run through spark-submit by tests/test_secure.py: prints the extended plan of the consumer's totals
query, built as consumer.py builds it, with the security settings of the flags (no query is started)."""

import sys
import tempfile

from consumer import create_session, kafka_stream
from ventas.consumer_settings import build_parser, settings_from
from ventas.transforms import parse_orders, sales_totals

with tempfile.TemporaryDirectory() as state:  # the plan writes nothing there
    args = build_parser().parse_args([*sys.argv[1:], "--checkpoint-location", state, "--keep-rejected", "false"])
    settings = settings_from(args)
    spark = create_session()
    sales_totals(parse_orders(kafka_stream(spark, settings, settings.starting_offsets))).explain(extended=True)
    spark.stop()

"""Run through spark-submit by tests/test_secure.py: prints the extended plan of the consumer's totals
query, built as consumer.py builds it, with the security settings of the flags (no query is started)."""

import sys

from consumer import build_parser, create_session, kafka_stream, parse_orders, sales_totals
from ventas.security import load_security

args = build_parser().parse_args(sys.argv[1:])
args.security = load_security(args.client_properties)
spark = create_session()
sales_totals(parse_orders(kafka_stream(spark, args, args.starting_offsets))).explain(extended=True)
spark.stop()

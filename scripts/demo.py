"""`make demo`: the whole pipeline on this machine, local broker included, until Ctrl-C.

Starts the local Kafka broker (unless one already runs on KAFKA_PORT), creates the topic, then
runs producer.py and consumer.py (through spark-submit) side by side; the consumer's table
refreshes after every micro-batch. Ctrl-C stops all three, the broker only if the demo started it.
"""

from __future__ import annotations

import signal
import sys
import threading
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ventas.config import DEFAULT_TOPIC, Parser, UserError, env, fail, non_negative_float, positive_int
from ventas.kafka_local import DEFAULT_PORT, LocalBroker, default_data_dir
from ventas.processes import producer_command, spark_submit_command, start, stop


def main() -> None:
    parser = Parser(prog="demo", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--port",
        type=positive_int,
        default=env("KAFKA_PORT", str(DEFAULT_PORT)),
        help="local broker port (env KAFKA_PORT; default %(default)s)",
    )
    parser.add_argument("--topic", default=env("KAFKA_TOPIC", DEFAULT_TOPIC), help="(env KAFKA_TOPIC)")
    parser.add_argument(
        "--rate",
        type=non_negative_float,
        default=env("PRODUCER_RATE", "10"),
        help="orders per second (env PRODUCER_RATE; default %(default)s)",
    )
    args = parser.parse_args()
    broker = LocalBroker(args.port, default_data_dir(args.port))
    stopping = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stopping.set())
    try:
        started_broker = broker.start(topics=(args.topic,))
    except UserError as error:
        fail(parser.prog, error)
    print(
        f"demo: Kafka broker at {broker.bootstrap} ({'started' if started_broker else 'already running'}); "
        "Ctrl-C stops everything",
        file=sys.stderr,
    )
    kafka = ["--bootstrap-servers", broker.bootstrap, "--topic", args.topic]
    producer = start(producer_command(broker.bootstrap, args.topic, "--rate", str(args.rate), "--log-level", "INFO"))
    consumer = start(spark_submit_command(kafka))
    try:
        while not stopping.is_set() and producer.poll() is None and consumer.poll() is None:
            stopping.wait(0.5)
    finally:
        stop(producer)
        stop(consumer)
        if started_broker:
            broker.stop()
        print("demo: stopped producer, consumer" + (" and broker" if started_broker else ""), file=sys.stderr)


if __name__ == "__main__":
    main()

"""`make demo`: the whole pipeline on this machine, local broker included, until Ctrl-C.

Starts the local Kafka broker (unless one already runs on KAFKA_PORT), creates the topic, then
runs producer.py and consumer.py (through spark-submit) side by side; the consumer's table
refreshes after every micro-batch, and so does its dashboard page (its address is the second line).
Ctrl-C, SIGTERM or SIGHUP (the terminal closed) stops all three, the broker only if the demo started
it; a second one passes "stop at once" on.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ventas.config import DEFAULT_TOPIC, Parser, UserError, env, fail, non_negative_float, positive_int
from ventas.dashboard import add_dashboard_arguments, url
from ventas.kafka_local import DEFAULT_PORT, LocalBroker, default_data_dir
from ventas.processes import producer_command, spark_submit_command, start, stop_all
from ventas.signals import StopRequest, say


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
    add_dashboard_arguments(parser)
    args = parser.parse_args()
    broker = LocalBroker(args.port, default_data_dir(args.port))
    stop = StopRequest()  # Ctrl-C, SIGTERM, or SIGHUP when the terminal is closed
    stop.install()
    try:
        started_broker = broker.start(topics=(args.topic,))
    except UserError as error:
        fail(parser.prog, error)
    say(
        f"demo: Kafka broker at {broker.bootstrap} ({'started' if started_broker else 'already running'}); "
        "Ctrl-C stops everything"
    )
    if args.dashboard_port:
        say(f"demo: dashboard at {url(args.dashboard_host, args.dashboard_port)} (live totals, in a browser)")
    else:
        say("demo: dashboard off (--dashboard-port 0)")
    kafka = ["--bootstrap-servers", broker.bootstrap, "--topic", args.topic]
    dashboard = ["--dashboard-port", str(args.dashboard_port), "--dashboard-host", args.dashboard_host]
    processes = {}
    ended = {}
    try:
        if not stop.requested.is_set():
            processes["producer"] = start(
                producer_command(broker.bootstrap, args.topic, "--rate", str(args.rate), "--log-level", "INFO")
            )
            processes["consumer"] = start(spark_submit_command(kafka + dashboard))
        while not stop.requested.is_set() and not ended:
            stop.requested.wait(0.5)
            ended = {name: p.returncode for name, p in processes.items() if p.poll() is not None}
    finally:
        stop_all(list(processes.values()), again=stop.immediate)  # at once: a stop takes as long as the slower
        if started_broker:
            broker.stop()
        say("demo: stopped producer, consumer" + (" and broker" if started_broker else ""))
    if ended:  # it did not wait for Ctrl-C: its own last lines say why
        fail(parser.prog, UserError(", ".join(f"the {name} exited with code {code}" for name, code in ended.items())))


if __name__ == "__main__":
    main()

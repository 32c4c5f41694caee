"""`make demo`: the whole pipeline on this machine, local broker included, until Ctrl-C.

Starts the local Kafka broker (unless one already runs on KAFKA_PORT), creates the topic, then
runs producer.py and consumer.py (through spark-submit) side by side; the consumer's table
refreshes after every micro-batch, and so does its dashboard page (its address is the second line).
Ctrl-C, SIGTERM or SIGHUP (the terminal closed) stops all three, the broker only if the demo started
it; a second one passes "stop at once" on.

`make demo-cluster` (--cluster): the same on clusters: 3 Kafka nodes (ports KAFKA_PORT to
KAFKA_PORT+2, topic on 6 partitions replicated 3 times), a Spark standalone master with 2 workers,
and the consumer submitted to that master. It stops what it started, and only that.
"""

from __future__ import annotations

from ventas.config import DEFAULT_TOPIC, STATE_HOME, Parser, UserError, env, fail, non_negative_float, positive_int
from ventas.consumer_settings import default_checkpoint_location, default_totals_db
from ventas.dashboard import add_dashboard_arguments, url
from ventas.lab.kafka_broker import DEFAULT_PORT, LocalBroker, default_data_dir
from ventas.lab.kafka_cluster import LocalCluster
from ventas.lab.processes import producer_command, spark_submit_command, start, stop_all
from ventas.lab.spark_local import SparkCluster, add_master_arguments, default_state_dir
from ventas.signals import StopRequest, print_status

CLUSTER_BROKERS, CLUSTER_PARTITIONS, CLUSTER_WORKERS = 3, 6, 2


def main() -> None:
    parser = Parser(prog="demo", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--port",
        type=positive_int,
        default=env("KAFKA_PORT", str(DEFAULT_PORT)),
        help="local broker port, the first of 3 with --cluster (env KAFKA_PORT; default %(default)s)",
    )
    parser.add_argument("--topic", default=env("KAFKA_TOPIC", DEFAULT_TOPIC), help="(env KAFKA_TOPIC)")
    parser.add_argument(
        "--rate",
        type=non_negative_float,
        default=env("PRODUCER_RATE", "10"),
        help="orders per second (env PRODUCER_RATE; default %(default)s)",
    )
    add_dashboard_arguments(parser)
    parser.add_argument(
        "--cluster",
        action="store_true",
        help=f"{CLUSTER_BROKERS} Kafka nodes and a Spark standalone master with {CLUSTER_WORKERS} workers",
    )
    add_master_arguments(parser, prefix="spark-")  # used with --cluster
    args = parser.parse_args()
    if args.cluster:
        kafka = LocalCluster(args.port, CLUSTER_BROKERS, default_data_dir(args.port, CLUSTER_BROKERS))
        spark = SparkCluster(
            default_state_dir(args.spark_port),
            args.spark_port,
            args.spark_webui_port,
            workers=CLUSTER_WORKERS,
        )
    else:
        kafka, spark = LocalBroker(args.port, default_data_dir(args.port)), None
    stop = StopRequest()  # Ctrl-C, SIGTERM, or SIGHUP when the terminal is closed
    stop.install()
    kafka_name = "Kafka cluster" if args.cluster else "Kafka broker"
    started = []  # what the demo started, with its name: stopped at the end
    try:
        kafka_started = kafka.start(topics=(args.topic,), partitions=CLUSTER_PARTITIONS if args.cluster else 1)
        if kafka_started:
            started.append((kafka, kafka_name))
        if spark is not None and spark.start():
            started.append((spark, "Spark cluster"))
    except UserError as error:
        for server, _ in started:
            server.stop()
        fail(parser.prog, error)
    spark_line = f"; Spark master {spark.url}, web UI {spark.webui}" if spark else ""
    print_status(
        f"demo: {kafka_name} at {kafka.bootstrap} ({'started' if kafka_started else 'already running'}){spark_line}; "
        "Ctrl-C stops everything"
    )
    if args.dashboard_port:
        page = url(args.dashboard_host, args.dashboard_port)
        print_status(f"demo: dashboard at {page} (live totals, in a browser); Prometheus metrics at {page}metrics")
    else:
        print_status("demo: dashboard off (--dashboard-port 0)")
    # With --cluster, a checkpoint and totals of its own: the single broker's offsets mean nothing on the
    # cluster's topic.
    state = STATE_HOME / "cluster" if args.cluster else STATE_HOME
    if args.cluster:
        totals_db = env("TOTALS_DB", str(state / "totals" / f"{args.topic}.sqlite3"))
    else:  # the consumer's own default, which follows its checkpoint
        checkpoint_location = env("CHECKPOINT_LOCATION") or default_checkpoint_location(args.topic)
        totals_db = env("TOTALS_DB") or default_totals_db(args.topic, checkpoint_location)
    print_status(f"demo: totals database {totals_db}")
    dashboard = ["--dashboard-port", str(args.dashboard_port), "--dashboard-host", args.dashboard_host]
    dashboard += ["--metrics-port", str(args.dashboard_port)]  # the metrics beside the page, as said above
    consumer = ["--bootstrap-servers", kafka.bootstrap, "--topic", args.topic, "--totals-db", totals_db, *dashboard]
    if args.cluster:
        consumer += [
            *("--checkpoint-location", env("CHECKPOINT_LOCATION", str(state / "checkpoints" / args.topic))),
            *("--rejected-path", env("REJECTED_PATH", str(state / "rejected" / args.topic))),
        ]
    processes = {}
    ended = {}
    try:
        if not stop.requested.is_set():
            processes["producer"] = start(
                producer_command(kafka.bootstrap, args.topic, "--rate", str(args.rate), "--log-level", "INFO")
            )
            options = ["--master", spark.url] if spark else []
            processes["consumer"] = start(spark_submit_command(consumer, options=options))
        while not stop.requested.is_set() and not ended:
            stop.requested.wait(0.5)
            ended = {name: p.returncode for name, p in processes.items() if p.poll() is not None}
    finally:
        stop_all(list(processes.values()), again=stop.immediate)  # at once: a stop takes as long as the slower
        for server, _ in reversed(started):
            server.stop()
        names = ["producer", "consumer", *(name for _, name in reversed(started))]
        print_status(f"demo: stopped {', '.join(names[:-1])} and {names[-1]}")
    if ended:  # it did not wait for Ctrl-C: its own last lines say why
        fail(parser.prog, UserError(", ".join(f"the {name} exited with code {code}" for name, code in ended.items())))


if __name__ == "__main__":
    main()

"""The consumer's settings: its flags, each with an environment default, parsed and checked once into
a ConsumerSettings, which nothing changes afterwards."""

from __future__ import annotations

import argparse
import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path

from ventas import checkpoint
from ventas.config import (
    EXIT_USAGE,
    STATE_HOME,
    Parser,
    UserError,
    add_kafka_arguments,
    env,
    non_negative_float,
    positive_int,
    true_or_false,
)
from ventas.dashboard import DEFAULT_PORT, add_dashboard_arguments, port_number
from ventas.sale_windows import (
    DEFAULT_ALLOWED_FUTURE,
    DEFAULT_ALLOWED_LATENESS,
    DEFAULT_WINDOW_RETENTION,
    WindowSettings,
    add_window_argument,
    add_zone_argument,
    duration,
)
from ventas.security import KafkaSecurity, load_security

TOTALS_FILE = "totals.sqlite3"  # the default --totals-db, in a checkpoint's directory
DESCRIPTION = "Running total sales per product from the `ventas-events` Kafka topic (Spark Structured Streaming)."


@dataclass(frozen=True)
class ConsumerSettings:
    bootstrap_servers: str
    topic: str
    log_level: str
    client_properties: Path | None
    connect_timeout: float
    starting_offsets: str
    checkpoint_location: str
    totals_db: str
    rejected_path: str | None  # None: rejected records are only counted (--keep-rejected false)
    keep_rejected: bool
    trigger_interval: str
    available_now: bool
    max_offsets_per_trigger: int | None
    fail_on_data_loss: bool
    dashboard_port: int
    dashboard_host: str
    stalled_after: float
    metrics_port: int  # 0: no /metrics nor /healthz; the dashboard's port: served with the page
    give_up_after: int | None  # seconds; None: wait for Kafka and the totals database for ever
    window: int  # seconds; 0: no windows
    sale_date_zone: str | None  # None: this machine's
    allowed_lateness: int
    window_retention: int
    allowed_future: int
    security: KafkaSecurity

    @property
    def windows(self) -> WindowSettings:
        return WindowSettings(self.window, self.allowed_lateness, self.window_retention, self.allowed_future)


def build_parser() -> Parser:
    parser = Parser(prog="consumer.py", description=DESCRIPTION)
    add_kafka_arguments(parser)
    parser.add_argument(
        "--starting-offsets",
        default=env("STARTING_OFFSETS", "earliest"),
        help="where a new query starts: earliest, latest or Spark's JSON offsets; ignored once "
        "the checkpoint exists (env STARTING_OFFSETS; default %(default)s)",
    )
    parser.add_argument(
        "--checkpoint-location",
        default=env("CHECKPOINT_LOCATION"),
        help="the query's checkpoint (the Kafka offsets of every micro-batch); delete it, and empty the "
        "totals database, to start over "
        f"(env CHECKPOINT_LOCATION; default {STATE_HOME}/checkpoints/TOPIC)",
    )
    parser.add_argument(
        "--totals-db",
        default=env("TOTALS_DB"),
        help="where the running totals are kept: a SQLite file, or postgresql://USER@HOST:PORT/DATABASE "
        "(password from PGPASSWORD or ~/.pgpass) (env TOTALS_DB; "
        f"default {TOTALS_FILE} in a local --checkpoint-location, {STATE_HOME}/totals/TOPIC.sqlite3 with the "
        "default checkpoint)",
    )
    parser.add_argument(
        "--rejected-path",
        default=env("REJECTED_PATH"),
        help="where rejected records are written as JSON lines "
        f"(env REJECTED_PATH; default {STATE_HOME}/rejected/TOPIC)",
    )
    parser.add_argument(
        "--keep-rejected",
        type=true_or_false,
        default=env("KEEP_REJECTED", "true"),
        help="write rejected records to --rejected-path; false only counts them, by reason, and reads "
        "each record once (env KEEP_REJECTED; default %(default)s)",
    )
    parser.add_argument(
        "--trigger-interval",
        type=spark_interval,
        default=env("TRIGGER_INTERVAL", "0 seconds"),
        help="processing-time trigger, e.g. '5 seconds'; '0 seconds' runs batches back to back "
        "(env TRIGGER_INTERVAL; default %(default)s)",
    )
    parser.add_argument(
        "--available-now",
        nargs="?",
        const=True,
        type=true_or_false,
        default=env("AVAILABLE_NOW", "false"),
        help="process everything in the topic now, print the final table and exit (env AVAILABLE_NOW)",
    )
    parser.add_argument(
        "--max-offsets-per-trigger",
        type=positive_int,
        default=env("MAX_OFFSETS_PER_TRIGGER"),
        help="cap on records per micro-batch (env MAX_OFFSETS_PER_TRIGGER; default no cap)",
    )
    parser.add_argument(
        "--fail-on-data-loss",
        type=true_or_false,
        default=env("FAIL_ON_DATA_LOSS", "true"),
        help="stop when offsets not yet processed were deleted from Kafka (retention) "
        "(env FAIL_ON_DATA_LOSS; default %(default)s)",
    )
    add_window_argument(parser)
    add_zone_argument(parser)
    parser.add_argument(
        "--allowed-lateness",
        type=duration,
        default=env("ALLOWED_LATENESS", DEFAULT_ALLOWED_LATENESS),
        help="an order whose sale_date is more than this behind the newest one of the batches before is "
        "late: still counted in its window, and counted as late (env ALLOWED_LATENESS; default %(default)s)",
    )
    parser.add_argument(
        "--window-retention",
        type=duration,
        default=env("WINDOW_RETENTION", DEFAULT_WINDOW_RETENTION),
        help="windows older than this before the newest sale_date are deleted from the totals database; 0 "
        "keeps every window (env WINDOW_RETENTION; default %(default)s)",
    )
    parser.add_argument(
        "--allowed-future",
        type=duration,
        default=env("ALLOWED_FUTURE", DEFAULT_ALLOWED_FUTURE),
        help="an order whose sale_date is more than this ahead of this machine's clock is in the future: "
        "counted in the product totals and as in the future, in no window, and it moves neither the newest "
        "sale_date nor the chart (env ALLOWED_FUTURE; default %(default)s)",
    )
    add_dashboard_arguments(parser)
    parser.add_argument(
        "--stalled-after",
        type=non_negative_float,
        default=env("STALLED_AFTER", "30"),
        help="seconds without progress from the query, or behind Kafka's latest offsets without a committed "
        "batch, after which /healthz answers 503 and the stalled alert fires (env STALLED_AFTER; default %(default)s)",
    )
    parser.add_argument(
        "--metrics-port",
        type=port_number,
        default=env("METRICS_PORT"),
        help="port of /metrics (Prometheus) and /healthz, on --dashboard-host; 0 turns them off (env "
        f"METRICS_PORT; default the dashboard's port, or {DEFAULT_PORT} with --dashboard-port 0)",
    )
    parser.add_argument(
        "--give-up-after",
        type=never_or_duration,
        default=env("GIVE_UP_AFTER", "never"),
        help="when Kafka or the totals database cannot be reached, the consumer waits and tries again; after "
        "this long, e.g. '30s' or '10 minutes', it exits with status 1 for a supervisor to restart it "
        "(env GIVE_UP_AFTER; default %(default)s)",
    )
    return parser


def never_or_duration(text: str) -> int | None:
    """argparse type: 'never' (None), or a length of time in seconds (sale_windows.duration)."""
    return None if text.strip().lower() == "never" else duration(text)


def spark_interval(text: str) -> str:
    """argparse type: a processing-time interval as Spark reads it ('500 milliseconds', '5 seconds')."""
    if not re.fullmatch(r"\s*\d+\s*(millisecond|second|minute|hour|day)s?\s*", text, flags=re.IGNORECASE):
        raise argparse.ArgumentTypeError(f"not an interval like '5 seconds': {text!r}")
    return text.strip()


def settings_from(args: argparse.Namespace) -> ConsumerSettings:
    """The parsed flags with their defaults under the state directory filled in, the local directories
    made and checked, and the Kafka security settings loaded; UserError for what a user must fix."""
    paths = {
        "checkpoint_location": args.checkpoint_location or default_checkpoint_location(args.topic),
        "rejected_path": (args.rejected_path or str(STATE_HOME / "rejected" / args.topic))
        if args.keep_rejected
        else None,
    }
    for name in ("checkpoint_location", "rejected_path"):
        if paths[name] is not None:
            _make_writable_directory(f"--{name.replace('_', '-')}", paths[name])
    paths["totals_db"] = args.totals_db or default_totals_db(args.topic, paths["checkpoint_location"])
    metrics_port = args.metrics_port if args.metrics_port is not None else args.dashboard_port or DEFAULT_PORT
    return ConsumerSettings(
        **{**vars(args), **paths, "metrics_port": metrics_port, "security": load_security(args.client_properties)}
    )


def default_checkpoint_location(topic: str) -> str:
    return str(STATE_HOME / "checkpoints" / topic)


def default_totals_db(topic: str, checkpoint_location: str) -> str:
    """The --totals-db of a consumer given none: its checkpoint's own, so that two checkpoints never share
    totals. The default checkpoint keeps the file earlier versions used for every checkpoint."""
    local = checkpoint.local_path(checkpoint_location)
    if local == checkpoint.local_path(default_checkpoint_location(topic)):
        return str(STATE_HOME / "totals" / f"{topic}.sqlite3")
    if local is not None:
        return str(local / TOTALS_FILE)
    digest = hashlib.sha256(checkpoint_location.encode()).hexdigest()[:12]  # remote: no SQLite file there
    return str(STATE_HOME / "totals" / f"{topic}-{digest}.sqlite3")


def _make_writable_directory(flag: str, path: str) -> None:
    local = checkpoint.local_path(path)
    if local is None:  # remote storage: Spark makes and checks it
        return
    try:
        local.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise UserError(f"{flag} {path}: {error.strerror}", EXIT_USAGE) from None
    if not os.access(local, os.R_OK | os.W_OK | os.X_OK):
        raise UserError(f"{flag} {path}: not readable and writable", EXIT_USAGE)

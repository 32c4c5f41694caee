"""Command-line flags with environment-variable defaults, one definition for every entry point.

The producer, the consumer, scripts/ and docker-compose.yml all read the same variable names,
so a value set once in the environment reaches every part of the pipeline.
"""

from __future__ import annotations

import argparse
import logging
import os
import socket
import sys
from pathlib import Path
from typing import NoReturn

DEFAULT_BOOTSTRAP_SERVERS = "localhost:9092"
DEFAULT_TOPIC = "ventas-events"
STATE_HOME = Path(os.environ.get("XDG_STATE_HOME", Path.home() / ".local" / "state")) / "ventas"

EXIT_RUNTIME_ERROR = 1
EXIT_USAGE = 2


class UserError(Exception):
    """A mistake a user can fix (bad value, broker down); reported as one line, never a traceback."""

    def __init__(self, message: str, exit_code: int = EXIT_RUNTIME_ERROR) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class Parser(argparse.ArgumentParser):
    """argparse that reports a bad flag in one line, `PROG: error: MESSAGE (see --help)`, exit 2:
    the usage block argparse prints first would bury the one line that says what is wrong."""

    def error(self, message: str) -> NoReturn:
        fail(self.prog, UserError(f"{message} (see --help)", EXIT_USAGE))


def env(name: str, default: str | None = None) -> str | None:
    """The value of environment variable `name`, or `default` when it is unset or empty.

    Used as an argparse default *string*, so argparse converts and checks it like a typed flag:
    a bad value in the environment is reported in one line, as a bad flag would be."""
    return os.environ.get(name) or default


def add_kafka_arguments(parser: Parser) -> None:
    """The flags every Kafka client of this project shares."""
    parser.add_argument(
        "--bootstrap-servers",
        default=env("KAFKA_BOOTSTRAP_SERVERS", DEFAULT_BOOTSTRAP_SERVERS),
        help="Kafka bootstrap servers, HOST:PORT[,HOST:PORT] (env KAFKA_BOOTSTRAP_SERVERS; default %(default)s)",
    )
    parser.add_argument(
        "--topic",
        default=env("KAFKA_TOPIC", DEFAULT_TOPIC),
        help="topic of the order events (env KAFKA_TOPIC; default %(default)s)",
    )
    parser.add_argument(
        "--log-level",
        type=log_level,
        default=env("LOG_LEVEL", "WARNING"),
        help="DEBUG, INFO, WARNING or ERROR; INFO adds progress lines (env LOG_LEVEL; default %(default)s)",
    )
    parser.add_argument(
        "--client-properties",
        type=Path,
        default=env("KAFKA_CLIENT_PROPERTIES"),
        help="TLS/SASL settings file, see ventas/security.py (env KAFKA_CLIENT_PROPERTIES; "
        "or KAFKA_SECURITY_PROTOCOL, KAFKA_SASL_* and KAFKA_SSL_* variables)",
    )
    parser.add_argument(
        "--connect-timeout",
        type=non_negative_float,
        default=env("KAFKA_CONNECT_TIMEOUT", "30"),
        help="seconds to wait for the broker at start (env KAFKA_CONNECT_TIMEOUT; default %(default)s)",
    )


def log_level(text: str) -> str:
    """argparse type: a logging level name."""
    if text.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        raise argparse.ArgumentTypeError(f"not one of DEBUG, INFO, WARNING, ERROR: {text!r}")
    return text.upper()


def true_or_false(text: str) -> bool:
    """argparse type: true/false (also 1/0, yes/no)."""
    if text.lower() in ("true", "1", "yes"):
        return True
    if text.lower() in ("false", "0", "no"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def non_negative_float(text: str) -> float:
    """argparse type: a number >= 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0, got {text!r}")
    return value


def positive_int(text: str) -> int:
    """argparse type: a whole number >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {text!r}")
    return value


def bootstrap_list(servers: str) -> list[str]:
    """Split and check a bootstrap string, so a typo fails before any connection attempt."""
    hosts = [s.strip() for s in servers.split(",") if s.strip()]
    for host in hosts:
        name, _, port = host.rpartition(":")
        if not name or not port.isdigit() or not 0 < int(port) < 65536:
            raise UserError(f"bad bootstrap server {host!r}: expected HOST:PORT", EXIT_USAGE)
    if not hosts:
        raise UserError("no bootstrap servers given", EXIT_USAGE)
    return hosts


def first_line(error: Exception) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0]


def any_reachable(servers: str, timeout_s: float = 2.0) -> bool:
    """Whether any bootstrap server accepts a TCP connection now: tells a broker gone quiet from a
    missing topic when a Kafka client only says that it timed out."""
    for server in bootstrap_list(servers):
        host, _, port = server.rpartition(":")
        try:
            socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s).close()
        except OSError:
            continue
        return True
    return False


def setup_logging(level: str) -> None:
    """Quiet by default: warnings only, INFO for progress lines. kafka-python logs every refused
    connection attempt at ERROR, so its logger speaks only at DEBUG; our code reports failures."""
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    quiet = logging.DEBUG if level == "DEBUG" else logging.CRITICAL
    logging.getLogger("kafka").setLevel(quiet)
    # py4j logs every exception a foreachBatch function raises with its whole traceback;
    # the consumer reports a failed query itself, in one line.
    logging.getLogger("py4j").setLevel(quiet)


def fail(prog: str, error: UserError) -> NoReturn:
    """Print a user error as one line and exit with its code."""
    print(f"{prog}: error: {error}", file=sys.stderr)
    sys.exit(error.exit_code)

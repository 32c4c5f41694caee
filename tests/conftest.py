"""Fixtures: a real Kafka broker for the session (or KAFKA_BOOTSTRAP_SERVERS), a fresh topic per
test, a real PostgreSQL server for the session with a fresh database per test, and a small local
SparkSession for the transformation's unit tests."""

from __future__ import annotations

import os
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import apt_install
from ventas.config import UserError
from ventas.lab.kafka_broker import LocalBroker
from ventas.lab.ports import free_port
from ventas.lab.postgres_local import LocalPostgres, server_bindir

# Consumers started by the tests serve no dashboard unless a test gives one a free port: two runs, or a
# `make demo` beside them, never compete for the default port 8050.
os.environ["DASHBOARD_PORT"] = "0"
os.environ["METRICS_PORT"] = "0"
# The suite starts many short-lived Spark JVMs (every spark-submit, the unit tests' session), on 2 cores
# where the C2 compiler's threads cost more CPU than their optimized code saves in a run of seconds (a
# consumer test took 35 % less CPU without C2). C1 alone runs the same bytecode to the same results.
# `make demo`, `make bench` and users keep the JVM's defaults; SPARK_SUBMIT_OPTS set beforehand (even
# empty) is kept.
os.environ.setdefault("SPARK_SUBMIT_OPTS", "-XX:TieredStopAtLevel=1")


@pytest.fixture(scope="session")
def kafka_bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Bootstrap address of a real broker: KAFKA_BOOTSTRAP_SERVERS if set, else a local one on a free
    port with its own data dir, stopped (by PID) when the session ends."""
    external = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if external:
        yield external
        return
    broker = LocalBroker(free_port(), tmp_path_factory.mktemp("kafka"))
    broker.start()
    try:
        yield broker.bootstrap
    finally:
        broker.stop()


@pytest.fixture
def topic(kafka_bootstrap: str) -> str:
    """A new two-partition topic, so tests never see each other's records."""
    from kafka import KafkaAdminClient

    name = f"ventas-test-{uuid.uuid4().hex[:12]}"
    admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    try:
        admin.create_topics({name: {"num_partitions": 2, "replication_factor": 1}}, wait_for_metadata=True)
    finally:
        admin.close()
    return name


@pytest.fixture(scope="session")
def postgres_bindir() -> Path:
    """The PostgreSQL server's binaries; Debian's postgresql is installed with apt-get when they are
    missing (CI runs as root), as tests/test_dashboard.py installs chromium."""
    try:
        return server_bindir()
    except UserError:
        apt_install("postgresql")
    return server_bindir()


@pytest.fixture(scope="session")
def postgres_server(postgres_bindir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalPostgres]:
    """A local PostgreSQL server on a free port with its own data dir; stopped (by PID) and its
    cluster deleted when the session ends. Tests may stop, kill and start it again."""
    server = LocalPostgres(free_port(), tmp_path_factory.mktemp("postgres"))
    server.start()
    try:
        yield server
    finally:
        server.remove()


@pytest.fixture
def postgres_url(postgres_server: LocalPostgres) -> str:
    """The URL of a new database on the session's server, so tests never see each other's tables."""
    postgres_server.start()  # a no-op unless an earlier test left it stopped or killed
    return postgres_server.create_database(f"ventas_test_{uuid.uuid4().hex[:12]}")


@pytest.fixture
def own_broker(tmp_path: Path) -> Iterator[LocalBroker]:
    """A broker of the test's own, with a two-partition ventas-events, which it may freeze, stop and
    start again on the same port and data without disturbing the other tests."""
    broker = LocalBroker(free_port(), tmp_path / "broker")
    broker.start(topics=("ventas-events",), partitions=2)
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture
def own_postgres(postgres_bindir: Path, tmp_path: Path) -> Iterator[LocalPostgres]:
    """A PostgreSQL server of the test's own, which it stops and starts."""
    server = LocalPostgres(free_port(), tmp_path / "postgres")
    server.start()
    try:
        yield server
    finally:
        server.remove()


@pytest.fixture(params=["sqlite", "postgresql"])
def totals_target(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A --totals-db: a SQLite file's path, then a new database on the real PostgreSQL server."""
    if request.param == "sqlite":
        return str(tmp_path / "totals.sqlite3")
    return request.getfixturevalue("postgres_url")


@pytest.fixture(scope="session")
def spark():
    from pyspark.sql import SparkSession

    from ventas.transforms import SESSION_CONF

    # Python workers (createDataFrame from Python rows) run this interpreter, not whatever `python3` is.
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)

    session = (
        SparkSession.builder.master("local[2]")
        .appName("ventas-tests")
        .config("spark.sql.shuffle.partitions", "2")
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .config(map=SESSION_CONF)
        .getOrCreate()
    )
    session.sparkContext.setLogLevel("ERROR")
    yield session
    session.stop()

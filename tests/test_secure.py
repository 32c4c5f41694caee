"""TLS and SASL against the local broker's secure profile, which refuses strangers. On each of its
listeners (SASL_SSL, SSL with a required client certificate, SASL_PLAINTEXT) the writer's orders are
totalled exactly by producer and consumer; no credentials, a wrong password, a user without ACLs, a
wrong CA and a missing client certificate are each refused in one line, and none of their records
reaches the topic. No output, log, query plan or Spark UI page holds a password or the client key."""

from __future__ import annotations

import json
import subprocess
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import (
    consumer_args,
    printed_lines,
    printed_tables,
    producer_args,
    run_consumer,
    run_producer,
    summary_totals,
    wait_for_table,
)
from ventas.lab.kafka_broker import LocalBroker
from ventas.lab.ports import free_port
from ventas.lab.processes import ROOT, pipeline_env, spark_submit_command, stop
from ventas.lab.secure_broker import LISTENERS, STRANGER, WRITER, make_ca

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def secure_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalBroker]:
    broker = LocalBroker(free_port(), tmp_path_factory.mktemp("secure-kafka"), secure=True)
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture
def topic(secure_broker: LocalBroker) -> str:
    """A new topic that WRITER may use and STRANGER may not."""
    name = f"ventas-secure-{uuid.uuid4().hex[:12]}"
    secure_broker.start(partitions=2, topics=(name,))
    return name


def secrets_of(broker: LocalBroker) -> list[str]:
    """Every user's password, and a line of the body of WRITER's private key."""
    key_line = (broker.data_dir / "tls" / f"{WRITER}.key").read_text().splitlines()[1]
    return [*json.loads((broker.data_dir / "users.json").read_text()).values(), key_line]


def assert_no_secret(broker: LocalBroker, *texts: str) -> None:
    for text in texts:
        for secret in secrets_of(broker):
            where = text.find(secret)
            assert where < 0, f"a secret is printed after: {text[max(0, where - 300) : where]!r}"


def outputs(*results: subprocess.CompletedProcess) -> list[str]:
    return [result.stdout + result.stderr for result in results]


def records_in_topic(broker: LocalBroker, topic: str) -> int:
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=broker.admin_bootstrap)
    partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic)]
    count = sum(consumer.end_offsets(partitions).values())
    consumer.close()
    return count


def produce(
    bootstrap: str, topic: str, tmp_path: Path, *args: str, env: dict[str, str] | None = None, connect_timeout: int = 30
) -> subprocess.CompletedProcess:
    summary = tmp_path / "summary.json"
    return run_producer(
        *producer_args(bootstrap, topic, summary, count=200, rate=0, seed=81),
        *("--connect-timeout", str(connect_timeout), *args),
        env=env,
    )


@pytest.mark.parametrize("listener", LISTENERS)
def test_the_writers_orders_are_totalled_exactly_through_each_listener(
    secure_broker: LocalBroker, topic: str, tmp_path: Path, listener: str
) -> None:
    bootstrap = secure_broker.listener_bootstrap(listener)
    properties = str(secure_broker.client_properties(WRITER, listener))
    produced = produce(bootstrap, topic, tmp_path, "--client-properties", properties)
    assert produced.returncode == 0, produced.stderr
    assert records_in_topic(secure_broker, topic) == 200

    consumed = run_consumer(
        *consumer_args(bootstrap, topic, tmp_path, "--available-now", "--client-properties", properties)
    )
    assert consumed.returncode == 0, consumed.stdout[-3000:]
    assert printed_tables(consumed.stdout)[-1] == summary_totals(tmp_path / "summary.json")
    assert_no_secret(secure_broker, *outputs(produced, consumed))


def test_the_same_settings_from_the_environment_with_scram_sha_256(
    secure_broker: LocalBroker, topic: str, tmp_path: Path
) -> None:
    password_file = tmp_path / "password"
    password_file.write_text(json.loads((secure_broker.data_dir / "users.json").read_text())[WRITER])
    env = {
        "KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
        "KAFKA_SASL_MECHANISM": "SCRAM-SHA-256",
        "KAFKA_SASL_USERNAME": WRITER,
        "KAFKA_SASL_PASSWORD_FILE": str(password_file),
        "KAFKA_SSL_CA_LOCATION": str(secure_broker.data_dir / "tls" / "ca.pem"),
    }
    produced = produce(secure_broker.bootstrap, topic, tmp_path, env=env)
    assert produced.returncode == 0, produced.stderr
    assert records_in_topic(secure_broker, topic) == 200
    assert_no_secret(secure_broker, *outputs(produced))


def refused(
    broker: LocalBroker,
    topic: str,
    tmp_path: Path,
    env: dict[str, str],
    expected: str,
    listener: str,
    connect_timeout: int = 30,
) -> None:
    """Producer and consumer each fail in one line saying `expected`; a refusal is reported as soon as
    the broker refuses, long before `connect_timeout`."""
    bootstrap = broker.listener_bootstrap(listener)
    produced = produce(bootstrap, topic, tmp_path, env=env, connect_timeout=connect_timeout)
    assert produced.returncode != 0
    errors = [line for line in produced.stderr.splitlines() if line.startswith("producer.py: error:")]
    assert len(errors) == 1 and expected in errors[0], produced.stderr
    assert "Traceback" not in produced.stderr
    assert (
        not (tmp_path / "summary.json").exists()
        or json.loads((tmp_path / "summary.json").read_text())["orders_acknowledged"] == 0
    )

    consumed = run_consumer(
        *consumer_args(bootstrap, topic, tmp_path, "--available-now", "--connect-timeout", str(connect_timeout)),
        env=env,
    )
    assert consumed.returncode != 0
    lines = printed_lines(consumed)
    assert any(line.startswith("consumer.py: error:") and expected in line for line in lines), lines[-20:]
    assert records_in_topic(broker, topic) == 0
    assert_no_secret(broker, *outputs(produced, consumed))


def test_no_credentials_are_refused(secure_broker: LocalBroker, topic: str, tmp_path: Path) -> None:
    env = {"KAFKA_SECURITY_PROTOCOL": "PLAINTEXT"}
    refused(secure_broker, topic, tmp_path, env, "no Kafka broker reachable", "SASL_SSL", connect_timeout=5)


def test_a_wrong_password_is_refused(secure_broker: LocalBroker, topic: str, tmp_path: Path) -> None:
    env = {
        "KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
        "KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
        "KAFKA_SASL_USERNAME": WRITER,
        "KAFKA_SASL_PASSWORD": "not-the-password",
        "KAFKA_SSL_CA_LOCATION": str(secure_broker.data_dir / "tls" / "ca.pem"),
    }
    refused(secure_broker, topic, tmp_path, env, f"authentication failed for user {WRITER!r}", "SASL_SSL")


def test_a_user_without_acls_is_refused(secure_broker: LocalBroker, topic: str, tmp_path: Path) -> None:
    env = {"KAFKA_CLIENT_PROPERTIES": str(secure_broker.client_properties(STRANGER))}
    refused(secure_broker, topic, tmp_path, env, f"not authorized to use topic {topic!r}", "SASL_SSL")


def test_a_wrong_ca_is_refused(secure_broker: LocalBroker, topic: str, tmp_path: Path) -> None:
    other_ca = make_ca(tmp_path, "other-ca")
    properties = tmp_path / "wrong-ca.properties"
    properties.write_text(
        secure_broker.client_properties(WRITER)
        .read_text()
        .replace(str(secure_broker.data_dir / "tls" / "ca.pem"), str(other_ca))
    )
    refused(secure_broker, topic, tmp_path, {"KAFKA_CLIENT_PROPERTIES": str(properties)}, "TLS certificate", "SASL_SSL")


def test_the_mutual_tls_listener_refuses_a_client_without_a_certificate(
    secure_broker: LocalBroker, topic: str, tmp_path: Path
) -> None:
    env = {"KAFKA_SECURITY_PROTOCOL": "SSL", "KAFKA_SSL_CA_LOCATION": str(secure_broker.data_dir / "tls" / "ca.pem")}
    refused(secure_broker, topic, tmp_path, env, "the broker requires a client certificate", "SSL")


def test_the_broker_log_holds_no_password(secure_broker: LocalBroker, topic: str, tmp_path: Path) -> None:
    for listener in LISTENERS:
        properties = str(secure_broker.client_properties(WRITER, listener))
        bootstrap = secure_broker.listener_bootstrap(listener)
        produced = produce(bootstrap, topic, tmp_path, "--client-properties", properties)
        assert produced.returncode == 0, produced.stderr
    log = secure_broker.log_file.read_text()
    assert all(listener in log for listener in LISTENERS)  # the log is this broker's, with this profile
    assert_no_secret(secure_broker, log)


def writer_with_client_certificate(broker: LocalBroker, tmp_path: Path) -> Path:
    """WRITER's SASL_SSL settings plus the client certificate and key: both secrets go to Spark."""
    tls = broker.data_dir / "tls"
    path = tmp_path / "writer-sasl-and-certificate.properties"
    path.write_text(
        broker.client_properties(WRITER).read_text()
        + f"ssl.certificate.location={tls / f'{WRITER}.pem'}\nssl.key.location={tls / f'{WRITER}.key'}\n"
    )
    return path


def test_the_query_plan_shows_the_secrets_redacted(secure_broker: LocalBroker, topic: str, tmp_path: Path) -> None:
    properties = writer_with_client_certificate(secure_broker, tmp_path)
    explained = subprocess.run(
        spark_submit_command(
            ["--bootstrap-servers", secure_broker.bootstrap, "--topic", topic, "--client-properties", str(properties)],
            ROOT / "tests" / "explain_plan.py",
        ),
        capture_output=True,
        text=True,
        env=pipeline_env(),
        timeout=300,
    )
    assert explained.returncode == 0, explained.stdout[-3000:]
    assert "StreamingRelationV2" in explained.stdout  # the plan of the Kafka source, with its options
    for option in ("kafka.sasl.jaas.config", "kafka.ssl.keystore.key"):
        assert f"{option}=*********(redacted)" in explained.stdout
    assert "kafka.ssl.keystore.certificate.chain=-----BEGIN CERTIFICATE-----" in explained.stdout  # not a secret
    assert_no_secret(secure_broker, *outputs(explained))


def get_json(url: str) -> tuple[str, object]:
    with urllib.request.urlopen(url, timeout=30) as response:
        text = response.read().decode()
    return text, json.loads(text)


def test_the_spark_ui_shows_no_secret_while_the_consumer_runs(
    secure_broker: LocalBroker, topic: str, tmp_path: Path
) -> None:
    properties = writer_with_client_certificate(secure_broker, tmp_path)
    assert produce(secure_broker.bootstrap, topic, tmp_path, "--client-properties", str(properties)).returncode == 0
    ui = f"http://127.0.0.1:{free_port()}"
    command = spark_submit_command(
        consumer_args(secure_broker.bootstrap, topic, tmp_path, "--client-properties", str(properties))
    )
    command[1:1] = ["--conf", f"spark.ui.port={ui.rsplit(':', 1)[1]}"]
    out = tmp_path / "consumer.txt"
    with out.open("w") as sink:
        consumer = subprocess.Popen(
            command,
            stdout=sink,
            stderr=subprocess.STDOUT,
            env=pipeline_env(),
            start_new_session=True,
        )
    try:
        assert wait_for_table(out, consumer) == summary_totals(tmp_path / "summary.json")
        _, applications = get_json(f"{ui}/api/v1/applications")
        api = f"{ui}/api/v1/applications/{applications[0]['id']}"
        environment, parsed = get_json(f"{api}/environment")
        assert dict(parsed["sparkProperties"])["spark.sql.redaction.options.regex"]  # the page is the consumer's
        sql, _ = get_json(f"{api}/sql?details=true&planDescription=true")
        assert consumer.poll() is None  # the pages were read while the query ran
    finally:
        stop(consumer)
    assert_no_secret(secure_broker, environment, sql, out.read_text())

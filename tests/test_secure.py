"""TLS and SASL against the local broker's secure profile, which refuses strangers: the writer's
orders are totalled exactly; no credentials, a wrong password, a user without ACLs and a wrong CA
are each refused in one line, and none of their records reaches the topic. No output holds a
password."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import (
    consumer_args,
    printed_lines,
    printed_tables,
    run_consumer,
    run_producer,
    summary_totals,
)
from ventas.kafka_local import LocalBroker, free_port
from ventas.secure_broker import STRANGER, WRITER, make_ca

pytestmark = pytest.mark.integration
TOPIC = "ventas-events"


@pytest.fixture(scope="module")
def secure_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalBroker]:
    broker = LocalBroker(free_port(), tmp_path_factory.mktemp("secure-kafka"), secure=True)
    broker.start(topics=(TOPIC,), partitions=2)
    try:
        yield broker
    finally:
        broker.stop()


def passwords(broker: LocalBroker) -> list[str]:
    return list(json.loads((broker.data_dir / "users.json").read_text()).values())


def assert_no_password(broker: LocalBroker, *results: subprocess.CompletedProcess) -> None:
    for result in results:
        for password in passwords(broker):
            assert password not in result.stdout + result.stderr


def records_in_topic(broker: LocalBroker) -> int:
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=broker.admin_bootstrap)
    partitions = [TopicPartition(TOPIC, p) for p in consumer.partitions_for_topic(TOPIC)]
    count = sum(consumer.end_offsets(partitions).values())
    consumer.close()
    return count


def produce(broker: LocalBroker, tmp_path: Path, *args: str, env: dict[str, str] | None = None):
    return run_producer(
        "--bootstrap-servers",
        broker.bootstrap,
        "--topic",
        TOPIC,
        "--count",
        "200",
        "--rate",
        "0",
        "--connect-timeout",
        "5",
        "--summary-file",
        str(tmp_path / "summary.json"),
        *args,
        env=env,
    )


def test_the_writer_produces_over_sasl_ssl_and_the_consumer_totals_exactly(
    secure_broker: LocalBroker, tmp_path: Path
) -> None:
    before = records_in_topic(secure_broker)
    properties = str(secure_broker.client_properties(WRITER))
    produced = produce(secure_broker, tmp_path, "--client-properties", properties, "--seed", "81")
    assert produced.returncode == 0, produced.stderr
    assert records_in_topic(secure_broker) == before + 200

    consumed = run_consumer(
        *consumer_args(secure_broker.bootstrap, TOPIC, tmp_path, "--available-now", "--client-properties", properties)
    )
    assert consumed.returncode == 0, consumed.stdout[-3000:]
    if before == 0:
        assert printed_tables(consumed.stdout)[-1] == summary_totals(tmp_path / "summary.json")
    assert_no_password(secure_broker, produced, consumed)


def test_the_same_settings_from_the_environment_with_scram_sha_256(secure_broker: LocalBroker, tmp_path: Path) -> None:
    password_file = tmp_path / "password"
    password_file.write_text(json.loads((secure_broker.data_dir / "users.json").read_text())[WRITER])
    env = {
        "KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
        "KAFKA_SASL_MECHANISM": "SCRAM-SHA-256",
        "KAFKA_SASL_USERNAME": WRITER,
        "KAFKA_SASL_PASSWORD_FILE": str(password_file),
        "KAFKA_SSL_CA_LOCATION": str(secure_broker.data_dir / "tls" / "ca.pem"),
    }
    produced = produce(secure_broker, tmp_path, env=env)
    assert produced.returncode == 0, produced.stderr
    assert_no_password(secure_broker, produced)


def refused(broker: LocalBroker, tmp_path: Path, env: dict[str, str], expected: str) -> None:
    before = records_in_topic(broker)
    produced = produce(broker, tmp_path, env=env)
    assert produced.returncode != 0
    errors = [line for line in produced.stderr.splitlines() if line.startswith("producer.py: error:")]
    assert len(errors) == 1 and expected in errors[0], produced.stderr
    assert "Traceback" not in produced.stderr
    assert (
        not (tmp_path / "summary.json").exists()
        or json.loads((tmp_path / "summary.json").read_text())["orders_acknowledged"] == 0
    )

    consumed = run_consumer(
        *consumer_args(broker.bootstrap, TOPIC, tmp_path, "--available-now", "--connect-timeout", "5"), env=env
    )
    assert consumed.returncode != 0
    assert any(line.startswith("consumer.py: error:") and expected in line for line in printed_lines(consumed))
    assert records_in_topic(broker) == before
    assert_no_password(broker, produced, consumed)


def test_no_credentials_are_refused(secure_broker: LocalBroker, tmp_path: Path) -> None:
    refused(secure_broker, tmp_path, {"KAFKA_SECURITY_PROTOCOL": "PLAINTEXT"}, "no Kafka broker reachable")


def test_a_wrong_password_is_refused(secure_broker: LocalBroker, tmp_path: Path) -> None:
    env = {
        "KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
        "KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
        "KAFKA_SASL_USERNAME": WRITER,
        "KAFKA_SASL_PASSWORD": "not-the-password",
        "KAFKA_SSL_CA_LOCATION": str(secure_broker.data_dir / "tls" / "ca.pem"),
    }
    refused(secure_broker, tmp_path, env, f"authentication failed for user {WRITER!r}")


def test_a_user_without_acls_is_refused(secure_broker: LocalBroker, tmp_path: Path) -> None:
    env = {"KAFKA_CLIENT_PROPERTIES": str(secure_broker.client_properties(STRANGER))}
    refused(secure_broker, tmp_path, env, f"not authorized to use topic {TOPIC!r}")


def test_a_wrong_ca_is_refused(secure_broker: LocalBroker, tmp_path: Path) -> None:
    other_ca = make_ca(tmp_path, "other-ca")
    properties = tmp_path / "wrong-ca.properties"
    properties.write_text(
        secure_broker.client_properties(WRITER)
        .read_text()
        .replace(str(secure_broker.data_dir / "tls" / "ca.pem"), str(other_ca))
    )
    env = {"KAFKA_CLIENT_PROPERTIES": str(properties)}
    refused(secure_broker, tmp_path, env, "TLS certificate")


def test_the_broker_log_holds_no_password(secure_broker: LocalBroker, tmp_path: Path) -> None:
    produce(secure_broker, tmp_path, "--client-properties", str(secure_broker.client_properties(WRITER)))
    log = secure_broker.log_file.read_text()
    assert "SASL_SSL" in log  # the log is the broker's, and it did start with this profile
    assert not any(password in log for password in passwords(secure_broker))

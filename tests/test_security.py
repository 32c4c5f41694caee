"""Client security settings: read from the environment or a properties file, checked, translated
for kafka-python and Spark, and never shown."""

from __future__ import annotations

from pathlib import Path

import pytest

from ventas.config import UserError
from ventas.security import KafkaSecurity, load_security

SCRAM = KafkaSecurity("SASL_SSL", "SCRAM-SHA-512", "ventas", 's3cr"et', "/etc/ssl/ca.pem")


def test_the_password_is_never_in_the_repr() -> None:
    assert "s3cr" not in repr(SCRAM) and "ventas" in repr(SCRAM)


def test_spark_options_carry_a_quoted_jaas_config_and_a_pem_truststore() -> None:
    assert SCRAM.spark_options() == {
        "kafka.security.protocol": "SASL_SSL",
        "kafka.sasl.mechanism": "SCRAM-SHA-512",
        "kafka.sasl.jaas.config": "org.apache.kafka.common.security.scram.ScramLoginModule required "
        'username="ventas" password="s3cr\\"et";',
        "kafka.ssl.truststore.type": "PEM",
        "kafka.ssl.truststore.location": "/etc/ssl/ca.pem",
    }
    assert KafkaSecurity().spark_options() == {"kafka.security.protocol": "PLAINTEXT"}


def test_kafka_python_settings() -> None:
    config = SCRAM.kafka_python()
    assert config["security_protocol"] == "SASL_SSL" and config["sasl_mechanism"] == "SCRAM-SHA-512"
    assert config["sasl_plain_username"] == "ventas" and config["ssl_cafile"] == "/etc/ssl/ca.pem"


def test_the_properties_file_overrides_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("")
    monkeypatch.setenv("KAFKA_SECURITY_PROTOCOL", "SSL")
    monkeypatch.setenv("KAFKA_SASL_USERNAME", "from-env")
    properties = tmp_path / "client.properties"
    properties.write_text(
        f"# comment\nsecurity.protocol=SASL_SSL\nsasl.mechanism=plain\nsasl.password=pw\n"
        f"ssl.ca.location={ca}\nunrelated.key=1\n"
    )
    security = load_security(properties)
    assert (security.protocol, security.mechanism, security.username, security.password) == (
        "SASL_SSL",
        "PLAIN",
        "from-env",
        "pw",
    )


def test_the_password_can_come_from_a_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "pw").write_text("from-file\n")
    for name, value in {
        "KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
        "KAFKA_SASL_MECHANISM": "SCRAM-SHA-256",
        "KAFKA_SASL_USERNAME": "u",
        "KAFKA_SASL_PASSWORD_FILE": str(tmp_path / "pw"),
    }.items():
        monkeypatch.setenv(name, value)
    assert load_security(None).password == "from-file"


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"KAFKA_SECURITY_PROTOCOL": "TLS"}, "security protocol 'TLS' is not one of"),
        ({"KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "KAFKA_SASL_MECHANISM": "GSSAPI"}, "SASL mechanism 'GSSAPI'"),
        ({"KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "KAFKA_SASL_MECHANISM": "PLAIN"}, "needs a SASL username"),
        ({"KAFKA_SECURITY_PROTOCOL": "SSL", "KAFKA_SSL_CA_LOCATION": "/no/such.pem"}, "no such file"),
    ],
)
def test_inconsistent_settings_are_usage_errors(
    env: dict[str, str], message: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(UserError, match=message) as raised:
        load_security(None)
    assert raised.value.exit_code == 2

"""Client security settings: read from the environment or a properties file, checked, translated
for kafka-python and Spark, and never shown."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from ventas.config import UserError
from ventas.lab.secure_broker import make_ca
from ventas.security import REDACTED_SPARK_OPTIONS, REDACTED_SPARK_STRINGS, KafkaSecurity, load_security

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
        ({"KAFKA_SECURITY_PROTOCOL": "TLS"}, r"security.protocol \(KAFKA_SECURITY_PROTOCOL\) 'TLS' is not one of"),
        (
            {"KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "KAFKA_SASL_MECHANISM": "GSSAPI"},
            r"sasl.mechanism \(KAFKA_SASL_MECHANISM\) 'GSSAPI' is not one of",
        ),
        ({"KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "KAFKA_SASL_MECHANISM": "PLAIN"}, "needs a SASL username"),
        (
            {"KAFKA_SECURITY_PROTOCOL": "SSL", "KAFKA_SSL_CA_LOCATION": "/no/such.pem"},
            "ssl.ca.location /no/such.pem: no",
        ),
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


def properties(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "client.properties"
    path.write_bytes(text.encode("latin-1"))
    return path


def test_a_java_clients_file_with_a_scram_jaas_config(tmp_path: Path) -> None:
    """The Java format: `:` separators, both comment marks, a continuation line, escapes in the
    properties file and in the JAAS quoting, and settings of other kinds, which are left to the flags."""
    ca = tmp_path / "ca.pem"
    ca.write_text("")
    path = properties(
        tmp_path,
        "# written for the Java clients\n"
        "! by a managed service\n"
        "bootstrap.servers=broker.example:9092\n"
        "security.protocol : SASL_SSL\n"
        "sasl.mechanism=SCRAM-SHA-512\n"
        "sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required \\\n"
        '    username="ventas\\u00e9" password="p=a\\\\\\"s;s\\\\\\\\";\n'
        f"ssl.truststore.type=PEM\nssl.truststore.location={ca}\n"
        "ssl.endpoint.identification.algorithm=https\n"
        "acks=all\nsession.timeout.ms=45000\n",
    )
    security = load_security(path)
    assert (security.protocol, security.mechanism, security.username, security.password, security.ca_location) == (
        "SASL_SSL",
        "SCRAM-SHA-512",
        "ventasé",
        'p=a"s;s\\',
        str(ca),
    )
    # and back to Spark, quoted so that Kafka's JAAS parser reads the same password
    assert security.spark_options()["kafka.sasl.jaas.config"].endswith('password="p=a\\"s;s\\\\";')


def test_a_plain_jaas_config_with_single_quotes_and_librdkafkas_plural_mechanisms(tmp_path: Path) -> None:
    path = properties(
        tmp_path,
        "security.protocol=SASL_PLAINTEXT\nsasl.mechanisms=PLAIN\n"
        "sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required username='KEY' "
        "password='SECRET';\n",
    )
    security = load_security(path)
    assert (security.mechanism, security.username, security.password) == ("PLAIN", "KEY", "SECRET")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "sasl.jaas.config=org.apache.kafka.common.security.oauthbearer.OAuthBearerLoginModule required;\n",
            "sasl.jaas.config: login module org.apache.kafka.common.security.oauthbearer.OAuthBearerLoginModule "
            "is not supported (use PLAIN or SCRAM)",
        ),
        (
            "sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required username=u;\n",
            'sasl.jaas.config: needs username="..." and password="..."',
        ),
        (
            'sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required password="s3cret" x\n',
            "sasl.jaas.config: cannot read it after option 'password' (key=\"value\" options, then ;)",
        ),
        ("sasl.jaas.config=username=u password=p\n", "sasl.jaas.config: not a JAAS login module configuration"),
        (
            "security.protocol=SASL_SSL\nsasl.mechanism=SCRAM-SHA-256\n"
            'sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required username="u" '
            'password="p";\n',
            "sasl.jaas.config: login module org.apache.kafka.common.security.plain.PlainLoginModule does not do "
            "sasl.mechanism SCRAM-SHA-256",
        ),
        (
            "sasl.username=u\nsasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required "
            'username="u" password="p";\n',
            "sasl.jaas.config: give it or sasl.username and sasl.password, not both",
        ),
        (
            "ssl.truststore.location=/etc/kafka/truststore.jks\nssl.truststore.password=changeit\n",
            "ssl.truststore.location: only PEM stores can be used (ssl.truststore.type=PEM)",
        ),
        (
            "ssl.keystore.type=PKCS12\nssl.keystore.location=/etc/kafka/client.p12\n",
            "ssl.keystore.type=PKCS12: only PEM stores can be used",
        ),
        ("ssl.endpoint.identification.algorithm=\n", "ssl.endpoint.identification.algorithm: this setting is not"),
        ("sasl.kerberos.service.name=kafka\n", "sasl.kerberos.service.name: this setting is not supported"),
        ("security.protocol=SSL\nssl.ca.location=\\u00zz\n", "client.properties: "),
    ],
)
def test_what_cannot_be_used_is_refused_in_one_line_naming_the_key(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(UserError) as raised:
        load_security(properties(tmp_path, text))
    assert raised.value.exit_code == 2
    assert message in str(raised.value) and "\n" not in str(raised.value)
    assert "s3cret" not in str(raised.value)


def client_certificate(tmp_path: Path) -> tuple[Path, Path]:
    make_ca(tmp_path, "client")
    return tmp_path / "client.pem", tmp_path / "client.key"


def test_spark_gets_the_client_certificate_and_key_as_a_pem_keystore(tmp_path: Path) -> None:
    cert, key = client_certificate(tmp_path)
    options = KafkaSecurity("SSL", cert_location=str(cert), key_location=str(key)).spark_options()
    assert options["kafka.ssl.keystore.type"] == "PEM"
    assert options["kafka.ssl.keystore.certificate.chain"] == cert.read_text()
    assert options["kafka.ssl.keystore.key"].strip() == key.read_text().strip()


def test_spark_hides_the_secret_options_and_shows_the_others_whatever_their_text(
    spark, capsys: pytest.CaptureFixture[str]
) -> None:
    """Spark hides an option whose key or value holds a match (of its own spark.redaction.regex too):
    a certificate chain's base64 spells "url" by chance."""
    chain = "-----BEGIN CERTIFICATE-----\nMIIBurlJaasURL\n-----END CERTIFICATE-----\n"
    options = {
        **SCRAM.spark_options(),
        "kafka.ssl.keystore.certificate.chain": chain,
        "kafka.ssl.keystore.key": "-----BEGIN PRIVATE KEY-----\nMIIE\n-----END PRIVATE KEY-----\n",
        "subscribe": "url-clicks",
    }
    spark.conf.set("spark.sql.redaction.options.regex", REDACTED_SPARK_OPTIONS)
    try:
        spark.readStream.format("rate").options(**options).load().explain(extended=True)
    finally:
        spark.conf.unset("spark.sql.redaction.options.regex")
    plan = capsys.readouterr().out
    secrets = ("kafka.sasl.jaas.config", "kafka.ssl.keystore.key")
    for name, value in options.items():
        assert (f"{name}=*********(redacted)" if name in secrets else f"{name}={value}") in plan
    assert "s3cr" not in plan and "PRIVATE KEY" not in plan


def test_keys_spark_cannot_read_are_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cert, key = client_certificate(tmp_path)
    pkcs1 = tmp_path / "pkcs1.key"
    subprocess.run(["openssl", "pkey", "-in", key, "-traditional", "-out", pkcs1], check=True)
    with pytest.raises(UserError, match="Spark's Kafka source reads PKCS#8 keys only"):
        KafkaSecurity("SSL", cert_location=str(cert), key_location=str(pkcs1)).spark_options()

    encrypted = tmp_path / "encrypted.key"
    subprocess.run(["openssl", "pkcs8", "-topk8", "-in", key, "-passout", "pass:secret", "-out", encrypted], check=True)
    for name, value in {"KAFKA_SECURITY_PROTOCOL": "SSL", "KAFKA_SSL_CERT_LOCATION": str(cert)}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("KAFKA_SSL_KEY_LOCATION", str(encrypted))
    with pytest.raises(UserError, match="encrypted keys are not supported"):
        load_security(None)
    monkeypatch.setenv("KAFKA_SSL_KEY_LOCATION", str(cert))
    with pytest.raises(UserError, match=f"ssl.key.location {cert}: no PRIVATE KEY in it"):
        load_security(None)


def test_the_redaction_regex_survives_long_texts_in_javas_engine(spark) -> None:
    """Spark applies it with java.util.regex, which recurses once per repetition of a group: the unbounded
    group it had overflows the stack on a long text full of escaped quotes, as JSON is."""
    from pyspark.sql import functions as F

    text = 'password="' + '\\"x' * 200_000
    redacted = spark.range(1).select(F.regexp_replace(F.lit(text), REDACTED_SPARK_STRINGS, "*")).first()[0]
    assert redacted == text  # no password of the JAAS configuration's shape: nothing to hide, no error
    secret = 'sasl.jaas.config=... password="s3cr\\"et\\\\";'
    assert spark.range(1).select(F.regexp_replace(F.lit(secret), REDACTED_SPARK_STRINGS, "*")).first()[0] == (
        "sasl.jaas.config=... *;"
    )

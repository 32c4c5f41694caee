"""Kafka client security (TLS, SASL) for the producer and the consumer, from the environment or a
properties file, translated for kafka-python and for Spark's Kafka source.

Settings (environment variable / key in the file given by --client-properties, the names
confluent-kafka-python uses):

    KAFKA_SECURITY_PROTOCOL   security.protocol          PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL
    KAFKA_SASL_MECHANISM      sasl.mechanism             PLAIN, SCRAM-SHA-256, SCRAM-SHA-512
    KAFKA_SASL_USERNAME       sasl.username
    KAFKA_SASL_PASSWORD       sasl.password              (or KAFKA_SASL_PASSWORD_FILE: a file holding it)
    KAFKA_SSL_CA_LOCATION     ssl.ca.location            PEM file of the CA(s) to trust
    KAFKA_SSL_CERT_LOCATION   ssl.certificate.location   client certificate (mutual TLS, producer)
    KAFKA_SSL_KEY_LOCATION    ssl.key.location           client key (mutual TLS, producer)

Passwords are never taken from the command line and never printed: `repr()` hides them, and the
consumer asks Spark to redact the options that carry them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from ventas.config import EXIT_USAGE, UserError

PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
SETTINGS = {  # property key -> environment variable
    "security.protocol": "KAFKA_SECURITY_PROTOCOL",
    "sasl.mechanism": "KAFKA_SASL_MECHANISM",
    "sasl.username": "KAFKA_SASL_USERNAME",
    "sasl.password": "KAFKA_SASL_PASSWORD",
    "ssl.ca.location": "KAFKA_SSL_CA_LOCATION",
    "ssl.certificate.location": "KAFKA_SSL_CERT_LOCATION",
    "ssl.key.location": "KAFKA_SSL_KEY_LOCATION",
}
LOGIN_MODULES = {
    "PLAIN": "org.apache.kafka.common.security.plain.PlainLoginModule",
    "SCRAM-SHA-256": "org.apache.kafka.common.security.scram.ScramLoginModule",
    "SCRAM-SHA-512": "org.apache.kafka.common.security.scram.ScramLoginModule",
}


@dataclass(frozen=True)
class KafkaSecurity:
    protocol: str = "PLAINTEXT"
    mechanism: str | None = None
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    ca_location: str | None = None
    cert_location: str | None = None
    key_location: str | None = None

    @property
    def uses_sasl(self) -> bool:
        return self.protocol.startswith("SASL_")

    @property
    def uses_tls(self) -> bool:
        return self.protocol.endswith("SSL")

    def kafka_python(self) -> dict:
        """Keyword arguments for kafka-python's clients."""
        config: dict = {"security_protocol": self.protocol}
        if self.uses_sasl:
            config |= {
                "sasl_mechanism": self.mechanism,
                "sasl_plain_username": self.username,
                "sasl_plain_password": self.password,
            }
        if self.uses_tls:
            config |= {
                "ssl_cafile": self.ca_location,
                "ssl_certfile": self.cert_location,
                "ssl_keyfile": self.key_location,
                "ssl_check_hostname": True,
            }
        return config

    def spark_options(self) -> dict[str, str]:
        """Options for Spark's Kafka source (`kafka.` + the Java client's settings)."""
        options = {"kafka.security.protocol": self.protocol}
        if self.uses_sasl:
            options["kafka.sasl.mechanism"] = self.mechanism
            options["kafka.sasl.jaas.config"] = (
                f'{LOGIN_MODULES[self.mechanism]} required username="{_jaas_quote(self.username)}" '
                f'password="{_jaas_quote(self.password)}";'
            )
        if self.uses_tls and self.ca_location:
            options["kafka.ssl.truststore.type"] = "PEM"
            options["kafka.ssl.truststore.location"] = self.ca_location
        return options


def _jaas_quote(value: str | None) -> str:
    return (value or "").replace("\\", "\\\\").replace('"', '\\"')


def read_properties(path: Path) -> dict[str, str]:
    """A Java-style properties file: `key=value` lines, `#` comments."""
    try:
        lines = path.read_text().splitlines()
    except OSError as error:
        raise UserError(f"--client-properties {path}: {error.strerror}", EXIT_USAGE) from None
    pairs = (line.split("=", 1) for line in lines if "=" in line and not line.lstrip().startswith(("#", "!")))
    return {key.strip(): value.strip() for key, value in pairs}


def load_security(properties_file: Path | None) -> KafkaSecurity:
    """Settings from the environment, overridden by the properties file; checked for consistency."""
    values = {key: os.environ.get(variable) or None for key, variable in SETTINGS.items()}
    password_file = os.environ.get("KAFKA_SASL_PASSWORD_FILE")
    if password_file and not values["sasl.password"]:
        try:
            values["sasl.password"] = Path(password_file).read_text().strip()
        except OSError as error:
            raise UserError(f"KAFKA_SASL_PASSWORD_FILE {password_file}: {error.strerror}", EXIT_USAGE) from None
    if properties_file:
        values |= {k: v for k, v in read_properties(properties_file).items() if k in SETTINGS}
    security = KafkaSecurity(
        protocol=(values["security.protocol"] or "PLAINTEXT").upper(),
        mechanism=(values["sasl.mechanism"] or "").upper() or None,
        username=values["sasl.username"],
        password=values["sasl.password"],
        ca_location=values["ssl.ca.location"],
        cert_location=values["ssl.certificate.location"],
        key_location=values["ssl.key.location"],
    )
    if security.protocol not in PROTOCOLS:
        raise UserError(f"security protocol {security.protocol!r} is not one of {', '.join(PROTOCOLS)}", EXIT_USAGE)
    if security.uses_sasl:
        if security.mechanism not in MECHANISMS:
            raise UserError(f"SASL mechanism {security.mechanism!r} is not one of {', '.join(MECHANISMS)}", EXIT_USAGE)
        if not security.username or not security.password:
            raise UserError(
                f"{security.protocol} needs a SASL username and password (KAFKA_SASL_USERNAME, "
                "KAFKA_SASL_PASSWORD or KAFKA_SASL_PASSWORD_FILE, or --client-properties)",
                EXIT_USAGE,
            )
    for name in ("ca_location", "cert_location", "key_location"):
        location = getattr(security, name)
        if location and not Path(location).is_file():
            raise UserError(f"{name.replace('_', ' ')} {location}: no such file", EXIT_USAGE)
    return security


def connection_failure(bootstrap_servers: list[str], security: KafkaSecurity, timeout_s: float = 10) -> str | None:
    """Why the first broker refuses us, in a user's words (authentication, TLS), or None.

    kafka-python reports any failed bootstrap as "no brokers available"; one direct connection
    attempt tells a wrong password or an untrusted certificate apart from a broker that is down."""
    import socket
    import ssl

    from kafka.conn import BrokerConnection
    from kafka.errors import SaslAuthenticationFailedError

    host, _, port = bootstrap_servers[0].rpartition(":")
    connection = BrokerConnection(host, int(port), socket.AF_UNSPEC, **security.kafka_python())
    errors: list[BaseException] = []
    close = connection.close

    def record(error: BaseException | None = None) -> None:
        if error is not None:
            errors.append(error)
        close(error)

    connection.close = record
    try:
        connection.connect_blocking(timeout=timeout_s)
    except ssl.SSLError as error:
        errors.append(error)
    finally:
        close()
    for error in errors:
        if isinstance(error, SaslAuthenticationFailedError):
            return f"authentication failed for user {security.username!r} ({security.mechanism})"
        if "CERTIFICATE_VERIFY_FAILED" in str(error):
            return f"the broker's TLS certificate is not signed by a CA in {security.ca_location}"
    return None


def refuse_early(bootstrap_servers: list[str], security: KafkaSecurity) -> None:
    """UserError now, in one line, when the broker refuses these credentials or its certificate is not
    trusted: kafka-python's clients would otherwise wait, or hang, without saying why."""
    if security.protocol == "PLAINTEXT":
        return
    refusal = connection_failure(bootstrap_servers, security)
    if refusal:
        raise UserError(f"{','.join(bootstrap_servers)}: {refusal}")

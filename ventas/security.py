"""Kafka client security (TLS, SASL) for the producer and the consumer, from the environment or a
properties file, translated for kafka-python and for Spark's Kafka source.

Settings (environment variable / key in the file given by --client-properties, the names
confluent-kafka-python uses):

    KAFKA_SECURITY_PROTOCOL   security.protocol          PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL
    KAFKA_SASL_MECHANISM      sasl.mechanism             PLAIN, SCRAM-SHA-256, SCRAM-SHA-512
    KAFKA_SASL_USERNAME       sasl.username
    KAFKA_SASL_PASSWORD       sasl.password              (or KAFKA_SASL_PASSWORD_FILE: a file holding it)
    KAFKA_SSL_CA_LOCATION     ssl.ca.location            PEM file of the CA(s) to trust
    KAFKA_SSL_CERT_LOCATION   ssl.certificate.location   client certificate (mutual TLS)
    KAFKA_SSL_KEY_LOCATION    ssl.key.location           client key, PEM, unencrypted (mutual TLS)

The file may also be one written for Kafka's Java clients: `sasl.jaas.config` with the PLAIN or SCRAM
login module gives the username and password, and PEM trust and key stores (`ssl.truststore.*`,
`ssl.keystore.*` with type PEM) give the CA and the client certificate. Any other `security.`,
`sasl.` or `ssl.` setting is refused, in one line naming it, rather than silently not applied;
settings of other kinds (`bootstrap.servers`, `acks`, timeouts) are left to the flags.

Passwords are never taken from the command line and never printed: `repr()` hides them, and the
consumer asks Spark to redact the options that carry them (REDACTED_SPARK_OPTIONS).
"""

from __future__ import annotations

import logging
import os
import re
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import javaproperties

from ventas.config import EXIT_USAGE, UserError, bootstrap_list

T = TypeVar("T")

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
ALIASES = {"sasl.mechanisms": "sasl.mechanism"}  # librdkafka's own spelling
LOGIN_MODULES = {
    "PLAIN": "org.apache.kafka.common.security.plain.PlainLoginModule",
    "SCRAM-SHA-256": "org.apache.kafka.common.security.scram.ScramLoginModule",
    "SCRAM-SHA-512": "org.apache.kafka.common.security.scram.ScramLoginModule",
}
# Source options that carry a secret (the JAAS password, the client's private key), hidden by Spark in
# plans and its UI (spark.sql.redaction.options.regex; `url` is Spark's own default). Spark hides an
# option when the regex is found in its key or in its value, so it must match a whole one-line text:
# unanchored, "url" inside a certificate chain's base64 (about 1 certificate in 30) hid the whole chain.
REDACTED_SPARK_OPTIONS = r"(?i)^(?:url|.*(?:jaas|password).*|kafka\.ssl\.keystore\.key)$"
# The same secrets wherever Spark prints them unnamed (spark.sql.redaction.string.regex): Spark 3.5's
# explain shows the Kafka source's options a second time, unredacted, in its v1 fallback relation.
# Java's regex engine recurses once per repetition of a group, so the only repeated group here (an
# escaped character of the password) is bounded: `(?:[^"\\]|\\.)*` overflows the stack on a long text
# full of escaped quotes. (The StackOverflowError the torture test met at stops was another regex,
# Spark's own StreamExecution.PROXY_ERROR; see ventas/spark_workarounds.py.)
REDACTED_SPARK_STRINGS = (
    r'(?s)password="[^"\\]*+(?:\\.[^"\\]*+){0,256}+"'  # in the JAAS configuration
    r"|-----BEGIN ([A-Z ]*)PRIVATE KEY-----.*?-----END \1PRIVATE KEY-----"
)
PEM_BLOCK = re.compile(r"-----BEGIN ([A-Z0-9 ]+)-----.+?-----END \1-----", re.DOTALL)


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
        """Options for Spark's Kafka source (`kafka.` + the Java client's settings). The client
        certificate and key go in as PEM text, so executors need no local copy of the files."""
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
        if self.uses_tls and self.cert_location:
            key = pem_blocks("ssl.key.location", self.key_location, "PRIVATE KEY")
            if "BEGIN PRIVATE KEY" not in key:
                raise UserError(
                    f"ssl.key.location {self.key_location}: Spark's Kafka source reads PKCS#8 keys only "
                    "(BEGIN PRIVATE KEY); convert it with: openssl pkcs8 -topk8 -nocrypt -in KEY -out KEY8",
                    EXIT_USAGE,
                )
            options["kafka.ssl.keystore.type"] = "PEM"
            options["kafka.ssl.keystore.certificate.chain"] = pem_blocks(
                "ssl.certificate.location", self.cert_location, "CERTIFICATE"
            )
            options["kafka.ssl.keystore.key"] = key
        return options


def _jaas_quote(value: str | None) -> str:
    return (value or "").replace("\\", "\\\\").replace('"', '\\"')


def pem_blocks(key: str, path: str | None, kind: str) -> str:
    """The PEM blocks of `kind` (CERTIFICATE, PRIVATE KEY; RSA/EC PRIVATE KEY count as keys) in a file,
    or a UserError naming the setting `key`."""
    try:
        text = Path(path or "").read_text()
    except (OSError, UnicodeDecodeError) as error:
        raise UserError(f"{key} {path}: {getattr(error, 'strerror', None) or 'not a PEM file'}", EXIT_USAGE) from None
    blocks = [m.group(0) for m in PEM_BLOCK.finditer(text) if m.group(1).endswith(kind)]
    if not blocks:
        raise UserError(f"{key} {path}: no {kind} in it (PEM)", EXIT_USAGE)
    return "\n".join(blocks) + "\n"


def read_properties(path: Path) -> dict[str, str]:
    """A properties file as Kafka's Java clients read it (java.util.Properties: `key=value` or
    `key: value`, `#` and `!` comments, backslash escapes, continuation lines, ISO-8859-1)."""
    try:
        with path.open("rb") as file:
            return javaproperties.load(file)
    except OSError as error:
        raise UserError(f"--client-properties {path}: {error.strerror}", EXIT_USAGE) from None
    except ValueError as error:  # a malformed \uXXXX escape
        raise UserError(f"--client-properties {path}: {error}", EXIT_USAGE) from None


JAAS_OPTION = re.compile(r"""\s*([\w.-]+)\s*=\s*("(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|[^\s;"']+)""", re.DOTALL)
JAAS_ESCAPES = {"a": "\a", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v"}


def parse_jaas(config: str) -> tuple[str, dict[str, str]]:
    """`LoginModule flag key=value ...;` (one module, as Kafka's `sasl.jaas.config` takes it) -> the
    module's class name and its options, quoted values unescaped as Java's StreamTokenizer does."""
    head = re.match(r"\s*([\w.$]+)\s+(required|requisite|sufficient|optional)\b", config)
    if not head:
        raise UserError("sasl.jaas.config: not a JAAS login module configuration (MODULE required ...;)", EXIT_USAGE)
    options, position = {}, head.end()
    while match := JAAS_OPTION.match(config, position):
        name, value = match.groups()
        if value[0] in "\"'":
            value = re.sub(r"\\(.)", lambda m: JAAS_ESCAPES.get(m.group(1), m.group(1)), value[1:-1], flags=re.DOTALL)
        options[name] = value
        position = match.end()
    if not re.fullmatch(r"\s*;\s*", config[position:]):
        where = f"option {name!r}" if options else f"{head.group(2)!r}"  # never the values: one is a password
        raise UserError(f'sasl.jaas.config: cannot read it after {where} (key="value" options, then ;)', EXIT_USAGE)
    return head.group(1), options


def file_settings(properties: dict[str, str]) -> tuple[dict[str, str], str | None]:
    """The settings of a properties file as the keys of SETTINGS (librdkafka's keys as they are, Java's
    translated) and the JAAS login module if one is named; UserError naming the first security setting
    this project cannot apply."""
    settings: dict[str, str] = {}
    login_module = None
    for key, value in properties.items():
        if ALIASES.get(key, key) in SETTINGS:
            settings[ALIASES.get(key, key)] = value
        elif key == "sasl.jaas.config":
            if {"sasl.username", "sasl.password"} & properties.keys():
                raise UserError("sasl.jaas.config: give it or sasl.username and sasl.password, not both", EXIT_USAGE)
            login_module, options = parse_jaas(value)
            if login_module not in LOGIN_MODULES.values():
                raise UserError(
                    f"sasl.jaas.config: login module {login_module} is not supported (use PLAIN or SCRAM)", EXIT_USAGE
                )
            if not {"username", "password"} <= options.keys():
                raise UserError('sasl.jaas.config: needs username="..." and password="..."', EXIT_USAGE)
            settings["sasl.username"], settings["sasl.password"] = options["username"], options["password"]
        elif key in ("ssl.truststore.location", "ssl.keystore.location"):
            store = key.rpartition(".")[0]
            if properties.get(f"{store}.type", "JKS").upper() != "PEM":
                raise UserError(
                    f"{key}: only PEM stores can be used ({store}.type=PEM), or give ssl.ca.location, "
                    "ssl.certificate.location and ssl.key.location",
                    EXIT_USAGE,
                )
            if store == "ssl.truststore":
                settings["ssl.ca.location"] = value
            else:
                settings["ssl.certificate.location"] = settings["ssl.key.location"] = value
        elif key in ("ssl.truststore.type", "ssl.keystore.type"):
            if value.upper() != "PEM":
                raise UserError(f"{key}={value}: only PEM stores can be used", EXIT_USAGE)
        elif key == "ssl.endpoint.identification.algorithm" and value.lower() == "https":
            continue  # the default: the broker's host name is checked
        elif key.startswith(("security.", "sasl.", "ssl.")):
            raise UserError(f"{key}: this setting is not supported by ventas-events' clients", EXIT_USAGE)
    return settings, login_module


def load_security(properties_file: Path | None) -> KafkaSecurity:
    """Settings from the environment, overridden by the properties file; checked for consistency."""
    values = {key: os.environ.get(variable) or None for key, variable in SETTINGS.items()}
    password_file = os.environ.get("KAFKA_SASL_PASSWORD_FILE")
    if password_file and not values["sasl.password"]:
        try:
            values["sasl.password"] = Path(password_file).read_text().strip()
        except OSError as error:
            raise UserError(f"KAFKA_SASL_PASSWORD_FILE {password_file}: {error.strerror}", EXIT_USAGE) from None
    login_module = None
    if properties_file:
        from_file, login_module = file_settings(read_properties(properties_file))
        values |= from_file
    security = KafkaSecurity(
        protocol=(values["security.protocol"] or "PLAINTEXT").upper(),
        mechanism=(values["sasl.mechanism"] or "").upper() or None,
        username=values["sasl.username"],
        password=values["sasl.password"],
        ca_location=values["ssl.ca.location"],
        cert_location=values["ssl.certificate.location"],
        key_location=values["ssl.key.location"] or values["ssl.certificate.location"],
    )
    check(security, login_module)
    return security


def check(security: KafkaSecurity, login_module: str | None) -> None:
    """UserError, naming the setting, when the settings cannot work together."""
    if security.protocol not in PROTOCOLS:
        raise UserError(
            f"security.protocol (KAFKA_SECURITY_PROTOCOL) {security.protocol!r} is not one of {', '.join(PROTOCOLS)}",
            EXIT_USAGE,
        )
    if security.uses_sasl:
        if security.mechanism not in MECHANISMS:
            raise UserError(
                f"sasl.mechanism (KAFKA_SASL_MECHANISM) {security.mechanism!r} is not one of {', '.join(MECHANISMS)}",
                EXIT_USAGE,
            )
        if login_module and login_module != LOGIN_MODULES[security.mechanism]:
            raise UserError(
                f"sasl.jaas.config: login module {login_module} does not do sasl.mechanism {security.mechanism}",
                EXIT_USAGE,
            )
        if not security.username or not security.password:
            raise UserError(
                f"{security.protocol} needs a SASL username and password (KAFKA_SASL_USERNAME, "
                "KAFKA_SASL_PASSWORD or KAFKA_SASL_PASSWORD_FILE, or --client-properties)",
                EXIT_USAGE,
            )
    for key, location in (
        ("ssl.ca.location", security.ca_location),
        ("ssl.certificate.location", security.cert_location),
        ("ssl.key.location", security.key_location),
    ):
        if location and not Path(location).is_file():
            raise UserError(f"{key} {location}: no such file", EXIT_USAGE)
    if security.cert_location:
        pem_blocks("ssl.certificate.location", security.cert_location, "CERTIFICATE")
        if "ENCRYPTED" in pem_blocks("ssl.key.location", security.key_location, "PRIVATE KEY"):
            raise UserError(f"ssl.key.location {security.key_location}: encrypted keys are not supported", EXIT_USAGE)


SASL_HANG_UPS = 3  # connections in a row that a broker closed during a SASL login: a refusal


class _LoggedErrors(logging.Handler):
    """The exceptions kafka-python logs while bootstrapping: its clients raise only a timeout, and log
    why each connection failed (TLS handshake, SASL authentication)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.errors: list[BaseException] = []

    def emit(self, record: logging.LogRecord) -> None:
        if isinstance(record.args, tuple):
            self.errors.extend(arg for arg in record.args if isinstance(arg, BaseException))


def refusal(errors: list[BaseException], security: KafkaSecurity) -> str | None:
    """Why the broker refused us, in a user's words, from the errors of failed connections; None when
    nothing says the broker is there (it is down, or the address is wrong)."""
    from kafka.errors import SaslAuthenticationFailedError

    failed_login = f"authentication failed for user {security.username!r} ({security.mechanism})"
    for error in errors:
        if isinstance(error, SaslAuthenticationFailedError):
            return failed_login
        if "CERTIFICATE_VERIFY_FAILED" in str(error):
            return f"the broker's TLS certificate is not signed by a CA in {security.ca_location}"
        if re.search(r"ALERT_(BAD_CERTIFICATE|CERTIFICATE_REQUIRED|CERTIFICATE_UNKNOWN|UNKNOWN_CA)", str(error)):
            if security.cert_location:
                return f"the broker does not accept the client certificate {security.cert_location}"
            return "the broker requires a client certificate (mutual TLS: ssl.certificate.location, ssl.key.location)"
    # kafka-python 3.0 drops a response that arrives together with the connection's end, as the broker's
    # refusal of a SASL login does: then all it reports is that the broker hung up, connection after
    # connection (tests/test_secure.py::test_a_wrong_password_is_refused meets both cases).
    hang_ups = {id(error) for error in errors if str(error).endswith("socket disconnected")}
    if security.uses_sasl and len(hang_ups) >= SASL_HANG_UPS:
        return (
            f"{failed_login}, or this is not a {security.protocol} listener: the broker closed every "
            "connection before the login completed"
        )
    return None


class BrokerUnreachable(UserError):
    """No broker answered in time: `reason` says so, the message adds how to start one."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"{reason} (start one with: scripts/kafka-local start)")
        self.reason = reason


def connect(client_class: type[T], bootstrap_servers: str, security: KafkaSecurity, timeout_s: float, **settings) -> T:
    """A kafka-python client (KafkaProducer, KafkaConsumer, ...) that has reached its broker, waiting at
    most `timeout_s` for it; UserError, in one line, when it stays unreachable or refuses us (a wrong
    password, an untrusted certificate), as soon as it refuses: kafka-python itself would retry until
    the timeout and then only say that it timed out.

    The client is built in a thread of its own while this one reads kafka-python's log records about
    failed connections (held back, as they become the one line, unless DEBUG logging is on)."""
    from kafka.errors import KafkaTimeoutError

    settings = {
        "bootstrap_servers": bootstrap_list(bootstrap_servers),
        "bootstrap_timeout_ms": int(timeout_s * 1000),
        **security.kafka_python(),
        **settings,
    }
    built: dict = {}

    def build() -> None:
        try:
            built["client"] = client_class(**settings)
        except Exception as error:  # handed to the caller's thread below
            built["error"] = error

    logged = _LoggedErrors()
    kafka_log = logging.getLogger("kafka")
    level, propagate = kafka_log.level, kafka_log.propagate
    kafka_log.addHandler(logged)
    kafka_log.propagate = kafka_log.isEnabledFor(logging.DEBUG)
    kafka_log.setLevel(min(kafka_log.getEffectiveLevel(), logging.WARNING))
    builder = threading.Thread(target=build, name="kafka-bootstrap", daemon=True)
    try:
        builder.start()
        while builder.is_alive():
            builder.join(0.1)
            why = refusal(logged.errors, security)
            if why:  # the builder thread gives up by itself at the timeout; the process exits before
                raise UserError(f"{bootstrap_servers}: {why}")
    finally:
        kafka_log.removeHandler(logged)
        kafka_log.setLevel(level)
        kafka_log.propagate = propagate
    if isinstance(built.get("error"), KafkaTimeoutError):
        raise BrokerUnreachable(f"no Kafka broker reachable at {bootstrap_servers} after {timeout_s:.0f}s")
    if "error" in built:
        raise built["error"]
    return built["client"]

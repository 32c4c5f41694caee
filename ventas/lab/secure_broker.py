"""The secure profile of the local broker (`scripts/kafka-local start --secure`): a broker that
refuses strangers, to test the clients' TLS and SASL settings against.

* TLS with a throwaway CA and a broker certificate for 127.0.0.1, made with openssl at the first
  start (`ca.pem` is what clients trust), and a client certificate for WRITER signed by that CA;
* three client listeners (LISTENERS): SASL_SSL on the broker's port, and on other ports SSL, which
  requires a client certificate (mutual TLS; the certificate's CN is the user), and SASL_PLAINTEXT;
* SASL with SCRAM-SHA-256, SCRAM-SHA-512 (credentials stored at format time) and PLAIN; ACLs with
  the standard KRaft authorizer;
* two users with random passwords: WRITER may read and write the topic, STRANGER may not. Their
  settings are in `client-USER[-LISTENER].properties` (mode 0600, see properties_file); the
  SASL_PLAINTEXT one is written as for Kafka's Java clients, with `sasl.jaas.config`;
* a PLAINTEXT listener on another port of 127.0.0.1 for the project's own administration (topics,
  ACLs) and the broker's internal traffic, whose anonymous principal is the super user.
"""

from __future__ import annotations

import json
import secrets
import subprocess
from pathlib import Path

from ventas.config import UserError

WRITER = "writer"
STRANGER = "stranger"
SCRAM_MECHANISMS = ("SCRAM-SHA-256", "SCRAM-SHA-512")
LISTENERS = ("SASL_SSL", "SSL", "SASL_PLAINTEXT")
SASL_LISTENERS = ("SASL_SSL", "SASL_PLAINTEXT")


def _users(data_dir: Path) -> dict[str, str]:
    """The users and their passwords, made once per data dir."""
    path = data_dir / "users.json"
    if not path.exists():
        path.touch(mode=0o600)
        path.write_text(json.dumps({user: secrets.token_urlsafe(18) for user in (WRITER, STRANGER)}))
    return json.loads(path.read_text())


def _openssl(*args: str) -> None:
    result = subprocess.run(["openssl", *args], capture_output=True, text=True)
    if result.returncode != 0:
        raise UserError(f"openssl {args[0]} failed: {result.stderr.strip().splitlines()[-1:]}")


def make_ca(directory: Path, name: str) -> Path:
    """A self-signed CA: `<name>.pem` (certificate) and `<name>.key`."""
    _openssl(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "7",
        "-subj",
        f"/CN={name}",
        "-keyout",
        str(directory / f"{name}.key"),
        "-out",
        str(directory / f"{name}.pem"),
    )
    return directory / f"{name}.pem"


def _sign(tls: Path, name: str, subject: str, extensions: str) -> None:
    """`<name>.key` and `<name>.pem`, a certificate signed by the CA in `tls`."""
    (tls / f"{name}.ext").write_text(extensions)
    _openssl(
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        subject,
        "-keyout",
        str(tls / f"{name}.key"),
        "-out",
        str(tls / f"{name}.csr"),
    )
    _openssl(
        "x509",
        "-req",
        "-in",
        str(tls / f"{name}.csr"),
        "-CA",
        str(tls / "ca.pem"),
        "-CAkey",
        str(tls / "ca.key"),
        "-CAcreateserial",
        "-days",
        "7",
        "-extfile",
        str(tls / f"{name}.ext"),
        "-out",
        str(tls / f"{name}.pem"),
    )


def _certificates(data_dir: Path, host: str) -> tuple[Path, Path]:
    """The CA to trust, the broker's PEM keystore (PKCS#8 key + certificate) and WRITER's client
    certificate (`tls/writer.pem`, `tls/writer.key`), made once."""
    tls = data_dir / "tls"
    keystore = tls / "broker-keystore.pem"
    if not keystore.exists():
        tls.mkdir(parents=True, exist_ok=True)
        make_ca(tls, "ca")
        _sign(tls, WRITER, f"/CN={WRITER}", "extendedKeyUsage=clientAuth\n")
        _sign(tls, "broker", f"/CN={host}", f"subjectAltName=IP:{host},DNS:localhost\n")
        keystore.write_text((tls / "broker.key").read_text() + (tls / "broker.pem").read_text())
    return tls / "ca.pem", keystore


def properties_file(data_dir: Path, user: str, listener: str = "SASL_SSL") -> Path:
    """Where the settings of `user` for `listener` are written."""
    suffix = "" if listener == "SASL_SSL" else "-" + listener.lower().replace("_", "-")
    return data_dir / f"client-{user}{suffix}.properties"


def _write_client_properties(data_dir: Path, ca: Path) -> None:
    def write(user: str, listener: str, text: str) -> None:
        path = properties_file(data_dir, user, listener)
        path.touch(mode=0o600)
        path.write_text(text)

    users = _users(data_dir)
    for user, password in users.items():
        write(
            user,
            "SASL_SSL",
            f"security.protocol=SASL_SSL\nsasl.mechanism=SCRAM-SHA-512\nsasl.username={user}\n"
            f"sasl.password={password}\nssl.ca.location={ca}\n",
        )
    tls = data_dir / "tls"
    write(
        WRITER,
        "SSL",
        f"security.protocol=SSL\nssl.ca.location={ca}\n"
        f"ssl.certificate.location={tls / f'{WRITER}.pem'}\nssl.key.location={tls / f'{WRITER}.key'}\n",
    )
    write(  # as for Kafka's Java clients (the passwords are URL-safe: no quoting needed)
        WRITER,
        "SASL_PLAINTEXT",
        "# Kafka Java client settings\n"
        "security.protocol: SASL_PLAINTEXT\n"
        "sasl.mechanism: PLAIN\n"
        "sasl.jaas.config: org.apache.kafka.common.security.plain.PlainLoginModule required \\\n"
        f'    username="{WRITER}" \\\n'
        f'    password="{users[WRITER]}";\n',
    )


def listener_config(data_dir: Path, host: str, ports: dict[str, int]) -> list[str]:
    """server.properties lines of the secure profile: `ports` has one for each of LISTENERS and ADMIN
    (CONTROLLER_PORT is filled in by the caller)."""
    ca, keystore = _certificates(data_dir, host)
    _write_client_properties(data_dir, ca)
    plain_users = " ".join(f'user_{user}="{password}"' for user, password in _users(data_dir).items())
    addresses = ",".join(f"{name}://{host}:{ports[name]}" for name in (*LISTENERS, "ADMIN"))
    return [
        f"listeners={addresses},CONTROLLER://{host}:CONTROLLER_PORT",
        f"advertised.listeners={addresses}",
        "inter.broker.listener.name=ADMIN",
        "listener.security.protocol.map=CONTROLLER:PLAINTEXT,ADMIN:PLAINTEXT,"
        + ",".join(f"{name}:{name}" for name in LISTENERS),
        f"sasl.enabled.mechanisms=PLAIN,{','.join(SCRAM_MECHANISMS)}",
        *(
            f"listener.name.{listener.lower()}.plain.sasl.jaas.config="
            f"org.apache.kafka.common.security.plain.PlainLoginModule required {plain_users};"
            for listener in SASL_LISTENERS
        ),
        *(
            f"listener.name.{listener.lower()}.{m.lower()}.sasl.jaas.config="
            "org.apache.kafka.common.security.scram.ScramLoginModule required;"
            for listener in SASL_LISTENERS
            for m in SCRAM_MECHANISMS
        ),
        "ssl.keystore.type=PEM",
        f"ssl.keystore.location={keystore}",
        "ssl.truststore.type=PEM",
        f"ssl.truststore.location={ca}",
        "ssl.client.auth=none",
        "listener.name.ssl.ssl.client.auth=required",
        "ssl.principal.mapping.rules=RULE:^CN=(.*)$/$1/,DEFAULT",  # the certificate CN=writer is User:writer
        "authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer",
        "super.users=User:ANONYMOUS",
        "allow.everyone.if.no.acl.found=false",
    ]


def scram_arguments(data_dir: Path) -> list[str]:
    """`kafka-storage format` arguments that store every user's SCRAM credentials."""
    return [
        argument
        for user, password in _users(data_dir).items()
        for mechanism in SCRAM_MECHANISMS
        for argument in ("--add-scram", f"{mechanism}=[name={user},password={password}]")
    ]


def grant(admin_bootstrap: str, user: str, topics: tuple[str, ...]) -> None:
    """Let `user` describe, write and read `topics`, and read with any consumer group."""
    from kafka import KafkaAdminClient
    from kafka.admin import (
        ACL,
        ACLOperation,
        ACLPermissionType,
        ACLResourcePatternType,
        ResourcePattern,
        ResourceType,
    )

    def allow(operation: ACLOperation, kind: ResourceType, name: str) -> ACL:
        pattern = ResourcePattern(kind, name, ACLResourcePatternType.LITERAL)
        return ACL(f"User:{user}", "*", operation, ACLPermissionType.ALLOW, pattern)

    acls = [
        allow(op, ResourceType.TOPIC, topic)
        for topic in topics
        for op in (ACLOperation.DESCRIBE, ACLOperation.WRITE, ACLOperation.READ)
    ]
    acls.append(allow(ACLOperation.READ, ResourceType.GROUP, "*"))
    admin = KafkaAdminClient(bootstrap_servers=admin_bootstrap)
    try:
        result = admin.create_acls(acls)
        if result["failed"]:
            raise UserError(f"granting ACLs to {user} failed: {result['failed'][0].__name__}")
    finally:
        admin.close()

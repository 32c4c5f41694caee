"""The secure profile of the local broker (`scripts/kafka-local start --secure`): a broker that
refuses strangers, to test the clients' TLS and SASL settings against.

* TLS with a throwaway CA and a broker certificate for 127.0.0.1, made with openssl at the first
  start (`ca.pem` is what clients trust);
* SASL on the client listener with SCRAM-SHA-256, SCRAM-SHA-512 (credentials stored at format
  time) and PLAIN; ACLs with the standard KRaft authorizer;
* two users with random passwords: WRITER may read and write the topic, STRANGER may not. Their
  settings are in `client-writer.properties` and `client-stranger.properties` (mode 0600);
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


def _certificates(data_dir: Path, host: str) -> tuple[Path, Path]:
    """The CA to trust and the broker's PEM keystore (PKCS#8 key + certificate), made once."""
    tls = data_dir / "tls"
    keystore = tls / "broker-keystore.pem"
    if not keystore.exists():
        tls.mkdir(parents=True, exist_ok=True)
        ca = make_ca(tls, "ca")
        extensions = tls / "broker.ext"
        extensions.write_text(f"subjectAltName=IP:{host},DNS:localhost\n")
        _openssl(
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            f"/CN={host}",
            "-keyout",
            str(tls / "broker.key"),
            "-out",
            str(tls / "broker.csr"),
        )
        _openssl(
            "x509",
            "-req",
            "-in",
            str(tls / "broker.csr"),
            "-CA",
            str(ca),
            "-CAkey",
            str(tls / "ca.key"),
            "-CAcreateserial",
            "-days",
            "7",
            "-extfile",
            str(extensions),
            "-out",
            str(tls / "broker.pem"),
        )
        keystore.write_text((tls / "broker.key").read_text() + (tls / "broker.pem").read_text())
    return tls / "ca.pem", keystore


def _write_client_properties(data_dir: Path, ca: Path) -> None:
    for user, password in _users(data_dir).items():
        path = data_dir / f"client-{user}.properties"
        path.touch(mode=0o600)
        path.write_text(
            "security.protocol=SASL_SSL\n"
            "sasl.mechanism=SCRAM-SHA-512\n"
            f"sasl.username={user}\n"
            f"sasl.password={password}\n"
            f"ssl.ca.location={ca}\n"
        )


def listener_config(data_dir: Path, host: str, port: int, admin_port: int) -> list[str]:
    """server.properties lines of the secure profile (CONTROLLER_PORT is filled in by the caller)."""
    ca, keystore = _certificates(data_dir, host)
    _write_client_properties(data_dir, ca)
    plain_users = " ".join(f'user_{user}="{password}"' for user, password in _users(data_dir).items())
    return [
        f"listeners=SASL_SSL://{host}:{port},ADMIN://{host}:{admin_port},CONTROLLER://{host}:CONTROLLER_PORT",
        f"advertised.listeners=SASL_SSL://{host}:{port},ADMIN://{host}:{admin_port}",
        "inter.broker.listener.name=ADMIN",
        "listener.security.protocol.map=CONTROLLER:PLAINTEXT,ADMIN:PLAINTEXT,SASL_SSL:SASL_SSL",
        f"sasl.enabled.mechanisms=PLAIN,{','.join(SCRAM_MECHANISMS)}",
        "listener.name.sasl_ssl.plain.sasl.jaas.config="
        f"org.apache.kafka.common.security.plain.PlainLoginModule required {plain_users};",
        *(
            f"listener.name.sasl_ssl.{m.lower()}.sasl.jaas.config="
            "org.apache.kafka.common.security.scram.ScramLoginModule required;"
            for m in SCRAM_MECHANISMS
        ),
        "ssl.keystore.type=PEM",
        f"ssl.keystore.location={keystore}",
        "ssl.client.auth=none",
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
            raise UserError(f"granting ACLs to {user} failed: {result['failed'][0][1]}")
    finally:
        admin.close()

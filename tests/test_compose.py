"""docker-compose.yml and the Dockerfile, checked without a Docker engine (none runs here):
valid Compose, consistent with the host defaults, the pinned versions, the README and docs/compose.md."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import pyspark
import pytest
import yaml

from ventas.config import DEFAULT_BOOTSTRAP_SERVERS, DEFAULT_TOPIC
from ventas.jars import CACHE_HOME, spark_kafka_package, spark_scala_and_version
from ventas.lab.compose_images import INTERFACES, STAND_INS, compose_images
from ventas.lab.processes import ROOT

COMPOSE_FILE = ROOT / "docker-compose.yml"
INTERPOLATION = re.compile(r"\$\{(\w+):-([^}]*)\}")


@pytest.fixture(scope="module")
def compose_schema() -> dict:
    """The Compose Specification's JSON schema, as shipped in docker-compose 1.29.2 on PyPI
    (fetched once, cached under the user's home)."""
    cached = CACHE_HOME / "compose_spec.json"
    if not cached.exists():
        with tempfile.TemporaryDirectory() as tmp:
            subprocess.run(
                [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "-d", tmp, "docker-compose==1.29.2"],
                check=True,
            )
            wheel = next(Path(tmp).glob("docker_compose-*.whl"))
            with zipfile.ZipFile(wheel) as archive:
                cached.parent.mkdir(parents=True, exist_ok=True)
                cached.write_bytes(archive.read("compose/config/compose_spec.json"))
    return json.loads(cached.read_text())


@pytest.fixture(scope="module")
def compose() -> dict:
    """The file as Compose sees it with no .env: ${VAR:-default} replaced by its default."""
    text = INTERPOLATION.sub(lambda m: m.group(2), COMPOSE_FILE.read_text())
    assert "${" not in text, "every variable in docker-compose.yml needs a default"
    return yaml.safe_load(text)


def project_env_names() -> set[str]:
    """Every environment variable the project's code reads through ventas.config.env()."""
    sources = [ROOT / name for name in ("producer.py", "consumer.py")] + list((ROOT / "ventas").glob("*.py"))
    return {name for path in sources for name in re.findall(r'\benv\(\s*"(\w+)"', path.read_text())}


def test_valid_against_the_compose_specification(compose: dict, compose_schema: dict) -> None:
    import jsonschema

    # docker-compose 1.29's copy of the schema predates the top-level `name` key; validate the rest.
    jsonschema.validate({k: v for k, v in compose.items() if k != "name"}, compose_schema)


def test_services_and_images(compose: dict) -> None:
    services = compose["services"]
    assert set(services) == {"kafka", "kafka-init", "producer", "spark-master", "spark-worker", "consumer", "postgres"}
    assert services["kafka"]["image"] == "apache/kafka:4.0.0"
    assert re.fullmatch(r"postgres:\d+", services["postgres"]["image"])
    assert services["kafka-init"]["image"] == "apache/kafka:4.0.0"
    # The official image's tag of exactly the driver's pyspark (the Dockerfile installs requirements.txt).
    pinned = re.search(r"^pyspark==(\S+)$", (ROOT / "requirements.txt").read_text(), re.MULTILINE)[1]
    assert pinned == pyspark.__version__
    scala, _ = spark_scala_and_version()
    spark_image = f"spark:{pinned}-scala{scala}-java17-python3-ubuntu"
    assert services["spark-master"]["image"] == services["spark-worker"]["image"] == spark_image
    assert services["producer"]["build"] == services["consumer"]["build"] == "."
    assert services["producer"]["image"] == services["consumer"]["image"]  # built once, run by both


def test_listeners_serve_containers_and_the_host(compose: dict) -> None:
    kafka = compose["services"]["kafka"]["environment"]
    advertised = dict(item.split("://") for item in kafka["KAFKA_ADVERTISED_LISTENERS"].split(","))
    listeners = dict(item.split("://") for item in kafka["KAFKA_LISTENERS"].split(","))
    protocols = dict(item.split(":") for item in kafka["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"].split(","))
    assert set(advertised) <= set(listeners) <= set(protocols)
    for name, address in advertised.items():
        assert listeners[name].rsplit(":", 1)[1] == address.rsplit(":", 1)[1]
    assert advertised["PLAINTEXT_HOST"] == DEFAULT_BOOTSTRAP_SERVERS
    assert "127.0.0.1:9092:9092" in compose["services"]["kafka"]["ports"]
    for client in ("producer", "consumer"):
        assert compose["services"][client]["environment"]["KAFKA_BOOTSTRAP_SERVERS"] == advertised["PLAINTEXT"]
    init = compose["services"]["kafka-init"]["command"]
    assert init[init.index("--bootstrap-server") + 1] == advertised["PLAINTEXT"]
    voter = kafka["KAFKA_CONTROLLER_QUORUM_VOTERS"].split("@")[1]
    assert voter.rsplit(":", 1)[1] == listeners["CONTROLLER"].rsplit(":", 1)[1]


def test_environment_names_are_the_ones_the_code_reads(compose: dict) -> None:
    known = project_env_names()
    for client in ("producer", "consumer"):
        env = compose["services"][client]["environment"]
        # LOG_LEVEL is read by the logging setup; PGPASSWORD by libpq itself.
        assert set(env) - {"LOG_LEVEL", "PGPASSWORD"} <= known, f"{client}: unknown variables {set(env) - known}"
        assert env["KAFKA_TOPIC"] == DEFAULT_TOPIC
    init = compose["services"]["kafka-init"]["command"]
    assert init[init.index("--topic") + 1] == DEFAULT_TOPIC


def test_the_dashboard_is_published_on_the_hosts_loopback(compose: dict) -> None:
    from ventas.dashboard import url

    consumer = compose["services"]["consumer"]
    port = consumer["environment"]["DASHBOARD_PORT"]
    assert consumer["environment"]["DASHBOARD_HOST"] == "0.0.0.0"  # inside the container: reachable by the mapping
    assert consumer["ports"] == [f"127.0.0.1:{port}:{port}"]
    assert url("127.0.0.1", port) in (ROOT / "docs" / "compose.md").read_text()


def test_the_consumers_healthcheck_is_its_healthz(compose: dict) -> None:
    """The healthcheck's command, run here against a consumer's /healthz (on a free port): it succeeds
    on 200 and fails on 503."""
    from ventas.dashboard import DashboardState, serving
    from ventas.lab.ports import free_port
    from ventas.metrics import routes

    consumer = compose["services"]["consumer"]
    command = consumer["healthcheck"]["test"]
    url = f"http://127.0.0.1:{consumer['environment']['DASHBOARD_PORT']}/healthz"
    assert command[0] == "CMD" and any(url in part for part in command)
    state, port = DashboardState(DEFAULT_TOPIC), free_port()
    check = [part.replace(url, f"http://127.0.0.1:{port}/healthz") for part in command[1:]]
    with serving(state, "127.0.0.1", port, routes(state, DEFAULT_TOPIC, consumer["environment"]["STALLED_AFTER"])):
        assert subprocess.run(check, capture_output=True).returncode == 0
        state.show_failure("the totals database is unreachable")
        assert subprocess.run(check, capture_output=True).returncode != 0


def test_nothing_starts_before_kafka_accepts_connections(compose: dict) -> None:
    services = compose["services"]
    assert "healthcheck" in services["kafka"] and "healthcheck" in services["spark-master"]
    assert services["kafka-init"]["depends_on"]["kafka"]["condition"] == "service_healthy"
    for client in ("producer", "consumer"):
        assert services[client]["depends_on"]["kafka-init"]["condition"] == "service_completed_successfully"
    assert services["spark-worker"]["depends_on"]["spark-master"]["condition"] == "service_healthy"


def test_the_consumer_keeps_its_totals_in_the_postgres_service_once_it_is_healthy(compose: dict) -> None:
    from urllib.parse import urlsplit

    services = compose["services"]
    postgres, consumer = services["postgres"], services["consumer"]
    assert consumer["depends_on"]["postgres"]["condition"] == "service_healthy"
    check = postgres["healthcheck"]["test"]
    assert check[:2] == ["CMD", "pg_isready"] and check[check.index("-h") + 1] == "127.0.0.1"
    totals_db = urlsplit(consumer["environment"]["TOTALS_DB"])
    assert totals_db.scheme == "postgresql" and totals_db.password is None  # the password is PGPASSWORD
    assert (totals_db.hostname, totals_db.port) == ("postgres", 5432)
    assert totals_db.username == postgres["environment"]["POSTGRES_USER"]
    assert totals_db.path == "/" + postgres["environment"]["POSTGRES_DB"]
    assert consumer["environment"]["PGPASSWORD"] == postgres["environment"]["POSTGRES_PASSWORD"]
    assert postgres["ports"] == ["127.0.0.1:5432:5432"]
    assert "postgres-data:/var/lib/postgresql/data" in postgres["volumes"]
    assert "postgres-data" in compose["volumes"]


def test_kafka_data_and_checkpoint_live_in_named_volumes_shared_with_the_workers(compose: dict) -> None:
    services, volumes = compose["services"], compose["volumes"]
    assert "kafka-data:/var/lib/kafka/data" in services["kafka"]["volumes"]
    assert services["kafka"]["environment"]["KAFKA_LOG_DIRS"] == "/var/lib/kafka/data"
    consumer_mounts = dict(m.split(":") for m in services["consumer"]["volumes"])
    worker_mounts = dict(m.split(":") for m in services["spark-worker"]["volumes"])
    assert consumer_mounts["spark-data"] == worker_mounts["spark-data"]
    for variable in ("CHECKPOINT_LOCATION", "REJECTED_PATH"):
        assert services["consumer"]["environment"][variable].startswith(consumer_mounts["spark-data"] + "/")
    assert {"kafka-data", "spark-data"} <= set(volumes)


def test_consumer_command_matches_the_pinned_pyspark_and_the_readme(compose: dict) -> None:
    command = compose["services"]["consumer"]["command"]
    assert command[0] == "spark-submit" and command[-1] == "consumer.py"
    assert command[command.index("--packages") + 1] == spark_kafka_package()
    assert command[command.index("--master") + 1] == "spark://spark-master:7077"
    readme, compose_docs = (ROOT / "README.md").read_text(), (ROOT / "docs" / "compose.md").read_text()
    assert "docker compose up" in compose_docs and "docker compose logs -f consumer" in compose_docs
    assert f"spark-submit --packages {spark_kafka_package()} consumer.py" in readme
    assert " ".join(compose["services"]["producer"]["command"]) in compose_docs


def test_docker_stop_waits_for_the_consumers_graceful_stop(compose: dict) -> None:
    """The spark-submit command runs as the container's PID 1: docker stop's SIGTERM reaches the JVM,
    which hands it to consumer.py; Docker must not SIGKILL before the batch in progress may end."""
    from ventas.stopping import STOP_GRACE_S

    grace = re.fullmatch(r"(\d+)s", compose["services"]["consumer"]["stop_grace_period"])
    assert grace and int(grace[1]) >= STOP_GRACE_S + 10


def test_dockerfile_is_slim_pinned_non_root_with_a_cached_requirements_layer() -> None:
    lines = [line.strip() for line in (ROOT / "Dockerfile").read_text().splitlines() if line.strip()]
    assert next(line for line in lines if line.startswith("FROM ")) == "FROM ${PYTHON_IMAGE}"
    assert re.fullmatch(r"python:3\.11\.\d+-slim-\w+", compose_images()["PYTHON_IMAGE"])
    user = [line for line in lines if line.startswith("USER ")]
    assert user and user[-1] not in ("USER root", "USER 0")
    install = next(i for i, line in enumerate(lines) if "pip install" in line and "requirements.txt" in line)
    copy_requirements = lines.index("COPY requirements.txt .")
    first_code_copy = next(i for i, line in enumerate(lines) if line.startswith("COPY") and ".py" in line)
    assert copy_requirements < install < first_code_copy
    assert "openjdk-17-jre-headless" in (ROOT / "Dockerfile").read_text()


def test_every_upstream_image_can_be_replaced_by_a_local_stand_in() -> None:
    """Each service's image is a variable with the upstream default, and each such variable but the
    project's own image has a stand-in in ventas/lab/compose_images.py (the Dockerfile's base too)."""
    raw = yaml.safe_load(COMPOSE_FILE.read_text())
    images = {name: spec["image"] for name, spec in raw["services"].items()}
    assert all(re.fullmatch(r"\$\{\w+_IMAGE:-[^}]+\}", image) for image in images.values()), images
    assert set(compose_images()) == {*STAND_INS, "VENTAS_IMAGE"} and set(INTERFACES) <= set(STAND_INS)


def test_the_file_uses_nothing_of_an_upstream_image_beyond_its_stand_in(compose: dict) -> None:
    """What compose relies on in each upstream image (variables, commands, mounts, ports) is what its
    local stand-in implements: the compose test's run cannot hide a difference."""
    raw = yaml.safe_load(COMPOSE_FILE.read_text())
    for name, service in compose["services"].items():
        variable = INTERFACE_OF.match(raw["services"][name]["image"])[1]
        if variable == "VENTAS_IMAGE":
            continue
        interface = INTERFACES[variable]
        unknown = [key for key in service.get("environment", {}) if not interface.allows_variable(key)]
        assert not unknown, f"{name}: variables its stand-in does not read: {unknown}"
        commands = [service.get("command", [None])[0], *service.get("healthcheck", {}).get("test", [None, None])[1:2]]
        assert {command for command in commands if command} <= interface.commands, f"{name}: {commands}"
        mounts = {volume.split(":")[1] for volume in service.get("volumes", [])}
        assert mounts <= interface.paths, f"{name}: {mounts}"
        published = {int(port.rsplit(":", 1)[1]) for port in service.get("ports", [])}
        assert published <= interface.ports, f"{name}: {published}"


INTERFACE_OF = re.compile(r"\$\{(\w+_IMAGE):-")

"""Local stand-ins for the upstream images docker-compose.yml names, for an engine that can pull none.

Each is built from Debian's packages, PyPI's pyspark and Maven Central's Kafka jars, with the same
software versions as the image it replaces (read from the compose file and the Dockerfile), and
implements the part of that image's interface the compose file uses: `INTERFACES` lists it, and
tests/test_compose.py checks the file uses nothing else. The Debian base comes from debootstrap with
this machine's apt sources, apt settings, CA certificates and pip settings, so builds reach the same
package registries as the host. Images already in the engine, built from the same files, are kept.
"""

from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ventas.config import UserError
from ventas.jars import CACHE_HOME, ROOT, ensure_kafka_libs
from ventas.lab.docker_engine import DockerEngine

IMAGES_DIR = ROOT / "scripts" / "compose-images"
COMPOSE_FILE = ROOT / "docker-compose.yml"
BASE_IMAGE = "local/debian:bookworm"
APP_IMAGE = "local/ventas-events:latest"
# ${NAME:-default} in the compose file: the variable that overrides an image, and the image itself.
IMAGE_VARIABLE = re.compile(r"\$\{(\w+_IMAGE):-([^}]+)\}")
# The host's settings a build needs to reach the registries the host reaches.
MACHINE_FILES = ("etc/apt/sources.list", "etc/apt/sources.list.d", "etc/apt/apt.conf.d", "etc/pip.conf")
MACHINE_CA_DIR = "usr/local/share/ca-certificates"
PULL_TIMEOUT_S = 120


@dataclass(frozen=True)
class Interface:
    """What compose may use of an image: environment variables (a name, or a prefix ending in `*`),
    the commands it runs, the paths it mounts and the ports it publishes."""

    environment: frozenset[str]
    commands: frozenset[str]
    paths: frozenset[str]
    ports: frozenset[int]

    def allows_variable(self, name: str) -> bool:
        return any(name == known or (known.endswith("*") and name.startswith(known[:-1])) for known in self.environment)


INTERFACES = {
    "KAFKA_IMAGE": Interface(
        environment=frozenset({"KAFKA_*", "CLUSTER_ID"}),
        commands=frozenset({"/opt/kafka/bin/kafka-topics.sh", "/opt/kafka/bin/kafka-broker-api-versions.sh"}),
        paths=frozenset({"/var/lib/kafka/data"}),
        ports=frozenset({9092}),
    ),
    "POSTGRES_IMAGE": Interface(
        environment=frozenset({"POSTGRES_USER", "POSTGRES_PASSWORD", "POSTGRES_DB"}),
        commands=frozenset({"pg_isready"}),
        paths=frozenset({"/var/lib/postgresql/data"}),
        ports=frozenset({5432}),
    ),
    # SPARK_WORKER_*: read by Spark's own Worker, the same program in both images.
    "SPARK_IMAGE": Interface(
        environment=frozenset({"SPARK_WORKER_*"}),
        commands=frozenset({"/opt/spark/bin/spark-class", "bash"}),
        paths=frozenset({"/opt/spark/work-dir"}),
        ports=frozenset({8080}),
    ),
}


def compose_images() -> dict[str, str]:
    """Each image variable of the compose file and the Dockerfile, with the upstream image it defaults to."""
    images = {name: image for name, image in IMAGE_VARIABLE.findall(COMPOSE_FILE.read_text())}
    python = re.search(r"^ARG PYTHON_IMAGE=(\S+)$", (ROOT / "Dockerfile").read_text(), re.MULTILINE)
    if python is None:
        raise RuntimeError("the Dockerfile has no ARG PYTHON_IMAGE")
    images["PYTHON_IMAGE"] = python[1]
    return images


def _version(image: str, pattern: str) -> str:
    match = re.fullmatch(pattern, image)
    if match is None:
        raise UserError(f"{image}: no local stand-in for this image (expected {pattern})")
    return match[1]


def build_app_image(engine: DockerEngine, python_image: str | None) -> str:
    """The repository's Dockerfile (on `python_image`, a stand-in, if given) as compose would build it; its name."""
    base = ["--build-arg", f"PYTHON_IMAGE={python_image}"] if python_image else []
    engine.docker("build", "--network=host", *base, "-t", APP_IMAGE, str(ROOT))
    return APP_IMAGE


def _pull(engine: DockerEngine, image: str) -> bool:
    """Whether the engine has the upstream image or can pull it (where no registry answers, a pull
    fails at once on the registry's name)."""
    if engine.docker("image", "inspect", image, check=False).returncode == 0:
        return True
    try:
        return engine.docker("pull", "--quiet", image, check=False, timeout=PULL_TIMEOUT_S).returncode == 0
    except subprocess.TimeoutExpired:
        return False


def _kafka_image(engine: DockerEngine, version: str) -> str:
    return _build(engine, "kafka", version, {}, {"libs": ensure_kafka_libs(version)})


def _postgres_image(engine: DockerEngine, major: str) -> str:
    return _build(engine, "postgres", major, {"PG_MAJOR": major}, {})


def _spark_image(engine: DockerEngine, version: str) -> str:
    return _build(engine, "spark", version, {}, {"pyspark": _pyspark_home(version)})


def _python_image(engine: DockerEngine, version: str) -> str:
    return _build(engine, "python", version, {"PYTHON_VERSION": version}, {"prefix": _python_prefix(version)})


# Each upstream image's variable: the pattern of its name, whose group is the version to build, and
# the builder of its stand-in.
STAND_INS: dict[str, tuple[str, Callable[[DockerEngine, str], str]]] = {
    "KAFKA_IMAGE": (r"apache/kafka:(\d+\.\d+\.\d+)", _kafka_image),
    "POSTGRES_IMAGE": (r"postgres:(\d+)", _postgres_image),
    "SPARK_IMAGE": (r"spark:([\d.]+)-scala[\d.]+-java17-python3-ubuntu", _spark_image),
    "PYTHON_IMAGE": (r"python:(\d+\.\d+\.\d+)-slim-bookworm", _python_image),
}


def build_local_images(engine: DockerEngine) -> dict[str, str]:
    """The variables that make compose use a stand-in for each upstream image the engine cannot pull.
    Stand-ins built from the same files are kept."""
    upstream = compose_images()
    missing = {name: image for name, image in upstream.items() if name in STAND_INS and not _pull(engine, image)}
    if missing:
        _ensure_base(engine)
    return {name: STAND_INS[name][1](engine, _version(image, STAND_INS[name][0])) for name, image in missing.items()}


def _pyspark_home(version: str) -> Path:
    import pyspark

    if pyspark.__version__ != version:
        raise UserError(f"docker-compose.yml names Spark {version}, but pyspark here is {pyspark.__version__}")
    return Path(pyspark.__file__).parent


def _python_prefix(version: str) -> Path:
    """This machine's CPython installation, when it is the version the Dockerfile names."""
    if sys.version.split()[0] != version or not sysconfig.get_config_var("Py_ENABLE_SHARED"):
        raise UserError(f"the local python image copies this machine's Python, which must be a shared {version} build")
    return Path(sys.base_prefix)


def _python_copy_filter(directory: str, names: list[str]) -> set[str]:
    """What of this machine's Python prefix the image leaves out: installed packages and their scripts
    (pip comes from ensurepip, with scripts that name the image's interpreter), the test suite, Tk,
    headers."""
    here = Path(directory)
    if here == Path(sys.base_prefix):
        return {"include", "share"} & set(names)
    if here.name == "bin":
        return {name for name in names if not re.fullmatch(r"python3\.\d+", name)}
    if here.parent.name == "lib" and re.fullmatch(r"python3\.\d+", here.name):
        return {"site-packages", "test", "idlelib", "tkinter", "turtledemo"} & set(names)
    return set()


def _build(engine: DockerEngine, name: str, version: str, args: dict[str, str], extras: dict[str, Path]) -> str:
    """Build IMAGES_DIR/name with the extras copied into its context, tagged local/name:version."""
    tag = f"local/{name}:{version}"
    source = IMAGES_DIR / name
    digest = hashlib.sha256(repr(sorted(args.items())).encode())
    for path in sorted(source.rglob("*")):
        if path.is_file():
            digest.update(str(path.relative_to(source)).encode() + path.read_bytes())
    source_hash = digest.hexdigest()[:16]
    label = '{{index .Config.Labels "ventas.source"}}'
    built_from = engine.docker("image", "inspect", "--format", label, tag, check=False)
    if built_from.returncode == 0 and built_from.stdout.strip() == source_hash:
        return tag
    with tempfile.TemporaryDirectory(prefix=f"ventas-image-{name}-") as context:
        shutil.copytree(source, context, dirs_exist_ok=True)
        for target, path in extras.items():
            ignore = _python_copy_filter if name == "python" else shutil.ignore_patterns("__pycache__")
            shutil.copytree(path, Path(context) / target, ignore=ignore, symlinks=True)
        build_args = [arg for key, value in args.items() for arg in ("--build-arg", f"{key}={value}")]
        label_args = ["--label", f"ventas.source={source_hash}"]
        engine.docker("build", "--network=host", *label_args, *build_args, "-t", tag, context)
    return tag


def _ensure_base(engine: DockerEngine) -> None:
    """local/debian:bookworm: a debootstrap of Debian bookworm (cached) with this machine's registry settings."""
    if engine.docker("image", "inspect", BASE_IMAGE, check=False).returncode == 0:
        return
    if shutil.which("debootstrap") is None:
        raise UserError("debootstrap not found: install it (apt-get install debootstrap)")
    rootfs = CACHE_HOME / "compose" / "bookworm-rootfs"
    if not (rootfs / ".complete").exists():
        shutil.rmtree(rootfs, ignore_errors=True)
        debootstrap = ["debootstrap", "--variant=minbase", "bookworm", str(rootfs), _apt_mirror()]
        subprocess.run(debootstrap, check=True, capture_output=True)
        (rootfs / ".complete").touch()
    for relative in (*MACHINE_FILES, MACHINE_CA_DIR):
        host, image = Path("/") / relative, rootfs / relative
        if host.is_dir():
            shutil.copytree(host, image, dirs_exist_ok=True)
        elif host.exists():
            shutil.copy2(host, image)
    (rootfs / "etc/apt/apt.conf.d/99-ventas-snapshot").write_text('Acquire::Check-Valid-Until "false";\n')
    archive = subprocess.Popen(["tar", "-c", "--exclude=./.complete", "-C", str(rootfs), "."], stdout=subprocess.PIPE)
    engine.docker("import", "--change", "ENV LANG=C.UTF-8", "-", BASE_IMAGE, stdin=archive.stdout)
    archive.wait()
    # The machine's CA certificates join the image's trust store (and Java's, once a JRE is installed).
    engine.docker("build", "--network=host", "-t", BASE_IMAGE, "-", input=_BASE_DOCKERFILE)


_BASE_DOCKERFILE = f"""FROM {BASE_IMAGE}
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates && update-ca-certificates \\
    && rm -rf /var/lib/apt/lists/*
"""


def _apt_mirror() -> str:
    """The Debian mirror this machine's apt uses."""
    for source in [Path("/etc/apt/sources.list"), *Path("/etc/apt/sources.list.d").glob("*")]:
        text = source.read_text() if source.is_file() else ""
        match = re.search(r"^URIs:\s*(\S+/debian)\s*$", text, re.MULTILINE) or re.search(
            r"^deb\s+(?:\[[^]]*\]\s+)?(\S+/debian)\s+bookworm", text, re.MULTILINE
        )
        if match:
            return match[1]
    return "http://deb.debian.org/debian"

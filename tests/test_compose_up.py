"""docker-compose.yml run for real (`make compose-test`): a Docker engine of the test's own, local
stand-ins for the upstream images (ventas/lab/compose_images.py), the shipped file started with
`docker compose`, and the consumer's totals in the compose PostgreSQL checked against the producer's
ground truth through a stop of the consumer, a `down` and an `up`, then `down -v` leaves nothing."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.helpers import apt_install, printed_tables, summary_totals
from ventas.lab.compose_images import COMPOSE_FILE, build_app_image, build_local_images
from ventas.lab.daemons import process_tree, start_time
from ventas.lab.docker_engine import COMPOSE_HOME, ENGINE_PACKAGES, DockerEngine, ensure_compose_plugin
from ventas.lab.ports import distinct_free_ports
from ventas.totals_db import add_money

pytestmark = [pytest.mark.integration, pytest.mark.timeout(1200)]
PASSWORD = "compose-test-secret"
WAIT_S = 240


def eventually(check: Callable[[], Any], what: str, timeout_s: float = WAIT_S) -> Any:
    """The first truthy result of `check`, polled every second; fails naming `what` after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while not (result := check()):
        assert time.monotonic() < deadline, f"not within {timeout_s} s: {what}"
        time.sleep(1)
    return result


class Compose:
    """`docker compose` on the shipped file, as a project of its own, against the test's engine."""

    def __init__(self, engine: DockerEngine, env: dict[str, str], project: str) -> None:
        self.engine, self.env, self.project = engine, env, project

    def __call__(self, *args: str, timeout_s: float = 600) -> str:
        command = ["docker", "compose", "--project-name", self.project, "--file", str(COMPOSE_FILE), *args]
        result = subprocess.run(command, env=self.env, capture_output=True, text=True, timeout=timeout_s)
        assert result.returncode == 0, f"{' '.join(args)}: {result.stdout[-3000:]}{result.stderr[-3000:]}"
        return result.stdout

    def produce(self, summaries: Path, name: str, count: int, seed: int) -> dict[str, Decimal]:
        """The producer service sends `count` orders and exits; their exact totals per product."""
        self("run", "--rm", "--no-deps", "-T", "--volume", f"{summaries}:/summaries", "producer",
             "python", "producer.py", "--count", str(count), "--rate", "300", "--seed", str(seed),
             "--summary-file", f"/summaries/{name}.json")  # fmt: skip
        return summary_totals(summaries / f"{name}.json")

    def leftovers(self) -> list[str]:
        """The project's containers, networks and volumes still in the engine."""
        label = f"label=com.docker.compose.project={self.project}"
        return [
            line
            for kind in (["ps", "--all"], ["network", "ls"], ["volume", "ls"])
            for line in self.engine.docker(*kind, "--quiet", "--filter", label).stdout.split()
        ]


@pytest.fixture(scope="module")
def engine() -> Iterator[DockerEngine]:
    apt_install(*ENGINE_PACKAGES)
    # A short exec root: containerd's socket paths must fit in 108 bytes.
    run_dir = Path(tempfile.mkdtemp(prefix="vd-", dir="/tmp"))
    engine = DockerEngine(COMPOSE_HOME / "docker", run_dir)
    engine.start()
    processes = process_tree(engine.pid())
    try:
        yield engine
    finally:
        engine.stop()
        assert processes and not [pid for pid, start in processes if start_time(pid) == start], "dockerd left running"
        shutil.rmtree(run_dir)


@pytest.fixture(scope="module")
def compose(engine: DockerEngine) -> Iterator[Compose]:
    ensure_compose_plugin()
    images = build_local_images(engine)
    images["VENTAS_IMAGE"] = build_app_image(engine, images.pop("PYTHON_IMAGE", None))
    names = ("KAFKA_HOST_PORT", "POSTGRES_HOST_PORT", "SPARK_UI_HOST_PORT", "DASHBOARD_HOST_PORT")
    ports = dict(zip(names, map(str, distinct_free_ports(len(names))), strict=True))
    # Only what the file reads from the environment is set: a user's KAFKA_TOPIC or PRODUCER_RATE stays out.
    env = {"PATH": os.environ["PATH"], "HOME": str(Path.home()), "POSTGRES_PASSWORD": PASSWORD}
    stack = Compose(engine, {**env, **engine.env, **images, **ports}, f"ventas-test-{engine.run_dir.name[3:].lower()}")
    try:
        yield stack
    finally:
        stack("down", "--volumes", "--timeout", "60")


def stored_totals(compose: Compose) -> dict[str, Decimal]:
    """product_totals in the compose PostgreSQL, read from the host on its published port."""
    url = f"postgresql://ventas:{PASSWORD}@127.0.0.1:{compose.env['POSTGRES_HOST_PORT']}/ventas"
    try:
        with psycopg.connect(url, connect_timeout=5) as db:
            return dict(db.execute("SELECT product, total_sales FROM product_totals").fetchall())
    except psycopg.Error:  # the server or the consumer's tables are not there yet
        return {}


def dashboard(compose: Compose, path: str) -> tuple[int, str]:
    url = f"http://127.0.0.1:{compose.env['DASHBOARD_HOST_PORT']}{path}"
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()
    except OSError:
        return 0, ""


def test_compose_up_counts_every_order_once_through_stops_and_restarts(compose: Compose, tmp_path: Path) -> None:
    tmp_path.chmod(0o777)  # the producer container runs as its own user (uid 185)
    compose("up", "--detach", "--scale", "producer=0")
    truth = compose.produce(tmp_path, "first", 800, seed=1)
    eventually(lambda: stored_totals(compose) == truth, "the first orders' totals in PostgreSQL")

    # What a user reaches from the host: the page, the metrics, the health check, psql in its container.
    assert dashboard(compose, "/")[0] == 200
    status, metrics = dashboard(compose, "/metrics")
    assert status == 200 and re.search(r"^ventas_orders_total(\{[^}]*\})? 800\.0$", metrics, re.MULTILINE)
    assert eventually(lambda: dashboard(compose, "/healthz")[0] == 200, "/healthz answering 200")
    psql = compose("exec", "-T", "postgres", "psql", "-U", "ventas", "-d", "ventas", "-At", "-F", "|",
                   "-c", "SELECT product, total_sales FROM product_totals")  # fmt: skip
    assert {line.split("|")[0]: Decimal(line.split("|")[1]) for line in psql.splitlines()} == truth
    printed = printed_tables(compose("logs", "--no-log-prefix", "consumer"))
    assert printed and printed[-1] == truth

    compose("stop", "consumer")
    truth = add_money(truth, compose.produce(tmp_path, "while-stopped", 500, seed=2))
    compose("start", "consumer")
    eventually(lambda: stored_totals(compose) == truth, "the totals after the consumer's restart")

    compose("down", "--timeout", "60")  # volumes kept
    assert stored_totals(compose) == {}
    compose("up", "--detach", "--scale", "producer=0")
    truth = add_money(truth, compose.produce(tmp_path, "after-down", 500, seed=3))
    eventually(lambda: stored_totals(compose) == truth, "the totals after down and up")
    assert eventually(lambda: dashboard(compose, "/healthz")[0] == 200, "/healthz answering 200 again")

    compose("down", "--volumes", "--timeout", "60")
    assert compose.leftovers() == []

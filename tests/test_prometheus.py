"""The consumer watched by a real Prometheus (Debian's package, installed with apt-get when missing) with
the shipped conf/prometheus/: it scrapes the consumer's own counts, the Grafana dashboard's queries all
evaluate, the alert rules pass promtool, and the stalled alert fires once the broker is stopped under
the consumer."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.helpers import (
    apt_install,
    consumer_args,
    producer_args,
    run_producer,
    send_values,
    start_consumer,
    summary_totals,
    wait_for_table,
)
from ventas.lab.kafka_broker import LocalBroker
from ventas.lab.ports import free_port
from ventas.lab.processes import ROOT, stop

PROMETHEUS, PROMTOOL = Path("/usr/bin/prometheus"), Path("/usr/bin/promtool")
CONF = ROOT / "conf" / "prometheus"
STALLED_AFTER_S = 20  # above the 10 s between the progress reports of an idle query
WAIT_S = 120


@pytest.fixture(scope="module")
def prometheus_installed() -> None:
    if not (PROMETHEUS.exists() and PROMTOOL.exists()):
        apt_install("prometheus")


def test_the_shipped_rules_and_config_pass_promtool(prometheus_installed: None) -> None:
    for check in (["check", "rules", str(CONF / "alerts.yml")], ["check", "config", str(CONF / "prometheus.yml")]):
        result = subprocess.run([PROMTOOL, *check], capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stdout + result.stderr


def pointed_at(target: str, directory: Path) -> Path:
    """The shipped config, its scrape target changed to `target`, beside a copy of its rules."""
    config = yaml.safe_load((CONF / "prometheus.yml").read_text())
    config["scrape_configs"][0]["static_configs"][0]["targets"] = [target]
    (directory / "alerts.yml").write_text((CONF / "alerts.yml").read_text())
    (directory / "prometheus.yml").write_text(yaml.safe_dump(config))
    return directory / "prometheus.yml"


@pytest.fixture
def prometheus(prometheus_installed: None, tmp_path: Path) -> Iterator[Callable[[str], str]]:
    """Starts Prometheus on a free port with the shipped config pointed at a target; gives its address.
    Stopped by PID."""
    processes: list[subprocess.Popen] = []

    def start(target: str) -> str:
        port = free_port()
        log = (tmp_path / "prometheus.log").open("w")
        command = [
            PROMETHEUS,
            f"--config.file={pointed_at(target, tmp_path)}",
            f"--web.listen-address=127.0.0.1:{port}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
        ]
        processes.append(subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT))
        api = f"http://127.0.0.1:{port}"
        wait_until(lambda: _ready(api), "Prometheus to be ready")
        return api

    try:
        yield start
    finally:
        for process in processes:
            stop(process, signal.SIGTERM)


def _ready(api: str) -> bool:
    try:
        with urllib.request.urlopen(f"{api}/-/ready", timeout=5) as response:
            return response.status == 200
    except OSError:
        return False


def wait_until(check: Callable[[], Any], what: str, timeout_s: float = WAIT_S) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if result := check():
            return result
        time.sleep(1)
    raise AssertionError(f"waited {timeout_s} s for {what}")


def api_get(api: str, path: str, **params: str) -> Any:
    url = f"{api}{path}" + (f"?{urllib.parse.urlencode(params)}" if params else "")
    with urllib.request.urlopen(url, timeout=10) as response:
        answer = json.load(response)
    assert answer["status"] == "success", answer
    return answer["data"]


def value(api: str, promql: str) -> float | None:
    """The single value a query gives now, None when it gives none."""
    result = api_get(api, "/api/v1/query", query=promql)["result"]
    return float(result[0]["value"][1]) if len(result) == 1 else None


def healthz(address: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"{address}healthz", timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def dashboard_queries() -> list[str]:
    dashboard = json.loads((ROOT / "docs" / "grafana-dashboard.json").read_text())
    return [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]


@pytest.mark.integration
def test_prometheus_reads_the_consumers_counts_and_fires_the_stalled_alert(
    tmp_path: Path, prometheus: Callable[[str], str]
) -> None:
    broker = LocalBroker(free_port(), tmp_path / "broker")
    broker.start(topics=("ventas-events",), partitions=2)
    topic, summary, out = "ventas-events", tmp_path / "summary.json", tmp_path / "consumer.txt"
    consumer = None
    try:
        produced = run_producer(*producer_args(broker.bootstrap, topic, summary, count=500, rate=0, seed=43))
        assert produced.returncode == 0, produced.stderr
        send_values(broker.bootstrap, topic, [b"not json at all", b"42"])
        port = free_port()
        args = ["--dashboard-port", str(port), "--metrics-port", str(port), "--stalled-after", str(STALLED_AFTER_S)]
        consumer = start_consumer(consumer_args(broker.bootstrap, topic, tmp_path, *args), out)
        wait_for_table(out, consumer, summary_totals(summary))
        address = f"http://127.0.0.1:{port}/"
        assert f"consumer: metrics at {address}metrics, health at {address}healthz" in out.read_text()
        with urllib.request.urlopen(f"{address}data.json", timeout=10) as response:
            page = json.load(response)  # the consumer's own counts, as its page shows them
        assert (page["orders"], page["rejected"]) == (500, 2)

        api = prometheus(f"127.0.0.1:{port}")
        wait_until(lambda: value(api, "ventas_orders_total") == page["orders"], "the orders counted in Prometheus")
        assert value(api, 'up{job="ventas-consumer"}') == 1
        assert value(api, "sum(ventas_rejected_records_total)") == page["rejected"]
        status, reason = healthz(address)
        assert status == 200 and re.fullmatch(r"ok: batch \d+ committed; 0 records behind\n", reason), reason
        # Every query of the Grafana dashboard evaluates, on metrics the consumer serves.
        served = {
            series["__name__"] for series in api_get(api, "/api/v1/series", **{"match[]": '{job="ventas-consumer"}'})
        }
        for promql in dashboard_queries():
            api_get(api, "/api/v1/query", query=promql)
            for name in re.findall(r"\bventas_[a-z_]+", promql):
                assert name in served, (promql, sorted(served))

        broker.stop()
        _, reason = wait_until(
            lambda: (answer := healthz(address))[0] == 503 and answer, "/healthz to say the consumer stalled"
        )
        assert reason.startswith("stalled: no progress from the query for "), reason
        firing = wait_until(
            lambda: [
                alert
                for alert in api_get(api, "/api/v1/alerts")["alerts"]
                if alert["labels"]["alertname"] == "VentasConsumerStalled" and alert["state"] == "firing"
            ],
            "the stalled alert to fire",
        )
        assert firing[0]["labels"]["instance"] == f"127.0.0.1:{port}"
        assert consumer.poll() is None, out.read_text()[-3000:]  # stalled, not gone
    finally:
        if consumer:
            stop(consumer, signal.SIGINT)
        broker.stop()

"""Every command of the project reports a bad flag the same way: one line on stderr, nothing else, exit 2."""

from __future__ import annotations

import subprocess
import sys

import pytest

from ventas.lab.processes import ROOT, pipeline_env


@pytest.mark.parametrize(
    ("command", "expected"),
    [
        (["producer.py", "--rate", "soon"], "producer.py: error: argument --rate: not a number: 'soon'"),
        (["consumer.py", "--no-such-flag"], "consumer.py: error: unrecognized arguments: --no-such-flag"),
        (
            ["consumer.py", "--dashboard-port", "80800"],
            "consumer.py: error: argument --dashboard-port: not a port number (0 to 65535): '80800'",
        ),
        (["-m", "ventas.lab.demo", "--port", "0"], "demo: error: argument --port: must be >= 1, got '0'"),
        (
            ["-m", "ventas.lab.kafka_local", "restart"],
            "kafka-local: error: argument command: invalid choice: 'restart' (choose from 'start', 'stop', 'status')",
        ),
        (["-m", "ventas.jars", "--fetch"], "ventas.jars: error: unrecognized arguments: --fetch"),
        (["-m", "bench.run", "--repeat", "x"], "bench.run: error: argument --repeat: invalid int value: 'x'"),
    ],
)
def test_a_bad_flag_is_one_line_and_exit_2(command: list[str], expected: str) -> None:
    result = subprocess.run(
        [sys.executable, *command], capture_output=True, text=True, cwd=ROOT, env=pipeline_env(), timeout=120
    )
    assert (result.returncode, result.stdout, result.stderr) == (2, "", f"{expected} (see --help)\n")

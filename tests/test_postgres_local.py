"""The local PostgreSQL server: a real one that psycopg connects to, managed by PID like kafka-local."""

from __future__ import annotations

import subprocess
from pathlib import Path

import psycopg
import pytest

from tests.helpers import local_script
from ventas.lab import postgres_local
from ventas.lab.daemons import process_tree, start_time
from ventas.lab.ports import free_port
from ventas.lab.postgres_local import LocalPostgres

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("postgres_bindir")]


def postgres_local_command(*args: str) -> subprocess.CompletedProcess:
    return local_script("postgres-local", *args, timeout=120)


def running(processes: set[tuple[int, str]]) -> set[tuple[int, str]]:
    return {(pid, start) for pid, start in processes if start_time(pid) == start}


def test_start_status_stop_and_start_again_keeps_the_data(tmp_path: Path) -> None:
    port, data_dir = free_port(), tmp_path / "postgres"
    where = ["--port", str(port), "--data-dir", str(data_dir)]
    server = LocalPostgres(port, data_dir)
    try:
        started = postgres_local_command("start", *where)
        assert started.returncode == 0, started.stderr
        url = started.stdout.splitlines()[0]
        assert url == f"postgresql://ventas@127.0.0.1:{port}/ventas"
        with psycopg.connect(url, autocommit=True) as connection:
            assert connection.execute("select 1").fetchone() == (1,)
            connection.execute("create table kept (n int)")
            connection.execute("insert into kept values (42)")
        server_processes = process_tree(pid := server.pid())  # the postmaster and its own processes

        again = postgres_local_command("start", *where)
        assert again.returncode == 0 and "already running" in again.stderr
        assert again.stdout.splitlines()[0] == url and server.pid() == pid
        status = postgres_local_command("status", *where)
        assert status.returncode == 0 and status.stdout.startswith(f"running at {url} (pid {pid},")

        stopped = postgres_local_command("stop", *where)
        assert stopped.returncode == 0 and stopped.stdout.strip() == "stopped"
        assert len(server_processes) > 1 and running(server_processes) == set()
        assert postgres_local_command("status", *where).returncode == 3

        restarted = postgres_local_command("start", *where)
        assert restarted.returncode == 0 and "PostgreSQL started" in restarted.stderr
        assert restarted.stdout.splitlines()[0] == url
        with psycopg.connect(url) as connection:
            assert connection.execute("select n from kept").fetchall() == [(42,)]
    finally:
        server.remove()


def test_a_killed_server_starts_again_with_its_committed_data(tmp_path: Path) -> None:
    server = LocalPostgres(free_port(), tmp_path)
    try:
        assert server.start()
        with psycopg.connect(server.url, autocommit=True) as connection:
            connection.execute("create table kept (n int)")
            connection.execute("insert into kept values (7)")
        server_processes = process_tree(server.pid())
        server.kill()
        assert running(server_processes) == set() and server.pid() is None
        assert server.start()  # crash recovery from the WAL
        with psycopg.connect(server.url) as connection:
            assert connection.execute("select n from kept").fetchall() == [(7,)]
        assert server.stop() and not server.stop()
    finally:
        server.remove()


def test_server_that_cannot_start_shows_its_log_in_one_line(tmp_path: Path) -> None:
    server = LocalPostgres(free_port(), tmp_path)
    try:
        server.start()
        server.stop()
        with (server.cluster_dir / "postgresql.conf").open("a") as config:
            config.write("shared_buffers = plenty\n")
        result = postgres_local_command("start", "--port", str(server.port), "--data-dir", str(tmp_path))
        assert result.returncode == 1
        assert len(result.stderr.strip().splitlines()) == 1
        assert 'invalid value for parameter "shared_buffers"' in result.stderr
        assert str(server.log_file) in result.stderr
        assert server.pid() is None
    finally:
        server.remove()


def test_missing_server_binaries_are_one_line_naming_the_package(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(postgres_local, "DEBIAN_SERVERS", tmp_path)
    monkeypatch.setenv("PATH", str(tmp_path))  # no pg_config either
    with pytest.raises(SystemExit) as exited:
        postgres_local.main(["start", "--port", str(free_port()), "--data-dir", str(tmp_path / "postgres")])
    assert exited.value.code == 1
    assert capsys.readouterr().err == "postgres-local: error: PostgreSQL server not found: apt-get install postgresql\n"


def test_postgres_url_is_a_fresh_database_of_its_own(postgres_url: str, postgres_server: LocalPostgres) -> None:
    assert postgres_url.startswith(f"postgresql://ventas@127.0.0.1:{postgres_server.port}/ventas_test_")
    with psycopg.connect(postgres_url) as connection:
        database = connection.execute("select current_database()").fetchone()[0]
        tables = connection.execute("select count(*) from pg_tables where schemaname = 'public'").fetchone()
    assert postgres_url.endswith(f"/{database}") and tables == (0,)

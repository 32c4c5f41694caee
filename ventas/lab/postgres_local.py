"""A real PostgreSQL server on 127.0.0.1 from the machine's own binaries, for the totals database.

`scripts/postgres-local start|stop|status [--port P] [--data-dir DIR]`, managed like kafka-local: the
data directory holds `postgres.json` (the PID), `postgres.log` and the cluster, `pgdata`, created with
initdb at the first start along with the user `ventas` (its superuser) and the database `ventas`.
`start` prints the connection URL, postgresql://ventas@127.0.0.1:PORT/ventas, and starts nothing when
the server already runs. A local development server, like kafka-local's plaintext listener: it
listens on 127.0.0.1 only, has no Unix socket, and trusts every TCP connection from 127.0.0.1 and ::1
without a password. initdb and the server refuse to run as root: as root they run as the `postgres`
user, and the cluster lives in that user's home (see LocalPostgres.cluster_dir).
"""

from __future__ import annotations

import argparse
import json
import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ventas.config import STATE_HOME, Parser, UserError, env, fail, positive_int
from ventas.lab import daemons
from ventas.lab.ports import HOST, port_is_free

DEFAULT_PORT = 5432
USER = DATABASE = "ventas"
SERVER_ACCOUNT = "postgres"  # the system user initdb and the server run as when this runs as root
DEBIAN_SERVERS = Path("/usr/lib/postgresql")  # one VERSION/bin per installed server version
STATE_FILE = "postgres.json"
CLUSTER_LINK = "pgdata"
READY_POLL_S = 0.1
LOG_LINES_SHOWN = 2  # of the server's log, when it exits during start
PG_HBA = f"""\
# postgres-local: a development server; any user, any database, from this machine's loopback only.
# TYPE  DATABASE  USER  ADDRESS       METHOD
host    all       all   {HOST}/32  trust
host    all       all   ::1/128       trust
"""


def default_data_dir(port: int) -> Path:
    return STATE_HOME / f"postgres-{port}"


def server_bindir() -> Path:
    """The directory of initdb and postgres: the newest of Debian's /usr/lib/postgresql/VERSION/bin,
    else `pg_config --bindir`."""
    installed = [path for path in DEBIAN_SERVERS.glob("*/bin") if _version(path.parent.name) and _has_server(path)]
    if installed:
        return max(installed, key=lambda path: _version(path.parent.name))
    if pg_config := shutil.which("pg_config"):
        bindir = Path(subprocess.run([pg_config, "--bindir"], capture_output=True, text=True).stdout.strip())
        if bindir.is_absolute() and _has_server(bindir):
            return bindir
    raise UserError("PostgreSQL server not found: apt-get install postgresql")


def _version(name: str) -> tuple[int, ...]:
    """15 -> (15,), 9.6 -> (9, 6); () for a name that is no version."""
    try:
        return tuple(int(part) for part in name.split("."))
    except ValueError:
        return ()


def _has_server(bindir: Path) -> bool:
    return (bindir / "postgres").is_file() and (bindir / "initdb").is_file()


def _server_account() -> pwd.struct_passwd | None:
    """The account to run initdb and the server as: None (this process's own) unless this runs as root,
    which both refuse."""
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam(SERVER_ACCOUNT)
    except KeyError:
        raise UserError(f"as root, PostgreSQL runs as user {SERVER_ACCOUNT}: apt-get install postgresql") from None


def _run_as(account: pwd.struct_passwd | None) -> dict[str, Any]:
    """Popen arguments that switch to `account` in the child before exec. Not `runuser`: it stays as
    the server's parent, and answers a SIGTERM by SIGKILLing its child 2 s later (a crash, not a
    shutdown); a recorded PID of runuser's would not be the server's either."""
    if account is None:
        return {}
    return {"user": account.pw_uid, "group": account.pw_gid, "extra_groups": []}


@dataclass
class LocalPostgres:
    """One server, identified by its data directory, listening on `port`."""

    port: int
    data_dir: Path

    @property
    def url(self) -> str:
        return self.database_url(DATABASE)

    def database_url(self, database: str) -> str:
        """The URL of one of this server's databases, as user ventas."""
        return f"postgresql://{USER}@{HOST}:{self.port}/{database}"

    @property
    def log_file(self) -> Path:
        return self.data_dir / "postgres.log"

    @property
    def _state_file(self) -> Path:
        return self.data_dir / STATE_FILE

    @property
    def cluster_dir(self) -> Path:
        """PostgreSQL's own data directory: `pgdata` in the data dir, which as root is a link to a
        directory of the postgres user's home (see _new_cluster_dir)."""
        return (self.data_dir / CLUSTER_LINK).resolve()

    def pid(self) -> int | None:
        """The PID of this server's postmaster, or None (a stale or reused PID does not count): the
        cluster's path is in its command line (-D)."""
        return daemons.recorded_pid(self._state_file, self.cluster_dir)

    def start(self, timeout_s: float = 60.0) -> bool:
        """Start the server unless it already runs, on the cluster it has (initdb the first time), and
        create the database ventas if missing. True when it was started."""
        if self.pid() is not None:
            return False
        self._wait_until_ready(self._launch(), timeout_s)
        self.create_database(DATABASE)
        return True

    def _launch(self) -> subprocess.Popen:
        bindir = server_bindir()
        if not port_is_free(self.port):
            raise UserError(f"port {self.port} on {HOST} is taken: stop what uses it or pass --port")
        account = _server_account()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        cluster = self.cluster_dir
        if not (cluster / "PG_VERSION").exists():
            cluster = self._init_cluster(bindir, account)
        settings = [
            f"port={self.port}",
            f"listen_addresses={HOST}",
            # No Unix socket: clients use TCP on 127.0.0.1, and a socket path under a deep data dir
            # could pass the 107-byte limit of socket addresses.
            "unix_socket_directories=",
        ]
        with self.log_file.open("ab") as log:
            process = subprocess.Popen(
                [
                    str(bindir / "postgres"),
                    "-D",
                    str(cluster),
                    *(arg for setting in settings for arg in ("-c", setting)),
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=cluster,
                start_new_session=True,
                **_run_as(account),
            )
        self._state_file.write_text(json.dumps({"pid": process.pid, "port": self.port}))
        return process

    def _init_cluster(self, bindir: Path, account: pwd.struct_passwd | None) -> Path:
        """A new cluster whose superuser is ventas, trusting connections from the loopback only."""
        cluster = self.cluster_dir if self.cluster_dir.is_dir() else self._new_cluster_dir(account)
        initdb = subprocess.run(
            [str(bindir / "initdb"), "-D", str(cluster), "-U", USER, "--encoding=UTF8", "--locale=C"],
            capture_output=True,
            text=True,
            cwd=cluster.parent,
            **_run_as(account),
        )
        if initdb.returncode != 0:
            raise UserError(f"initdb {cluster} failed: {' '.join(initdb.stderr.strip().splitlines()[-1:])}")
        (cluster / "pg_hba.conf").write_text(PG_HBA)  # rewritten in place: owner and mode stay initdb's
        return cluster

    def _new_cluster_dir(self, account: pwd.struct_passwd | None) -> Path:
        """Where initdb puts a new cluster: `pgdata` in the data dir, or as root a new directory in the
        postgres user's home (/var/lib/postgresql/ventas/...) that `pgdata` links to. The postgres user
        must traverse every directory above its cluster, which those above a root's data dir usually
        forbid (/root and pytest's /tmp/pytest-of-root are mode 700), and they are not ours to open."""
        link = self.data_dir / CLUSTER_LINK
        if account is None:
            return link
        parent = Path(account.pw_dir) / "ventas"
        parent.mkdir(parents=True, exist_ok=True)
        cluster = Path(tempfile.mkdtemp(prefix=f"{self.data_dir.name}-", dir=parent))
        os.chown(cluster, account.pw_uid, account.pw_gid)
        link.unlink(missing_ok=True)
        link.symlink_to(cluster)
        return cluster

    def _wait_until_ready(self, process: subprocess.Popen, timeout_s: float) -> None:
        """Until the server accepts a connection; one line with the end of its log if it exits first."""
        import psycopg

        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if process.poll() is not None:
                self.forget()
                raise UserError(
                    f"PostgreSQL exited with code {process.returncode}: {self._log_tail()} (log {self.log_file})"
                )
            try:
                psycopg.connect(self.database_url("postgres"), connect_timeout=2).close()
                return
            except psycopg.OperationalError:  # not listening yet, or still starting up
                time.sleep(READY_POLL_S)
        self.stop()
        raise UserError(f"PostgreSQL did not come up in {timeout_s:.0f} seconds: see {self.log_file}")

    def _log_tail(self) -> str:
        lines = [line for line in self.log_file.read_text(errors="replace").splitlines() if line.strip()]
        return " | ".join(lines[-LOG_LINES_SHOWN:])

    def create_database(self, name: str) -> str:
        """Create database `name` unless it exists; its URL."""
        import psycopg
        from psycopg import sql

        with psycopg.connect(self.database_url("postgres"), autocommit=True) as connection:
            if not connection.execute("select 1 from pg_database where datname = %s", (name,)).fetchone():
                connection.execute(sql.SQL("create database {}").format(sql.Identifier(name)))
        return self.database_url(name)

    def stop(self, timeout_s: float = 60.0) -> bool:
        """Stop the server by its recorded PID and wait for it to exit. True when it was running.
        SIGINT, PostgreSQL's fast shutdown: open sessions are rolled back and closed, then a checkpoint.
        SIGTERM's smart shutdown would wait for every client to disconnect, and a consumer's
        connection never does: the SIGKILL after `timeout_s` would make every stop a crash."""
        stopped = daemons.stop(self.pid, timeout_s=timeout_s, signum=signal.SIGINT)
        self.forget()
        return stopped

    def forget(self) -> None:
        """Remove the PID record of a stopped server."""
        self._state_file.unlink(missing_ok=True)

    def kill(self) -> None:
        """SIGKILL the server, as a crash would (for fault tests); the next start recovers from the WAL.
        Its backends too: left alone, they would keep the old shared memory, which the next postmaster
        refuses to start beside, until each noticed its postmaster's death."""
        pid = self.pid()
        if pid is not None:
            daemons.kill_tree(pid)

    def remove(self) -> None:
        """Stop the server and delete its cluster, for tests: a root's cluster is outside the data dir,
        where pytest's removal of old temporary directories never reaches it."""
        self.stop()
        shutil.rmtree(self.cluster_dir, ignore_errors=True)
        (self.data_dir / CLUSTER_LINK).unlink(missing_ok=True)


def main(argv: list[str] | None = None) -> None:
    parser = Parser(prog="postgres-local", description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=["start", "stop", "status"])
    parser.add_argument(
        "--port",
        type=positive_int,
        default=env("POSTGRES_PORT", str(DEFAULT_PORT)),
        help="port on 127.0.0.1 (env POSTGRES_PORT; default %(default)s)",
    )
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help=f"PID, log and cluster (default {default_data_dir(DEFAULT_PORT).parent}/postgres-PORT)",
    )
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for the server to come up")
    args = parser.parse_args(argv)
    server = LocalPostgres(args.port, (args.data_dir or default_data_dir(args.port)).resolve())
    try:
        run(args.command, server, args)
    except UserError as error:
        fail(parser.prog, error)


def run(command: str, server: LocalPostgres, args: argparse.Namespace) -> None:
    if command == "start":
        started = server.start(args.timeout)
        print(f"PostgreSQL {'started' if started else 'already running'} (pid {server.pid()})", file=sys.stderr)
        print(server.url)
        print(f"data dir {server.data_dir} (cluster {server.cluster_dir})")
        print(f"log {server.log_file}")
    elif command == "stop":
        print("stopped" if server.stop() else f"not running (data dir {server.data_dir})")
    else:
        pid = server.pid()
        if pid is None:
            print(f"not running (data dir {server.data_dir})")
            sys.exit(3)
        print(f"running at {server.url} (pid {pid}, data dir {server.data_dir})")


if __name__ == "__main__":
    main()

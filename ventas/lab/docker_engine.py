"""A Docker engine of the project's own: Debian's dockerd on a private socket, data root and exec root,
known by PID, for running docker-compose.yml for real where no engine runs.

It sets no firewall rules and no IP forwarding (--iptables=false, --ip-forward=false) and makes no
default bridge: compose's own network still joins the containers, which resolve each other by name,
and published ports reach them through docker-proxy on the host's loopback. So a container reaches
nothing but its peers and the host; image builds that need the package registries run on the host's
network (`docker build --network host`). The image layers stay in the data root, under the user's
cache, between runs.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from ventas.config import UserError
from ventas.jars import CACHE_HOME
from ventas.lab import daemons

ENGINE_PACKAGES = ("docker.io", "debootstrap")
# The Compose v2 CLI (`docker compose`), built from the Go module proxy. v5.6.0 is the newest whose
# modules the proxy serves whole (v5.7's secrets-engine modules are refused); it speaks API 1.41, dockerd 20.10's.
COMPOSE_MODULE = "github.com/docker/compose/v5"
COMPOSE_VERSION = "v5.6.0"
COMPOSE_HOME = CACHE_HOME / "compose"


class DockerEngine:
    def __init__(self, data_root: Path, run_dir: Path) -> None:
        self.data_root = data_root
        # The exec root and socket live in a short path: containerd's shim sockets must fit in 108 bytes.
        self.run_dir = run_dir
        self.socket = run_dir / "docker.sock"
        self._state = run_dir / "dockerd.json"

    @property
    def env(self) -> dict[str, str]:
        """The variables that point the docker and compose commands at this engine, with a client
        configuration of its own that holds the compose plugin (compose_plugin_config)."""
        return {"DOCKER_HOST": f"unix://{self.socket}", "DOCKER_CONFIG": str(COMPOSE_HOME / "docker-config")}

    def pid(self) -> int | None:
        return daemons.recorded_pid(self._state, self._host_argument)

    @property
    def _host_argument(self) -> str:
        return f"--host=unix://{self.socket}"

    def start(self, timeout_s: float = 60.0) -> None:
        if self.pid() is not None:
            return
        dockerd = shutil.which("dockerd")
        if dockerd is None:
            raise UserError("dockerd not found: install Debian's docker.io (apt-get install docker.io)")
        self.data_root.mkdir(parents=True, exist_ok=True)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        log = (self.run_dir / "dockerd.log").open("ab")
        command = [
            dockerd,
            f"--data-root={self.data_root}",
            f"--exec-root={self.run_dir / 'exec'}",
            f"--pidfile={self.run_dir / 'dockerd.pid'}",
            self._host_argument,
            "--iptables=false",
            "--ip-forward=false",
            "--bridge=none",
        ]
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        self._state.write_text(json.dumps({"pid": process.pid}))
        deadline = time.monotonic() + timeout_s
        while self.docker("version", check=False).returncode != 0:
            if process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"dockerd did not start: see {self.run_dir / 'dockerd.log'}")
            time.sleep(0.5)

    def docker(self, *args: str, check: bool = True, **kwargs) -> subprocess.CompletedProcess:
        """`docker ARGS` against this engine, its output captured as text; with `check`, a failure
        raises with the end of what docker said."""
        result = subprocess.run(
            ["docker", "--host", self.env["DOCKER_HOST"], *args], capture_output=True, text=True, **kwargs
        )
        if check and result.returncode != 0:
            raise RuntimeError(f"docker {' '.join(args[:2])} failed: {(result.stdout + result.stderr)[-3000:]}")
        return result

    def stop(self) -> None:
        """Remove what is left (containers, networks), then stop dockerd and its containerd by PID."""
        if self.pid() is not None:
            leftover = self.docker("ps", "--all", "--quiet", check=False).stdout.split()
            if leftover:
                self.docker("rm", "--force", "--volumes", *leftover, check=False)
            self.docker("network", "prune", "--force", check=False)
        engine = self.pid()
        tree = daemons.process_tree(engine) if engine is not None else set()
        daemons.stop(self.pid, timeout_s=60)
        daemons.wait_gone(tree)
        for pid, _ in tree:  # a containerd or shim that outlived dockerd
            daemons.kill(lambda pid=pid: pid if daemons.start_time(pid) else None)
        # dockerd can leave the host's network namespace mounted at exec/netns/default, and its data
        # root bind-mounted on itself.
        for mount_point in sorted(self._mounts(), reverse=True):
            subprocess.run(["umount", "--lazy", mount_point], check=False, capture_output=True)

    def _mounts(self) -> list[str]:
        """The mount points in the run directory and the data root (/proc/self/mounts escapes spaces)."""
        mounts = Path("/proc/self/mounts").read_text().splitlines()
        points = [line.split()[1].encode().decode("unicode_escape") for line in mounts]
        return [point for point in points if any(point == str(d) or point.startswith(f"{d}/") for d in self._dirs)]

    @property
    def _dirs(self) -> tuple[Path, Path]:
        return self.run_dir, self.data_root


def ensure_compose_plugin() -> Path:
    """`docker compose` for DockerEngine.env's client configuration: a plugin the machine already has,
    else Compose COMPOSE_VERSION built once from the Go module proxy into the cache; its path."""
    plugins = COMPOSE_HOME / "docker-config" / "cli-plugins"
    plugins.mkdir(parents=True, exist_ok=True)
    probe = subprocess.run(
        ["docker", "compose", "version"], env={**os.environ, "DOCKER_CONFIG": str(plugins.parent)}, capture_output=True
    )
    if probe.returncode == 0:
        return plugins / "docker-compose"
    binary = COMPOSE_HOME / "cli" / f"docker-compose-{COMPOSE_VERSION}"
    if not binary.exists():
        _build_compose(binary)
    (plugins / "docker-compose").unlink(missing_ok=True)
    (plugins / "docker-compose").symlink_to(binary)
    return plugins / "docker-compose"


def _build_compose(binary: Path) -> None:
    go = shutil.which("go")
    if go is None:
        raise UserError("no `docker compose` plugin and no Go toolchain to build one: install either")
    gopath = COMPOSE_HOME / "go"
    env = {**os.environ, "GOPATH": str(gopath), "GOMODCACHE": str(gopath / "pkg" / "mod"), "CGO_ENABLED": "0"}
    env["GOCACHE"] = str(COMPOSE_HOME / "go-build")
    module = f"{COMPOSE_MODULE}@{COMPOSE_VERSION}"
    downloaded = subprocess.run([go, "mod", "download", "-json", module], env=env, capture_output=True, text=True)
    if downloaded.returncode != 0:
        raise UserError(f"could not fetch {module} from the Go module proxy: {downloaded.stdout or downloaded.stderr}")
    binary.parent.mkdir(parents=True, exist_ok=True)
    # Built as the main module: its go.mod's exclude directives rule out `go install module@version`.
    with tempfile.TemporaryDirectory(prefix="ventas-compose-") as source:
        shutil.copytree(json.loads(downloaded.stdout)["Dir"], source, dirs_exist_ok=True)
        for directory, _, _ in os.walk(source):  # the module cache's copies are read-only
            Path(directory).chmod(0o755)
        version_flag = f"-X {COMPOSE_MODULE}/internal.Version={COMPOSE_VERSION}"
        partial = binary.with_suffix(".partial")
        command = [go, "build", "-trimpath", "-ldflags", f"-w {version_flag}", "-o", str(partial), "./cmd"]
        subprocess.run(command, cwd=source, env=env, check=True, capture_output=True)
        partial.chmod(0o755)
        partial.rename(binary)

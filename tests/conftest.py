"""Shared fixtures: a real Dockyard server on 127.0.0.1 driven by the real OpenSSH client."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def require_tool(name: str) -> str:
    """A missing real tool is a failure, never a skip: these tests exist to use them."""
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is not installed; run `make setup` first")
    return path


def make_key(directory: Path, name: str) -> Path:
    path = directory / name
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", name, "-f", str(path)], check=True
    )
    return path


@dataclass
class SSHResult:
    returncode: int
    stdout: str
    stderr: str


@dataclass
class DockyardServer:
    """A running `dockyard serve` and the keys to reach it."""

    data_dir: Path
    port: int
    http_port: int
    keys_dir: Path
    process: subprocess.Popen
    admin_key: Path
    user_key: Path
    log_path: Path
    env: dict[str, str] = field(default_factory=dict)

    def ssh_args(self, key: Path, *extra: str) -> list[str]:
        return [
            "ssh", "-p", str(self.port), "-i", str(key),
            "-o", "IdentitiesOnly=yes", "-o", "StrictHostKeyChecking=no",
            "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR",
            "-o", "BatchMode=yes", "-o", "ConnectTimeout=10",
            *extra, "dockyard@127.0.0.1",
        ]  # fmt: skip

    def ssh(
        self, *command: str, key: Path | None = None, input: str | bytes | None = None,
        timeout: float = 120,
    ) -> SSHResult:
        """Run one command over SSH; each argument is sent as one word (quoted for the
        server's shell-like splitter)."""
        import shlex

        line = " ".join(shlex.quote(c) for c in command)
        proc = subprocess.run(
            [*self.ssh_args(key or self.admin_key), line],
            input=input.encode() if isinstance(input, str) else input,
            capture_output=True, timeout=timeout,
            stdin=subprocess.DEVNULL if input is None else None,
        )  # fmt: skip
        return SSHResult(
            proc.returncode, proc.stdout.decode(errors="replace"),
            proc.stderr.decode(errors="replace"),
        )  # fmt: skip

    def git_env(self, key: Path | None = None) -> dict[str, str]:
        ssh = " ".join(self.ssh_args(key or self.admin_key)[:-1])
        return {**os.environ, "GIT_SSH_COMMAND": ssh, "GIT_TERMINAL_PROMPT": "0"}

    def remote(self, app: str) -> str:
        return f"ssh://dockyard@127.0.0.1:{self.port}/{app}"

    def cli(self, *args: str, input: str | None = None) -> SSHResult:
        """The local CLI (`dockyard --data-dir … CMD`), which acts as admin."""
        proc = subprocess.run(
            [sys.executable, "-m", "dockyard.cli", "--data-dir", str(self.data_dir), *args],
            input=input, capture_output=True, text=True, timeout=120, env=self.env or None,
        )  # fmt: skip
        return SSHResult(proc.returncode, proc.stdout, proc.stderr)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def wait_for_port(
    port: int, process: subprocess.Popen, log_path: Path, timeout: float = 30
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"dockyard serve exited early:\n{log_path.read_text()}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"dockyard serve did not listen on {port}:\n{log_path.read_text()}")


def start_server(
    data_dir: Path, keys_dir: Path, admin_key: Path, user_key: Path,
    port: int | None = None, http_port: int | None = None, extra_env: dict[str, str] | None = None,
    module: str = "dockyard.cli",
) -> DockyardServer:  # fmt: skip
    port = port or free_port()
    http_port = http_port or free_port()
    log_path = data_dir.parent / f"serve-{port}.log"
    env = {**os.environ, **(extra_env or {})}
    log_file = open(log_path, "ab")
    process = subprocess.Popen(
        [
            sys.executable, "-m", module, "serve", "--data-dir", str(data_dir),
            "--ssh-listen", f"127.0.0.1:{port}", "--http-listen", f"127.0.0.1:{http_port}",
            "--https-listen", f"127.0.0.1:{free_port()}", "--log-format", "json",
        ],
        stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
        cwd=REPO_ROOT,
    )  # fmt: skip
    log_file.close()
    try:
        wait_for_port(port, process, log_path)
    except BaseException:
        # nginx starts before SSH listens, in its own session: take it along too.
        if process.poll() is None:
            process.kill()
            process.wait()
        remove_leftovers_of(data_dir)
        raise
    return DockyardServer(
        data_dir, port, http_port, keys_dir, process, admin_key, user_key, log_path, env
    )


def start_harness_server(tmp: Path) -> DockyardServer:
    """A server whose deploy pipeline is the scripted one in tests/gitrecv_pipeline.py, for
    tests of the git transport that must not build images."""
    return start_server(*_provision(tmp), module="tests.gitrecv_pipeline")


def stop_server(server: DockyardServer) -> None:
    if server.process.poll() is None:
        server.process.terminate()
        try:
            server.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.process.kill()
            server.process.wait()


def _provision(tmp: Path) -> tuple[Path, Path, Path, Path]:
    require_tool("ssh")
    require_tool("ssh-keygen")
    data_dir = tmp / "data"
    keys_dir = tmp / "keys"
    keys_dir.mkdir()
    admin_key = make_key(keys_dir, "admin")
    user_key = make_key(keys_dir, "alice")
    for name, key, admin in (("admin", admin_key, True), ("alice", user_key, False)):
        args = [sys.executable, "-m", "dockyard.cli", "--data-dir", str(data_dir), "ssh-keys:add"]
        if admin:
            args.append("--admin")
        subprocess.run([*args, name, f"{key}.pub"], check=True, capture_output=True)
    return data_dir, keys_dir, admin_key, user_key


def remove_server_leftovers(server: DockyardServer) -> None:
    """Apps and the nginx master outlive `dockyard serve` by design (a restart of Dockyard
    must not stop them); a test's server takes them with it when the test is done."""
    remove_leftovers_of(server.data_dir)


def remove_leftovers_of(data_dir: Path) -> None:
    from proxy.dnat import Dnat
    from proxy.nginx import NginxMaster
    from proxy.render import NginxPaths

    NginxMaster(NginxPaths(prefix=data_dir / "nginx")).stop()
    Dnat(str(data_dir)).remove_home()  # the kernel's forwarding rules of this home
    try:
        from deployer.containers import client, list_containers

        # Apps', one-offs' and services' containers, then every network of this home:
        # apps', services' and `network:create`d ones.
        for container in list_containers({"label": f"dockyard.home={data_dir}"}):
            container.remove(force=True)
        for network in client().api.networks(filters={"label": f"dockyard.home={data_dir}"}):
            client().api.remove_network(network["Id"])
        # The apps' images (labelled with their home); their layers go with them.
        for image in client().api.images(filters={"label": f"dockyard.home={data_dir}"}):
            try:
                client().api.remove_image(image["Id"], force=True)
            except Exception as exc:  # shared with a concurrent build, or already gone
                print(f"image {image['Id'][:19]} not removed: {exc}")
    except Exception as exc:  # no engine: nothing of ours can be running on it
        print(f"container clean-up skipped: {exc}")


@pytest.fixture
def server(tmp_path: Path) -> Iterator[DockyardServer]:
    """A fresh server per test: key `admin` (admin) and key `alice` (non-admin)."""
    data_dir, keys_dir, admin_key, user_key = _provision(tmp_path)
    srv = start_server(data_dir, keys_dir, admin_key, user_key)
    try:
        yield srv
    finally:
        stop_server(srv)
        remove_server_leftovers(srv)


@pytest.fixture(scope="module")
def shared_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DockyardServer]:
    """One server for a whole module, for tests that do not disturb each other."""
    data_dir, keys_dir, admin_key, user_key = _provision(tmp_path_factory.mktemp("dockyard"))
    srv = start_server(data_dir, keys_dir, admin_key, user_key)
    try:
        yield srv
    finally:
        stop_server(srv)
        remove_server_leftovers(srv)


@pytest.fixture(scope="session", autouse=True)
def _reap_killed_runs(tmp_path_factory: pytest.TempPathFactory) -> None:
    """A killed earlier run's apps would collide with this run's (tests/stale_runs.py)."""
    from tests.stale_runs import reap

    current = tmp_path_factory.getbasetemp()
    try:
        removed = reap(current.parent, current, remove_leftovers_of)
    except Exception as exc:  # no engine: docker_engine fails the tests that need one
        print(f"stale-run clean-up skipped: {exc}")
        return
    if removed:
        print(f"removed what killed test runs left: {', '.join(removed)}", file=sys.stderr)


@pytest.fixture(scope="session")
def docker_engine():
    """The real Docker engine. Missing under CI=true is a failure; locally too — a skip
    would count an untested deploy as a pass."""
    import docker

    try:
        client = docker.from_env()
        client.ping()
    except Exception as exc:  # the SDK raises several unrelated types here
        pytest.fail(f"Docker engine not reachable ({exc}); run `make setup` (starts dockerd)")
    return client

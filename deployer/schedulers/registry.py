"""Images reach every swarm node through a registry.

Either the one set with `registry:set --global server|username|password`, or Dockyard's own:
Debian's `docker-registry` (the distribution registry, 2.8) run as a plain process on this
host, with a config Dockyard writes (no htpasswd file: the package's default config turns
htpasswd on), storage under `DATA_DIR/registry/data`, listening on `registry listen` — by
default the swarm advertise address, port 5000. Like Dockyard's nginx it runs in its own
session and outlives Dockyard; a start adopts it through its pid file.

`publish(release)` tags the release's local image `REGISTRY/dockyard/APP:N` (N: the
release's version), pushes it, drops the local tag again, and returns the reference pinned
by digest (`…:N@sha256:…`), so every node runs exactly the pushed bytes.

Invariants: the managed registry's config names only paths under the data dir and an
address parsed by `settings._listen`; credentials are never written to a log or an event.
Dockyard's own registry has no authentication: it must listen on an address only the
cluster reaches (docs/scale-out.md says how to put one with TLS and a password in front).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import docker.errors

from deployer import containers as docker_ops
from deployer.releases import Release
from deployer.schedulers import cluster
from deployer.schedulers.settings import LISTEN, MANAGED_REGISTRY_PORT, PASSWORD, SERVER, USERNAME
from dockyard.errors import DockyardError

if TYPE_CHECKING:
    from dockyard.services import Services

BINARIES = ("docker-registry", "registry")
START_TIMEOUT = 15.0
STOP_TIMEOUT = 10.0
POLL = 0.05


class RegistryError(DockyardError):
    pass


@dataclass(frozen=True)
class Target:
    """Where images are pushed and pulled, and the credentials to do so (or none)."""

    address: str
    username: str = ""
    password: str = ""
    managed: bool = False

    def auth_config(self) -> dict[str, str] | None:
        if not self.username:
            return None
        return {
            "username": self.username, "password": self.password, "serveraddress": self.address,
        }  # fmt: skip

    def repository(self, app: str) -> str:
        return f"{self.address}/dockyard/{app}"


def registry_dir(services: Services) -> Path:
    return services.settings.data_dir / "registry"


class ManagedRegistry:
    """Dockyard's own registry process under `DATA_DIR/registry/`."""

    def __init__(self, root: Path, listen: str) -> None:
        self.root = root
        self.listen = listen

    @property
    def config(self) -> Path:
        return self.root / "config.yml"

    @property
    def pid_file(self) -> Path:
        return self.root / "registry.pid"

    @property
    def log_file(self) -> Path:
        return self.root / "registry.log"

    def render(self) -> str:
        return (
            "# Written by Dockyard; edits are overwritten.\n"
            "version: 0.1\n"
            "log:\n  level: warn\n  fields:\n    service: dockyard-registry\n"
            "storage:\n"
            f"  filesystem:\n    rootdirectory: {self.root / 'data'}\n"
            "  delete:\n    enabled: true\n"
            "  cache:\n    blobdescriptor: inmemory\n"
            "http:\n"
            f"  addr: {self.listen}\n"
            "  headers:\n    X-Content-Type-Options: [nosniff]\n"
        )

    def pid(self) -> int | None:
        try:
            pid = int(self.pid_file.read_text().strip())
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except (OSError, ValueError):
            return None
        return pid if str(self.config).encode() in cmdline else None

    def answers(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://{self.listen}/v2/", timeout=2) as resp:
                return resp.status == 200
        except (urllib.error.URLError, OSError, ValueError):
            return False

    def ensure_running(self) -> int:
        """Adopt the running registry of this config, or start one; wait until it answers."""
        text = self.render()
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        changed = not self.config.exists() or self.config.read_text() != text
        pid = self.pid()
        if pid is not None and not changed and self.answers():
            return pid
        if pid is not None:
            self.stop()
        (self.root / "data").mkdir(exist_ok=True, mode=0o700)
        tmp = self.config.with_suffix(".new")
        tmp.write_text(text)
        os.replace(tmp, self.config)
        binary = next((shutil.which(b) for b in BINARIES if shutil.which(b)), None)
        if binary is None:
            raise RegistryError(
                "No registry binary found: install Debian's docker-registry package, or set "
                "an external one with registry:set --global server HOST:PORT"
            )
        with open(self.log_file, "ab") as log:
            proc = subprocess.Popen(
                [binary, "serve", str(self.config)], stdin=subprocess.DEVNULL, stdout=log,
                stderr=log, start_new_session=True, close_fds=True,
            )  # fmt: skip
        self.pid_file.write_text(f"{proc.pid}\n")
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RegistryError(f"The registry exited at start:\n{self._log_tail()}")
            if self.answers():
                return proc.pid
            time.sleep(POLL)
        raise RegistryError(f"The registry did not answer on {self.listen}:\n{self._log_tail()}")

    def stop(self) -> None:
        pid = self.pid()
        if pid is None:
            return
        _signal(pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT
        while time.monotonic() < deadline and Path(f"/proc/{pid}").exists():
            _reap(pid)
            time.sleep(POLL)
        if Path(f"/proc/{pid}").exists():
            _signal(pid, signal.SIGKILL)
            _reap(pid)
        self.pid_file.unlink(missing_ok=True)

    def _log_tail(self, lines: int = 5) -> str:
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no registry log)"


def _signal(pid: int, sig: signal.Signals) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def _reap(pid: int) -> None:
    """A registry this process started is its child: collect it once it exits."""
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def managed_listen(services: Services) -> str:
    listen = LISTEN.raw(services.properties, None)
    if listen:
        return listen
    addr = cluster.state().node_addr
    if not addr:
        raise RegistryError(
            "Dockyard's registry needs an address every node reaches: join a swarm first, or "
            "set one with registry:set --global listen IP:PORT"
        )
    return f"{addr}:{MANAGED_REGISTRY_PORT}"


def managed(services: Services) -> ManagedRegistry:
    return ManagedRegistry(registry_dir(services), managed_listen(services))


def target(services: Services, start: bool = True) -> Target:
    """The registry in use; Dockyard's own is started (or adopted) unless `start` is False."""
    props = services.properties
    server = SERVER.raw(props, None)
    if server:
        return Target(server, USERNAME.raw(props, None), PASSWORD.raw(props, None))
    own = managed(services)
    if start:
        own.ensure_running()
    return Target(own.listen, managed=True)


def publish(services: Services, app: str, release: Release) -> str:
    """Push the release's image as `REGISTRY/dockyard/APP:N`; returns it pinned by digest."""
    where = target(services)
    repository = where.repository(app)
    tag = str(release.version)
    api = docker_ops.client().api
    api.tag(release.image, repository, tag)
    try:
        digest = ""
        for event in api.push(
            repository, tag, stream=True, decode=True, auth_config=where.auth_config()
        ):
            if event.get("error"):
                raise RegistryError(f"Pushing {repository}:{tag} failed: {event['error']}")
            digest = ((event.get("aux") or {}).get("Digest")) or digest
    except docker.errors.APIError as exc:
        raise RegistryError(f"Pushing {repository}:{tag} failed: {exc.explanation}") from None
    finally:
        try:
            api.remove_image(f"{repository}:{tag}", noprune=True)
        except docker.errors.APIError:
            pass
    if not digest:
        raise RegistryError(f"Pushing {repository}:{tag} returned no digest")
    return f"{repository}:{tag}@{digest}"

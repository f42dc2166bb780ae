"""A service's container, network, data directory and image on the local Docker engine.

Names:
- container `dockyard_svc.KIND.NAME` (an underscore, which no app name has, so it can never
  be mistaken for an app container `APP.TYPE.N`);
- network `dockyard.svc.KIND.NAME`, on which the container answers as `dokku-KIND-NAME`
  (Dokku's host names, as the URLs say); apps linked to the service join it, no other
  container does, and no port is published unless an admin ran `expose`;
- data `DATA_DIR/services/KIND/NAME/data` (0700; the image's entrypoint hands it to its
  own user), mounted where the official image keeps its data.

Containers and networks are labelled `dockyard.home` (the data dir) plus the kind and name;
only this Dockyard's are ever touched. Tools run in the container with `docker exec`, with
secrets in the exec's environment; their streams are copied chunk by chunk, never held
whole.
"""

from __future__ import annotations

import shutil
import socket
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

import docker
import docker.errors
from docker.models.containers import Container

from deployer.containers import LABEL_HOME, client
from deployer.networks import ensure_network, remove_network
from dockyard import images
from dockyard.attach import CHUNK, copy_raw, demux
from dockyard.errors import DockyardError
from dockyard.output import Output
from services.base import Kind, Service

if TYPE_CHECKING:
    from dockyard.services import Services

LABEL_KIND = "dockyard.service.kind"
LABEL_NAME = "dockyard.service.name"
CONTAINER_PREFIX = "dockyard_svc."
NETWORK_PREFIX = "dockyard.svc."
READY_TIMEOUT = 120.0
STOP_TIMEOUT = 30
PIDS_LIMIT = 4096
CANCEL_POLL = 0.25
TTY_ROWS, TTY_COLUMNS = 40, 160


class ServiceError(DockyardError):
    """A service's container, image or tool failed; the message says which and why."""


def container_name(kind: str, name: str) -> str:
    return f"{CONTAINER_PREFIX}{kind}.{name}"


def network_name(kind: str, name: str) -> str:
    return f"{NETWORK_PREFIX}{kind}.{name}"


def services_root(services: Services) -> Path:
    return services.settings.data_dir / "services"


def docker_message(exc: BaseException) -> str:
    return str(getattr(exc, "explanation", None) or exc)


class Runtime:
    """The engine side of one kind's services."""

    def __init__(self, services: Services, kind: Kind) -> None:
        self.services = services
        self.kind = kind
        self.home = str(services.settings.data_dir)

    # -- names and paths --------------------------------------------------------------
    def root(self, svc: Service) -> Path:
        return services_root(self.services) / self.kind.name / svc.name

    def data_dir(self, svc: Service) -> Path:
        return self.root(svc) / "data"

    def container_name(self, svc: Service) -> str:
        return container_name(self.kind.name, svc.name)

    def network(self, svc: Service) -> str:
        return network_name(self.kind.name, svc.name)

    def labels(self, svc: Service) -> dict[str, str]:
        return {LABEL_HOME: self.home, LABEL_KIND: self.kind.name, LABEL_NAME: svc.name}

    # -- image ------------------------------------------------------------------------
    def ensure_image(self, image: str, out: Output) -> None:
        """Pull `image` when the engine does not have it, showing progress; say clearly
        when it cannot be pulled (no registry reachable)."""
        if images.has_image(image):
            return
        out.step(f"Pulling image {image}")
        try:
            images.pull(image, out.detail)
        except images.PullFailed as exc:
            raise ServiceError(
                f"Cannot pull image {image}: {exc}\n"
                "On a server that cannot reach a registry, build the local stand-ins "
                "(scripts/build-service-images.sh) and choose one: "
                f"{self.kind.name}:set --global image IMAGE"
            ) from None

    # -- network ----------------------------------------------------------------------
    def ensure_network(self, svc: Service) -> str:
        return ensure_network(self.home, self.network(svc), self.labels(svc))

    def remove_network(self, svc: Service) -> None:
        remove_network(self.home, self.network(svc))

    def container(self, svc: Service) -> Container | None:
        try:
            found = client().containers.get(self.container_name(svc))
        except docker.errors.NotFound:
            return None
        if found.labels.get(LABEL_HOME) != self.home:
            raise ServiceError(
                f"A container named {found.name} exists and does not belong to this "
                "Dockyard; remove or rename it"
            )
        return found

    def status(self, svc: Service) -> str:
        try:
            found = self.container(svc)
        except (ServiceError, docker.errors.DockerException):
            return "unknown"
        return found.status if found is not None else "missing"

    def prepare_data_dir(self, svc: Service) -> Path:
        data = self.data_dir(svc)
        for d in (services_root(self.services), self.root(svc).parent, self.root(svc), data):
            d.mkdir(mode=0o700, exist_ok=True)
        return data

    def create(self, svc: Service, out: Output) -> Container:
        """(Re)create the container from state and start it; the data directory is kept."""
        self.ensure_image(svc.image, out)
        network = self.ensure_network(svc)
        data = self.prepare_data_dir(svc)
        self.remove_container(svc)
        api = client().api
        ports = None
        host: dict[str, object] = {
            "binds": [f"{data}:{self.kind.data_path}"],
            "restart_policy": {"Name": "unless-stopped"},
            "network_mode": network,
            "pids_limit": PIDS_LIMIT,
        }
        if svc.exposed:
            address, _, port = svc.exposed.rpartition(":")
            host["port_bindings"] = {self.kind.port: (address, int(port) or None)}
            ports = [self.kind.port]
        created = api.create_container(
            svc.image,
            command=self.kind.command(svc),
            name=self.container_name(svc),
            environment=self.kind.environment(svc),
            labels=self.labels(svc),
            ports=ports,
            detach=True,
            host_config=api.create_host_config(**host),
            networking_config=api.create_networking_config(
                {network: api.create_endpoint_config(aliases=[self.kind.host(svc)])}
            ),
        )
        try:
            api.start(created["Id"])
        except docker.errors.APIError as exc:
            api.remove_container(created["Id"], force=True)
            raise ServiceError(
                f"The {self.kind.name} container for {svc.name} did not start: "
                f"{docker_message(exc)}"
            ) from None
        return client().containers.get(created["Id"])

    def start(self, svc: Service, out: Output) -> None:
        """Start the existing container, or create it when it is missing; wait until the
        server answers."""
        found = self.container(svc)
        if found is None:
            self.create(svc, out)
        elif found.status != "running":
            found.start()
        self.wait_ready(svc)

    def stop(self, svc: Service) -> None:
        found = self.container(svc)
        if found is not None and found.status in ("running", "restarting", "paused"):
            found.stop(timeout=STOP_TIMEOUT)

    def remove_container(self, svc: Service) -> None:
        found = self.container(svc)
        if found is None:
            return
        try:
            if found.status == "running":
                found.stop(timeout=STOP_TIMEOUT)
            found.remove(force=True)
        except docker.errors.NotFound:
            pass

    def destroy(self, svc: Service) -> None:
        """Container, network and data, in that order."""
        self.remove_container(svc)
        self.remove_network(svc)
        shutil.rmtree(self.root(svc), ignore_errors=True)

    def wait_ready(self, svc: Service, timeout: float = READY_TIMEOUT) -> None:
        argv, env = self.kind.ready_argv(svc)
        deadline = time.monotonic() + timeout
        while True:
            found = self.container(svc)
            if found is None or found.status in ("exited", "dead"):
                raise ServiceError(self._died_message(svc, found))
            if found.status == "running":
                try:
                    code, _ = found.exec_run(argv, environment=env)
                except docker.errors.APIError:
                    code = 1
                if code == 0:
                    return
            if time.monotonic() > deadline:
                raise ServiceError(
                    f"The {self.kind.name} service {svc.name} did not become ready in "
                    f"{int(timeout)} s" + self._log_tail(found)
                )
            time.sleep(0.25)

    def _died_message(self, svc: Service, found: Container | None) -> str:
        if found is None:
            return f"The {self.kind.name} container for {svc.name} is gone"
        return f"The {self.kind.name} container for {svc.name} exited" + self._log_tail(found)

    @staticmethod
    def _log_tail(found: Container | None, count: int = 15) -> str:
        if found is None:
            return ""
        try:
            lines = found.logs(tail=count).decode("utf-8", "replace").splitlines()
        except docker.errors.APIError:
            return ""
        return "".join(f"\n  {line}" for line in lines)

    def internal_ip(self, svc: Service) -> str:
        found = self.container(svc)
        if found is None:
            return ""
        networks = found.attrs.get("NetworkSettings", {}).get("Networks") or {}
        return str((networks.get(self.network(svc)) or {}).get("IPAddress") or "")

    def exposed_port(self, svc: Service) -> str:
        """`ADDRESS:PORT` the service is published on, or "" when not exposed."""
        found = self.container(svc) if svc.exposed else None
        if found is None:
            return ""
        ports = (found.attrs.get("NetworkSettings", {}).get("Ports") or {}).get(
            f"{self.kind.port}/tcp"
        )
        if not ports:
            return ""
        return f"{ports[0]['HostIp']}:{ports[0]['HostPort']}"

    # -- tools in the container -------------------------------------------------------
    def running_container(self, svc: Service) -> Container:
        found = self.container(svc)
        if found is None or found.status != "running":
            raise ServiceError(
                f"The {self.kind.name} service {svc.name} is not running; "
                f"start it with {self.kind.name}:start {svc.name}"
            )
        return found

    def exec(
        self,
        svc: Service,
        argv: list[str],
        env: dict[str, str],
        stdout: BinaryIO,
        stderr: BinaryIO,
        stdin: BinaryIO | None = None,
        tty: bool = False,
        cancelled: threading.Event | None = None,
    ) -> int:
        """Run `argv` in the service container, streaming stdin in and stdout/stderr out
        chunk by chunk; returns its exit status."""
        found = self.running_container(svc)
        api = client().api
        exec_id = api.exec_create(
            found.id, argv, stdin=stdin is not None, stdout=True, stderr=True, tty=tty,
            environment=env,
        )["Id"]  # fmt: skip
        attached = api.exec_start(exec_id, tty=tty, socket=True)
        sock: socket.socket = getattr(attached, "_sock", attached)
        if tty:
            # The client's window size is not known here: a terminal of 0×0 would send
            # every result through the client's pager. Resizes are not forwarded.
            try:
                api.exec_resize(exec_id, height=TTY_ROWS, width=TTY_COLUMNS)
            except docker.errors.APIError:
                pass
        finished = threading.Event()
        if stdin is not None:
            threading.Thread(target=_pump, args=(stdin, sock, tty), daemon=True).start()
        if cancelled is not None:
            threading.Thread(
                target=_close_on_cancel, args=(sock, cancelled, finished), daemon=True
            ).start()
        try:
            if tty:
                copy_raw(sock, stdout)
            else:
                demux(sock, stdout, stderr)
        finally:
            finished.set()
            try:
                sock.close()
            except OSError:
                pass
        for _ in range(100):
            info = api.exec_inspect(exec_id)
            if not info.get("Running"):
                code = info.get("ExitCode")
                return int(code) if code is not None else 1
            time.sleep(0.05)
        return 1

    def run_tool(self, svc: Service, argv: list[str], env: dict[str, str]) -> tuple[int, str]:
        """Run a short tool and return its status and (combined) output."""
        code, output = self.running_container(svc).exec_run(argv, environment=env)
        return code, output.decode("utf-8", "replace")

    def export_to(self, svc: Service, sink: BinaryIO) -> None:
        """The dump on `sink`; the tool's own messages are shown only when it fails."""
        argv, env = self.kind.export_argv(svc)
        collected = _Collect(None)
        code = self.exec(svc, argv, env, sink, collected)  # type: ignore[arg-type]
        if code != 0:
            raise ServiceError(
                f"Export of {self.kind.name} service {svc.name} failed (exit status {code})"
                + collected.tail()
            )

    def import_with_client(self, svc: Service, source: BinaryIO) -> None:
        argv, env = self.kind.import_argv(svc)
        out = _Collect(None)
        code = self.exec(svc, argv, env, out, out, stdin=source)  # type: ignore[arg-type]
        if code != 0:
            raise ServiceError(
                f"Import into {self.kind.name} service {svc.name} failed (exit status {code})"
                + out.tail()
            )


class _Collect:
    """Keeps the last few KiB a tool wrote (its error, when it fails), passing it on."""

    def __init__(self, passthrough: BinaryIO | None) -> None:
        self.passthrough = passthrough
        self.data = b""

    def write(self, data: bytes) -> int:
        self.data = (self.data + data)[-4096:]
        if self.passthrough is not None:
            self.passthrough.write(data)
        return len(data)

    def flush(self) -> None:
        pass

    def tail(self) -> str:
        lines = self.data.decode("utf-8", "replace").strip().splitlines()[-10:]
        return "".join(f"\n  {line}" for line in lines)


def _pump(source: BinaryIO, sock: socket.socket, tty: bool = False) -> None:
    """Client input into the exec. At its end: without a terminal, close the exec's stdin;
    on a terminal, type ^D as a person would (the engine ends a terminal session's output
    when its input is half-closed, before the client has answered)."""
    read = getattr(source, "read1", None) or source.read
    try:
        while True:
            data = read(CHUNK)
            if not data:
                break
            sock.sendall(data)
        if tty:
            sock.sendall(b"\x04")
        else:
            sock.shutdown(socket.SHUT_WR)
    except OSError:
        pass


def _close_on_cancel(
    sock: socket.socket, cancelled: threading.Event, done: threading.Event
) -> None:
    while not done.wait(CANCEL_POLL):
        if cancelled.is_set():
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            return

"""The edge proxy: how Dockyard's nginx on this host reaches tasks on the overlay networks.

The host is not on any overlay network: only containers are. So one container on the manager
— the edge, an nginx — joins every swarm app's attachable overlay network and listens on a
unix socket per app, `DATA_DIR/swarm/edge/sockets/APP.sock`, in a directory mounted from this
host. Dockyard's own nginx routes the app's domains to that socket (`unix:` upstream); the
edge resolves the app's web service by its DNS name (endpoint mode dnsrr: one A record per
healthy task) through Docker's embedded DNS, at most one second old, and passes the request
on, trying the next task on a connection error or a 502/503/504 — for a request that was
never sent, whatever its method, and for one that was sent only if it is idempotent.

Why a container and not the host's own nginx: see docs/architecture.md (Swarm).

Invariants:
- One edge per Dockyard home (`dockyard-edge-<hash of home>`), labelled with the home.
- Its config is rendered from `routes.json` (app → port) only, with names that passed the
  app-name check and integer ports; it is tested with `nginx -t` inside the edge before the
  reload, and a refused config is not installed.
- Adding or removing an app reloads the edge gracefully; it is never restarted for that, so
  other apps' traffic does not notice.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import docker.errors

from deployer import containers as docker_ops
from deployer.schedulers.settings import EDGE_IMAGE
from dockyard.errors import DockyardError
from dockyard.names import APP_NAME_RE

if TYPE_CHECKING:
    from dockyard.services import Services

# Directories, not files, are mounted: a file replaced by rename on the host would stay the
# old inode inside the container.
IN_CONTAINER_CONF_DIR = "/etc/dockyard-edge"
IN_CONTAINER_CONF = f"{IN_CONTAINER_CONF_DIR}/nginx.conf"
IN_CONTAINER_SOCKETS = "/run/dockyard-edge"
LABEL_EDGE = "dockyard.edge"
RESOLVE_VALID = "1s"
CONNECT_TIMEOUT = "1s"
READ_TIMEOUT = "60s"
NEXT_UPSTREAM_TRIES = 3
SOCKET_TIMEOUT = 10.0
POLL = 0.05


class EdgeError(DockyardError):
    pass


def edge_dir(services: Services) -> Path:
    return services.settings.data_dir / "swarm" / "edge"


def edge_name(home: str) -> str:
    return f"dockyard-edge-{hashlib.sha256(home.encode()).hexdigest()[:10]}"


def socket_path(services: Services, app: str) -> Path:
    return edge_dir(services) / "sockets" / f"{app}.sock"


def upstream(services: Services, app: str) -> str:
    return f"unix:{socket_path(services, app)}"


def service_host(app: str) -> str:
    return f"{app}_web"


def render(routes: dict[str, int]) -> str:
    lines = [
        "# Written by Dockyard; edits are overwritten.",
        "worker_processes 1;",
        "error_log stderr warn;",
        "pid /tmp/dockyard-edge.pid;",
        "events { worker_connections 4096; }",
        "http {",
        "    access_log off;",
        "    server_tokens off;",
        f"    resolver 127.0.0.11 valid={RESOLVE_VALID} ipv6=off;",
        "    resolver_timeout 2s;",
        "    map $http_upgrade $dockyard_connection { default upgrade; '' ''; }",
        "    client_max_body_size 0;",  # the host's nginx enforces the app's limit
        "    proxy_request_buffering off;",
        "    proxy_http_version 1.1;",
        "    proxy_set_header Host $http_host;",
        "    proxy_set_header Upgrade $http_upgrade;",
        "    proxy_set_header Connection $dockyard_connection;",
        f"    proxy_connect_timeout {CONNECT_TIMEOUT};",
        f"    proxy_read_timeout {READ_TIMEOUT};",
        "    proxy_next_upstream error timeout http_502 http_503 http_504;",
        f"    proxy_next_upstream_tries {NEXT_UPSTREAM_TRIES};",
    ]
    for app, port in sorted(routes.items()):
        if not APP_NAME_RE.fullmatch(app) or not 0 < int(port) < 65536:
            continue  # never in routes.json; never in the config either
        lines += [
            "    server {",
            f"        listen unix:{IN_CONTAINER_SOCKETS}/{app}.sock;",
            "        location / {",
            # A variable makes nginx resolve the name per request (cached RESOLVE_VALID).
            f"            set $dockyard_tasks {service_host(app)};",
            f"            proxy_pass http://$dockyard_tasks:{int(port)};",
            "        }",
            "    }",
        ]
    lines.append("}")
    return "\n".join(lines) + "\n"


class Edge:
    def __init__(self, services: Services) -> None:
        self.services = services
        self.home = str(services.settings.data_dir)
        self.dir = edge_dir(services)
        self.name = edge_name(self.home)

    @contextmanager
    def locked(self) -> Iterator[None]:
        self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(self.dir / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def routes(self) -> dict[str, int]:
        try:
            stored = json.loads((self.dir / "routes.json").read_text())
            return {k: int(v) for k, v in stored.items()}
        except (OSError, ValueError):
            return {}

    def container(self) -> docker.models.containers.Container | None:
        try:
            found = docker_ops.client().containers.get(self.name)
        except docker.errors.NotFound:
            return None
        if found.labels.get(docker_ops.LABEL_HOME) != self.home:
            raise EdgeError(f"A container named {self.name} exists and is not this Dockyard's")
        return found

    def ensure(self, network: str) -> None:
        """The edge runs and is attached to `network`."""
        with self.locked():
            edge = self._ensure_running(network)
            attached = edge.attrs["NetworkSettings"].get("Networks") or {}
            if network not in attached:
                try:
                    docker_ops.client().api.connect_container_to_network(edge.id, network)
                except docker.errors.APIError as exc:
                    if "already exists" not in str(exc):
                        raise

    def _ensure_running(self, network: str) -> docker.models.containers.Container:
        edge = self.container()
        if edge is not None:
            if edge.status != "running":
                edge.start()
                edge.reload()
            return edge
        sockets = self.dir / "sockets"
        sockets.mkdir(parents=True, exist_ok=True, mode=0o755)
        conf = self.dir / "conf"
        conf.mkdir(parents=True, exist_ok=True, mode=0o755)
        _write(conf, "nginx.conf", render(self.routes()))
        image = EDGE_IMAGE.get(self.services.properties, None)
        _ensure_image(image)
        # Sockets a killed edge left behind would make nginx's bind fail.
        start = (
            f"rm -f {IN_CONTAINER_SOCKETS}/*.sock; "
            f"exec nginx -c {IN_CONTAINER_CONF} -g 'daemon off;'"
        )
        docker_ops.client().api.create_container(
            image, command=["/bin/sh", "-c", start], name=self.name, detach=True,
            labels={docker_ops.LABEL_HOME: self.home, LABEL_EDGE: "1"},
            host_config=docker_ops.client().api.create_host_config(
                binds=[f"{conf}:{IN_CONTAINER_CONF_DIR}:ro",
                       f"{sockets}:{IN_CONTAINER_SOCKETS}:rw"],
                restart_policy={"Name": "always"}, network_mode=network, init=True,
            ),
        )  # fmt: skip
        edge = docker_ops.client().containers.get(self.name)
        edge.start()
        edge.reload()
        return edge

    def set_route(self, app: str, port: int | None) -> None:
        """Route `app` to its web service on `port` (None: stop routing it); returns once
        the edge listens on the app's socket (or has closed it)."""
        with self.locked():
            routes = self.routes()
            if port is None:
                if app not in routes:
                    return
                routes.pop(app)
            else:
                if routes.get(app) == port and socket_path(self.services, app).exists():
                    return
                routes[app] = port
            self._apply(routes)
            _write(self.dir, "routes.json", json.dumps(routes, sort_keys=True))
        if port is not None:
            self._wait_socket(app)

    def _apply(self, routes: dict[str, int]) -> None:
        """Test the new config inside the edge as a candidate file, then move it into place
        and reload; a refused candidate never replaces the running config."""
        conf = self.dir / "conf"
        conf.mkdir(parents=True, exist_ok=True, mode=0o755)
        text = render(routes)
        edge = self.container()
        if edge is None or edge.status != "running":
            _write(conf, "nginx.conf", text)  # read when the edge starts
            return
        _write(conf, "nginx.conf.new", text)
        candidate = f"{IN_CONTAINER_CONF_DIR}/nginx.conf.new"
        tested = edge.exec_run(["nginx", "-t", "-q", "-c", candidate])
        if tested.exit_code != 0:
            (conf / "nginx.conf.new").unlink(missing_ok=True)
            raise EdgeError(f"The edge refused its new config: {_text(tested.output)}")
        os.replace(conf / "nginx.conf.new", conf / "nginx.conf")
        reloaded = edge.exec_run(["nginx", "-s", "reload", "-c", IN_CONTAINER_CONF])
        if reloaded.exit_code != 0:
            raise EdgeError(f"The edge did not reload: {_text(reloaded.output)}")

    def _wait_socket(self, app: str) -> None:
        path = socket_path(self.services, app)
        deadline = time.monotonic() + SOCKET_TIMEOUT
        while time.monotonic() < deadline:
            if path.exists():
                return
            time.sleep(POLL)
        raise EdgeError(f"The edge did not open {path}")

    def detach(self, network: str) -> None:
        edge = self.container()
        if edge is None:
            return
        try:
            docker_ops.client().api.disconnect_container_from_network(edge.id, network, force=True)
        except docker.errors.APIError:
            pass

    def remove(self) -> None:
        edge = self.container()
        if edge is not None:
            edge.remove(force=True)


def _write(directory: Path, name: str, text: str) -> None:
    tmp = directory / f".{name}.tmp"
    tmp.write_text(text)
    os.replace(tmp, directory / name)


def _text(output: bytes | None) -> str:
    return (output or b"").decode("utf-8", "replace").strip()


def _ensure_image(image: str) -> None:
    api = docker_ops.client().api
    try:
        api.inspect_image(image)
        return
    except docker.errors.ImageNotFound:
        pass
    if ":" in image.rsplit("/", 1)[-1]:
        repository, _, tag = image.rpartition(":")
    else:
        repository, tag = image, "latest"
    try:
        api.pull(repository, tag)
    except docker.errors.APIError as exc:
        raise EdgeError(
            f"The edge image {image} is missing and could not be pulled ({exc.explanation}); "
            "set another with scheduler:set --global edge-image IMAGE"
        ) from None

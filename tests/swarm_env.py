"""A Dockyard server whose engine is the manager of a three-node Swarm test cluster.

`swarm_env(base)` brings up the cluster (`tests.swarm_cluster`), copies the busybox base
image and the edge stand-in into the manager's engine (nothing can be pulled here), starts
`dockyard serve` with `DOCKER_HOST` pointing at the manager, and runs Dockyard's own
`swarm:init`, then joins the workers with the token `swarm:join-token` prints. Dockyard's
registry listens on the cluster network's gateway (this host), where every node reaches it.

On exit everything goes: the server, its nginx, Dockyard's registry process, every node,
volume, network and cgroup directory of the cluster.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.conftest import (
    DockyardServer,
    _provision,
    free_port,
    remove_leftovers_of,
    start_server,
    stop_server,
)
from tests.swarm_cluster import EDGE_IMAGE, Cluster, new_cluster

APP_DOCKERFILE = """FROM dockyard-base/busybox:latest
COPY www /www
RUN chmod 755 /www/cgi-bin/post
CMD ["/bin/sh", "-c", "exec httpd -f -v -p $PORT -h /www"]
"""
POST_CGI = """#!/bin/sh
head -c "${CONTENT_LENGTH:-0}" >/dev/null
printf 'Content-Type: text/plain\\r\\n\\r\\nposted %s\\n' "$(cat /www/index.html)"
"""


def app_files(version: str) -> dict[str, str]:
    return {
        "Dockerfile": APP_DOCKERFILE, "www/index.html": f"{version}\n",
        "www/cgi-bin/post": POST_CGI,
    }  # fmt: skip


@dataclass
class SwarmEnv:
    cluster: Cluster
    server: DockyardServer
    base: Path
    timings: dict[str, float]


def ok(result) -> None:
    assert result.returncode == 0, f"exit {result.returncode}\n{result.stdout}\n{result.stderr}"


@contextmanager
def swarm_env(base: Path) -> Iterator[SwarmEnv]:
    timings: dict[str, float] = {}
    started = time.monotonic()
    cluster = new_cluster(base, free_port())
    server: DockyardServer | None = None
    data_dir = base / "data"
    try:
        timings["nodes"] = time.monotonic() - started
        for image in ("dockyard-base/busybox:latest", EDGE_IMAGE):
            cluster.load_image(image)
        timings["images"] = time.monotonic() - started - timings["nodes"]
        data_dir, keys_dir, admin_key, user_key = _provision(base)
        server = start_server(
            data_dir, keys_dir, admin_key, user_key,
            extra_env={"DOCKER_HOST": cluster.docker_host},
        )  # fmt: skip
        t = time.monotonic()
        ok(server.ssh("registry:set", "--global", "listen", cluster.registry_address))
        ok(server.ssh("scheduler:set", "--global", "edge-image", EDGE_IMAGE))
        ok(server.ssh("swarm:init", "--advertise-addr", cluster.manager.address))
        token = server.ssh("swarm:join-token")
        ok(token)
        cluster.join_workers(token.stdout.strip())
        timings["swarm"] = time.monotonic() - t
        yield SwarmEnv(cluster, server, base, timings)
    finally:
        if server is not None:
            stop_server(server)
        _stop_registry(data_dir)
        remove_leftovers_of(data_dir)
        cluster.destroy()


def _stop_registry(data_dir: Path) -> None:
    from deployer.schedulers.registry import ManagedRegistry

    ManagedRegistry(data_dir / "registry", "").stop()

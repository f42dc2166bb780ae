"""Services are kept running like apps, and never stopped by Dockyard's own stop.

At server start and then every few seconds (so also when the Docker engine comes back)
each service whose owner wants it running is checked: a missing container is recreated
from state (its data directory is kept), a stopped or dead one is started. Containers and
networks of this Dockyard that name a service state no longer has are removed (their data
is not: only `destroy` deletes data). The containers run with the engine's
`unless-stopped` policy, so the engine itself restarts them after a crash or reboot; the
watch covers what the engine does not (a removed container, an engine that was down at
our start). A service busy with a command is left to that command.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import docker.errors
import requests
import structlog

from deployer.containers import LABEL_HOME, client, list_containers
from dockyard import lifecycle
from dockyard.bridge import run_blocking
from dockyard.errors import DockyardError
from dockyard.output import Output
from services.base import ServiceStore
from services.commands import service_lock
from services.kinds import KINDS
from services.runtime import LABEL_KIND, LABEL_NAME, Runtime

if TYPE_CHECKING:
    from dockyard.services import Services

log = structlog.get_logger("dockyard.services")
WATCH_INTERVAL = 2.0


class _Null:
    def write(self, data: bytes) -> int:
        return len(data)

    def flush(self) -> None:
        pass


def reconcile_services(services: Services) -> list[str]:
    """One pass; returns what was done, for the log."""
    home = str(services.settings.data_dir)
    done: list[str] = []
    store = ServiceStore(services.state)
    wanted = {(s.kind, s.name): s for s in store.all()}
    for c in list_containers({"label": [f"{LABEL_HOME}={home}", LABEL_KIND]}):
        key = (c.labels.get(LABEL_KIND, ""), c.labels.get(LABEL_NAME, ""))
        if key not in wanted:
            c.remove(force=True)
            done.append(f"removed stray {c.name}")
    for net in client().api.networks(filters={"label": [f"{LABEL_HOME}={home}", LABEL_KIND]}):
        labels = net.get("Labels") or {}
        if (labels.get(LABEL_KIND, ""), labels.get(LABEL_NAME, "")) not in wanted:
            try:
                client().api.remove_network(net["Id"])
                done.append(f"removed stray network {net['Name']}")
            except docker.errors.APIError:
                pass  # still in use by an app container; next pass
    out = Output(_Null(), _Null())  # type: ignore[arg-type]
    for svc in wanted.values():
        if not svc.running or svc.kind not in KINDS:
            continue
        kind = KINDS[svc.kind]
        runtime = Runtime(services, kind)
        try:
            with service_lock(services, kind, svc.name, timeout=0):
                fresh = store.find(svc.kind, svc.name)
                if fresh is None or not fresh.running:
                    continue
                found = runtime.container(fresh)
                if found is None:
                    runtime.create(fresh, out)
                    done.append(f"recreated {kind.name} {fresh.name}")
                elif found.status in ("exited", "dead", "created"):
                    found.start()
                    done.append(f"started {kind.name} {fresh.name}")
        except DockyardError as exc:
            if "busy" not in exc.message:
                log.error("service reconcile failed", kind=svc.kind, service=svc.name,
                          error=exc.message)  # fmt: skip
        except docker.errors.DockerException as exc:
            log.error("service reconcile failed", kind=svc.kind, service=svc.name, error=str(exc))
    return done


@lifecycle.in_background
async def _watch_services(services: Services) -> None:
    while True:
        try:
            for action in await run_blocking(reconcile_services, services):
                log.info("services reconciled", action=action)
        except (docker.errors.DockerException, requests.RequestException) as exc:
            log.debug("docker engine unreachable; services not reconciled", error=str(exc))
        await asyncio.sleep(WATCH_INTERVAL)

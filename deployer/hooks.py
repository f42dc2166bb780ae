"""What the deployer does when the server starts, and when an app is renamed or destroyed.

At start it reconciles: every deployed app's containers match its current release and
formation (stopped ones started, missing ones recreated), strays — containers of unknown
apps or of releases no longer current — are removed, and routes are re-published from the
live containers. Server stop does nothing: a restart of Dockyard never stops an app.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import docker.errors
import structlog

import builder
from deployer import containers as docker_ops
from deployer.deploy import ReleaseDeployer, home_of, router
from deployer.releases import ReleaseStore
from dockyard import apps as app_hooks
from dockyard import lifecycle
from dockyard.bridge import run_blocking
from dockyard.errors import DockyardError
from dockyard.output import Output

if TYPE_CHECKING:
    from dockyard.registry import Services

log = structlog.get_logger("dockyard.deployer")


class _NullStream:
    def write(self, data: bytes) -> int:
        return len(data)

    def flush(self) -> None:
        pass


def _quiet_output() -> Output:
    return Output(_NullStream(), _NullStream())  # type: ignore[arg-type]


def reconcile_all(services: Services) -> None:
    known = {a.name: a for a in services.apps.all()}
    strays = [
        c for c in docker_ops.app_containers(home_of(services), include_one_off=True)
        if c.labels.get(docker_ops.LABEL_APP) not in known
        or c.labels.get(docker_ops.LABEL_PROCESS) == docker_ops.ONE_OFF_PROCESS
    ]  # fmt: skip
    docker_ops.remove(strays, timeout=2)
    for c in strays:
        log.info("removed stray container", container=c.name)
    for app in known.values():
        try:
            done = ReleaseDeployer(services, app, _quiet_output()).reconcile()
        except (DockyardError, docker.errors.DockerException) as exc:
            log.error("reconcile failed", app=app.name, error=str(exc))
            continue
        for action in done:
            log.info("reconciled", app=app.name, action=action)


@lifecycle.on_start
async def _reconcile_at_start(services: Services) -> None:
    try:
        await run_blocking(docker_ops.client().ping)
    except docker.errors.DockerException as exc:
        log.error("docker engine unreachable; containers not reconciled", error=str(exc))
        return
    # Routes are published through the proxy, whose own start hook runs after ours; let
    # every start hook finish before reconciling.
    asyncio.get_running_loop().call_soon(_start_reconcile, services)


_background: set[asyncio.Future[None]] = set()


def _start_reconcile(services: Services) -> None:
    task = asyncio.ensure_future(run_blocking(_reconcile_logged, services))
    _background.add(task)  # the loop keeps only weak references to tasks
    task.add_done_callback(_background.discard)


def _reconcile_logged(services: Services) -> None:
    try:
        reconcile_all(services)
    except Exception:
        log.exception("reconcile crashed")


@app_hooks.on_destroy
def _destroy(services: Services, name: str) -> None:
    found = docker_ops.app_containers(home_of(services), name, include_one_off=True)
    docker_ops.remove(found, timeout=2)
    router.unpublish(services, name)
    # The builder's own hook ran first, while these containers still held the images; now
    # nothing uses them.
    builder.prune_images(services, name, set())


@app_hooks.on_rename
def _rename(services: Services, old: str, new: str) -> None:
    """The builder has re-tagged the images under the new name (its hook runs first); the
    releases follow, and the containers are recreated under the new name, which also moves
    the routes."""
    app = services.apps.get(new)
    found = docker_ops.app_containers(home_of(services), old, include_one_off=True)
    docker_ops.remove(found, timeout=2)
    store = ReleaseStore(services.state)
    store.rename_images(app, builder.image_repo(old), builder.image_repo(new))
    if store.current(app) is not None:
        ReleaseDeployer(services, app, _quiet_output()).reconcile()

"""What the deployer does when the server starts, and when an app is renamed or destroyed.

At start it reconciles, through each app's scheduler: every deployed app's containers (or
Swarm services) match its current release and formation (stopped ones started, missing ones
recreated), strays — containers of unknown apps or of releases no longer current, services
of unknown apps — are removed, and routes are re-published from the
live containers. Server stop does nothing: a restart of Dockyard never stops an app.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

import docker.errors
import requests
import structlog

import builder
from deployer import containers as docker_ops
from deployer.deploy import home_of, quiet_output
from deployer.networks import home_networks, remove_app_network
from deployer.releases import ReleaseStore
from deployer.schedulers import scheduler_for
from deployer.schedulers import swarm as swarm_scheduler
from dockyard import lifecycle
from dockyard import services as app_hooks
from dockyard.apps import App
from dockyard.bridge import run_blocking
from dockyard.errors import DockyardError
from dockyard.locks import AppBusy, app_lock

if TYPE_CHECKING:
    from dockyard.services import Services

log = structlog.get_logger("dockyard.deployer")

# How often the engine is pinged (a restart quicker than this is seen by EngineSessions).
ENGINE_WATCH_INTERVAL = 1.0
# How soon the events stream is opened again after it ended or could not be opened.
EVENTS_RETRY = 0.5
# A reconcile waits this long for an app's lock, then leaves the app to its deploy.
RECONCILE_LOCK_WAIT = 1.0
ALL = ""  # in the pending set: the whole reconcile, strays of destroyed apps included


def reconcile_all(services: Services) -> list[str]:
    """Reconcile every app; returns the names of apps skipped because they were busy."""
    known = {a.name: a for a in services.apps.all()}
    strays = [
        c for c in docker_ops.app_containers(home_of(services), include_one_off=True)
        if c.labels.get(docker_ops.LABEL_APP) not in known
        or c.labels.get(docker_ops.LABEL_PROCESS) == docker_ops.ONE_OFF_PROCESS
    ]  # fmt: skip
    docker_ops.remove(strays, timeout=2)
    for c in strays:
        log.info("removed stray container", container=c.name)
    for network in home_networks(home_of(services)):
        if (network.get("Labels") or {}).get(docker_ops.LABEL_APP) not in known:
            remove_app_network(home_of(services), network["Labels"][docker_ops.LABEL_APP])
    swarm_scheduler.remove_strays(services, set(known))
    busy = []
    for app in known.values():
        if not reconcile_app(services, app):
            busy.append(app.name)
    return busy


def reconcile_app(services: Services, app: App) -> bool:
    """Reconcile one app under its lock; False when a push or deploy holds the lock (that
    deploy puts the containers right itself, or a later reconcile does)."""
    try:
        with app_lock(services.settings.locks_dir, app.name, timeout=RECONCILE_LOCK_WAIT):
            _finish_interrupted_deploys(services, app)
            done = scheduler_for(services, app, quiet_output()).reconcile()
    except AppBusy:
        return False
    except (DockyardError, docker.errors.DockerException, requests.RequestException) as exc:
        log.error("reconcile failed", app=app.name, error=str(exc))
        return True
    except Exception:  # one app's bad data must never keep the other apps from coming back
        log.exception("reconcile crashed", app=app.name)
        return True
    for action in done:
        log.info("reconciled", app=app.name, action=action)
    return True


def _finish_interrupted_deploys(services: Services, app: App) -> None:
    """A server killed mid-deploy leaves its release pending: it failed. GIT_REV needs no
    repair: it is written only when a release goes live."""
    failed = ReleaseStore(services.state).fail_interrupted(app)
    if failed:
        log.warning("interrupted deploys marked failed", app=app.name, versions=failed)


@lifecycle.in_background
async def _reconcile_at_start(services: Services) -> None:
    """Runs once every start hook is done: routes are re-published through the proxy, whose
    own start hook adopts or starts nginx."""
    # A server stop must be quick and must not cut requests still draining from retired
    # containers; this reconcile, at the next start, removes them.
    docker_ops.retirer.leave_to_next_start()
    try:
        await run_blocking(docker_ops.client().ping)
    except docker.errors.DockerException as exc:
        log.error("docker engine unreachable; containers not reconciled", error=str(exc))
        return
    busy = await run_blocking(reconcile_all, services)
    while busy:  # apps whose lock was held (a push in the first second): try again
        await asyncio.sleep(ENGINE_WATCH_INTERVAL)
        busy = await run_blocking(_reconcile_pending, services, set(busy))


class EngineSessions:
    """Notices every time the engine goes away, however briefly: an events stream stays
    open to it (filtered to daemon events, so it is idle) and ends when the engine stops.
    A ping each second misses a restart quicker than that, and the engine's restart of
    containers gives them new addresses the routes must follow. One per process, on a
    thread of its own: the stream blocks for as long as the engine runs."""

    def __init__(self, open_stream: Callable[[], Iterable[object]]) -> None:
        self.ended = threading.Event()
        self._open = open_stream
        threading.Thread(target=self._follow, name="engine-events", daemon=True).start()

    def _follow(self) -> None:
        while True:
            try:
                stream = self._open()
            except Exception as exc:  # the engine is away (the ping says so), or refuses
                log.debug("engine events stream not opened", error=str(exc))
                time.sleep(EVENTS_RETRY)
                continue
            try:
                for _event in stream:
                    pass
            except Exception as exc:  # the engine went away mid-stream
                log.debug("engine events stream broke", error=str(exc))
            self.ended.set()  # only a stream the engine had accepted counts
            time.sleep(EVENTS_RETRY)

    def went_away(self) -> bool:
        """Has the engine gone away since the last call that said so?"""
        if self.ended.is_set():
            self.ended.clear()
            return True
        return False


_sessions: EngineSessions | None = None
_sessions_lock = threading.Lock()


def engine_sessions() -> EngineSessions:
    global _sessions
    with _sessions_lock:
        if _sessions is None:
            _sessions = EngineSessions(_open_engine_events)
        return _sessions


def _open_engine_events() -> Iterable[object]:
    """The engine's daemon events, opened only if it answered 200 (docker-py reports
    another status only when the stream is read, which would count as an end)."""
    stream = docker_ops.client().api.events(filters={"type": "daemon"}, decode=True)
    status = getattr(getattr(stream, "_response", None), "status_code", 200)
    if status != 200:
        stream.close()
        raise DockyardError(f"the engine's events answered HTTP {status}")
    return stream


def _engine_answers() -> bool:
    try:
        docker_ops.client().ping()
        return True
    except (docker.errors.DockerException, requests.RequestException):
        return False


@lifecycle.in_background
async def _watch_engine(services: Services) -> None:
    """When the Docker engine comes back (restarted, or down at our start), reconcile every
    app: containers the engine did not restart are started, and the ones it did restart got
    new addresses, which the proxy must follow. Apps busy then are retried each tick."""
    sessions = engine_sessions()
    was_up = await run_blocking(_engine_answers)
    sessions.went_away()  # the stream's first opening is not a restart
    pending: set[str] = set()
    while True:
        await asyncio.sleep(ENGINE_WATCH_INTERVAL)
        up = await run_blocking(_engine_answers)
        if up and (sessions.went_away() or not was_up):
            log.warning("docker engine is back; reconciling")
            pending = {a.name for a in await run_blocking(services.apps.all)} | {ALL}
        if up and pending:
            pending = set(await run_blocking(_reconcile_pending, services, pending))
        was_up = up


def _reconcile_pending(services: Services, names: set[str]) -> list[str]:
    try:
        if ALL in names:
            return reconcile_all(services)
        busy = []
        for name in names:
            app = services.apps.find(name)
            if app is not None and not reconcile_app(services, app):
                busy.append(name)
        return busy
    except Exception:
        log.exception("reconcile crashed")
        return []


@app_hooks.on_destroy
def _destroy(services: Services, name: str) -> None:
    found = docker_ops.app_containers(home_of(services), name, include_one_off=True)
    docker_ops.remove(found, timeout=2)
    remove_app_network(home_of(services), name)
    swarm_scheduler.forget_app(services, name)
    # Routes go with the proxy's own destroy hook. The builder's hook ran first, while these
    # containers still held the images; now nothing uses them: every tag goes, `latest`
    # too, and with them the layers no other image shares.
    builder.remove_images(services, name)


@app_hooks.on_rename
def _rename(services: Services, old: str, new: str) -> None:
    """The builder has re-tagged the images under the new name (its hook runs first); the
    releases follow, and the containers are recreated under the new name, which also moves
    the routes."""
    app = services.apps.get(new)
    found = docker_ops.app_containers(home_of(services), old, include_one_off=True)
    docker_ops.remove(found, timeout=2)
    remove_app_network(home_of(services), old)
    swarm_scheduler.forget_app(services, old)
    store = ReleaseStore(services.state)
    store.rename_images(app, builder.image_repo(old), builder.image_repo(new))
    if store.current(app) is not None:
        scheduler_for(services, app, quiet_output()).reconcile()

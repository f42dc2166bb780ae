"""The proxy's part in the server's life and in an app's rename and destroy.

At start the nginx master is adopted (or started) and a watchdog keeps it alive and its
config equal to what state says, which also catches changes made by a local CLI run that
this process did not see. nginx is never stopped with Dockyard: traffic must not depend on
Dockyard running.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import weakref

import structlog

from dockyard import apps, lifecycle
from dockyard.bridge import run_blocking
from dockyard.errors import DockyardError
from dockyard.registry import Services
from proxy import certs
from proxy.router import Router

log = structlog.get_logger("proxy")

WATCHDOG_INTERVAL = 2.0

# Rename/destroy hooks are called with app names only; these are the data dirs this
# process serves, so the hooks know whose nginx to update.
_known: weakref.WeakSet[Services] = weakref.WeakSet()
_watchdogs: dict[int, asyncio.Task[None]] = {}


def remember(services: Services) -> None:
    _known.add(services)


@lifecycle.on_start
async def start_proxy(services: Services) -> None:
    remember(services)
    try:
        await run_blocking(Router(services).start_or_adopt)
    except DockyardError as exc:
        # SSH must stay reachable to fix what is wrong (a busy port, a bad cert).
        log.error("nginx not started", error=exc.message)
    _watchdogs[id(services)] = asyncio.create_task(_watch(services))


@lifecycle.on_stop
async def stop_proxy(services: Services) -> None:
    task = _watchdogs.pop(id(services), None)
    if task is not None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def _watch(services: Services) -> None:
    router = Router(services)
    last_error = ""
    while True:
        await asyncio.sleep(WATCHDOG_INTERVAL)
        try:
            await run_blocking(router.reconcile)
            last_error = ""
        except DockyardError as exc:
            if exc.message != last_error:
                log.error("nginx watchdog", error=exc.message)
            last_error = exc.message
        except Exception:
            log.exception("nginx watchdog failed")


@apps.on_destroy
def forget_app(name: str) -> None:
    for services in list(_known):
        app = services.apps.find(name)
        if app is None:
            continue
        router = Router(services)
        router.apply(lambda app=app, router=router: router.store.forget(app))
        certs.remove(router.paths.certs_dir, router.cert_dir_name(app))


@apps.on_rename
def rename_app(old: str, new: str) -> None:
    # Called inside the rename's transaction: re-render once it has committed.
    for services in list(_known):
        threading.Thread(target=_rerender_after_commit, args=(services,), daemon=False).start()


def _rerender_after_commit(services: Services) -> None:
    try:
        with services.state.transaction():
            pass  # BEGIN IMMEDIATE waits for the rename's transaction to commit
        Router(services).reconcile()
    except Exception:
        log.exception("re-rendering nginx config after a rename failed")

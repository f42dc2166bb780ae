"""The proxy's part in the server's life and in an app's rename and destroy.

At start the nginx master is adopted (or started) and a watchdog keeps it alive and its
config equal to what state says, which also catches changes made by a local CLI run that
this process did not see. nginx is never stopped with Dockyard: traffic must not depend on
Dockyard running.
"""

from __future__ import annotations

import asyncio

import structlog

from dockyard import lifecycle
from dockyard import services as app_hooks
from dockyard.bridge import run_blocking
from dockyard.errors import DockyardError
from dockyard.services import Services
from proxy import certs, claims
from proxy.router import Router

log = structlog.get_logger("proxy")

WATCHDOG_INTERVAL = 2.0

@lifecycle.on_start
async def start_proxy(services: Services) -> None:
    try:
        await run_blocking(Router(services).start_or_adopt)
    except DockyardError as exc:
        # SSH must stay reachable to fix what is wrong (a busy port, a bad cert).
        log.error("nginx not started", error=exc.message)


@lifecycle.in_background
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


@app_hooks.on_destroy
def forget_app(services: Services, name: str) -> None:
    app = services.apps.get(name)
    router = Router(services)
    if router.is_serving():
        router.apply(lambda: router.store.forget(app), app=app)
    else:
        router.store.forget(app)  # the next start renders without it
    certs.remove(router.paths.certs_dir, router.cert_dir_name(app))


@app_hooks.on_rename
def rename_app(services: Services, old: str, new: str) -> None:
    router = Router(services)
    # The server block's names follow the app's new name. With no nginx running (no server
    # has started yet) there is nothing to update: the next start renders from state.
    if router.is_serving():
        router.apply()


# APP.<global domain> must be free for the app that takes the name (proxy.claims).
app_hooks.on_new_name(claims.check_app_name)

"""The dashboard's part in the server's life: its HTTP server beside asyncssh, and the
background work that feeds it.

- At start (after the proxy adopted nginx) the aiohttp application listens on its private
  address — a unix socket `DATA_DIR/dashboard/http.sock` (0600) by default, or the loopback
  `dashboard.listen` — and the bound address is recorded and routed through
  `Router.apply` (render → nginx -t → swap → reload; no reload when nothing changed). A
  failure to listen is logged and SSH keeps serving, as with nginx.
- `in_background`: the access-log collector (every `COLLECT_INTERVAL` s, sooner while it
  is behind), the containers' CPU/memory sampler (every `stats-interval` s), and pruning of
  old metrics and expired links, sessions and tokens. Each does its blocking work through
  `run_blocking`.
- At stop the HTTP server closes; nginx keeps running (the dashboard host answers 502 until
  the next start), as it does for everything else.
"""

from __future__ import annotations

import asyncio
import os

import structlog
from aiohttp import web

from dashboard import metrics
from dashboard.auth import AuthStore
from dashboard.engine import StatsSampler
from dashboard.properties import LISTEN, METRICS, STATS_INTERVAL
from dashboard.site import UPSTREAM_KEY, socket_path
from dashboard.web import make_app
from dockyard import lifecycle
from dockyard.bridge import run_blocking
from dockyard.errors import DockyardError
from dockyard.services import Services
from dockyard.settings import parse_listen
from proxy.nginx import NginxMaster
from proxy.properties import MODE, MODE_OWN
from proxy.router import Router, nginx_paths

log = structlog.get_logger("dockyard.dashboard")

COLLECT_INTERVAL = 2.0
PRUNE_INTERVAL = 600.0
_runners: list[web.AppRunner] = []


# sockaddr_un holds 108 bytes with the NUL: a deeper data dir listens on loopback instead.
MAX_SOCKET_PATH = 100


async def _listen(services: Services, runner: web.AppRunner) -> str:
    listen = LISTEN.raw(services.properties, None)
    path = socket_path(services)
    if not listen and len(os.fsencode(path)) > MAX_SOCKET_PATH:
        log.warning("data dir too deep for a unix socket; the dashboard listens on loopback",
                    path=str(path))  # fmt: skip
        listen = "127.0.0.1:0"
    if listen:
        host, port = parse_listen(listen)
        await web.TCPSite(runner, host, port, reuse_address=True).start()
        bound_port = runner.addresses[-1][1]
        return f"[{host}]:{bound_port}" if ":" in host else f"{host}:{bound_port}"
    path.parent.mkdir(mode=0o700, exist_ok=True)
    path.unlink(missing_ok=True)  # left by a server that was killed
    await web.UnixSite(runner, str(path)).start()
    os.chmod(path, 0o600)
    return f"unix:{path}"


def _route(services: Services, bound: str) -> None:
    router = Router(services)
    router.apply(lambda: services.properties.set(None, UPSTREAM_KEY, bound))


@lifecycle.on_start
async def start_dashboard(services: Services) -> None:
    runner = web.AppRunner(make_app(services), access_log=None, handle_signals=False)
    await runner.setup()
    try:
        bound = await _listen(services, runner)
    except OSError as exc:
        await runner.cleanup()
        log.error("dashboard not started", error=str(exc))
        return
    _runners.append(runner)
    try:
        await run_blocking(_route, services, bound)
    except DockyardError as exc:
        log.error("dashboard not routed", error=exc.message)
    log.info("dashboard listening", address=bound)


@lifecycle.on_stop
async def stop_dashboard(services: Services) -> None:
    while _runners:
        await _runners.pop().cleanup()


@lifecycle.in_background
async def collect_traffic(services: Services) -> None:
    paths = nginx_paths(services)
    collector = metrics.LogCollector(
        services.state, paths.access_log, reopen_logs=NginxMaster(paths).reopen_logs
    )
    try:
        while True:
            pause = COLLECT_INTERVAL
            enabled = await run_blocking(
                lambda: METRICS.get(services.properties, None)
                and MODE.get(services.properties, None) == MODE_OWN
            )
            if enabled:
                consumed = await run_blocking(collector.step)
                if consumed >= metrics.MAX_READ // 2:
                    pause = 0.05  # behind: catch up, a bounded chunk at a time
            await asyncio.sleep(pause)
    finally:
        collector.close()


@lifecycle.in_background
async def sample_containers(services: Services) -> None:
    sampler = StatsSampler(services)
    while True:
        await run_blocking(sampler.sample)
        await asyncio.sleep(await run_blocking(STATS_INTERVAL.get, services.properties, None))


@lifecycle.in_background
async def prune_old(services: Services) -> None:
    auth = AuthStore(services)
    while True:
        await run_blocking(metrics.prune, services.state)
        await run_blocking(auth.prune)
        await asyncio.sleep(PRUNE_INTERVAL)

"""What `dockyard serve` does at start and stop, contributed by the stages.

The proxy starts or adopts nginx, the deployer reconciles containers; the core only calls
them in registration order at start and in reverse order at stop. Work that lasts as long
as the server (watchdogs, housekeeping) is registered with `in_background`: started after
every start hook, cancelled before the stop hooks.

The serving process records its pid in state (`server.pid`) once its hooks have run, and
removes it when it stops, so a local command (`init`, `doctor`) can tell whether a server
runs for this data dir; a pid left by a killed server is recognised as stale.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import structlog

if TYPE_CHECKING:
    from dockyard.services import Services

Hook = Callable[["Services"], Awaitable[None]]
_start: list[Hook] = []
_stop: list[Hook] = []
_background: list[Hook] = []
_running: list[asyncio.Task[None]] = []

log = structlog.get_logger("dockyard.lifecycle")

SERVER_PID = "server.pid"


def on_start(hook: Hook) -> Hook:
    _start.append(hook)
    return hook


def on_stop(hook: Hook) -> Hook:
    _stop.append(hook)
    return hook


def in_background(task: Hook) -> Hook:
    _background.append(task)
    return task


RESTART_DELAYS = (1.0, 5.0, 30.0, 60.0)


async def _supervised(task: Hook, services: Services) -> None:
    """Run `task`; if it dies, log it and start it again after a growing pause, so one
    transient error (a busy database, an engine hiccup) does not end a watchdog for good.
    A task that returns normally is done."""
    deaths = 0
    while True:
        try:
            await task(services)
            return
        except asyncio.CancelledError:
            raise
        except Exception:
            delay = RESTART_DELAYS[min(deaths, len(RESTART_DELAYS) - 1)]
            log.exception("background task died; restarting", task=task.__qualname__, delay=delay)
            deaths += 1
            await asyncio.sleep(delay)


async def run_start_hooks(services: Services) -> None:
    for hook in _start:
        await hook(services)
    for task in _background:
        _running.append(asyncio.create_task(_supervised(task, services)))


async def run_stop_hooks(services: Services) -> None:
    for task in _running:
        task.cancel()
    await asyncio.gather(*_running, return_exceptions=True)
    _running.clear()
    for hook in reversed(_stop):
        await hook(services)


def record_server(services: Services) -> None:
    services.properties.set(None, SERVER_PID, str(os.getpid()))


def forget_server(services: Services) -> None:
    if services.properties.get(None, SERVER_PID) == str(os.getpid()):
        services.properties.set(None, SERVER_PID, None)


def running_server(services: Services) -> int | None:
    """The pid of the `dockyard serve` running for this data dir, or None."""
    stored = services.properties.get(None, SERVER_PID) or ""
    if not stored.isdigit():
        return None
    try:
        with open(f"/proc/{stored}/cmdline", "rb") as f:
            argv = f.read().split(b"\0")
    except OSError:
        return None
    return int(stored) if b"serve" in argv and any(b"dockyard" in a for a in argv) else None

"""What `dockyard serve` does at start and stop, contributed by the stages.

The proxy starts or adopts nginx, the deployer reconciles containers; the core only calls
them in registration order at start and in reverse order at stop.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from dockyard.registry import Services

StartHook = Callable[["Services"], Awaitable[None]]
StopHook = Callable[["Services"], Awaitable[None]]
_start: list[StartHook] = []
_stop: list[StopHook] = []


def on_start(hook: StartHook) -> StartHook:
    _start.append(hook)
    return hook


def on_stop(hook: StopHook) -> StopHook:
    _stop.append(hook)
    return hook


async def run_start_hooks(services: Services) -> None:
    for hook in _start:
        await hook(services)


async def run_stop_hooks(services: Services) -> None:
    for hook in reversed(_stop):
        await hook(services)

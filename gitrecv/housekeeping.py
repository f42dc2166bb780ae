"""Scheduled repo housekeeping in `dockyard serve`: leftovers at start, `repo:gc` on a timer.

At start every repo loses what a killed push left behind (temporary packs, stale lock
files), and a repo past git's own auto-gc thresholds (`gc.auto` loose objects,
`gc.autoPackLimit` packs) is repacked at once. Then each repo is repacked every
`git.gc-interval` seconds (global `git:set --global gc-interval SECONDS`, default a day).
Everything runs under the app's lock; an app busy with a push is retried on the next tick.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

import structlog
from dulwich.gc import garbage_collect, should_run_gc

from dockyard import lifecycle
from dockyard.apps import App
from dockyard.bridge import run_blocking
from dockyard.locks import AppBusy, app_lock
from gitrecv.properties import GC_INTERVAL
from gitrecv.repos import RepoStore, remove_leftovers

if TYPE_CHECKING:
    from dockyard.services import Services

log = structlog.get_logger("dockyard.gitrecv")

# How often the schedule is looked at; the interval setting is re-read each time, so a
# change takes effect without a restart.
TICK = 1.0
LOCK_WAIT = 0.5



def gc_interval(services: Services) -> float:
    return float(GC_INTERVAL.get(services.properties, None))


class RepoHousekeeper:
    """Remembers when each app's repo was last repacked, and repacks the ones due."""

    def __init__(self, services: Services) -> None:
        self.services = services
        self.repos = RepoStore(services.settings.repos_dir)
        self.last_gc: dict[str, float] = {}

    def at_start(self) -> None:
        now = time.monotonic()
        for app in self.services.apps.all():
            self.last_gc[app.name] = now
            self._under_lock(app, self._clean_and_maybe_gc)

    def tick(self) -> None:
        interval = gc_interval(self.services)
        now = time.monotonic()
        for app in self.services.apps.all():
            if now - self.last_gc.setdefault(app.name, now) >= interval:
                if self._under_lock(app, self._gc):
                    self.last_gc[app.name] = time.monotonic()

    def _under_lock(self, app: App, work) -> bool:  # noqa: ANN001 (Callable[[App], None])
        """Run `work(app)` under the app's lock; False when the app was busy."""
        try:
            with app_lock(self.services.settings.locks_dir, app.name, timeout=LOCK_WAIT):
                work(app)
        except AppBusy:
            return False
        except Exception as exc:  # one broken repo must not stop the others' housekeeping
            log.warning("repo housekeeping failed", app=app.name, error=str(exc))
        return True

    def _clean_and_maybe_gc(self, app: App) -> None:
        repo = self.repos.find(app)
        if repo is None:
            return
        try:
            remove_leftovers(repo)
            needed = should_run_gc(repo)
        finally:
            repo.close()
        if needed:
            self._gc(app)

    def _gc(self, app: App) -> None:
        repo = self.repos.find(app)
        if repo is None:
            return
        try:
            remove_leftovers(repo)
            stats = garbage_collect(repo)
        finally:
            repo.close()
        log.info(
            "repo gc", app=app.name, packs_before=stats.packs_before,
            packs_after=stats.packs_after, loose_before=stats.loose_objects_before,
            pruned=len(stats.pruned_objects),
        )  # fmt: skip


@lifecycle.in_background
async def _housekeep(services: Services) -> None:
    keeper = RepoHousekeeper(services)
    await run_blocking(keeper.at_start)
    while True:
        await asyncio.sleep(TICK)
        try:
            await run_blocking(keeper.tick)
        except Exception:
            log.exception("repo housekeeping crashed")



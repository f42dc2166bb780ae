"""The builder's housekeeping: builds a dead server left `running`, and old build logs.

At server start, builds still `running` in the table belong to a server that was killed (no
build outlives its process: the daemon cancels a build whose client went away); they are
marked failed and their logs say so. Build logs are kept for the last `keep-releases`
builds of each app (the builder setting that also bounds kept images): pruned after every
build, and by a background task at start and then periodically.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

import structlog

from builder.properties import KEEP_RELEASES
from builder.store import Status, build_log_path, build_logs_dir
from dockyard import lifecycle
from dockyard.apps import App
from dockyard.bridge import run_blocking

if TYPE_CHECKING:
    from dockyard.services import Services

log = structlog.get_logger("dockyard.builder")

PRUNE_INTERVAL = 3600.0
INTERRUPTED_NOTE = "Build interrupted: the server stopped while it ran"


def fail_interrupted_builds(services: Services) -> int:
    """Mark builds left `running` by a dead server as failed; returns how many. Only called
    at start, before this server has started any build."""
    with services.state.transaction() as conn:
        rows = conn.execute(
            "UPDATE builds SET status = ?, finished_at = ? WHERE status = ? "
            "RETURNING app_id, number",
            (Status.FAILED, time.time(), Status.RUNNING),
        ).fetchall()
    names = {a.id: a.name for a in services.apps.all()}
    for app_id, number in rows:
        path = build_log_path(services.settings, names.get(app_id, ""), str(number))
        if app_id in names and path.parent.is_dir():
            with open(path, "a", encoding="utf-8") as f:
                f.write(INTERRUPTED_NOTE + "\n")
        log.warning("interrupted build marked failed", app=names.get(app_id), build=number)
    return len(rows)


def prune_build_logs(services: Services, app: App) -> list[str]:
    """Keep the logs of the app's last `keep-releases` builds; returns the removed names."""
    keep = KEEP_RELEASES.get(services.properties, app)
    logs_dir = build_logs_dir(services.settings, app.name)
    if not logs_dir.is_dir():
        return []
    numbered = sorted((int(p.stem), p) for p in logs_dir.glob("*.log") if p.stem.isdigit())
    removed = []
    for _, path in numbered[:-keep]:
        path.unlink(missing_ok=True)
        removed.append(path.name)
    return removed


def prune_all_build_logs(services: Services) -> None:
    for app in services.apps.all():
        try:
            removed = prune_build_logs(services, app)
        except OSError as exc:
            log.warning("build logs not pruned", app=app.name, error=str(exc))
            continue
        if removed:
            log.info("build logs pruned", app=app.name, removed=len(removed))


@lifecycle.in_background
async def _housekeep(services: Services) -> None:
    while True:
        try:
            await run_blocking(prune_all_build_logs, services)
        except Exception:
            log.exception("build log pruning failed")
        await asyncio.sleep(PRUNE_INTERVAL)


@lifecycle.on_start
async def start_housekeeping(services: Services) -> None:
    try:
        await run_blocking(fail_interrupted_builds, services)
    except Exception:
        log.exception("interrupted builds not marked")

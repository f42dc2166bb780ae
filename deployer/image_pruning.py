"""Which of an app's images stay: those of the last `keep-releases` good releases (the
rollback targets) and `latest`. Pruned after every deploy, and again once the containers a
switch retired are gone (an image still in use is skipped, never forced).

Invariant: pruning holds the app's lock. The retire callback runs off any push, seconds
after its deploy; a push of the same app may be between building its image and recording
the release that keeps it, so a callback that finds the app busy prunes nothing (that
push prunes when it is done)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import builder
from deployer.releases import ReleaseStore
from dockyard.apps import App
from dockyard.errors import DockyardError
from dockyard.locks import AppBusy, app_lock

if TYPE_CHECKING:
    from dockyard.services import Services


def prune_images(services: Services, app: App) -> None:
    keep_count = builder.keep_releases(services, app)
    good = [r for r in ReleaseStore(services.state).all(app) if r.status == "succeeded"]
    keep = {tag for r in good[-keep_count:] for tag in (r.image, r.built_image) if tag}
    try:
        builder.prune_images(services, app.name, keep)
    except DockyardError:
        pass  # a busy image is pruned next time; never fail a deploy that already switched


def prune_images_unless_busy(services: Services, app: App) -> None:
    """`prune_images` from outside a push or deploy: only if the app's lock is free now."""
    try:
        with app_lock(services.settings.locks_dir, app.name, timeout=0):
            prune_images(services, app)
    except AppBusy:
        pass

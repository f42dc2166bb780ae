"""The push pipeline, in one screen: build, record the release, switch, prune.

gitrecv calls it with the app already locked (a push holds `app_lock`), so nothing here
takes the lock again: flock is per open file, and a second lock in the same process would
wait for itself. Every new release — a push, a config change, a rollback, a rebuild, a
linked service — is made by `Release.successor` and put into service by
`switch_or_restore`, so a failed switch leaves state as it was before the change.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import docker.errors
import requests

import builder
from deployer import schedulers
from deployer.image_pruning import prune_images
from deployer.releases import NO_RELEASE, Release, ReleaseStore, effective_formation
from dockyard.apps import App
from dockyard.errors import DockyardError
from dockyard.pipeline import DeployFailed, Source

if TYPE_CHECKING:
    from dockyard.context import Context
    from dockyard.output import Output
    from dockyard.services import Services


def deploy_source(ctx: Context, app: App, source: Source) -> None:
    """`git push` → image → release vN → checked containers → traffic → old ones retired."""
    try:
        image = builder.build_image(ctx.services, app, source, ctx.out)
    except DockyardError as exc:
        raise DeployFailed(exc.message) from None
    current = ReleaseStore(ctx.services.state).current(app) or NO_RELEASE
    release = current.successor(
        f"Deploy {source.revision[:7]}", ctx.identity.name,
        image=image.tag, built_image=image.tag, image_id=image.image_id, revision=source.revision,
        procfile=dict(image.procfile), app_json=dict(image.app_json or {}),
        ports=list(image.exposed_ports),
    )  # fmt: skip
    try:
        switch_or_restore(ctx.services, app, ctx.out, release)
    except (DockyardError, docker.errors.DockerException, requests.RequestException) as exc:
        if isinstance(exc, DockyardError):
            raise DeployFailed(exc.message) from None
        raise DeployFailed(
            f"Deploy of {app.name} failed: the Docker engine stopped answering ({exc}).\n"
            "The previous release keeps serving (Dockyard restarts it when the engine is back)."
        ) from None
    ctx.event("deploy", app.name, f"v{release.version} {source.revision[:12]}")


def redeploy(
    ctx: Context, app: App, description: str, change: Callable[[], None] | None = None
) -> None:
    """Apply `change` (new config, a link) and run the current release again with it, with
    zero downtime; undone if the switch fails. Before a first deploy only the change is
    made. The caller holds the app's lock."""
    current = ReleaseStore(ctx.services.state).current(app)
    if current is None:
        if change is not None:
            change()
        return
    ctx.out.step(f"Restarting app {app.name}")
    release = current.successor(description, ctx.identity.name)
    switch_or_restore(ctx.services, app, ctx.out, release, change, announce=False)


def switch_or_restore(
    services: Services,
    app: App,
    out: Output,
    release: Release,
    change: Callable[[], None] | None = None,
    announce: bool = True,
) -> Release:
    """Make `change`, record `release` with the config it leaves and the app's formation,
    and put it into service; if anything fails the app's config is as it was before."""
    before = services.config.local(app)
    try:
        if change is not None:
            change()
        return _release_and_switch(services, app, out, release, announce)
    except BaseException:
        if change is not None:
            services.config.replace(app, before)
        raise


def _release_and_switch(
    services: Services, app: App, out: Output, release: Release, announce: bool
) -> Release:
    """Record `release` (config snapshot taken now), put it into service, prune images.
    The release stays in the history as failed if the switch does not happen."""
    releases = ReleaseStore(services.state)
    release.config = services.config.local(app)
    release.formation = effective_formation(releases.formation(app), release)
    releases.add(app, release)
    try:
        schedulers.deploy(services, app, out, release, announce=announce)
    except BaseException:
        if releases.current_version(app) != release.version:
            releases.mark_failed(app, release)  # a release that already serves stays good
        raise
    prune_images(services, app)
    return release

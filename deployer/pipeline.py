"""The push pipeline, in one screen: build, record the release, switch, prune.

gitrecv calls it with the app already locked (a push holds `app_lock`), so nothing here
takes the lock again: flock is per open file, and a second lock in the same process would
wait for itself.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import docker.errors
import requests

import builder
from deployer.deploy import ReleaseDeployer
from deployer.releases import Release, ReleaseStore, effective_formation
from dockyard.apps import App
from dockyard.errors import DockyardError
from dockyard.pipeline import DeployFailed, Source

if TYPE_CHECKING:
    from dockyard.output import Output
    from dockyard.registry import Context, Services

GIT_REV = "GIT_REV"


def deploy_source(ctx: Context, app: App, source: Source) -> None:
    """`git push` → image → release vN → checked containers → traffic → old ones retired."""
    try:
        image = builder.build_image(ctx.services, app, source, ctx.out)
    except DockyardError as exc:
        raise DeployFailed(exc.message) from None
    release = Release(
        version=0,
        image=image.tag,
        image_id=image.image_id,
        revision=source.revision,
        description=f"Deploy {source.revision[:7]}",
        config={},
        formation=ReleaseStore(ctx.services.state).formation(app),
        procfile=dict(image.procfile),
        app_json=dict(image.app_json or {}),
        ports=list(image.exposed_ports),
        actor=ctx.identity.name,
    )
    previous_rev = ctx.services.config.local(app).get(GIT_REV)
    ctx.services.config.set(app, {GIT_REV: source.revision})
    try:
        release_and_switch(ctx.services, app, ctx.out, release)
    except (DockyardError, docker.errors.DockerException, requests.RequestException) as exc:
        # The old release keeps serving, so the config keeps naming its revision.
        if previous_rev is None:
            ctx.services.config.unset(app, [GIT_REV])
        else:
            ctx.services.config.set(app, {GIT_REV: previous_rev})
        if isinstance(exc, DockyardError):
            raise DeployFailed(exc.message) from None
        raise DeployFailed(
            f"Deploy of {app.name} failed: the Docker engine stopped answering ({exc}).\n"
            "The previous release keeps serving (Dockyard restarts it when the engine is back)."
        ) from None
    ctx.event("deploy", app.name, f"v{release.version} {source.revision[:12]}")


def release_and_switch(
    services: Services, app: App, out: Output, release: Release, announce: bool = True
) -> Release:
    """Record `release` (config snapshot taken now), put it into service, prune images.
    The release stays in the history as failed if the switch does not happen."""
    releases = ReleaseStore(services.state)
    release.config = services.config.local(app)
    release.formation = effective_formation(release.formation, release)
    releases.add(app, release)
    try:
        ReleaseDeployer(services, app, out).deploy(release, announce=announce)
    except BaseException:
        if releases.current_version(app) != release.version:
            releases.mark_failed(app, release)  # a release that already serves stays good
        raise
    prune_images(services, app)
    return release


def prune_images(services: Services, app: App) -> None:
    """Keep the images of the last N good releases (rollback targets); drop the rest."""
    keep_count = builder.keep_releases(services, app)
    good = [r for r in ReleaseStore(services.state).all(app) if r.status == "succeeded"]
    keep = {r.image for r in good[-keep_count:]}
    try:
        builder.prune_images(services, app.name, keep)
    except DockyardError:
        pass  # a busy image is pruned next time; never fail a deploy that already switched

"""`releases` and `releases:rollback`: the history, and going back without a build."""

from __future__ import annotations

import docker.errors

from deployer import containers as docker_ops
from deployer.commands.common import command, current_or_fail, iso
from deployer.commands.common import releases as release_store
from deployer.pipeline import switch_or_restore
from deployer.releases import STATUS_SUCCEEDED, Release, ReleaseStore
from dockyard.apps import App
from dockyard.context import Context
from dockyard.errors import DockyardError, NotFound, UsageError
from dockyard.names import is_whole_number
from dockyard.registry import CommandParser


@command("releases", "List an app's releases", "APP [--format json]")
def releases_list(ctx: Context, argv: list[str]) -> None:
    parser = CommandParser("releases")
    parser.add_argument("app")
    parser.add_format()
    args = parser.parse_args(argv)
    app = ctx.app(args.app)
    store = release_store(ctx)
    current = store.current_version(app)
    rows = list(reversed(store.all(app)))
    if args.format == "json":
        ctx.out.json(
            [
                {
                    "version": r.name, "created_at": iso(r.created_at), "image": r.image,
                    "revision": r.revision, "description": r.description, "status": r.status,
                    "actor": r.actor, "current": r.version == current,
                }
                for r in rows
            ]
        )  # fmt: skip
        return
    ctx.out.heading(f"{app.name} Releases")
    table = []
    for r in rows:
        marks = []
        if r.version == current:
            marks.append("(current)")
        if r.status != STATUS_SUCCEEDED:
            marks.append(f"({r.status})")
        table.append([r.name, r.description, r.actor, iso(r.created_at), r.image, " ".join(marks)])
    ctx.out.table(table)


@command("releases:rollback", "Redeploy an earlier release, without building", "APP [vN]")
def releases_rollback(ctx: Context, argv: list[str]) -> None:
    parser = CommandParser("releases:rollback")
    parser.add_argument("app")
    parser.add_argument("version", nargs="?")
    args = parser.parse_args(argv)
    app = ctx.app(args.app)
    with ctx.services.hold(app) as app:
        store = release_store(ctx)
        current = current_or_fail(ctx, app)
        target = _rollback_target(store, app, current, args.version)
        try:
            docker_ops.client().images.get(target.image)
        except docker.errors.ImageNotFound:
            raise DockyardError(
                f"The image of {target.name} ({target.image}) was pruned; cannot roll back to it"
            ) from None
        ctx.out.step(f"Rolling back {app.name} to {target.name}")
        # The target's image, declarations and config; the formation stays as scaled now.
        release = target.successor(f"Rollback to {target.name}", ctx.identity.name)
        switch_or_restore(
            ctx.services, app, ctx.out, release,
            lambda: ctx.services.config.replace(app, target.config),
        )  # fmt: skip
    ctx.event("releases:rollback", app.name, f"to {target.name} as {release.name}")


def _rollback_target(
    store: ReleaseStore, app: App, current: Release, wanted: str | None
) -> Release:
    good = [r for r in store.all(app) if r.status == STATUS_SUCCEEDED]
    if wanted:
        number = wanted[1:] if wanted.startswith("v") else wanted
        if not is_whole_number(number):
            raise UsageError(f"Invalid release {wanted!r}: expected vN")
        target = store.get(app, int(number))
        if target is None:
            raise NotFound(f"Release {wanted} of {app.name} does not exist")
        if target.status != STATUS_SUCCEEDED:
            raise DockyardError(f"Release {target.name} never deployed; cannot roll back to it")
        return target
    earlier = [r for r in good if r.version < current.version]
    if not earlier:
        raise DockyardError(f"{app.name} has no release before {current.name} to roll back to")
    return earlier[-1]

"""`run APP CMD…`: a one-off container of the current release."""

from __future__ import annotations

import shlex

from deployer import containers as docker_ops
from deployer.commands.common import command, current_or_fail
from deployer.deploy import home_of
from deployer.releases import Release
from deployer.schedulers import OneOffIO, scheduler_for
from deployer.settings import ONE_OFFS
from dockyard.apps import App
from dockyard.context import Context
from dockyard.errors import DockyardError, UsageError


@command("run", "Run a one-off command in a new container of the current release", "APP CMD…")
def run(ctx: Context, argv: list[str]) -> int:
    if len(argv) < 2 or argv[0].startswith("-"):
        raise UsageError("usage: run APP CMD…")
    app = ctx.app(argv[0])
    release = current_or_fail(ctx, app)
    check_one_off_room(ctx, app)
    scheduler = scheduler_for(ctx.services, app, ctx.out)
    io = OneOffIO(ctx.stdin, ctx.stdout, ctx.stderr, ctx.interactive, ctx.cancelled)
    ctx.event("run", app.name)
    return scheduler.run_one_off(release, one_off_argv(release, argv[1:]), io)


def check_one_off_room(ctx: Context, app: App) -> None:
    """An app runs at most `resource.max-one-offs` one-off containers at once."""
    limit = ONE_OFFS.get(ctx.services.properties, None)
    running = docker_ops.one_offs_running(home_of(ctx.services), app.name)
    if running >= limit:
        raise DockyardError(
            f"App {app.name} already runs {running} one-off containers (at most {limit} "
            "at once: resource:set --global max-one-offs); wait for one to finish"
        )


def one_off_argv(release: Release, words: list[str]) -> list[str]:
    """`run APP console` runs the Procfile's `console` command (with any further words as
    its arguments), as on Dokku and Heroku; anything else runs as given, without a shell."""
    command = release.procfile.get(words[0]) if words[0] != "release" else None
    if command is None:
        return words
    full = " ".join([command, *(shlex.quote(w) for w in words[1:])])
    return docker_ops.container_command(release.image, full) or words

"""`run APP CMD…`: a one-off container of the current release."""

from __future__ import annotations

import shlex

from deployer import containers as docker_ops
from deployer.commands.common import command, current_or_fail
from deployer.releases import Release
from deployer.schedulers import OneOffIO, scheduler_for
from dockyard.context import Context
from dockyard.errors import UsageError


@command("run", "Run a one-off command in a new container of the current release", "APP CMD…")
def run(ctx: Context, argv: list[str]) -> int:
    if len(argv) < 2 or argv[0].startswith("-"):
        raise UsageError("usage: run APP CMD…")
    app = ctx.app(argv[0])
    release = current_or_fail(ctx, app)
    scheduler = scheduler_for(ctx.services, app, ctx.out)
    io = OneOffIO(ctx.stdin, ctx.stdout, ctx.stderr, ctx.interactive, ctx.cancelled)
    ctx.event("run", app.name)
    return scheduler.run_one_off(release, one_off_argv(release, argv[1:]), io)


def one_off_argv(release: Release, words: list[str]) -> list[str]:
    """`run APP console` runs the Procfile's `console` command (with any further words as
    its arguments), as on Dokku and Heroku; anything else runs as given, without a shell."""
    command = release.procfile.get(words[0]) if words[0] != "release" else None
    if command is None:
        return words
    full = " ".join([command, *(shlex.quote(w) for w in words[1:])])
    return docker_ops.container_command(release.image, full) or words

"""`apps:*`: create, list, exists, report, rename, destroy, set."""

from __future__ import annotations

import time
from contextlib import ExitStack

from dockyard import prompt
from dockyard.access import Access
from dockyard.apps import App
from dockyard.context import Context
from dockyard.errors import AccessDenied, Conflict, DockyardError, UsageError
from dockyard.locks import app_lock
from dockyard.names import check_app_name
from dockyard.properties import BOOLEAN, Level, PropertyGroup, whole_number
from dockyard.property_commands import register_property_commands
from dockyard.registry import CommandParser, command

APPS = PropertyGroup("apps")
DISABLE_AUTOCREATION = APPS.declare(
    "disable-autocreation", BOOLEAN, lambda v: v == "true", default="false",
    levels=Level.GLOBAL, help="refuse pushes to apps that do not exist yet",
)  # fmt: skip
MAX_PER_KEY = APPS.declare(
    "max-per-key", whole_number(1, 100_000), int, default="100", levels=Level.GLOBAL,
    help="how many apps one non-admin key may own (admins are not counted)",
)  # fmt: skip
# apps:report is the app's own (owner, grants); the setting shows in `apps:set`'s echo.
register_property_commands(APPS, with_report=False)


@command("apps:create", "Create a new app", "APP", access=Access.ANYONE)
def create(ctx: Context, argv: list[str]) -> None:
    parser = CommandParser("apps:create")
    parser.add_argument("app", metavar="APP")
    args = parser.parse_args(argv)
    name = check_app_name(args.app)
    ctx.out.step(f"Creating {name}...")
    create_owned_app(ctx, name)
    ctx.event("apps:create", name)


def create_owned_app(ctx: Context, name: str) -> App:
    """Create an app owned by the calling key: a non-admin key up to `apps.max-per-key`, so
    one tenant cannot fill the server with names (and the state, nginx and disk with them)."""
    services = ctx.services
    if not ctx.identity.is_admin:
        cap = MAX_PER_KEY.get(services.properties, None)
        owned = sum(1 for a in services.apps.all() if a.owner == ctx.identity.name)
        if owned >= cap:
            raise AccessDenied(
                f"Key {ctx.identity.name} owns {owned} apps, the most one key may own here "
                "(apps:set --global max-per-key, for an admin); destroy one first"
            )
    return services.create_app(name, owner=ctx.identity.name)


@command("apps:list", "List the apps you can manage", "[--format json]", access=Access.ANYONE)
def list_(ctx: Context, argv: list[str]) -> None:
    parser = CommandParser("apps:list")
    parser.add_format()
    args = parser.parse_args(argv)
    names = [a.name for a in ctx.visible_apps()]
    if args.format == "json":
        ctx.out.json(names)
        return
    ctx.out.heading("My Apps")
    if not names:
        ctx.out.warn("You haven't deployed any applications yet")
    for name in names:
        ctx.out.line(name)


@command("apps:exists", "Exit 0 if the app exists, 20 if not", "APP")
def exists(ctx: Context, argv: list[str]) -> None:
    parser = CommandParser("apps:exists")
    parser.add_argument("app", metavar="APP")
    ctx.app(parser.parse_args(argv).app)


@command("apps:report", "Show an app's owner, grants and creation time", "APP [--format json]")
def report(ctx: Context, argv: list[str]) -> None:
    parser = CommandParser("apps:report")
    parser.add_argument("app", metavar="APP")
    parser.add_format()
    args = parser.parse_args(argv)
    app = ctx.app(args.app)
    repo = ctx.services.settings.repos_dir / f"{app.name}.git"
    rows = [
        ("App name", app.name),
        ("App owner", app.owner),
        ("App acl", ctx.services.apps.grants(app)),
        ("App created at", time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(app.created_at))),
        ("App dir", str(repo)),
    ]
    ctx.out.report(f"{app.name} app information", rows, args.format)


@command("apps:rename", "Rename an app", "OLD NEW")
def rename(ctx: Context, argv: list[str]) -> None:
    parser = CommandParser("apps:rename")
    parser.add_argument("old", metavar="OLD")
    parser.add_argument("new", metavar="NEW")
    args = parser.parse_args(argv)
    app = ctx.app(args.old, Access.OWNER, "rename it")
    new = check_app_name(args.new)
    if new == app.name:
        raise UsageError(f"{app.name} already has that name")
    if ctx.services.apps.find(new) is not None:
        raise Conflict("Name is already taken")
    # Both names, in a fixed order: no push or deploy may run under either while the
    # repo, images, containers and routes move.
    with ExitStack() as locks:
        for name in sorted((app.name, new)):
            if name == new:
                locks.enter_context(app_lock(ctx.services.settings.locks_dir, new))
            else:
                app = locks.enter_context(ctx.services.hold(app))
        ctx.out.step(f"Renaming {app.name} to {new}")
        ctx.services.rename_app(app.name, new)
    ctx.event("apps:rename", new, f"from {app.name}")


# What `apps:destroy` removes, and what it leaves: the destroy hooks of the stages (git
# repository, images and build logs, containers and the app network, routes and
# certificates; state rows cascade) against the services' hook, which only unlinks.
DESTROYED = (
    "its git repository, containers, images, config vars, domains, certificates and "
    "release history"
)
KEPT = (
    "Linked database services are unlinked, not destroyed (their data stays); storage "
    "directories and networks stay too."
)


@command(
    "apps:destroy",
    "Destroy an app: its code, containers, config and releases (type its name to confirm)",
    "APP [--force]",
)  # fmt: skip
def destroy(ctx: Context, argv: list[str]) -> None:
    parser = CommandParser("apps:destroy")
    parser.add_argument("app", metavar="APP")
    parser.add_argument("--force", action="store_true")
    args = parser.parse_args(argv)
    app = ctx.app(args.app, Access.OWNER, "destroy it")
    if not args.force:
        _confirm_destroy(ctx, app.name)
    with ctx.services.hold(app) as app:
        ctx.out.step(f"Destroying {app.name} (linked services are unlinked, not destroyed)")
        ctx.services.destroy_app(app.name)
    ctx.event("apps:destroy", app.name)


def _confirm_destroy(ctx: Context, name: str) -> None:
    """Dokku's confirmation: warn, then read the app's name (see dockyard.prompt for where
    it is read from). Anything but the exact name aborts; so does no input at all."""
    prompt.warn(ctx, [
        "WARNING: Potentially Destructive Action",
        f"This command will destroy app {name}: {DESTROYED}. This cannot be undone.",
        KEPT,
        f'To proceed, type "{name}" (or run: apps:destroy {name} --force)',
    ])  # fmt: skip
    reply = prompt.ask(ctx)
    if reply.kind is prompt.Answer.TEXT and reply.text.strip() == name:
        return
    if reply.kind is prompt.Answer.NONE:
        raise DockyardError(
            f"No confirmation: stdin is empty. Type the name on a terminal, send it on stdin "
            f"(echo {name} | ssh … apps:destroy {name}), or pass --force"
        )
    if reply.kind is prompt.Answer.TIMEOUT:
        raise DockyardError(
            f"No confirmation within {prompt.IDLE_TIMEOUT:.0f} s. Aborted; {name} is untouched"
        )
    if reply.kind is prompt.Answer.ABORTED:
        raise DockyardError(f"Aborted; {name} is untouched")
    raise DockyardError(f"Confirmation did not match {name}. Aborted.")

"""`acl:*`: grant another key the right to manage an app."""

from __future__ import annotations

from dockyard.access import Access
from dockyard.apps import App
from dockyard.context import Context
from dockyard.errors import NotFound
from dockyard.registry import CommandParser, command


def _app_and_key(ctx: Context, name: str, argv: list[str]) -> tuple[App, str]:
    parser = CommandParser(name)
    parser.add_argument("app", metavar="APP")
    parser.add_argument("key_name", metavar="NAME")
    args = parser.parse_args(argv)
    return ctx.app(args.app, Access.OWNER, "change who manages it"), args.key_name


@command("acl:add", "Let the key NAME manage APP", "APP NAME")
def add(ctx: Context, argv: list[str]) -> None:
    app, key_name = _app_and_key(ctx, "acl:add", argv)
    ctx.services.keys.get(key_name)  # refuse grants to keys that do not exist
    if ctx.services.apps.grant(app, key_name):
        ctx.out.step(f"Granted {key_name} access to {app.name}")
        ctx.event("acl:add", app.name, key_name)
    else:
        ctx.out.step(f"{key_name} already has access to {app.name}")


@command("acl:remove", "Take APP away from the key NAME", "APP NAME")
def remove(ctx: Context, argv: list[str]) -> None:
    app, key_name = _app_and_key(ctx, "acl:remove", argv)
    if not ctx.services.apps.revoke(app, key_name):
        raise NotFound(f"{key_name} has no grant on {app.name}")
    ctx.out.step(f"Revoked {key_name}'s access to {app.name}")
    ctx.event("acl:remove", app.name, key_name)


@command("acl:list", "List the keys granted APP", "APP [--format json]")
def list_(ctx: Context, argv: list[str]) -> None:
    parser = CommandParser("acl:list")
    parser.add_argument("app", metavar="APP")
    parser.add_format()
    args = parser.parse_args(argv)
    app = ctx.app(args.app)
    grants = ctx.services.apps.grants(app)
    if args.format == "json":
        ctx.out.json({"owner": app.owner, "grants": grants})
        return
    ctx.out.heading(f"{app.name} access")
    ctx.out.detail(f"owner: {app.owner}")
    for name in grants:
        ctx.out.detail(name)

"""`resource:*`: memory, CPU and process limits per container (Dokku's names)."""

from __future__ import annotations

from deployer.commands.common import command
from deployer.settings import CPU, MEMORY, PIDS, RESOURCE
from dockyard.context import Context
from dockyard.property_commands import register_property_commands
from dockyard.registry import CommandParser

LIMITS = {"memory": MEMORY, "cpu": CPU, "pids": PIDS}


@command(
    "resource:limit",
    "Limit an app's memory, CPU and processes per container (applied at the next deploy)",
    "APP [--memory SIZE] [--cpu CPUS] [--pids N]",
)
def resource_limit(ctx: Context, argv: list[str]) -> None:
    parser = CommandParser("resource:limit")
    parser.add_argument("app")
    for flag in LIMITS:
        parser.add_argument(f"--{flag}")
    args = parser.parse_args(argv)
    app = ctx.app(args.app)
    given = {name: getattr(args, name) for name in LIMITS if getattr(args, name) is not None}
    for name, value in given.items():
        if LIMITS[name].needs_admin(value):
            ctx.require_admin(f"set {name} to {value}")
        LIMITS[name].checked(value)  # all parsed before any is stored: all or nothing
    props = ctx.services.properties
    for name, value in given.items():
        LIMITS[name].set(props, app, value)
    ctx.out.step(f"Setting resource limits for {app.name}")
    for name, prop in LIMITS.items():
        ctx.out.detail(f"{name}: {prop.raw(props, app) or 'unlimited'}")
    ctx.out.detail("Applied at the next deploy or restart")
    ctx.event("resource:limit", app.name, " ".join(f"{k}={v}" for k, v in given.items()))


@command("resource:limit-clear", "Remove an app's memory, CPU and process limits", "APP")
def resource_limit_clear(ctx: Context, argv: list[str]) -> None:
    parser = CommandParser("resource:limit-clear")
    parser.add_argument("app")
    app = ctx.app(parser.parse_args(argv).app)
    for prop in LIMITS.values():
        prop.set(ctx.services.properties, app, "")
    ctx.out.step(f"Clearing resource limits for {app.name}")
    ctx.event("resource:limit-clear", app.name)


# resource:limit is Dokku's setter; resource:set and resource:report come from the declarations.
register_property_commands(RESOURCE)

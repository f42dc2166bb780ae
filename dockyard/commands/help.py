"""`help`, `help CMD`, `version`."""

from __future__ import annotations

from dockyard import __version__
from dockyard.access import Access
from dockyard.context import Context
from dockyard.errors import UsageError
from dockyard.registry import COMMANDS, CommandParser, command

HELP_COLUMN = 44


@command("help", "Show the commands, or one command's usage", "[CMD]", access=Access.ANYONE)
def help_(ctx: Context, argv: list[str]) -> None:
    if argv:
        cmd = COMMANDS.get(argv[0])
        if cmd is None or cmd.hidden:
            raise UsageError(f"`{argv[0]}` is not a dockyard command.")
        ctx.out.line(f"Usage: dockyard {cmd.name} {cmd.usage}".rstrip())
        ctx.out.line()
        ctx.out.line(cmd.summary)
        return
    ctx.out.line("Usage: dockyard [--quiet] COMMAND <app> [command-specific-options]")
    ctx.out.line()
    ctx.out.line("Commands:")
    visible = sorted((c for c in COMMANDS.values() if not c.hidden), key=lambda c: c.name)
    for c in visible:
        usage = f"{c.name} {c.usage}".rstrip()
        if len(usage) > HELP_COLUMN:
            ctx.out.line(f"    {usage}")
            ctx.out.line(f"    {'':{HELP_COLUMN}}  {c.summary}")
        else:
            ctx.out.line(f"    {usage:{HELP_COLUMN}}  {c.summary}")


@command("version", "Show the Dockyard version", access=Access.ANYONE)
def version(ctx: Context, argv: list[str]) -> None:
    parser = CommandParser("version")
    parser.add_format()
    args = parser.parse_args(argv)
    if args.format == "json":
        ctx.out.json({"version": __version__})
    else:
        ctx.out.line(f"dockyard {__version__}")

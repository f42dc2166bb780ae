"""`logs APP [-t]`: what an app's live containers print."""

from __future__ import annotations

from deployer.applogs import Follower, recent
from deployer.commands.common import command
from deployer.schedulers import scheduler_for
from dockyard.context import Context
from dockyard.errors import DockyardError
from dockyard.registry import CommandParser

DEFAULT_LOG_LINES = 100


@command("logs", "Show an app's logs (-t follows)", "APP [-t] [-n N] [-p TYPE]")
def logs(ctx: Context, argv: list[str]) -> None:
    parser = CommandParser("logs")
    parser.add_argument("app")
    parser.add_argument("-t", "--tail", action="store_true")
    parser.add_line_count(default=DEFAULT_LOG_LINES)
    parser.add_argument("-p", "--ps", default=None)
    parser.add_argument("-q", "--quiet", action="store_true")
    args = parser.parse_args(argv)
    app = ctx.app(args.app)
    chosen = scheduler_for(ctx.services, app, ctx.out).log_sources(args.ps)
    if not chosen:
        raise DockyardError(
            f"App {app.name} has no running containers" + (f" of type {args.ps}" if args.ps else "")
        )
    if args.tail:
        Follower(chosen, max(args.num, 0)).run(ctx.stdout, ctx.cancelled)
        return
    for line in recent(chosen, max(args.num, 0)):
        ctx.out.line(line)

"""The command registry: the same commands over SSH and from the local CLI.

A command is a plain (blocking) function `handler(ctx, argv) -> int | None`. Stages
register theirs with `@command(...)`; `dispatch` runs one, and is the single place where a
`DockyardError` becomes ` !     message` on stderr and an exit status.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import NoReturn

import structlog

from dockyard.access import Access, check_access
from dockyard.bridge import ChannelClosed
from dockyard.context import Context
from dockyard.errors import DockyardError, UsageError
from dockyard.names import is_whole_number
from dockyard.services import Services

__all__ = [
    "COMMANDS", "Command", "CommandParser", "Context", "Services", "command", "dispatch",
    "split_global",
]  # fmt: skip

log = structlog.get_logger("dockyard.registry")

Handler = Callable[["Context", list[str]], "int | None"]


@dataclass(frozen=True)
class Command:
    name: str
    handler: Handler
    summary: str
    usage: str = ""
    access: Access = Access.APP
    hidden: bool = False


COMMANDS: dict[str, Command] = {}


def command(
    name: str, summary: str, usage: str = "", access: Access = Access.APP, hidden: bool = False
) -> Callable[[Handler], Handler]:
    def register(handler: Handler) -> Handler:
        if name in COMMANDS:
            raise RuntimeError(f"command {name} registered twice")
        COMMANDS[name] = Command(name, handler, summary, usage, access, hidden)
        return handler

    return register


MAX_LINES = 100_000


class CommandParser(argparse.ArgumentParser):
    """argparse that raises UsageError instead of printing and exiting."""

    def __init__(self, name: str, **kwargs: object) -> None:
        super().__init__(prog=name, add_help=False, allow_abbrev=False, **kwargs)  # type: ignore[arg-type]

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (usage: {self.format_usage().strip()[7:]})")

    def exit(self, status: int = 0, message: str | None = None) -> NoReturn:
        raise UsageError(message or "invalid arguments")

    def add_format(self) -> None:
        self.add_argument("--format", choices=("text", "json"), default="text")

    def add_line_count(self, default: int, most: int = MAX_LINES) -> None:
        """`-n N`: how many lines, 0 to `most` (argparse's own `int` also takes `٣` and
        numbers no store or engine can hold)."""

        def count(text: str) -> int:
            if not is_whole_number(text, 9) or int(text) > most:
                raise ValueError(text)
            return int(text)

        count.__name__ = f"line count (0 to {most})"  # what argparse's message calls it
        self.add_argument("-n", "--num", type=count, default=default, metavar="N")


def split_global(argv: Sequence[str]) -> tuple[bool, list[str]]:
    """`--global` stands where APP would, as the first word (`git:set --global KEY VALUE`);
    argparse cannot express an optional positional before required ones, so it is taken off
    here."""
    if argv[:1] == ["--global"]:
        return True, list(argv[1:])
    return False, list(argv)


def _strip_global_flags(argv: Sequence[str]) -> tuple[list[str], bool]:
    args, quiet = list(argv), False
    while args and args[0] in ("--quiet", "--trace"):
        quiet = quiet or args.pop(0) == "--quiet"
    # `ssh dockyard@host dokku apps:list` and `… dockyard apps:list` both work.
    if args and args[0] in ("dokku", "dockyard"):
        args.pop(0)
    return args, quiet


def dispatch(ctx: Context, argv: Sequence[str]) -> int:
    """Run one command line. Never raises for anything a user can cause."""
    args, quiet = _strip_global_flags(argv)
    ctx.out.quiet = ctx.out.quiet or quiet
    if not args:
        args = ["help"]
    name, rest = args[0], args[1:]
    ctx.command = name
    cmd = COMMANDS.get(name)
    try:
        if cmd is None:
            raise UsageError(
                f"`{name}` is not a dockyard command.\nSee `dockyard help` for a list of "
                "available commands."
            )
        if cmd.access is Access.ADMIN:
            check_access(ctx.identity, Access.ADMIN, action=f"run {name}")
        status = cmd.handler(ctx, rest)
        return int(status or 0)
    except DockyardError as exc:
        _report_error(ctx, exc.message)
        return exc.exit_code
    except ChannelClosed:
        return 255
    except Exception:
        log.exception("command failed", command=name, user=ctx.identity.name)
        _report_error(ctx, f"{name} failed with an internal error; the server log has details")
        return 1


def _report_error(ctx: Context, message: str) -> None:
    try:
        ctx.out.error(message)
    except ChannelClosed:
        pass

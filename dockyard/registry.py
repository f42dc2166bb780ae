"""The command registry: the same commands over SSH and from the local CLI.

A command is a plain (blocking) function `handler(ctx, argv) -> int | None`. Stages
register theirs with `@command(...)`; `dispatch` runs one, and is the single place where a
`DockyardError` becomes ` !     message` on stderr and an exit status.
"""

from __future__ import annotations

import argparse
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import BinaryIO, NoReturn

import structlog

from dockyard.access import Access, Identity, check_access
from dockyard.apps import App, AppStore
from dockyard.bridge import ChannelClosed
from dockyard.config_vars import ConfigStore
from dockyard.errors import DockyardError, NotFound, UsageError
from dockyard.keys import KeyStore
from dockyard.locks import app_lock
from dockyard.names import check_app_name
from dockyard.output import Output
from dockyard.properties import PropertyStore
from dockyard.settings import Settings
from dockyard.state import StateStore

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


class Services:
    """The data dir, opened: every store a command may need."""

    def __init__(self, settings: Settings) -> None:
        settings.ensure_layout()
        self.settings = settings
        self.state = StateStore(settings.state_db)
        self.apps = AppStore(self.state, services=self)
        self.keys = KeyStore(settings.authorized_keys)
        self.properties = PropertyStore(self.state)
        self.config = ConfigStore(self.state)

    @contextmanager
    def hold(self, app: App) -> Iterator[App]:
        """Hold `app`'s lock, re-reading it under the lock: a command that waited while the
        app was renamed or destroyed must not carry on under a name that is no longer its."""
        with app_lock(self.settings.locks_dir, app.name):
            fresh = self.apps.find(app.name)
            if fresh is None or fresh.id != app.id:
                raise NotFound(f"App {app.name} was renamed or destroyed meanwhile")
            yield fresh


@dataclass
class Context:
    services: Services
    identity: Identity
    stdin: BinaryIO
    stdout: BinaryIO
    stderr: BinaryIO
    out: Output
    interactive: bool = False  # a pty was requested (`ssh -t`)
    local: bool = False  # the local CLI, run by root on the server itself
    command: str = ""
    cancelled: threading.Event = field(default_factory=threading.Event)
    # Client environment variables the front door let through: validated, and only those a
    # command is documented to read (`GIT_PROTOCOL` for git's commands); empty otherwise.
    client_env: Mapping[str, str] = field(default_factory=dict)

    def app(self, name: str, need: Access = Access.APP, action: str = "do this") -> App:
        """The named app, if it exists and this key may manage it (or own it, for OWNER:
        `action` then says what a grantee was refused)."""
        app = self.services.apps.get(check_app_name(name))
        grants = self.services.apps.grants(app)
        check_access(self.identity, need, app.name, app.owner, grants, action=action)
        return app

    def target(self, app_name: str | None, is_global: bool, action: str) -> App | None:
        """The app a settings command acts on, or None for `--global` (admins only)."""
        if is_global:
            self.require_admin(action)
            return None
        if not app_name:
            raise UsageError("Give an app name, or --global")
        return self.app(app_name)

    def require_admin(self, action: str) -> None:
        check_access(self.identity, Access.ADMIN, action=action)

    def event(self, kind: str, app: str | None = None, detail: str = "") -> None:
        self.services.state.record_event(self.identity.name, kind, app, detail)


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

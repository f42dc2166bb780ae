"""One SSH session runs one command: split the exec string like a shell would split words
(quotes honoured, nothing expanded), then dispatch it on a worker thread with the channel
bridged to blocking streams.

The client's environment is ignored, with one exception: `GIT_PROTOCOL` (git sends
`version=2` to ask for protocol v2) reaches the git commands, and only them, and only
when its value is a short string of the characters git uses there. Everything else a client
sets is dropped before the command runs."""

from __future__ import annotations

import asyncio
import re
import shlex
from collections.abc import Mapping

import asyncssh
import structlog

from dockyard.access import Identity
from dockyard.bridge import BlockingReader, BlockingWriter, ChannelClosed, run_blocking
from dockyard.context import Context
from dockyard.output import ERROR, Output
from dockyard.registry import dispatch
from dockyard.services import Services

log = structlog.get_logger("dockyard.sshd")

GIT_PROTOCOL = "GIT_PROTOCOL"
GIT_COMMANDS = frozenset({"git-upload-pack", "git-receive-pack"})
GIT_PROTOCOL_VALUE = re.compile(r"[A-Za-z0-9._=:-]{1,256}")


def split_command(command: str | None) -> list[str]:
    if command is None:
        return []  # `ssh host` with no command: show help, never a shell
    return shlex.split(command, comments=False, posix=True)


def client_env(argv: list[str], env: Mapping[str, str]) -> dict[str, str]:
    """The part of the client's environment a command may see: `GIT_PROTOCOL` for the git
    commands when its value is well-formed; nothing else, ever."""
    if not argv or argv[0] not in GIT_COMMANDS:
        return {}
    value = env.get(GIT_PROTOCOL)
    if not isinstance(value, str) or not GIT_PROTOCOL_VALUE.fullmatch(value):
        return {}
    return {GIT_PROTOCOL: value}


class ChannelInput:
    """The channel's stdin as the bridge expects it: bytes, then b"" at the end.

    asyncssh delivers a window resize, a break or a signal as an exception from `read`, and a
    dropped connection as `ConnectionLost`; a command reading its input sees neither."""

    def __init__(self, reader: asyncssh.SSHReader) -> None:
        self._reader = reader

    async def read(self, n: int = -1) -> bytes:
        while True:
            try:
                return await self._reader.read(n)
            except (asyncssh.TerminalSizeChanged, asyncssh.BreakReceived, asyncssh.SignalReceived):
                continue
            except asyncssh.Error:
                return b""


def _run(ctx: Context, argv: list[str], stdout: BlockingWriter, stderr: BlockingWriter) -> int:
    status = dispatch(ctx, argv)
    try:
        stdout.flush()
        stderr.flush()
    except ChannelClosed:
        return 255
    return status


async def handle_process(
    services: Services,
    identity: Identity,
    process: asyncssh.SSHServerProcess,
    stdin_idle_timeout: float | None = None,
) -> None:
    loop = asyncio.get_running_loop()
    if process.subsystem:
        process.stderr.write(f"{ERROR}Subsystems are not supported\n".encode())
        process.exit(1)
        return
    try:
        argv = split_command(process.command)
    except ValueError as exc:
        process.stderr.write(f"{ERROR}Cannot parse command: {exc}\n".encode())
        process.exit(1)
        return

    stdout = BlockingWriter(loop, process.stdout)
    stderr = BlockingWriter(loop, process.stderr)
    stdin = BlockingReader(loop, ChannelInput(process.stdin))
    if process.get_terminal_type() is None:
        # A command waiting on a silent client holds a worker; on a terminal a person types.
        stdin.idle_timeout = stdin_idle_timeout
    ctx = Context(
        services=services,
        identity=identity,
        stdin=stdin,  # type: ignore[arg-type]
        stdout=stdout,  # type: ignore[arg-type]
        stderr=stderr,  # type: ignore[arg-type]
        out=Output(stdout, stderr),  # type: ignore[arg-type]
        interactive=process.get_terminal_type() is not None,
        client_env=client_env(argv, _environment(process)),
    )
    log.info("command", user=identity.name, command=argv[:1])
    work = asyncio.ensure_future(run_blocking(_run, ctx, argv, stdout, stderr))
    closed = asyncio.ensure_future(process.channel.wait_closed())
    try:
        await asyncio.wait({work, closed}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        if not work.done():
            # The client went away, or the server is stopping: tell the command, and fail
            # its writes so it unwinds instead of holding a worker thread forever.
            ctx.cancelled.set()
            gone = ChannelClosed("the client closed the connection")
            stdout.fail(gone)
            stderr.fail(gone)
        closed.cancel()
    if not work.done():
        await asyncio.wait({work})
    status = _status_of(work)
    client_gone = ctx.cancelled.is_set() or process.is_closing()
    if not client_gone:
        try:
            process.exit(status)
        except (OSError, asyncssh.Error):
            client_gone = True  # the channel closed between the command's end and its exit
    if client_gone:
        log.info("client disconnected", user=identity.name, command=argv[:1], status=status)
    else:
        log.info("command done", user=identity.name, command=argv[:1], status=status)


def _environment(process: asyncssh.SSHServerProcess) -> Mapping[str, str]:
    try:
        return process.env
    except Exception:  # noqa: BLE001 (a stand-in process in unit tests may have none)
        return {}


def _status_of(work: asyncio.Future[int]) -> int:
    """The command's exit status; a crash in the bridge itself must still end the session."""
    try:
        return work.result()
    except Exception:
        log.exception("session failed")
        return 1

"""Asking the user to type an answer back, as Dokku's `read -rp "> "` does for destructive
commands ("To proceed, type APP").

Where the answer comes from:

- a terminal over SSH (`ssh -t`): the channel has no line discipline here (Dockyard runs no
  shell and allocates no pty; the client's terminal is in raw mode), so this module echoes
  what is typed, handles backspace and Ctrl-U, drops escape sequences, and ends the line at
  Enter; Ctrl-C and Ctrl-D abort;
- a terminal of the local CLI: the kernel's line discipline echoes and edits; one line;
- anything else (a pipe, a file, a non-interactive SSH channel): one line read from stdin,
  so `echo APP | ssh … apps:destroy APP` confirms as it does on Dokku.

Invariants: `ask` never waits for ever. At the end of input (no stdin: `ssh … </dev/null`,
a cron job) it returns at once with `Answer.NONE`; a client that sends nothing gives up after
`IDLE_TIMEOUT` seconds; an answer longer than `MAX_ANSWER` bytes is cut there. The prompt
and the echo go to stdout only when a terminal is involved, so a script's output stays the
command's own.
"""

from __future__ import annotations

import enum
import os
import select
from dataclasses import dataclass

from dockyard.bridge import BlockingReader, InputTimeout
from dockyard.context import Context
from dockyard.output import ERROR

IDLE_TIMEOUT = 120.0
MAX_ANSWER = 1024
PROMPT = "> "

_CTRL_C, _CTRL_D, _CTRL_U, _BACKSPACE, _DELETE, _ESC = 0x03, 0x04, 0x15, 0x08, 0x7F, 0x1B


class Answer(enum.Enum):
    TEXT = "text"  # a line was typed (possibly empty)
    NONE = "none"  # end of input before any line: nothing to read
    TIMEOUT = "timeout"  # nothing arrived within the idle timeout
    ABORTED = "aborted"  # Ctrl-C or Ctrl-D on a terminal


@dataclass(frozen=True)
class Reply:
    kind: Answer
    text: str = ""


def ask(ctx: Context, timeout: float = IDLE_TIMEOUT) -> Reply:
    """Read one answer from whoever runs the command (see the module docstring)."""
    if ctx.local:
        return _ask_local(ctx, timeout)
    if ctx.interactive:
        return _ask_raw_terminal(ctx, timeout)
    return _ask_channel_line(ctx, timeout)


def _decode(data: bytes) -> str:
    return data[:MAX_ANSWER].decode("utf-8", "replace").rstrip("\r\n")


def _ask_local(ctx: Context, timeout: float) -> Reply:
    terminal = _isatty(ctx.stdin)
    if terminal:
        ctx.out.raw(PROMPT)
        _flush(ctx)
    try:
        fd = ctx.stdin.fileno()
    except (AttributeError, OSError, ValueError):
        fd = None
    if fd is not None:
        ready, _, _ = select.select([fd], [], [], timeout)
        if not ready:
            return Reply(Answer.TIMEOUT)
        # One line, byte by byte from the descriptor: nothing is read past it.
        data = bytearray()
        while len(data) <= MAX_ANSWER:
            chunk = os.read(fd, 1)
            if not chunk:
                break
            data += chunk
            if chunk == b"\n":
                break
    else:
        data = bytearray(ctx.stdin.readline(MAX_ANSWER + 1))
    if not data:
        if terminal:
            ctx.out.line()  # Ctrl-D on an empty line: end the prompt's line
            return Reply(Answer.ABORTED)
        return Reply(Answer.NONE)
    return Reply(Answer.TEXT, _decode(bytes(data)))


def _ask_channel_line(ctx: Context, timeout: float) -> Reply:
    stdin = ctx.stdin
    if isinstance(stdin, BlockingReader):
        stdin.idle_timeout = timeout
    try:
        data = stdin.readline()
    except InputTimeout:
        return Reply(Answer.TIMEOUT)
    if not data:
        return Reply(Answer.NONE)
    return Reply(Answer.TEXT, _decode(data))


def _ask_raw_terminal(ctx: Context, timeout: float) -> Reply:
    """Line editing for a client terminal in raw mode: keystrokes arrive one by one and
    nothing is shown unless echoed here."""
    stdin = ctx.stdin
    if isinstance(stdin, BlockingReader):
        stdin.idle_timeout = timeout
    echo = ctx.stdout
    echo.write(PROMPT.encode())
    _flush(ctx)
    typed = bytearray()
    in_escape = False
    while True:
        try:
            byte = stdin.read(1)
        except InputTimeout:
            echo.write(b"\r\n")
            return Reply(Answer.TIMEOUT)
        if not byte:
            echo.write(b"\r\n")
            return Reply(Answer.NONE if not typed else Answer.ABORTED)
        code = byte[0]
        if in_escape:
            # CSI sequences (arrow keys…) end with a byte in @..~; a lone ESC+X is two bytes.
            if code != ord("[") and 0x40 <= code <= 0x7E:
                in_escape = False
            continue
        if code == _ESC:
            in_escape = True
        elif code in (_CTRL_C, _CTRL_D):
            echo.write(b"^C\r\n" if code == _CTRL_C else b"\r\n")
            return Reply(Answer.ABORTED)
        elif code in (0x0D, 0x0A):
            echo.write(b"\r\n")
            return Reply(Answer.TEXT, _decode(bytes(typed)))
        elif code in (_BACKSPACE, _DELETE):
            if typed:
                # Remove a whole UTF-8 character: continuation bytes are 10xxxxxx.
                while typed and typed[-1] & 0xC0 == 0x80:
                    typed.pop()
                if typed:
                    typed.pop()
                echo.write(b"\b \b")
        elif code == _CTRL_U:
            echo.write(b"\r" + b" " * (len(PROMPT) + len(typed)) + b"\r" + PROMPT.encode())
            typed.clear()
        elif code >= 0x20 and len(typed) < MAX_ANSWER:
            typed += byte
            echo.write(byte)
        _flush(ctx)


def warn(ctx: Context, lines: list[str]) -> None:
    """The question's warning lines on stderr, Dokku's ` !     ` style. On a raw client
    terminal (`ssh -t`) each line ends in CR LF, since no line discipline adds the CR."""
    if ctx.interactive and not ctx.local:
        text = "".join(f"{ERROR}{line}\r\n" for line in lines)
        try:
            ctx.stderr.write(text.encode("utf-8", "replace"))
        except BrokenPipeError:
            pass
        return
    for line in lines:
        ctx.out.warn(line)


def _isatty(stream: object) -> bool:
    isatty = getattr(stream, "isatty", None)
    try:
        return bool(isatty and isatty())
    except (OSError, ValueError):
        return False


def _flush(ctx: Context) -> None:
    flush = getattr(ctx.stdout, "flush", None)
    if flush is not None:
        try:
            flush()
        except OSError:
            pass


def is_terminal(ctx: Context) -> bool:
    """Is a person at a terminal answering (as opposed to a pipe or a script)?"""
    return ctx.interactive or (ctx.local and _isatty(ctx.stdin))


__all__ = ["Answer", "Reply", "ask", "is_terminal", "warn"]

"""Dokku's output shapes: `-----> ` steps, `=====> ` headings, seven-space details,
` !     ` errors on stderr, 31-column report rows, and `--format json` for every listing."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import BinaryIO

STEP = "-----> "
HEADING = "=====> "
DETAIL = "       "
ERROR = " !     "
REPORT_LABEL_WIDTH = 31


class Output:
    """What a command tells its user. Once the client has gone, messages are dropped rather
    than raised: a deploy or a config change half-way through finishes (or fails) the same
    whether anyone is still watching. Commands that only stream (`logs -t`, `run`) write to
    `ctx.stdout` themselves and stop on the error."""

    def __init__(self, stdout: BinaryIO, stderr: BinaryIO, quiet: bool = False) -> None:
        self.stdout = stdout
        self.stderr = stderr
        self.quiet = quiet
        self.client_gone = False

    def _write(self, stream: BinaryIO, text: str) -> None:
        if self.client_gone:
            return
        try:
            stream.write(text.encode("utf-8", "surrogateescape"))
        except BrokenPipeError:  # ChannelClosed over SSH, EPIPE locally
            self.client_gone = True

    def line(self, text: str = "") -> None:
        self._write(self.stdout, text + "\n")

    def raw(self, text: str) -> None:
        self._write(self.stdout, text)

    def step(self, text: str) -> None:
        if not self.quiet:
            self.line(STEP + text)

    def heading(self, text: str) -> None:
        if not self.quiet:
            self.line(HEADING + text)

    def detail(self, text: str) -> None:
        self.line(text if self.quiet else DETAIL + text)

    def error(self, text: str) -> None:
        for part in text.splitlines() or [""]:
            self._write(self.stderr, ERROR + part + "\n")

    warn = error

    def json(self, value: object) -> None:
        self.line(json.dumps(value, ensure_ascii=False))

    def report(self, title: str, rows: Sequence[tuple[str, object]], fmt: str = "text") -> None:
        """`=====> APP area information` then `       Label:<pad>value` rows; with
        `fmt="json"` one flat object keyed like Dokku's (`Deploy branch` → `deploy-branch`)."""
        if fmt == "json":
            self.json({report_key(label): value for label, value in rows})
            return
        self.heading(title)
        for label, value in rows:
            self.line(f"{DETAIL}{(label + ':').ljust(REPORT_LABEL_WIDTH)} {plain_value(value)}")

    def table(self, rows: Iterable[Sequence[str]]) -> None:
        rows = [list(r) for r in rows]
        if not rows:
            return
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        for r in rows:
            self.line("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())


def plain_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return ""
    if isinstance(value, (list, tuple)):
        return " ".join(str(v) for v in value)
    return str(value)


def report_key(label: str) -> str:
    """JSON key for a report row label, as Dokku names them: `Deploy branch` → `deploy-branch`."""
    return label.strip().lower().replace(" ", "-")

"""`events`: what happened on this server, and who did it."""

from __future__ import annotations

import asyncio
import time

from dockyard import lifecycle
from dockyard.access import Access
from dockyard.bridge import run_blocking
from dockyard.context import Context
from dockyard.registry import CommandParser, command
from dockyard.services import Services
from dockyard.state import StateStore

KEEP_EVENTS = 100_000  # the newest; a brute force alone adds a few a second
PRUNE_INTERVAL = 3600.0


def prune_events(state: StateStore, keep: int = KEEP_EVENTS) -> int:
    with state.transaction() as conn:
        cur = conn.execute(
            "DELETE FROM events WHERE id <= (SELECT MAX(id) FROM events) - ?", (keep,)
        )
    return cur.rowcount


@lifecycle.in_background
async def _prune_events(services: Services) -> None:
    while True:
        await run_blocking(prune_events, services.state)
        await asyncio.sleep(PRUNE_INTERVAL)


@command("events", "List recent events (pushes, deploys, changes)", "[-n N] [APP] [--format json]",
         access=Access.ADMIN)  # fmt: skip
def events(ctx: Context, argv: list[str]) -> None:
    parser = CommandParser("events")
    parser.add_line_count(default=50, most=10_000)
    parser.add_argument("app", nargs="?")
    parser.add_format()
    args = parser.parse_args(argv)
    limit = max(1, min(args.num, 10_000))
    if args.app:
        rows = ctx.services.state.query(
            "SELECT * FROM events WHERE app = ? ORDER BY id DESC LIMIT ?", (args.app, limit)
        )
    else:
        rows = ctx.services.state.query("SELECT * FROM events ORDER BY id DESC LIMIT ?", (limit,))
    rows = list(reversed(rows))
    if args.format == "json":
        ctx.out.json([
            {"at": r["at"], "actor": r["actor"], "kind": r["kind"], "app": r["app"],
             "detail": r["detail"]}
            for r in rows
        ])  # fmt: skip
        return
    for r in rows:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(r["at"]))
        app = f" {r['app']}" if r["app"] else ""
        detail = f" {r['detail']}" if r["detail"] else ""
        ctx.out.line(f"{stamp} {r['actor']} {r['kind']}{app}{detail}")

"""`events`: what happened on this server, and who did it."""

from __future__ import annotations

import time

from dockyard.access import Access
from dockyard.registry import CommandParser, Context, command


@command("events", "List recent events (pushes, deploys, changes)", "[-n N] [APP] [--format json]",
         access=Access.ADMIN)  # fmt: skip
def events(ctx: Context, argv: list[str]) -> None:
    parser = CommandParser("events")
    parser.add_argument("-n", "--num", type=int, default=50)
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

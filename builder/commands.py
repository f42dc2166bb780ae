"""`builds:*` and `builder:*` commands, and what the builder does when an app is renamed or
destroyed (its images and build logs are the only app-named things it keeps outside
state.db)."""

from __future__ import annotations

import shutil
import time

from builder.build import remove_app_images, retag_app_images
from builder.properties import BUILDER
from builder.store import BuildRecord, BuildStore, build_log_path
from dockyard import services as app_hooks
from dockyard.apps import App
from dockyard.context import Context
from dockyard.errors import NotFound
from dockyard.property_commands import ReportRow, register_property_commands
from dockyard.registry import CommandParser, command
from dockyard.services import Services

LOG_CHUNK = 64 * 1024


def _iso(ts: float | None) -> str:
    return "" if ts is None else time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


def _row(record: BuildRecord) -> dict:
    duration = record.duration
    return {
        "id": record.build_id,
        "revision": record.revision,
        "status": record.status,
        "kind": record.kind,
        "image_id": record.image_id,
        "started": _iso(record.started_at),
        "duration": None if duration is None else round(duration, 1),
    }


@command("builds:list", "List an app's builds, newest first", "APP [--format json]")
def builds_list(ctx: Context, argv: list[str]) -> None:
    parser = CommandParser("builds:list")
    parser.add_argument("app")
    parser.add_format()
    args = parser.parse_args(argv)
    app = ctx.app(args.app)
    rows = [_row(r) for r in BuildStore(ctx.services.state).all(app)]
    if args.format == "json":
        ctx.out.json(rows)
        return
    ctx.out.heading(f"{app.name} builds")
    table = [["id", "revision", "status", "started", "duration"]]
    for r in rows:
        duration = "" if r["duration"] is None else f"{r['duration']}s"
        table.append([r["id"], r["revision"][:12], r["status"], r["started"], duration])
    ctx.out.table(table)


@command("builds:output", "Show the output of a build (default: the latest)", "APP [ID]")
def builds_output(ctx: Context, argv: list[str]) -> None:
    parser = CommandParser("builds:output")
    parser.add_argument("app")
    parser.add_argument("build_id", nargs="?")
    args = parser.parse_args(argv)
    app = ctx.app(args.app)
    record = BuildStore(ctx.services.state).get(app, args.build_id)
    path = build_log_path(ctx.services.settings, app.name, record.build_id)
    try:
        with open(path, "rb") as f:
            while chunk := f.read(LOG_CHUNK):
                ctx.stdout.write(chunk)
    except FileNotFoundError:
        raise NotFound(f"The output of build {record.build_id} of {app.name} is gone") from None


def _report_rows(ctx: Context, app: App, rows: list[ReportRow]) -> list[ReportRow]:
    builds = BuildStore(ctx.services.state).all(app)
    last = builds[0] if builds else None
    return [
        *rows,
        ("Builder last build", last.build_id if last else ""),
        ("Builder last build status", last.status if last else ""),
        ("Builder last build kind", last.kind if last else ""),
    ]


register_property_commands(BUILDER, report_rows=_report_rows)


@app_hooks.on_rename
def _rename(services: Services, old: str, new: str) -> None:
    src, dst = services.settings.builds_dir / old, services.settings.builds_dir / new
    if src.is_dir():
        if dst.exists():
            shutil.rmtree(dst)  # leftovers of an app of that name destroyed by hand
        src.rename(dst)
    retag_app_images(old, new, str(services.settings.data_dir))


@app_hooks.on_destroy
def _destroy(services: Services, name: str) -> None:
    remove_app_images(name, str(services.settings.data_dir))
    shutil.rmtree(services.settings.builds_dir / name, ignore_errors=True)

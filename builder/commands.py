"""`builds:*` and `builder:*` commands, and what the builder does when an app is renamed or
destroyed (its images and build logs are the only app-named things it keeps outside
state.db)."""

from __future__ import annotations

import shutil
import time

from builder.build import remove_app_images, retag_app_images
from builder.store import (
    BASE_KEYS,
    BUILD_ARG,
    KEEP_RELEASES,
    SETTING_KEYS,
    BuilderSettings,
    BuildRecord,
    BuildStore,
    build_log_path,
)
from dockyard import apps as app_hooks
from dockyard.errors import NotFound, UsageError
from dockyard.registry import CommandParser, Context, Services, command, split_global

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


@command(
    "builder:set",
    "Set a builder setting: " + ", ".join(SETTING_KEYS),
    "[--global|APP] KEY [VALUE]",
)
def builder_set(ctx: Context, argv: list[str]) -> None:
    is_global, argv = split_global(argv)
    parser = CommandParser("builder:set")
    if not is_global:
        parser.add_argument("app", metavar="--global|APP")
    parser.add_argument("key", choices=SETTING_KEYS)
    parser.add_argument("value", nargs="?", default="")
    args = parser.parse_args(argv)
    app = ctx.target(getattr(args, "app", None), is_global, "change global builder settings")
    if args.key == BUILD_ARG and not args.value:
        raise UsageError("build-arg takes KEY=VALUE (KEY= unsets it)")
    BuilderSettings(ctx.services.properties).set(app, args.key, args.value)
    shown = args.value
    if args.key == BUILD_ARG:
        name, _, value = args.value.partition("=")
        # Build args often carry tokens: name them, never echo the value.
        ctx.out.step(f"{'Setting' if value else 'Unsetting'} build-arg {name}")
    else:
        ctx.out.step(f"Setting {args.key} to {shown}" if shown else f"Unsetting {args.key}")
    ctx.event("builder:set", app.name if app else None, args.key)


@command("builder:report", "Show an app's builder settings", "APP [--format json]")
def builder_report(ctx: Context, argv: list[str]) -> None:
    parser = CommandParser("builder:report")
    parser.add_argument("app")
    parser.add_format()
    args = parser.parse_args(argv)
    app = ctx.app(args.app)
    settings = BuilderSettings(ctx.services.properties)
    bases = settings.base_images(app)
    builds = BuildStore(ctx.services.state).all(app)
    rows: list[tuple[str, object]] = [
        (f"Builder {key.replace('-', ' ')}", getattr(bases, attr))
        for key, attr in BASE_KEYS.items()
    ]
    rows += [
        (f"Builder {KEEP_RELEASES.replace('-', ' ')}", settings.keep_releases(app)),
        ("Builder build args", sorted(settings.build_args(app))),
        ("Builder last build", builds[0].build_id if builds else ""),
        ("Builder last build status", builds[0].status if builds else ""),
        ("Builder last build kind", builds[0].kind if builds else ""),
    ]
    ctx.out.report(f"{app.name} builder information", rows, args.format)


@app_hooks.on_rename
def _rename(services: Services, old: str, new: str) -> None:
    src, dst = services.settings.builds_dir / old, services.settings.builds_dir / new
    if src.is_dir():
        if dst.exists():
            shutil.rmtree(dst)  # leftovers of an app of that name destroyed by hand
        src.rename(dst)
    retag_app_images(old, new)


@app_hooks.on_destroy
def _destroy(services: Services, name: str) -> None:
    remove_app_images(name)
    shutil.rmtree(services.settings.builds_dir / name, ignore_errors=True)

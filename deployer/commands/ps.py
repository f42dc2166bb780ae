"""`ps:*`: scale, restart, stop, start, rebuild, and the process report."""

from __future__ import annotations

import re

import structlog

from deployer.commands.common import command, current_or_fail, engine_errors
from deployer.commands.common import releases as release_store
from deployer.pipeline import deploy_source
from deployer.releases import MAX_DECLARED_QUANTITY, effective_formation
from deployer.schedulers import scheduler_for
from deployer.settings import PS
from dockyard.access import Access
from dockyard.apps import App
from dockyard.context import Context
from dockyard.errors import DockyardError, UsageError
from dockyard.names import PROCESS_TYPE_RE
from dockyard.pipeline import current_source
from dockyard.property_commands import ReportRow, register_property_commands
from dockyard.registry import CommandParser

log = structlog.get_logger("dockyard.deployer")
MAX_QUANTITY = MAX_DECLARED_QUANTITY  # per process type, as app.json's formation


@command("ps:scale", "Set how many containers of each process type run", "APP [TYPE=N…]")
def ps_scale(ctx: Context, argv: list[str]) -> None:
    parser = CommandParser("ps:scale")
    parser.add_argument("app")
    parser.add_argument("pairs", nargs="*")
    parser.add_format()
    args = parser.parse_args(argv)
    app = ctx.app(args.app)
    store = release_store(ctx)
    if not args.pairs:
        current = store.current(app)
        formation = store.formation(app)
        if current is not None:
            formation = effective_formation(formation, current)
        formation = formation or {"web": 1}
        if args.format == "json":
            ctx.out.json([{"process_type": t, "quantity": q} for t, q in formation.items()])
            return
        ctx.out.step(f"Scaling for {app.name}")
        ctx.out.line("proctype: qty")
        ctx.out.line("--------: ---")
        for t, q in formation.items():
            ctx.out.line(f"{t}:  {q}")
        return
    wanted = _parse_scale(args.pairs)
    with ctx.services.hold(app) as app:
        current = store.current(app)
        if current is not None:
            unknown = sorted(set(wanted) - set(current.process_types()))
            if unknown:
                raise UsageError(
                    f"Process type {unknown[0]} is not defined in {app.name}'s Procfile "
                    f"(types: {', '.join(current.process_types())})"
                )
        ctx.out.step(
            f"Scaling {app.name} processes: " + " ".join(f"{t}={q}" for t, q in wanted.items())
        )
        if current is None:
            store.set_formation(app, wanted)
            return
        scheduler_for(ctx.services, app, ctx.out).scale(current, {**store.formation(app), **wanted})
    ctx.event("ps:scale", app.name, " ".join(f"{t}={q}" for t, q in wanted.items()))


def _parse_scale(pairs: list[str]) -> dict[str, int]:
    wanted = {}
    for pair in pairs:
        process_type, sep, quantity = pair.partition("=")
        if (
            not sep
            or not PROCESS_TYPE_RE.fullmatch(process_type)
            or not re.fullmatch(r"[0-9]{1,3}", quantity)
            or int(quantity) > MAX_QUANTITY
        ):
            raise UsageError(
                f"Invalid scale argument {pair!r}: expected TYPE=N, like web=2, with N at most "
                f"{MAX_QUANTITY}"
            )
        if process_type == "release":
            raise UsageError("The release process type runs once per deploy; it cannot scale")
        wanted[process_type] = int(quantity)
    return wanted


@command("ps:restart", "Restart an app's containers with zero downtime", "APP")
def ps_restart(ctx: Context, argv: list[str]) -> None:
    parser = CommandParser("ps:restart")
    parser.add_argument("app")
    app = ctx.app(parser.parse_args(argv).app)
    with ctx.services.hold(app) as app:
        release = current_or_fail(ctx, app)
        release.formation = release_store(ctx).formation(app)
        scheduler_for(ctx.services, app, ctx.out).deploy(release)
    ctx.event("ps:restart", app.name)


@command("ps:stop", "Stop an app's containers", "APP")
def ps_stop(ctx: Context, argv: list[str]) -> None:
    parser = CommandParser("ps:stop")
    parser.add_argument("app")
    app = ctx.app(parser.parse_args(argv).app)
    with ctx.services.hold(app) as app:
        current_or_fail(ctx, app)
        ctx.out.step(f"Stopping {app.name}")
        count = scheduler_for(ctx.services, app, ctx.out).stop()
        ctx.out.detail(f"Stopped {count} container(s)")
    ctx.event("ps:stop", app.name)


@command("ps:start", "Start an app's stopped containers", "APP")
def ps_start(ctx: Context, argv: list[str]) -> None:
    parser = CommandParser("ps:start")
    parser.add_argument("app")
    app = ctx.app(parser.parse_args(argv).app)
    with ctx.services.hold(app) as app:
        current_or_fail(ctx, app)
        ctx.out.step(f"Starting {app.name}")
        release_store(ctx).set_running(app, True)
        for line in scheduler_for(ctx.services, app, ctx.out).reconcile():
            ctx.out.detail(line)
    ctx.event("ps:start", app.name)


@command(
    "ps:rebuild", "Build the deploy branch's tip again and deploy it (--all: every app)",
    "APP | --all", access=Access.ANYONE,
)  # fmt: skip
def ps_rebuild(ctx: Context, argv: list[str]) -> int:
    parser = CommandParser("ps:rebuild")
    parser.add_argument("app", nargs="?", metavar="APP")
    parser.add_argument("--all", action="store_true")
    args = parser.parse_args(argv)
    if args.all == bool(args.app):
        raise UsageError("Give an app name, or --all")
    if args.app:
        app = ctx.app(args.app)
        if not _rebuild(ctx, app):
            raise DockyardError(f"{app.name} has no pushed code to rebuild; git push first")
        return 0
    # --all: every app this key may manage that has pushed code (after a restore, say).
    failed = []
    for app in ctx.visible_apps():
        if ctx.cancelled.is_set():
            break  # the server is stopping: leave the rest for a later run
        try:
            if not _rebuild(ctx, app):
                ctx.out.step(f"Skipping {app.name}: nothing pushed yet")
        except DockyardError as exc:
            ctx.out.error(f"{app.name}: {exc.message}")
            failed.append(app.name)
        except Exception:  # one broken app must not stop the others from coming back
            log.exception("rebuild failed", app=app.name)
            ctx.out.error(f"{app.name}: internal error; the server log has details")
            failed.append(app.name)
    if failed:
        ctx.out.error(f"Rebuild failed for: {', '.join(failed)}")
    return 1 if failed else 0


def _rebuild(ctx: Context, app: App) -> bool:
    """Deploy the deploy branch's tip again; False when nothing was ever pushed."""
    with ctx.services.hold(app) as app:
        source = current_source(ctx.services, app)
        if source is None:
            return False
        try:
            deploy_source(ctx, app, source)
        finally:
            source.close()
    return True


def _report_rows(ctx: Context, app: App, settings: list[ReportRow]) -> list[ReportRow]:
    with engine_errors("ps:report"):
        live = scheduler_for(ctx.services, app, ctx.out).processes()
    current = release_store(ctx).current(app)
    running = [p for p in live if p.state == "running"]
    if not live:
        state = "false"
    elif len(running) == len(live):
        state = "true"
    else:
        state = "mixed" if running else "false"
    rows: list[ReportRow] = [
        ("Deployed", current is not None),
        ("Current release", current.name if current else ""),
        ("Processes", len(running)),
        ("Running", state),
        *settings,
    ]
    for p in live:
        rows.append((f"Status {p.process_type} {p.instance}", p.detail))
    return rows


register_property_commands(PS, report_rows=_report_rows)

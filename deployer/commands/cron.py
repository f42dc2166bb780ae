"""`cron:*`: an app's scheduled commands from app.json (Dokku's names and shapes)."""

from __future__ import annotations

from deployer import containers as docker_ops
from deployer import cron
from deployer.commands.common import command, current_or_fail, iso
from deployer.commands.common import releases as release_store
from deployer.deploy import ReleaseDeployer
from deployer.oneoff import OneOff
from dockyard.context import Context
from dockyard.registry import CommandParser


def _app_and_entries(ctx: Context, name: str, argv: list[str], with_id: bool = False):  # noqa: ANN202
    parser = CommandParser(name)
    parser.add_argument("app")
    if with_id:
        parser.add_argument("cron_id", metavar="ID")
    else:
        parser.add_format()
    args = parser.parse_args(argv)
    app = ctx.app(args.app)
    release = release_store(ctx).current(app)
    found = cron.entries(release.app_json) if release else []
    return args, app, found


@command("cron:list", "List an app's scheduled commands (app.json cron)", "APP [--format json]")
def cron_list(ctx: Context, argv: list[str]) -> None:
    args, app, found = _app_and_entries(ctx, "cron:list", argv)
    store = cron.CronStore(ctx.services.state)
    rows = []
    for entry in found:
        state = store.get(app, entry.id)
        rows.append({
            "id": entry.id, "schedule": entry.schedule.text, "command": entry.command,
            "suspended": state.suspended, "last-run": iso(state.last_started_at)
            if state.last_started_at else "", "last-status": state.last_status,
        })  # fmt: skip
    if args.format == "json":
        ctx.out.json(rows)
        return
    ctx.out.heading(f"{app.name} cron tasks")
    table = [["ID", "Schedule", "Suspended", "Last run", "Status", "Command"]]
    for r in rows:
        table.append([r["id"], r["schedule"], str(r["suspended"]).lower(), r["last-run"],
                      r["last-status"], r["command"]])  # fmt: skip
    ctx.out.table(table)


@command("cron:run", "Run one scheduled command now, attached", "APP ID")
def cron_run(ctx: Context, argv: list[str]) -> int:
    args, app, _ = _app_and_entries(ctx, "cron:run", argv, with_id=True)
    release = current_or_fail(ctx, app)
    entry = cron.find(release.app_json, args.cron_id, app)
    spec = ReleaseDeployer(ctx.services, app, ctx.out).spec(
        release, docker_ops.ONE_OFF_PROCESS, f"cron-{entry.id}"
    )
    spec.environment["DYNO"] = f"cron.{entry.id}"
    argv_ = docker_ops.container_command(release.image, entry.command) or []
    name = f"{app.name}.cron.{entry.id}.manual"
    ctx.event("cron:run", app.name, entry.id)
    return OneOff(spec, name, argv_, tty=ctx.interactive).run(
        ctx.stdin, ctx.stdout, ctx.stderr, ctx.cancelled
    )


def _suspend(ctx: Context, argv: list[str], name: str, suspended: bool) -> None:
    args, app, _ = _app_and_entries(ctx, name, argv, with_id=True)
    entry = cron.find(current_or_fail(ctx, app).app_json, args.cron_id, app)
    cron.CronStore(ctx.services.state).set_suspended(app, entry.id, suspended)
    ctx.out.step(f"{'Suspended' if suspended else 'Resumed'} cron task {entry.id} of {app.name}")
    ctx.event(name, app.name, entry.id)


@command("cron:suspend", "Stop scheduling one command until cron:resume", "APP ID")
def cron_suspend(ctx: Context, argv: list[str]) -> None:
    _suspend(ctx, argv, "cron:suspend", True)


@command("cron:resume", "Schedule a suspended command again", "APP ID")
def cron_resume(ctx: Context, argv: list[str]) -> None:
    _suspend(ctx, argv, "cron:resume", False)


@command("cron:report", "Show an app's cron tasks at a glance", "APP [--format json]")
def cron_report(ctx: Context, argv: list[str]) -> None:
    args, app, found = _app_and_entries(ctx, "cron:report", argv)
    store = cron.CronStore(ctx.services.state)
    suspended = [e.id for e in found if store.get(app, e.id).suspended]
    rows = [("Cron task count", len(found)), ("Cron suspended", suspended)]
    ctx.out.report(f"{app.name} cron information", rows, args.format)

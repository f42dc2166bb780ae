"""`X:set` and `X:report` for every property group, derived from its declarations.

One parser, one global-versus-app rule (`--global` stands where the app would and needs an
admin), one message shape (`Setting KEY to VALUE (APP)`; secrets are named, never shown),
one event (`X:set`, `KEY=VALUE` or just `KEY` for secrets) and one report shape (Dokku's
rows, `--format json`, `--FLAG` for a single value) for all of them.
"""

from __future__ import annotations

from collections.abc import Callable

from dockyard.apps import App
from dockyard.context import Context
from dockyard.errors import UsageError
from dockyard.output import plain_value, report_key
from dockyard.properties import Level, PropertyGroup
from dockyard.registry import CommandParser, command, split_global

ReportRow = tuple[str, object]
# Rows a group adds around its settings (a build's status, live processes); it receives the
# settings rows and returns the whole report.
ReportRows = Callable[[Context, App, list[ReportRow]], list[ReportRow]]
# Runs a state change the way the group must (the proxy renders and tests nginx around it).
Applier = Callable[[Context, Callable[[], None]], None]


def _apply_directly(ctx: Context, change: Callable[[], None]) -> None:
    change()


def register_property_commands(
    group: PropertyGroup,
    *,
    report_rows: ReportRows | None = None,
    apply: Applier = _apply_directly,
    with_set: bool = True,
    with_report: bool = True,
) -> None:
    names = ", ".join(sorted(group.properties))
    if with_set:
        command(
            f"{group.name}:set",
            f"Set a {group.name} setting ({names})",
            "[--global|APP] KEY [VALUE]",
        )(lambda ctx, argv: _set(group, apply, ctx, argv))
    if not with_report:
        return
    command(
        f"{group.name}:report",
        f"Show {group.name} settings",
        "[--global|APP] [--format json] [--FLAG]",
    )(lambda ctx, argv: _report(group, report_rows, ctx, argv))


def _set(group: PropertyGroup, apply: Applier, ctx: Context, argv: list[str]) -> None:
    is_global, argv = split_global(argv)
    parser = CommandParser(f"{group.name}:set")
    if not is_global:
        parser.add_argument("app", metavar="--global|APP")
    parser.add_argument("key", metavar="KEY", nargs="?")
    parser.add_argument("value", nargs="?", default="")
    args = parser.parse_args(argv)
    # Who may act on the target is settled before anything about the key is said.
    app = ctx.target(getattr(args, "app", None), is_global, f"change global {group.name} settings")
    if args.key is None:
        raise UsageError(f"Give a KEY ({', '.join(sorted(group.properties))}) and a VALUE")
    prop = group.find(args.key)
    prop.check_level(app)
    if prop.needs_admin(args.value):
        ctx.require_admin(f"set {group.name} {prop.name} to that value")
    stored: list[str] = []
    apply(ctx, lambda: stored.append(prop.set(ctx.services.properties, app, args.value)))
    change = prop.change(args.value, stored[0])
    ctx.out.step(f"{change} ({app.name if app else 'global'})")
    if prop.note:
        ctx.out.detail(prop.note)
    ctx.event(f"{group.name}:set", app.name if app else None, change)


def _report(
    group: PropertyGroup, report_rows: ReportRows | None, ctx: Context, argv: list[str]
) -> int:
    is_global, argv = split_global(argv)
    parser = CommandParser(f"{group.name}:report")
    if not is_global:
        parser.add_argument("app", metavar="--global|APP")
    parser.add_format()
    args, flags = parser.parse_known_args(argv)
    if len(flags) > 1 or any(not f.startswith("--") for f in flags):
        raise UsageError(f"unrecognized arguments: {' '.join(flags)}")
    store = ctx.services.properties
    if is_global:
        ctx.require_admin(f"read global {group.name} settings")
        rows: list[ReportRow] = [
            (prop.report_label, prop.shown(prop.local(store, None) or prop.default))
            for prop in group.properties.values()
            if Level.GLOBAL in prop.levels
        ]
        title = f"Global {group.name} information"
    else:
        app = ctx.app(args.app)
        rows = []
        for prop in group.properties.values():
            if Level.APP not in prop.levels:
                # Server-wide only (private hosts, registry names): the admin's business.
                if ctx.identity.is_admin:
                    rows.append((prop.report_label, prop.shown(prop.raw(store, None))))
                continue
            rows.append((prop.report_label, prop.shown(prop.raw(store, app))))
            if Level.GLOBAL in prop.levels:
                label = f"{group.title} global {prop.name.replace('-', ' ')}"
                rows.append((label, prop.shown(prop.local(store, None))))
        if report_rows is not None:
            rows = report_rows(ctx, app, rows)
        title = f"{app.name} {group.name} information"
    if flags:
        return _print_one(ctx, group, rows, flags[0][2:])
    ctx.out.report(title, rows, args.format)
    return 0


def _print_one(ctx: Context, group: PropertyGroup, rows: list[ReportRow], flag: str) -> int:
    """`X:report APP --KEY` prints just that value, with or without the group's prefix."""
    for label, value in rows:
        key = report_key(label)
        if flag in (key, key.removeprefix(f"{group.name}-")):
            ctx.out.line(plain_value(value))
            return 0
    raise UsageError(f"Unknown report flag --{flag}")

"""`checks:*`: deployment checks on and off, and when old containers retire."""

from __future__ import annotations

from deployer.commands.common import command, releases
from deployer.settings import CHECKS, CHECKS_DISABLED
from dockyard.apps import App
from dockyard.context import Context
from dockyard.property_commands import ReportRow, register_property_commands
from dockyard.registry import CommandParser


@command("checks:disable", "Skip deployment checks (deploys switch without waiting)", "APP")
def checks_disable(ctx: Context, argv: list[str]) -> None:
    _set_checks(ctx, argv, "checks:disable", "true")


@command("checks:enable", "Run deployment checks again", "APP")
def checks_enable(ctx: Context, argv: list[str]) -> None:
    _set_checks(ctx, argv, "checks:enable", "")


def _set_checks(ctx: Context, argv: list[str], name: str, value: str) -> None:
    parser = CommandParser(name)
    parser.add_argument("app")
    app = ctx.app(parser.parse_args(argv).app)
    CHECKS_DISABLED.set(ctx.services.properties, app, value)
    ctx.out.step(f"Zero downtime checks {'disabled' if value else 'enabled'} for {app.name}")
    ctx.event(name, app.name)


def _report_rows(ctx: Context, app: App, settings: list[ReportRow]) -> list[ReportRow]:
    current = releases(ctx).current(app)
    declared = sorted((current.app_json.get("healthchecks") or {}) if current else {})
    enabled = not CHECKS_DISABLED.get(ctx.services.properties, app)
    return [("Checks enabled", enabled), *settings, ("Checks declared for", declared)]


register_property_commands(CHECKS, report_rows=_report_rows)

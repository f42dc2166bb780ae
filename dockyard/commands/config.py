"""`config:*`: an app's environment, beside the store it changes (dockyard.config_vars).

A change to an app's config is a new release of the same image: the deployer answers
`dockyard.pipeline.redeploy`, which makes the change and switches with zero downtime, and
undoes the change if the switch fails. `--no-restart` only stores it.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import shlex

from dockyard.apps import App
from dockyard.context import Context
from dockyard.errors import UsageError
from dockyard.pipeline import redeploy
from dockyard.registry import CommandParser, command

EXPORT_FORMATS = ("exports", "envfile", "docker-args", "shell", "json", "json-list")


def _show_config(ctx: Context, argv: list[str], name: str) -> None:
    parser = CommandParser(name)
    parser.add_argument("--global", dest="global_", action="store_true")
    parser.add_argument("--merged", action="store_true")
    parser.add_argument("app", nargs="?")
    parser.add_format()
    args = parser.parse_args(argv)
    app = ctx.target(args.app, args.global_, "use --global")
    config = ctx.services.config
    values = config.effective(app) if args.merged and app else config.local(app)
    if args.format == "json":
        ctx.out.json(dict(sorted(values.items())))
        return
    ctx.out.heading(f"{app.name if app else 'global'} env vars")
    _print_pairs(ctx, values)


def _print_pairs(ctx: Context, values: dict[str, str]) -> None:
    width = max((len(k) for k in values), default=0) + 1
    for key in sorted(values):
        ctx.out.line(f"{(key + ':').ljust(width)}  {values[key]}")


@command("config", "Show an app's config vars", "[--global|APP]")
def config_(ctx: Context, argv: list[str]) -> None:
    _show_config(ctx, argv, "config")


@command("config:show", "Show an app's config vars", "[--global|APP] [--format json]")
def config_show(ctx: Context, argv: list[str]) -> None:
    _show_config(ctx, argv, "config:show")


@command("config:get", "Print one config var's raw value (exit 1 when unset)", "[--global|APP] KEY")
def config_get(ctx: Context, argv: list[str]) -> int:
    parser = CommandParser("config:get")
    parser.add_argument("--global", dest="global_", action="store_true")
    parser.add_argument("--quoted", action="store_true")
    parser.add_argument("words", nargs="+")
    args = parser.parse_args(argv)
    words = args.words
    if args.global_:
        if len(words) != 1:
            raise UsageError("usage: config:get --global KEY")
        app, key = ctx.target(None, True, "use --global"), words[0]
    else:
        if len(words) != 2:
            raise UsageError("usage: config:get APP KEY")
        app, key = ctx.target(words[0], False, "use --global"), words[1]
    value = ctx.services.config.local(app).get(key)
    if value is None:
        return 1
    ctx.out.line(shlex.quote(value) if args.quoted else value)
    return 0


@command(
    "config:set",
    "Set config vars (redeploys unless --no-restart)",
    "[--no-restart] [--encoded] [--global|APP] KEY=VALUE…",
)
def config_set(ctx: Context, argv: list[str]) -> None:
    args, app, words = _parse_config_change(ctx, "config:set", argv)
    if not words:
        raise UsageError("At least one env pair must be given")
    values = {}
    for word in words:
        key, sep, value = word.partition("=")
        if not sep or not key:
            raise UsageError(f"Invalid env pair {word.split('=')[0]!r}: expected KEY=VALUE")
        if args.encoded:
            try:
                value = base64.b64decode(value, validate=True).decode("utf-8")
            except (binascii.Error, UnicodeDecodeError):
                raise UsageError(f"The value of {key} is not valid base64") from None
        values[key] = value
    if app is None:
        ctx.services.config.set(None, values)
        _announce_set(ctx, values)
        ctx.event("config:set", None, " ".join(sorted(values)))
        return
    with ctx.services.hold(app) as app:

        def change() -> None:
            ctx.services.config.set(app, values)

        _announce_set(ctx, values)
        if args.no_restart:
            change()
        else:
            redeploy(ctx, app, f"Set {', '.join(sorted(values))} config vars", change)
    ctx.event("config:set", app.name, " ".join(sorted(values)))


def _parse_config_change(
    ctx: Context, name: str, argv: list[str]
) -> tuple[argparse.Namespace, App | None, list[str]]:
    """`[--no-restart] [--encoded] (--global | APP) WORD…` → (flags, app or None, words)."""
    parser = CommandParser(name)
    parser.add_argument("--global", dest="global_", action="store_true")
    parser.add_argument("--no-restart", action="store_true")
    if name == "config:set":
        parser.add_argument("--encoded", action="store_true")
    parser.add_argument("words", nargs="*")
    args = parser.parse_args(argv)
    words = list(args.words)
    app_name = None if args.global_ else (words.pop(0) if words else None)
    return args, ctx.target(app_name, args.global_, "use --global"), words


def _announce_set(ctx: Context, values: dict[str, str]) -> None:
    ctx.out.step("Setting config vars")
    width = max(len(k) for k in values) + 1
    for key in sorted(values):
        ctx.out.detail(f"{(key + ':').ljust(width)}  {values[key]}")


@command(
    "config:unset",
    "Unset config vars (redeploys unless --no-restart)",
    "[--no-restart] [--global|APP] KEY…",
)
def config_unset(ctx: Context, argv: list[str]) -> None:
    args, app, words = _parse_config_change(ctx, "config:unset", argv)
    if not words:
        raise UsageError("At least one key must be given")
    if app is None:
        for key in ctx.services.config.unset(None, words):
            ctx.out.step(f"Unsetting {key}")
        return
    with ctx.services.hold(app) as app:
        removed = sorted(set(words) & set(ctx.services.config.local(app)))


        def change() -> None:
            ctx.services.config.unset(app, words)

        for key in words:
            ctx.out.step(f"Unsetting {key}")
        if removed and not args.no_restart:
            redeploy(ctx, app, f"Unset {', '.join(removed)} config vars", change)
        else:
            change()
    ctx.event("config:unset", app.name, " ".join(removed))


@command(
    "config:export",
    "Print config vars for shells and tools",
    "[--format exports|envfile|docker-args|shell|json|json-list] [--merged] [--global|APP]",
)
def config_export(ctx: Context, argv: list[str]) -> None:
    parser = CommandParser("config:export")
    parser.add_argument("--global", dest="global_", action="store_true")
    parser.add_argument("--merged", action="store_true")
    parser.add_argument("--format", choices=EXPORT_FORMATS, default="exports")
    parser.add_argument("app", nargs="?")
    args = parser.parse_args(argv)
    app = ctx.target(args.app, args.global_, "use --global")
    config = ctx.services.config
    values = dict(
        sorted((config.effective(app) if args.merged and app else config.local(app)).items())
    )
    fmt = args.format
    if fmt == "json":
        ctx.out.json(values)
    elif fmt == "json-list":
        ctx.out.json([{"name": k, "value": v} for k, v in values.items()])
    elif fmt == "exports":
        for k, v in values.items():
            ctx.out.line(f"export {k}={shlex.quote(v)}")
    elif fmt == "envfile":
        for k, v in values.items():
            ctx.out.line(f"{k}={v}")
    elif fmt == "docker-args":
        ctx.out.line(" ".join(f"--env={k}={shlex.quote(v)}" for k, v in values.items()))
    else:  # shell
        ctx.out.line(" ".join(f"{k}={shlex.quote(v)}" for k, v in values.items()))



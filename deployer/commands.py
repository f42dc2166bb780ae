"""Commands over the deployer's data: `ps:*`, `config:*`, `releases*`, `run`, `logs`,
`checks:*`, `resource:*`. Those that redeploy hold the app lock around their work."""

from __future__ import annotations

import argparse
import base64
import binascii
import functools
import re
import secrets
import shlex
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import docker.errors
import structlog

from deployer import containers as docker_ops
from deployer.applogs import Follower, dyno_of, recent
from deployer.deploy import ReleaseDeployer
from deployer.oneoff import OneOff
from deployer.pipeline import deploy_source, release_and_switch
from deployer.releases import STATUS_SUCCEEDED, Release, ReleaseStore, effective_formation
from deployer.settings import (
    CHECKS_DISABLED,
    CPUS,
    MEMORY,
    RESTART_POLICY,
    WAIT_TO_RETIRE,
    DeploySettings,
)
from dockyard.access import Access, can_see
from dockyard.apps import App
from dockyard.errors import DockyardError, NotFound, UsageError
from dockyard.names import PROCESS_TYPE_RE
from dockyard.pipeline import current_source
from dockyard.registry import CommandParser, Context
from dockyard.registry import command as register_command

EXPORT_FORMATS = ("exports", "envfile", "docker-args", "shell", "json", "json-list")
MEMORY_RE = re.compile(r"^[0-9]+[bkmg]?$")
DEFAULT_LOG_LINES = 100

log = structlog.get_logger("dockyard.deployer")


def command(
    name: str, summary: str, usage: str = "", access: Access = Access.APP
) -> Callable[[Callable[[Context, list[str]], int | None]], Callable]:
    """`dockyard.registry.command`, with the engine's errors shown as a clear refusal
    instead of an internal error (the engine stopped, a name clash, a bad limit)."""

    def register(handler: Callable[[Context, list[str]], int | None]) -> Callable:
        @functools.wraps(handler)
        def guarded(ctx: Context, argv: list[str]) -> int | None:
            try:
                return handler(ctx, argv)
            except docker.errors.DockerException as exc:
                detail = getattr(exc, "explanation", None) or str(exc)
                raise DockyardError(f"{name} failed: Docker engine: {detail}") from None

        return register_command(name, summary, usage, access=access)(guarded)

    return register


def _iso(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


@contextmanager
def _locked(ctx: Context, app: App) -> Iterator[None]:
    with ctx.services.hold(app):
        yield


def _store(ctx: Context) -> ReleaseStore:
    return ReleaseStore(ctx.services.state)


def _current_or_fail(ctx: Context, app: App) -> Release:
    release = _store(ctx).current(app)
    if release is None:
        raise DockyardError(f"App {app.name} has not been deployed")
    return release


def redeploy_with_config(ctx: Context, app: App, description: str) -> None:
    """A config change is a new release of the same image, switched with zero downtime."""
    current = _store(ctx).current(app)
    if current is None:
        return
    ctx.out.step(f"Restarting app {app.name}")
    release = Release(
        version=0, image=current.image, image_id=current.image_id, revision=current.revision,
        description=description, config={}, formation=_store(ctx).formation(app),
        procfile=current.procfile, app_json=current.app_json, ports=current.ports,
        actor=ctx.identity.name,
    )  # fmt: skip
    release_and_switch(ctx.services, app, ctx.out, release, announce=False)


# ---------------------------------------------------------------------------- releases
@command("releases", "List an app's releases", "APP [--format json]")
def releases_list(ctx: Context, argv: list[str]) -> None:
    parser = CommandParser("releases")
    parser.add_argument("app")
    parser.add_format()
    args = parser.parse_args(argv)
    app = ctx.app(args.app)
    store = _store(ctx)
    current = store.current_version(app)
    rows = list(reversed(store.all(app)))
    if args.format == "json":
        ctx.out.json(
            [
                {
                    "version": r.name, "created_at": _iso(r.created_at), "image": r.image,
                    "revision": r.revision, "description": r.description, "status": r.status,
                    "actor": r.actor, "current": r.version == current,
                }
                for r in rows
            ]
        )  # fmt: skip
        return
    ctx.out.heading(f"{app.name} Releases")
    table = []
    for r in rows:
        marks = []
        if r.version == current:
            marks.append("(current)")
        if r.status != STATUS_SUCCEEDED:
            marks.append(f"({r.status})")
        table.append([r.name, r.description, r.actor, _iso(r.created_at), r.image, " ".join(marks)])
    ctx.out.table(table)


@command("releases:rollback", "Redeploy an earlier release, without building", "APP [vN]")
def releases_rollback(ctx: Context, argv: list[str]) -> None:
    parser = CommandParser("releases:rollback")
    parser.add_argument("app")
    parser.add_argument("version", nargs="?")
    args = parser.parse_args(argv)
    app = ctx.app(args.app)
    with _locked(ctx, app):
        store = _store(ctx)
        current = _current_or_fail(ctx, app)
        target = _rollback_target(store, app, current, args.version)
        try:
            docker_ops.client().images.get(target.image)
        except docker.errors.ImageNotFound:
            raise DockyardError(
                f"The image of {target.name} ({target.image}) was pruned; cannot roll back to it"
            ) from None
        ctx.out.step(f"Rolling back {app.name} to {target.name}")
        previous_config = ctx.services.config.local(app)
        _replace_local_config(ctx, app, target.config)
        release = Release(
            version=0, image=target.image, image_id=target.image_id, revision=target.revision,
            description=f"Rollback to {target.name}", config={}, formation=target.formation,
            procfile=target.procfile, app_json=target.app_json, ports=target.ports,
            actor=ctx.identity.name,
        )  # fmt: skip
        try:
            release_and_switch(ctx.services, app, ctx.out, release)
        except DockyardError:
            _replace_local_config(ctx, app, previous_config)
            raise
    ctx.event("releases:rollback", app.name, f"to {target.name} as {release.name}")


def _rollback_target(
    store: ReleaseStore, app: App, current: Release, wanted: str | None
) -> Release:
    good = [r for r in store.all(app) if r.status == STATUS_SUCCEEDED]
    if wanted:
        number = wanted[1:] if wanted.startswith("v") else wanted
        if not number.isdigit():
            raise UsageError(f"Invalid release {wanted!r}: expected vN")
        target = store.get(app, int(number))
        if target is None:
            raise NotFound(f"Release {wanted} of {app.name} does not exist")
        if target.status != STATUS_SUCCEEDED:
            raise DockyardError(f"Release {target.name} never deployed; cannot roll back to it")
        return target
    earlier = [r for r in good if r.version < current.version]
    if not earlier:
        raise DockyardError(f"{app.name} has no release before {current.name} to roll back to")
    return earlier[-1]


def _replace_local_config(ctx: Context, app: App, values: dict[str, str]) -> None:
    config = ctx.services.config
    with ctx.services.state.transaction():
        config.unset(app, [k for k in config.local(app) if k not in values])
        if values:
            config.set(app, values)


# ---------------------------------------------------------------------------- ps
@command("ps:scale", "Set how many containers of each process type run", "APP [TYPE=N…]")
def ps_scale(ctx: Context, argv: list[str]) -> None:
    parser = CommandParser("ps:scale")
    parser.add_argument("app")
    parser.add_argument("pairs", nargs="*")
    parser.add_format()
    args = parser.parse_args(argv)
    app = ctx.app(args.app)
    store = _store(ctx)
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
    with _locked(ctx, app):
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
        ReleaseDeployer(ctx.services, app, ctx.out).scale(
            current, {**store.formation(app), **wanted}
        )
    ctx.event("ps:scale", app.name, " ".join(f"{t}={q}" for t, q in wanted.items()))


def _parse_scale(pairs: list[str]) -> dict[str, int]:
    wanted = {}
    for pair in pairs:
        process_type, sep, quantity = pair.partition("=")
        if not sep or not PROCESS_TYPE_RE.fullmatch(process_type) or not quantity.isdigit():
            raise UsageError(f"Invalid scale argument {pair!r}: expected TYPE=N, like web=2")
        if process_type == "release":
            raise UsageError("The release process type runs once per deploy; it cannot scale")
        wanted[process_type] = int(quantity)
    return wanted


@command("ps:restart", "Restart an app's containers with zero downtime", "APP")
def ps_restart(ctx: Context, argv: list[str]) -> None:
    parser = CommandParser("ps:restart")
    parser.add_argument("app")
    app = ctx.app(parser.parse_args(argv).app)
    with _locked(ctx, app):
        release = _current_or_fail(ctx, app)
        release.formation = _store(ctx).formation(app)
        ReleaseDeployer(ctx.services, app, ctx.out).deploy(release)
    ctx.event("ps:restart", app.name)


@command("ps:stop", "Stop an app's containers", "APP")
def ps_stop(ctx: Context, argv: list[str]) -> None:
    parser = CommandParser("ps:stop")
    parser.add_argument("app")
    app = ctx.app(parser.parse_args(argv).app)
    with _locked(ctx, app):
        _current_or_fail(ctx, app)
        ctx.out.step(f"Stopping {app.name}")
        count = ReleaseDeployer(ctx.services, app, ctx.out).stop()
        ctx.out.detail(f"Stopped {count} container(s)")
    ctx.event("ps:stop", app.name)


@command("ps:start", "Start an app's stopped containers", "APP")
def ps_start(ctx: Context, argv: list[str]) -> None:
    parser = CommandParser("ps:start")
    parser.add_argument("app")
    app = ctx.app(parser.parse_args(argv).app)
    with _locked(ctx, app):
        _current_or_fail(ctx, app)
        ctx.out.step(f"Starting {app.name}")
        _store(ctx).set_running(app, True)
        for line in ReleaseDeployer(ctx.services, app, ctx.out).reconcile():
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
    apps = ctx.services.apps
    failed = []
    for app in apps.all():
        if ctx.cancelled.is_set():
            break  # the server is stopping: leave the rest for a later run
        if not can_see(ctx.identity, app.owner, apps.grants(app)):
            continue
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
    with _locked(ctx, app):
        source = current_source(ctx.services, app)
        if source is None:
            return False
        try:
            deploy_source(ctx, app, source)
        finally:
            source.close()
    return True


@command(
    "ps:report",
    "Show an app's process status",
    "APP [--format json] [--deployed|--running|--processes]",
)
def ps_report(ctx: Context, argv: list[str]) -> None:
    parser = CommandParser("ps:report")
    parser.add_argument("app")
    parser.add_format()
    for flag in ("deployed", "running", "processes", "restart-policy", "current-release"):
        parser.add_argument(f"--{flag}", action="store_true")
    args = parser.parse_args(argv)
    app = ctx.app(args.app)
    store = _store(ctx)
    current = store.current(app)
    live = ReleaseDeployer(ctx.services, app, ctx.out).live_containers()
    running = [c for c in live.values() if c.status == "running"]
    if not live:
        state = "false"
    elif len(running) == len(live):
        state = "true"
    else:
        state = "mixed" if running else "false"
    rows: list[tuple[str, object]] = [
        ("Deployed", current is not None),
        ("Current release", current.name if current else ""),
        ("Processes", len(running)),
        ("Running", state),
        ("Restart policy", DeploySettings(ctx.services.properties, app).restart_policy),
    ]
    for (t, n), c in sorted(live.items()):
        rows.append((f"Status {t} {n}", f"{c.status} (CID: {c.id[:12]})"))
    for flag in ("deployed", "running", "processes", "restart_policy", "current_release"):
        if getattr(args, flag):
            label = flag.replace("_", " ").capitalize()
            value = dict(rows)[label]
            ctx.out.line(str(value).lower() if isinstance(value, bool) else str(value))
            return
    ctx.out.report(f"{app.name} ps information", rows, args.format)


@command("ps:set", "Set a process option: restart-policy", "APP restart-policy VALUE")
def ps_set(ctx: Context, argv: list[str]) -> None:
    parser = CommandParser("ps:set")
    parser.add_argument("app")
    parser.add_argument("key", choices=("restart-policy",))
    parser.add_argument("value", nargs="?", default="")
    args = parser.parse_args(argv)
    app = ctx.app(args.app)
    if args.value:
        try:
            docker_ops.parse_restart_policy(args.value)
        except ValueError:
            raise UsageError(
                f"Invalid restart-policy {args.value!r}: use no, always, unless-stopped or "
                "on-failure[:N]"
            ) from None
    ctx.services.properties.set(app, RESTART_POLICY, args.value)
    ctx.out.step(f"{'Setting' if args.value else 'Unsetting'} restart-policy")
    ctx.out.detail("Applied at the next deploy or restart")


# ---------------------------------------------------------------------------- config
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
    with _locked(ctx, app):
        ctx.services.config.set(app, values)
        _announce_set(ctx, values)
        if not args.no_restart:
            redeploy_with_config(ctx, app, f"Set {', '.join(sorted(values))} config vars")
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
    with _locked(ctx, app):
        removed = ctx.services.config.unset(app, words)
        for key in words:
            ctx.out.step(f"Unsetting {key}")
        if removed and not args.no_restart:
            redeploy_with_config(ctx, app, f"Unset {', '.join(sorted(removed))} config vars")
    ctx.event("config:unset", app.name, " ".join(sorted(removed)))


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


# ---------------------------------------------------------------------------- run, logs
@command("run", "Run a one-off command in a new container of the current release", "APP CMD…")
def run(ctx: Context, argv: list[str]) -> int:
    if len(argv) < 2 or argv[0].startswith("-"):
        raise UsageError("usage: run APP CMD…")
    app = ctx.app(argv[0])
    release = _current_or_fail(ctx, app)
    deployer = ReleaseDeployer(ctx.services, app, ctx.out)
    number = _free_run_number(app)
    spec = deployer.spec(release, docker_ops.ONE_OFF_PROCESS, number)
    one_off = OneOff(spec, f"{app.name}.run.{number}", argv[1:], tty=ctx.interactive)
    ctx.event("run", app.name)
    return one_off.run(ctx.stdin, ctx.stdout, ctx.stderr, ctx.cancelled)


def _free_run_number(app: App) -> int:
    """A `run.N` name no other one-off of this app holds (they may run side by side)."""
    taken = {
        c.name
        for c in docker_ops.list_containers({"name": f"{app.name}.run."})
    }
    while True:
        number = secrets.randbelow(9000) + 1000
        if f"{app.name}.run.{number}" not in taken:
            return number


@command("logs", "Show an app's logs (-t follows)", "APP [-t] [-n N] [-p TYPE]")
def logs(ctx: Context, argv: list[str]) -> None:
    parser = CommandParser("logs")
    parser.add_argument("app")
    parser.add_argument("-t", "--tail", action="store_true")
    parser.add_argument("-n", "--num", type=int, default=DEFAULT_LOG_LINES)
    parser.add_argument("-p", "--ps", default=None)
    parser.add_argument("-q", "--quiet", action="store_true")
    args = parser.parse_args(argv)
    app = ctx.app(args.app)
    live = ReleaseDeployer(ctx.services, app, ctx.out).live_containers()
    chosen = [c for (t, _), c in sorted(live.items()) if args.ps in (None, t, dyno_of(c))]
    if not chosen:
        raise DockyardError(
            f"App {app.name} has no running containers" + (f" of type {args.ps}" if args.ps else "")
        )
    if args.tail:
        Follower(chosen, max(args.num, 0)).run(ctx.stdout, ctx.cancelled)
        return
    for line in recent(chosen, max(args.num, 0)):
        ctx.out.line(line)


# ---------------------------------------------------------------------------- checks
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
    ctx.services.properties.set(app, CHECKS_DISABLED, value)
    ctx.out.step(f"Zero downtime checks {'disabled' if value else 'enabled'} for {app.name}")


@command("checks:set", "Set a checks option: wait-to-retire SECONDS", "APP wait-to-retire SECONDS")
def checks_set(ctx: Context, argv: list[str]) -> None:
    parser = CommandParser("checks:set")
    parser.add_argument("app")
    parser.add_argument("key", choices=("wait-to-retire",))
    parser.add_argument("value", nargs="?", default="")
    args = parser.parse_args(argv)
    app = ctx.app(args.app)
    if args.value:
        try:
            if float(args.value) < 0:
                raise ValueError
        except ValueError:
            raise UsageError("wait-to-retire takes a number of seconds (0 or more)") from None
    ctx.services.properties.set(app, WAIT_TO_RETIRE, args.value)
    ctx.out.step(f"{'Setting' if args.value else 'Unsetting'} wait-to-retire")


@command("checks:report", "Show an app's deployment check settings", "APP [--format json]")
def checks_report(ctx: Context, argv: list[str]) -> None:
    parser = CommandParser("checks:report")
    parser.add_argument("app")
    parser.add_format()
    args = parser.parse_args(argv)
    app = ctx.app(args.app)
    settings = DeploySettings(ctx.services.properties, app)
    current = _store(ctx).current(app)
    declared = sorted((current.app_json.get("healthchecks") or {}) if current else {})
    rows = [
        ("Checks enabled", settings.checks_enabled),
        ("Checks wait to retire", _number(settings.wait_to_retire)),
        ("Checks declared for", declared),
    ]
    ctx.out.report(f"{app.name} checks information", rows, args.format)


def _number(value: float) -> str:
    return str(int(value)) if value == int(value) else str(value)


# ---------------------------------------------------------------------------- resource
@command(
    "resource:limit",
    "Limit an app's memory and CPU (applied at the next deploy or restart)",
    "APP [--memory SIZE] [--cpu CPUS]",
)
def resource_limit(ctx: Context, argv: list[str]) -> None:
    parser = CommandParser("resource:limit")
    parser.add_argument("app")
    parser.add_argument("--memory")
    parser.add_argument("--cpu")
    args = parser.parse_args(argv)
    app = ctx.app(args.app)
    props = ctx.services.properties
    if args.memory is not None:
        memory = args.memory.lower()
        if memory and not MEMORY_RE.fullmatch(memory):
            raise UsageError(f"Invalid memory limit {args.memory!r}: use a size like 512m or 1g")
        if memory.isdigit():
            memory += "m"  # a bare number means megabytes, as on Dokku
        props.set(app, MEMORY, memory)
    if args.cpu is not None:
        if args.cpu:
            try:
                if float(args.cpu) <= 0:
                    raise ValueError
            except ValueError:
                raise UsageError(f"Invalid cpu limit {args.cpu!r}: use a number like 1.5") from None
        props.set(app, CPUS, args.cpu)
    ctx.out.step(f"Setting resource limits for {app.name}")
    limits = DeploySettings(props, app).limits
    ctx.out.detail(f"memory: {limits.memory or 'unlimited'}")
    ctx.out.detail(f"cpu: {limits.cpus or 'unlimited'}")
    ctx.out.detail("Applied at the next deploy or restart")


@command("resource:limit-clear", "Remove an app's memory and CPU limits", "APP")
def resource_limit_clear(ctx: Context, argv: list[str]) -> None:
    parser = CommandParser("resource:limit-clear")
    parser.add_argument("app")
    app = ctx.app(parser.parse_args(argv).app)
    ctx.services.properties.set(app, MEMORY, None)
    ctx.services.properties.set(app, CPUS, None)
    ctx.out.step(f"Clearing resource limits for {app.name}")


@command("resource:report", "Show an app's resource limits", "APP [--format json]")
def resource_report(ctx: Context, argv: list[str]) -> None:
    parser = CommandParser("resource:report")
    parser.add_argument("app")
    parser.add_format()
    args = parser.parse_args(argv)
    app = ctx.app(args.app)
    limits = DeploySettings(ctx.services.properties, app).limits
    rows = [("Limit memory", limits.memory or ""), ("Limit cpu", limits.cpus or "")]
    ctx.out.report(f"{app.name} resource information", rows, args.format)

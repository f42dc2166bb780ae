"""`letsencrypt:*` in dokku-letsencrypt's shapes, plus `enable --all` and `set --global auto`.

`letsencrypt:set` is derived from the LETSENCRYPT property group and `letsencrypt:report`
loops over it: a new setting is one declaration there. Access: an app's commands need
access to the app (the one rule in dockyard.access); `--global`, `--all` and renewing every
app need an admin key, and so does any setting value declared admin-only.
"""

from __future__ import annotations

import dataclasses
import time
from datetime import UTC, datetime

from dockyard.access import Access
from dockyard.apps import App
from dockyard.context import Context
from dockyard.errors import DockyardError, UsageError
from dockyard.output import report_key
from dockyard.properties import Level
from dockyard.property_commands import register_property_commands
from dockyard.registry import CommandParser, command, split_global
from proxy import letsencrypt as le
from proxy.router import Router


def _app_arg(name: str) -> CommandParser:
    parser = CommandParser(name)
    parser.add_argument("app")
    return parser


# A non-admin may not order a certificate again for the same names within this time: CAs
# limit orders per account (shared by every app using the same email) and duplicate
# certificates per set of names (Let's Encrypt: 5 a week), and a loop of forced
# re-issues by one key would spend them for everyone.
REISSUE_COOLDOWN = 3600.0


def _check_cooldown(ctx: Context, app: App) -> None:
    if ctx.identity.is_admin:
        return
    st = le.LeStore(ctx.services).get(app)
    router = Router(ctx.services)
    if st is None or not st.issued_at or le.due_reason(router, app, st, datetime.now(UTC)):
        return
    age = time.time() - st.issued_at
    if age < REISSUE_COOLDOWN:
        raise DockyardError(
            f"{app.name} got its certificate {int(age // 60)} min ago and it covers all its "
            f"names; a new one is possible {int((REISSUE_COOLDOWN - age) // 60) + 1} min from "
            "now (CAs limit duplicate certificates), or ask an admin"
        )


def _enable_one(ctx: Context, app: App) -> None:
    _check_cooldown(ctx, app)
    ctx.out.heading(f"Enabling letsencrypt for {app.name}")
    router = Router(ctx.services)
    if router.route(app) is None:
        store = le.LeStore(ctx.services)
        st = store.get(app) or le.LeState(app_id=app.id)
        store.save(dataclasses.replace(st, enabled=True))
        ctx.out.step(
            f"{app.name} is not deployed yet: its certificate is requested after its next deploy"
        )
    else:
        le.issue(ctx.services, app, ctx.out, ctx.identity.name)
    ctx.event("letsencrypt:enable", app.name)


@command("letsencrypt:enable", "Get a Let's Encrypt certificate for all of an app's domains "
         "(again: a new one now)", "APP | --all")  # fmt: skip
def enable(ctx: Context, argv: list[str]) -> int:
    parser = CommandParser("letsencrypt:enable")
    parser.add_argument("app", nargs="?")
    parser.add_argument("--all", action="store_true")
    args = parser.parse_args(argv)
    if bool(args.app) == args.all:
        raise UsageError("Give an app name or --all")
    if not args.all:
        _enable_one(ctx, ctx.app(args.app))
        return 0
    ctx.require_admin("enable Let's Encrypt for every app")
    failed = []
    for app in ctx.services.apps.all():
        try:
            _enable_one(ctx, app)
        except DockyardError as exc:
            ctx.out.warn(exc.message)
            failed.append(app.name)
    if failed:
        raise le.LetsEncryptFailed(f"No certificate for: {' '.join(failed)}")
    return 0


@command("letsencrypt:disable", "Stop using Let's Encrypt for an app (its certificate is "
         "removed)", "APP")  # fmt: skip
def disable(ctx: Context, argv: list[str]) -> None:
    app = ctx.app(_app_arg("letsencrypt:disable").parse_args(argv).app)
    st = le.LeStore(ctx.services).get(app)
    if st is None or not st.enabled:
        raise DockyardError(f"Let's Encrypt is not enabled for {app.name}")
    ctx.out.step(f"Disabling letsencrypt for {app.name}")
    if le.disable(ctx.services, app):
        ctx.out.detail(f"Certificate removed; {app.name} is served over plain HTTP")
    ctx.event("letsencrypt:disable", app.name)


@command("letsencrypt:active", "Print whether an app serves a Let's Encrypt certificate",
         "APP")  # fmt: skip
def active(ctx: Context, argv: list[str]) -> None:
    app = ctx.app(_app_arg("letsencrypt:active").parse_args(argv).app)
    ctx.out.line("true" if _is_active(ctx, app) else "false")


def _is_active(ctx: Context, app: App) -> bool:
    st = le.LeStore(ctx.services).get(app)
    installed = Router(ctx.services).store.cert(app)
    return bool(st and st.enabled and installed and installed.fingerprint == st.fingerprint)


@command("letsencrypt:revoke", "Revoke an app's Let's Encrypt certificate and stop serving it",
         "APP")  # fmt: skip
def revoke(ctx: Context, argv: list[str]) -> None:
    app = ctx.app(_app_arg("letsencrypt:revoke").parse_args(argv).app)
    le.revoke(ctx.services, app, ctx.out, ctx.identity.name)


@command("letsencrypt:auto-renew", "Renew now the certificates that are due (all apps: admin)",
         "[APP] [--force]")  # fmt: skip
def auto_renew(ctx: Context, argv: list[str]) -> int:
    parser = CommandParser("letsencrypt:auto-renew")
    parser.add_argument("app", nargs="?")
    parser.add_argument("--force", action="store_true", help="renew even if not due")
    args = parser.parse_args(argv)
    if args.app:
        app = ctx.app(args.app)
        st = le.LeStore(ctx.services).get(app)
        if st is None or not st.enabled:
            raise DockyardError(f"Let's Encrypt is not enabled for {app.name}")
        if args.force:
            _check_cooldown(ctx, app)
        apps = [app]
    else:
        ctx.require_admin("renew the certificates of every app")
        apps = ctx.services.apps.all()
    renewed, failed = le.renew_due(
        ctx.services, ctx.out, ctx.identity.name, apps=apps, force=args.force
    )
    if not renewed and not failed:
        ctx.out.step("Nothing to renew: no certificate is due")
    if failed:
        raise le.LetsEncryptFailed(f"Renewal failed for: {' '.join(failed)}")
    return 0


@command("letsencrypt:cleanup", "Remove an app's stale Let's Encrypt leftovers", "APP")
def cleanup(ctx: Context, argv: list[str]) -> None:
    app = ctx.app(_app_arg("letsencrypt:cleanup").parse_args(argv).app)
    ctx.out.step(f"Cleaning up letsencrypt leftovers of {app.name}")
    store = le.LeStore(ctx.services)
    st = store.get(app)
    if st is not None and not st.enabled:
        store.forget(app)
        ctx.out.detail("Forgot the history of its disabled certificate")
    router = Router(ctx.services)
    slot = router.paths.certs_dir / router.cert_dir_name(app)
    for leftover in sorted(slot.glob("*.tmp")) if slot.is_dir() else []:
        leftover.unlink(missing_ok=True)
        ctx.out.detail(f"Removed {leftover.name}")
    removed = le.remove_stale_tokens(ctx.services)
    if removed:
        ctx.out.detail(f"Removed {removed} stale challenge token(s)")


def _list_row(ctx: Context, router: Router, app: App, st: le.LeState) -> dict[str, object]:
    now = datetime.now(UTC)
    end = le.parse_when(st.not_after)
    renew = le.renew_at(ctx.services, app, st)
    if not st.enabled:
        status = "disabled"
    elif st.failures:
        status = "failing"
    elif not st.fingerprint:
        status = "pending"
    elif le.due_reason(router, app, st, now):
        status = "due"
    else:
        status = "ok"
    return {
        "app": app.name,
        "domains": list(st.domains),
        "expires_at": st.not_after,
        "time_left": le.human_delta(end - now) if end else "",
        "renew_at": renew.isoformat() if renew else "",
        "last_renewal": le.when_text(st.issued_at),
        "renewals": st.renewals,
        "status": status,
        "failures": st.failures,
        "last_error": st.last_error,
        "next_attempt": le.when_text(st.next_attempt),
        "server": st.server,
    }


@command("letsencrypt:list", "List apps with Let's Encrypt: domains, expiry, last renewal",
         "[--format json]", access=Access.ANYONE)  # fmt: skip
def list_(ctx: Context, argv: list[str]) -> None:
    parser = CommandParser("letsencrypt:list")
    parser.add_format()
    args = parser.parse_args(argv)
    router = Router(ctx.services)
    store = le.LeStore(ctx.services)
    rows = []
    for app in ctx.visible_apps():  # any key may list; it sees the apps it may manage
        st = store.get(app)
        if st is not None:
            rows.append(_list_row(ctx, router, app, st))
    if args.format == "json":
        ctx.out.json(rows)
        return
    ctx.out.heading("Let's Encrypt certificates")
    table = [["App", "Domains", "Expires (UTC)", "Time left", "Last renewal (UTC)", "Status"]]
    for r in rows:
        table.append([
            str(r["app"]), " ".join(r["domains"]) or "-",  # type: ignore[arg-type]
            str(r["expires_at"])[:19].replace("T", " ") or "-", str(r["time_left"]) or "-",
            str(r["last_renewal"]) or "-", str(r["status"]),
        ])  # fmt: skip
    ctx.out.table(table)
    for r in rows:
        if r["last_error"]:
            ctx.out.warn(f"{r['app']}: {r['last_error']} (next attempt {r['next_attempt']} UTC)")


register_property_commands(le.LETSENCRYPT, with_report=False)


def _report_rows(ctx: Context, app: App) -> list[tuple[str, object]]:
    st = le.LeStore(ctx.services).get(app) or le.LeState(app_id=app.id)
    props = ctx.services.properties
    rows: list[tuple[str, object]] = [
        ("Letsencrypt active", _is_active(ctx, app)),
        ("Letsencrypt enabled", st.enabled),
        ("Letsencrypt domains", list(st.domains)),
        ("Letsencrypt expires at", st.not_after),
        ("Letsencrypt last renewal", le.when_text(st.issued_at)),
        ("Letsencrypt renewals", st.renewals),
        ("Letsencrypt failures", st.failures),
        ("Letsencrypt last error", st.last_error),
        ("Letsencrypt next attempt", le.when_text(st.next_attempt)),
    ]
    for s in le.LETSENCRYPT.properties.values():
        if Level.APP not in s.levels:
            continue
        computed = le.setting_value(ctx.services, app, s.name) or le.DEFAULT_TEXT.get(s.name, "")
        rows.append((f"Letsencrypt computed {s.name}", s.shown(computed)))
        rows.append((f"Letsencrypt global {s.name}", s.shown(s.local(props, None))))
        rows.append((f"Letsencrypt {s.name}", s.shown(s.local(props, app))))
    return rows


@command("letsencrypt:report", "Show Let's Encrypt state and settings",
         "[--global|APP] [--format json]")  # fmt: skip
def report(ctx: Context, argv: list[str]) -> None:
    is_global, argv = split_global(argv)
    parser = CommandParser("letsencrypt:report")
    parser.add_argument("app", nargs="?")
    parser.add_format()
    args = parser.parse_args(argv)
    if is_global:
        ctx.require_admin("read the global letsencrypt settings")
        props = ctx.services.properties
        rows: list[tuple[str, object]] = [
            (f"Letsencrypt global {s.name}", s.shown(s.local(props, None)))
            for s in le.LETSENCRYPT.properties.values()
        ]
        rows.append(("Letsencrypt check interval", le.check_interval()))
        ctx.out.report("Global letsencrypt information", rows, args.format)
        return
    apps = [ctx.app(args.app)] if args.app else ctx.visible_apps()
    if args.format == "json" and not args.app:
        ctx.out.json({a.name: {report_key(k): v for k, v in _report_rows(ctx, a)} for a in apps})
        return
    for app in apps:
        ctx.out.report(f"{app.name} letsencrypt information", _report_rows(ctx, app), args.format)

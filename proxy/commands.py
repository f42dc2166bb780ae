"""`domains:*`, `urls`, `certs:*` and `proxy:*`, in Dokku's shapes."""

from __future__ import annotations

from collections.abc import Callable

from dockyard.access import Access
from dockyard.apps import App
from dockyard.context import Context
from dockyard.errors import DockyardError, UsageError
from dockyard.property_commands import ReportRow, register_property_commands
from dockyard.registry import CommandParser, command
from proxy import certs, claims, letsencrypt
from proxy.properties import PROXY
from proxy.render import listen_address
from proxy.router import GLOBAL_DOMAIN, Router
from proxy.validate import check_domain


def _router(ctx: Context) -> Router:
    return Router(ctx.services)


def _app_and_domains(name: str) -> CommandParser:
    parser = CommandParser(name)
    parser.add_argument("app")
    parser.add_argument("domains", nargs="+", metavar="DOMAIN")
    return parser


def _checked_domains(ctx: Context, router: Router, app: App, domains: list[str]) -> list[str]:
    checked = list(dict.fromkeys(check_domain(d) for d in domains))
    claims.check_domains(router, app, checked, ctx.identity)
    return checked


def _set_domains(ctx: Context, router: Router, app: App, domains: list[str]) -> None:
    router.apply(lambda: router.store.set_domains(app, domains), app=app)
    ctx.event("domains", app.name, " ".join(domains))
    # Once the new names route (and answer HTTP-01): a Let's Encrypt app gets them covered.
    letsencrypt.after_domains_changed(ctx, app)


@command("domains:add", "Add domains to an app", "APP DOMAIN [DOMAIN…]")
def domains_add(ctx: Context, argv: list[str]) -> None:
    args = _app_and_domains("domains:add").parse_args(argv)
    app = ctx.app(args.app)
    router = _router(ctx)
    new = _checked_domains(ctx, router, app, args.domains)
    current = router.store.domains(app)
    _set_domains(ctx, router, app, current + [d for d in new if d not in current])
    for domain in new:
        ctx.out.step(f"Added {domain} to {app.name}")


@command("domains:remove", "Remove domains from an app", "APP DOMAIN [DOMAIN…]")
def domains_remove(ctx: Context, argv: list[str]) -> None:
    args = _app_and_domains("domains:remove").parse_args(argv)
    app = ctx.app(args.app)
    router = _router(ctx)
    gone = {check_domain(d) for d in args.domains}
    current = router.store.domains(app)
    _set_domains(ctx, router, app, [d for d in current if d not in gone])
    for domain in sorted(gone):
        if domain in current:
            ctx.out.step(f"Removed {domain} from {app.name}")
        else:
            ctx.out.warn(f"{domain} is not a domain of {app.name}")


@command("domains:set", "Replace an app's domains", "APP DOMAIN [DOMAIN…]")
def domains_set(ctx: Context, argv: list[str]) -> None:
    args = _app_and_domains("domains:set").parse_args(argv)
    app = ctx.app(args.app)
    router = _router(ctx)
    domains = _checked_domains(ctx, router, app, args.domains)
    _set_domains(ctx, router, app, domains)
    ctx.out.step(f"Set {' '.join(domains)} for {app.name}")


@command("domains:clear", "Remove all of an app's own domains", "APP")
def domains_clear(ctx: Context, argv: list[str]) -> None:
    parser = CommandParser("domains:clear")
    parser.add_argument("app")
    app = ctx.app(parser.parse_args(argv).app)
    router = _router(ctx)
    _set_domains(ctx, router, app, [])
    ctx.out.step(f"Cleared domains in {app.name}")


@command("domains:report", "Show an app's domains", "APP [--format json]")
def domains_report(ctx: Context, argv: list[str]) -> None:
    parser = CommandParser("domains:report")
    parser.add_argument("app")
    parser.add_format()
    args = parser.parse_args(argv)
    app = ctx.app(args.app)
    router = _router(ctx)
    rows: list[tuple[str, object]] = [
        ("Domains app enabled", True),
        ("Domains app vhosts", router.store.domains(app)),
        ("Domains default vhost", router.default_domain(app)),
        ("Domains global enabled", True),
        ("Domains global vhosts", [router.global_domain()]),
    ]
    ctx.out.report(f"{app.name} domains information", rows, args.format)


@command(
    "domains:set-global", "Set the global domain apps answer under (APP.DOMAIN)", "DOMAIN",
    access=Access.ADMIN,
)  # fmt: skip
def domains_set_global(ctx: Context, argv: list[str]) -> None:
    parser = CommandParser("domains:set-global")
    parser.add_argument("domain")
    domain = check_domain(parser.parse_args(argv).domain, allow_wildcard=False)
    router = _router(ctx)
    claims.check_global_domain(router, domain)
    router.apply(lambda: ctx.services.properties.set(None, GLOBAL_DOMAIN, domain))
    ctx.out.step(f"Set global domain to {domain}")
    ctx.event("domains:set-global", None, domain)


@command("urls", "Show the URLs an app answers at", "APP [--format json]")
def urls(ctx: Context, argv: list[str]) -> None:
    parser = CommandParser("urls")
    parser.add_argument("app")
    parser.add_format()
    args = parser.parse_args(argv)
    app = ctx.app(args.app)
    found = _router(ctx).urls(app)
    if args.format == "json":
        ctx.out.json(found)
        return
    for url in found:
        ctx.out.line(url)


# Certificates


@command(
    "certs:add", "Add a TLS certificate (CRT KEY files locally; over SSH a tar on stdin)",
    "APP [CRT KEY]",
)  # fmt: skip
def certs_add(ctx: Context, argv: list[str]) -> None:
    parser = CommandParser("certs:add")
    parser.add_argument("app")
    parser.add_argument("files", nargs="*", metavar="CRT KEY")
    args = parser.parse_args(argv)
    app = ctx.app(args.app)
    if args.files and len(args.files) != 2:
        raise UsageError("Give both CRT and KEY files, or neither and a tar on stdin")
    if args.files and not ctx.local:
        # Paths would name files on the server, not the client's: only the local CLI.
        raise UsageError(
            "Over SSH, send the certificate and key as a tar on stdin: "
            f"certs:add {app.name} < cert-key.tar"
        )
    if args.files:
        crt, key = certs.read_pem_file(args.files[0]), certs.read_pem_file(args.files[1])
    else:
        crt, key = certs.read_tar(ctx.stdin)
    bundle = certs.parse_bundle(crt, key)
    ctx.out.step(f"Adding SSL certificate to {app.name}")
    _router(ctx).install_certificate(app, bundle)
    ctx.out.detail(f"Subject: {bundle.info.subject}")
    ctx.out.detail(f"Expires: {bundle.info.not_after}")
    letsencrypt.after_manual_cert(ctx, app)
    ctx.event("certs:add", app.name, bundle.info.fingerprint)


@command("certs:remove", "Remove an app's TLS certificate", "APP")
def certs_remove(ctx: Context, argv: list[str]) -> None:
    parser = CommandParser("certs:remove")
    parser.add_argument("app")
    app = ctx.app(parser.parse_args(argv).app)
    router = _router(ctx)
    if router.store.cert(app) is None:
        raise DockyardError(f"{app.name} has no SSL certificate")
    ctx.out.step(f"Removing SSL certificate from {app.name}")
    router.apply(lambda: router.store.set_cert(app, None))
    certs.remove(router.paths.certs_dir, router.cert_dir_name(app))
    letsencrypt.after_manual_cert(ctx, app)
    ctx.event("certs:remove", app.name)


@command("certs:report", "Show an app's TLS certificate", "APP [--format json]")
def certs_report(ctx: Context, argv: list[str]) -> None:
    parser = CommandParser("certs:report")
    parser.add_argument("app")
    parser.add_format()
    args = parser.parse_args(argv)
    app = ctx.app(args.app)
    router = _router(ctx)
    info = router.store.cert(app)
    rows: list[tuple[str, object]] = [
        ("Ssl dir", str(router.paths.certs_dir / router.cert_dir_name(app))),
        ("Ssl enabled", info is not None),
        ("Ssl hostnames", info.hostnames if info else []),
        ("Ssl expires at", info.not_after if info else ""),
        ("Ssl issuer", info.issuer if info else ""),
        ("Ssl starts at", info.not_before if info else ""),
        ("Ssl subject", info.subject if info else ""),
        ("Ssl fingerprint", info.fingerprint if info else ""),
        ("Ssl verified", "self signed" if info and info.self_signed else ""),
    ]
    ctx.out.report(f"{app.name} ssl information", rows, args.format)


# proxy:*


@command("proxy:build-config", "Render and reload the proxy config", "APP | --all")
def build_config(ctx: Context, argv: list[str]) -> None:
    parser = CommandParser("proxy:build-config")
    parser.add_argument("app", nargs="?")
    parser.add_argument("--all", action="store_true")
    args = parser.parse_args(argv)
    if bool(args.app) == args.all:
        raise UsageError("Give an app name or --all")
    if args.all:
        ctx.require_admin("rebuild the config of all apps")
        ctx.out.step("Configuring all apps")
    else:
        ctx.out.step(f"Configuring {ctx.app(args.app).name}...")
    # The config is one whole, rendered from state; a rebuild for one app rebuilds all.
    _router(ctx).apply(force=True)


def _report_rows(ctx: Context, app: App, settings: list[ReportRow]) -> list[ReportRow]:
    router = _router(ctx)
    upstreams = router.store.upstreams(app)
    return [
        ("Proxy enabled", bool(upstreams)),
        ("Proxy type", "nginx"),
        ("Proxy upstreams", upstreams),
        ("Proxy urls", router.urls(app)),
        *settings,
        ("Proxy hsts header", hsts.header() if (hsts := router.hsts(app)) else ""),
        ("Proxy http listen", listen_address(router.http_listen())),
        ("Proxy https listen", listen_address(router.https_listen())),
        ("Proxy config", str(router.paths.conf)),
        ("Proxy nginx pid", router.master.pid() or ""),
    ]


def _apply(ctx: Context, change: Callable[[], None]) -> None:
    _router(ctx).apply(change)


register_property_commands(PROXY, report_rows=_report_rows, apply=_apply)

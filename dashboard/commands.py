"""`dashboard:*`: sign in, API tokens, revocation, the dashboard's certificate and settings.

- `dashboard:login` and `dashboard:token` act for the key that runs them; the local CLI has
  no key to act for, so they are refused there. The secret is printed once, to that key's
  own channel, and recorded nowhere but as a digest; events name the key, never the secret.
- `dashboard:logout-all`: an admin's ends every key's sessions, links and tokens; anyone
  else's ends its own.
- `dashboard:certs-add` / `dashboard:certs-remove` (admin): like `certs:add`, through
  `Router.apply` so nginx tests the pair before it serves it, and the old pair comes back if
  nginx refuses the new one.
- `dashboard:set --global` / `dashboard:report --global`: derived from the declared settings.
"""

from __future__ import annotations

import json
import time

from dashboard import site
from dashboard.auth import AuthStore
from dashboard.properties import DASHBOARD, LOGIN_TTL
from dockyard.access import Access
from dockyard.context import Context
from dockyard.errors import AccessDenied, DockyardError, UsageError
from dockyard.property_commands import register_property_commands
from dockyard.registry import CommandParser, command
from proxy import certs
from proxy.router import Router


def _for_a_key(ctx: Context, what: str) -> None:
    if ctx.local:
        raise UsageError(
            f"{what} acts for an SSH key; run it over SSH: ssh dockyard@HOST {ctx.command}"
        )
    if ctx.services.keys.get(ctx.identity.name).policy.from_patterns:
        # The dashboard cannot hold a browser to the addresses `from=` allows.
        raise AccessDenied(
            f"Key {ctx.identity.name} may log in only from some addresses (from=); "
            "such a key does not get dashboard sessions or tokens"
        )


@command("dashboard:login", "Print a one-time link that signs you in to the dashboard", "",
         access=Access.ANYONE)  # fmt: skip
def login(ctx: Context, argv: list[str]) -> None:
    CommandParser("dashboard:login").parse_args(argv)
    _for_a_key(ctx, "dashboard:login")
    secret, expires = AuthStore(ctx.services).issue_login(ctx.identity.name)
    ttl = LOGIN_TTL.get(ctx.services.properties, None)
    ctx.out.step(f"Sign-in link for {ctx.identity.name} (works once, within {ttl} s):")
    # The secret rides in the fragment, which browsers never send to a server or a log.
    ctx.out.line(f"{site.url(ctx.services)}/login#{secret}")
    until = time.strftime("%H:%M:%SZ", time.gmtime(expires))
    ctx.event("dashboard:login", None, f"link valid until {until}")


@command("dashboard:token", "Print a new read-only API token for the dashboard's JSON API",
         "", access=Access.ANYONE)  # fmt: skip
def token(ctx: Context, argv: list[str]) -> None:
    CommandParser("dashboard:token").parse_args(argv)
    _for_a_key(ctx, "dashboard:token")
    secret, expires = AuthStore(ctx.services).issue_token(ctx.identity.name)
    ctx.out.step(
        f"Read-only API token for {ctx.identity.name}, valid until "
        f"{time.strftime('%Y-%m-%d', time.gmtime(expires))} (send it as "
        "`Authorization: Bearer TOKEN`):"
    )
    ctx.out.line(secret)
    ctx.event("dashboard:token")


@command("dashboard:logout-all",
         "End dashboard sessions, sign-in links and API tokens (an admin's: everyone's)",
         "", access=Access.ANYONE)  # fmt: skip
def logout_all(ctx: Context, argv: list[str]) -> None:
    CommandParser("dashboard:logout-all").parse_args(argv)
    whose = None if ctx.identity.is_admin else ctx.identity.name
    counts = AuthStore(ctx.services).revoke_all(whose)
    ctx.out.step(
        f"Ended {counts['sessions']} session(s), {counts['logins']} sign-in link(s) and "
        f"{counts['tokens']} API token(s) of {'every key' if whose is None else whose}"
    )
    ctx.event("dashboard:logout-all", None, "every key" if whose is None else whose)


@command("dashboard:url", "Show where the dashboard answers", "[--format json]",
         access=Access.ANYONE)  # fmt: skip
def url(ctx: Context, argv: list[str]) -> None:
    parser = CommandParser("dashboard:url")
    parser.add_format()
    args = parser.parse_args(argv)
    found = site.url(ctx.services)
    if args.format == "json":
        ctx.out.json({"url": found, "certificate": site.cert_info(ctx.services)})
        return
    ctx.out.line(found)


@command("dashboard:certs-add",
         "Serve the dashboard over HTTPS with this certificate (CRT KEY locally; over SSH a "
         "tar on stdin)", "[CRT KEY]", access=Access.ADMIN)  # fmt: skip
def certs_add(ctx: Context, argv: list[str]) -> None:
    parser = CommandParser("dashboard:certs-add")
    parser.add_argument("files", nargs="*", metavar="CRT KEY")
    args = parser.parse_args(argv)
    if args.files and len(args.files) != 2:
        raise UsageError("Give both CRT and KEY files, or neither and a tar on stdin")
    if args.files and not ctx.local:
        raise UsageError("Over SSH, send the certificate and key as a tar on stdin: "
                         "dashboard:certs-add < cert-key.tar")  # fmt: skip
    if args.files:
        crt, key = certs.read_pem_file(args.files[0]), certs.read_pem_file(args.files[1])
    else:
        crt, key = certs.read_tar(ctx.stdin)
    bundle = certs.parse_bundle(crt, key)
    directory = site.dashboard_dir(ctx.services)
    directory.mkdir(mode=0o700, exist_ok=True)
    saved = certs.snapshot(directory, site.TLS_SLOT)
    facts = {"subject": bundle.info.subject, "issuer": bundle.info.issuer,
             "hostnames": bundle.info.hostnames, "not_after": bundle.info.not_after,
             "fingerprint": bundle.info.fingerprint}  # fmt: skip
    ctx.out.step("Adding SSL certificate to the dashboard")

    def change() -> None:
        certs.install(directory, site.TLS_SLOT, bundle)
        ctx.services.properties.set(None, site.CERT_KEY, json.dumps(facts))

    try:
        Router(ctx.services).apply(change, force=True)
    except BaseException:
        certs.restore(directory, site.TLS_SLOT, saved)
        raise
    host = site.host_name(ctx.services)
    if bundle.info.hostnames and not _covers(bundle.info.hostnames, host):
        ctx.out.warn(f"The certificate does not name {host}: browsers will refuse it")
    ctx.out.detail(f"Expires: {bundle.info.not_after}")
    ctx.out.detail(f"Dashboard: {site.url(ctx.services)}")
    ctx.event("dashboard:certs-add", None, bundle.info.fingerprint)


def _covers(names: list[str], host: str) -> bool:
    parent = host.partition(".")[2]
    return host in names or f"*.{parent}" in names


@command("dashboard:certs-remove", "Serve the dashboard over HTTP again", "",
         access=Access.ADMIN)  # fmt: skip
def certs_remove(ctx: Context, argv: list[str]) -> None:
    CommandParser("dashboard:certs-remove").parse_args(argv)
    if site.cert_info(ctx.services) is None:
        raise DockyardError("The dashboard has no SSL certificate")
    ctx.out.step("Removing the dashboard's SSL certificate")
    Router(ctx.services).apply(lambda: ctx.services.properties.set(None, site.CERT_KEY, None))
    certs.remove(site.dashboard_dir(ctx.services), site.TLS_SLOT)
    ctx.event("dashboard:certs-remove")


register_property_commands(DASHBOARD)

"""Let's Encrypt (or any ACME CA): a certificate for every name an app answers at, issued
through Dockyard's own nginx (HTTP-01) and renewed before it expires, by itself.

Invariants:
- Every setting is declared once, in the LETSENCRYPT property group below (name, levels,
  parser with its bounds, default, and which values need an admin key); `letsencrypt:set`
  is derived from it like every `X:set`, `letsencrypt:report` loops over it, and every
  read goes through `setting_value`.
- A non-admin key may point its apps only at the named ACME servers (production,
  staging). Any other directory URL, and `server-ca-file` (a path on the server, global
  only), need an admin key: a user can neither make the server fetch URLs of their choice
  nor have it read a file of their choice. ACME errors are reported as the CA's problem
  document or a network failure, never as a response body.
- A certificate is installed only once the CA issued it, it matches its fresh key and it
  names every requested host; installing goes through `Router.apply` (nginx -t, atomic
  swap, graceful reload). A failed issuance or renewal therefore leaves what served before
  serving (the working certificate, or plain HTTP) and is recorded: the error, an event,
  a back-off, `letsencrypt:list` and `doctor`.
- One issuance per app at a time, across threads and processes (an flock per app id).
- The background renewal runs its blocking ACME work through the bridge, wakes every
  CHECK_INTERVAL (±10 %), contacts the CA only for due apps, and backs a failing app off
  1, 2, 4 … 24 intervals (with jitter). Commands run by a user ignore the back-off.
- Due: fewer than `renew-days` left, or by default fewer than 30 days or a third of the
  lifetime, whichever is shorter; or the app answers at a name the certificate lacks.
"""

from __future__ import annotations

import asyncio
import dataclasses
import fcntl
import io
import ipaddress
import json
import os
import random
import re
import stat
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit

import structlog
from cryptography import x509

from dockyard import lifecycle, pipeline
from dockyard.apps import App
from dockyard.bridge import run_blocking
from dockyard.commands.doctor import Finding, register_check
from dockyard.context import Context
from dockyard.errors import DockyardError, UsageError
from dockyard.locks import AppBusy, app_lock
from dockyard.output import Output
from dockyard.properties import BOOLEAN, Level, PropertyGroup
from dockyard.services import Services
from dockyard.state import register_migrations
from proxy import acme_client, certs
from proxy.acme_client import AcmeError, Endpoint, Webroot
from proxy.router import Router
from proxy.validate import check_domain

log = structlog.get_logger("proxy.letsencrypt")

# ---------------------------------------------------------------- settings (the one table)

NAMED_SERVERS = {
    "production": "https://acme-v02.api.letsencrypt.org/directory",
    "staging": "https://acme-staging-v02.api.letsencrypt.org/directory",
}
MAX_URL = 512
MAX_EMAIL = 254
MAX_CA_FILE_BYTES = 1024 * 1024
MAX_RENEW_DAYS = 3650
URL_PATH_RE = re.compile(r"^[A-Za-z0-9._~/%-]*$")
EMAIL_LOCAL_RE = re.compile(r"^[A-Za-z0-9._%+-]{1,64}$")
PATH_RE = re.compile(r"^/[A-Za-z0-9._/-]{1,255}$")


def parse_email(value: str) -> str:
    local, at, domain = value.rpartition("@")
    # check_domain forgives surrounding whitespace; an address must not carry any.
    plain = value.isascii() and value.isprintable() and not any(c.isspace() for c in value)
    if len(value) > MAX_EMAIL or not plain or not at or not EMAIL_LOCAL_RE.fullmatch(local):
        raise UsageError(f"Invalid email {value!r}: expected name@example.com")
    try:
        domain = check_domain(domain, allow_wildcard=False)
    except UsageError:
        raise UsageError(f"Invalid email {value!r}: expected name@example.com") from None
    if "." not in domain:
        raise UsageError(f"Invalid email {value!r}: the domain needs a dot")
    return f"{local}@{domain}"


def parse_server(value: str) -> str:
    """A named server, or an https:// ACME directory URL with nothing unusual in it."""
    if value in NAMED_SERVERS:
        return value
    problem = "use production, staging or an https:// ACME directory URL"
    if len(value) > MAX_URL or not value.isascii() or not value.isprintable():
        raise UsageError(f"Invalid server: {problem}")
    try:
        url = urlsplit(value)
        port = url.port
    except ValueError:
        raise UsageError(f"Invalid server {value!r}: {problem}") from None
    if url.scheme != "https" or not url.hostname:
        raise UsageError(f"Invalid server {value!r}: {problem}")
    if url.username or url.password:
        raise UsageError(f"Invalid server {value!r}: {problem}, without a user or password")
    if url.query or url.fragment or not URL_PATH_RE.fullmatch(url.path):
        raise UsageError(f"Invalid server {value!r}: {problem} (no query or fragment)")
    try:
        ip = ipaddress.ip_address(url.hostname)
        host = f"[{ip}]" if ip.version == 6 else str(ip)
    except ValueError:
        host = check_domain(url.hostname, allow_wildcard=False)
    netloc = host if port is None else f"{host}:{port}"
    return f"https://{netloc}{url.path or '/'}"


def parse_ca_file(value: str) -> str:
    """An absolute path to a readable PEM bundle holding at least one certificate."""
    if not PATH_RE.fullmatch(value) or "/../" in value + "/" or "/./" in value + "/":
        raise UsageError(
            f"Invalid server-ca-file {value!r}: use an absolute path of letters, digits, "
            "'.', '_', '-' and '/'"
        )
    try:
        st = os.stat(value)
        if not stat.S_ISREG(st.st_mode):
            raise UsageError(f"server-ca-file {value} is not a regular file")
        if st.st_size > MAX_CA_FILE_BYTES:
            raise UsageError(f"server-ca-file {value} is larger than {MAX_CA_FILE_BYTES} bytes")
        data = Path(value).read_bytes()
    except OSError as exc:
        raise UsageError(f"Cannot read server-ca-file {value}: {exc.strerror}") from None
    try:
        x509.load_pem_x509_certificates(data)
    except ValueError:
        # Never echo the content: it is a file on the server.
        raise UsageError(f"server-ca-file {value} holds no PEM certificate") from None
    return value


def parse_renew_days(value: str) -> str:
    if not value.isascii() or not value.isdigit() or not 1 <= int(value) <= MAX_RENEW_DAYS:
        raise UsageError(f"Invalid renew-days {value!r}: a whole number from 1 to {MAX_RENEW_DAYS}")
    return str(int(value))


def _custom_server(value: str) -> bool:
    return value not in NAMED_SERVERS


LETSENCRYPT = PropertyGroup("letsencrypt")
EMAIL = LETSENCRYPT.declare(
    "email", parse_email, help="contact address for the ACME account (expiry notices)"
)
SERVER = LETSENCRYPT.declare(
    "server", parse_server, default="production", admin_only=_custom_server,
    help="production, staging, or an https:// ACME directory URL (URLs: admin only)",
)  # fmt: skip
SERVER_CA_FILE = LETSENCRYPT.declare(
    "server-ca-file", parse_ca_file, levels=Level.GLOBAL, admin_only=lambda v: True,
    help="CA bundle on the server to trust for the global server (admin only)",
)  # fmt: skip
RENEW_DAYS = LETSENCRYPT.declare(
    "renew-days", parse_renew_days,
    help=f"renew when fewer days are left (1-{MAX_RENEW_DAYS}; unset: 30, or a third of "
    "the lifetime if shorter)",
)  # fmt: skip
AUTO = LETSENCRYPT.declare(
    "auto", BOOLEAN, lambda v: v == "true", default="false",
    help="true: an app without a certificate gets one on its next deploy",
)  # fmt: skip
# What an unset value means, for reports, when the default is a rule rather than a value.
DEFAULT_TEXT = {RENEW_DAYS.name: "30, or a third of a shorter lifetime"}


def setting_value(services: Services, app: App | None, name: str) -> str:
    """The value in force for `app` (its own, else the global one, else the default); for
    a global-only setting, always the global one."""
    prop = LETSENCRYPT.find(name)
    return prop.raw(services.properties, app if Level.APP in prop.levels else None)


# ---------------------------------------------------------------- state

register_migrations(
    "letsencrypt",
    [
        """CREATE TABLE letsencrypt (
            app_id INTEGER PRIMARY KEY REFERENCES apps(id) ON DELETE CASCADE,
            enabled INTEGER NOT NULL DEFAULT 0,
            server TEXT NOT NULL DEFAULT '',
            account TEXT NOT NULL DEFAULT '',
            domains TEXT NOT NULL DEFAULT '[]',
            fingerprint TEXT NOT NULL DEFAULT '',
            not_before TEXT NOT NULL DEFAULT '',
            not_after TEXT NOT NULL DEFAULT '',
            issued_at REAL NOT NULL DEFAULT 0,
            renewals INTEGER NOT NULL DEFAULT 0,
            last_attempt REAL NOT NULL DEFAULT 0,
            failures INTEGER NOT NULL DEFAULT 0,
            last_error TEXT NOT NULL DEFAULT '',
            next_attempt REAL NOT NULL DEFAULT 0
        )""",
    ],
)


@dataclass(frozen=True)
class LeState:
    """What Dockyard knows of an app's Let's Encrypt certificate and its renewals."""

    app_id: int
    enabled: bool = False
    server: str = ""  # the directory URL the current certificate came from
    account: str = ""
    domains: tuple[str, ...] = ()
    fingerprint: str = ""
    not_before: str = ""
    not_after: str = ""
    issued_at: float = 0.0  # the last successful issuance (first one or renewal)
    renewals: int = 0
    last_attempt: float = 0.0
    failures: int = 0  # consecutive
    last_error: str = ""
    next_attempt: float = 0.0  # the background renewal waits until then after a failure


class LeStore:
    def __init__(self, services: Services) -> None:
        self.state = services.state

    def get(self, app: App) -> LeState | None:
        row = self.state.query_one("SELECT * FROM letsencrypt WHERE app_id = ?", (app.id,))
        if row is None:
            return None
        values = dict(row)
        values["enabled"] = bool(values["enabled"])
        values["domains"] = tuple(json.loads(values["domains"]))
        return LeState(**values)

    def save(self, st: LeState) -> None:
        values = dataclasses.asdict(st)
        values["enabled"] = int(st.enabled)
        values["domains"] = json.dumps(list(st.domains))
        columns = ", ".join(values)
        marks = ", ".join("?" for _ in values)
        with self.state.transaction() as conn:
            conn.execute(
                f"INSERT OR REPLACE INTO letsencrypt ({columns}) VALUES ({marks})",  # noqa: S608
                list(values.values()),
            )

    def forget(self, app: App) -> None:
        with self.state.transaction() as conn:
            conn.execute("DELETE FROM letsencrypt WHERE app_id = ?", (app.id,))


# ---------------------------------------------------------------- timing

ENV_CHECK_INTERVAL = "DOCKYARD_LETSENCRYPT_INTERVAL"
DEFAULT_CHECK_INTERVAL = 3600.0
MIN_CHECK_INTERVAL, MAX_CHECK_INTERVAL = 0.2, 86400.0
MAX_BACKOFF_INTERVALS = 24
DEFAULT_RENEW_WINDOW = timedelta(days=30)
EXPIRY_WARNING = timedelta(days=7)
STALE_TOKEN_AGE = 3600.0


def check_interval() -> float:
    """Seconds between renewal checks (an environment knob, for tests and operators)."""
    try:
        value = float(os.environ.get(ENV_CHECK_INTERVAL, DEFAULT_CHECK_INTERVAL))
    except ValueError:
        return DEFAULT_CHECK_INTERVAL
    return min(max(value, MIN_CHECK_INTERVAL), MAX_CHECK_INTERVAL)


def backoff(failures: int, interval: float) -> float:
    """Seconds to wait after the n-th consecutive failure: 1, 2, 4 … 24 intervals, plus up
    to a quarter more so that many servers (or apps) do not retry in step."""
    steps = min(2 ** max(failures - 1, 0), MAX_BACKOFF_INTERVALS)
    return interval * steps * random.uniform(1.0, 1.25)  # noqa: S311 (jitter, not crypto)


def parse_when(iso: str) -> datetime | None:
    try:
        return datetime.fromisoformat(iso) if iso else None
    except ValueError:
        return None


def renew_window(services: Services, app: App, st: LeState) -> timedelta:
    days = setting_value(services, app, "renew-days")
    if days:
        return timedelta(days=int(days))
    start, end = parse_when(st.not_before), parse_when(st.not_after)
    lifetime = (end - start) if start and end else DEFAULT_RENEW_WINDOW * 3
    return min(DEFAULT_RENEW_WINDOW, lifetime / 3)


def renew_at(services: Services, app: App, st: LeState) -> datetime | None:
    end = parse_when(st.not_after)
    return end - renew_window(services, app, st) if end else None


def due_reason(router: Router, app: App, st: LeState | None, now: datetime) -> str | None:
    """Why `app` needs a (new) certificate now, or None."""
    if st is None or not st.enabled:
        return None
    installed = router.store.cert(app)
    if not st.fingerprint or installed is None or installed.fingerprint != st.fingerprint:
        return "no certificate yet"
    missing = [n for n in router.server_names(app) if n not in st.domains]
    if missing:
        return f"not yet covering {' '.join(missing)}"
    when = renew_at(router.services, app, st)
    if when is not None and now >= when:
        return f"expires {st.not_after[:19].replace('T', ' ')} UTC"
    return None


def human_delta(delta: timedelta) -> str:
    seconds = int(delta.total_seconds())
    sign = "-" if seconds < 0 else ""
    seconds = abs(seconds)
    days, rest = divmod(seconds, 86400)
    if days:
        return f"{sign}{days}d {rest // 3600}h"
    return f"{sign}{rest // 3600}h {rest % 3600 // 60}m"


def when_text(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S") if ts else ""


# ---------------------------------------------------------------- issuing


class LetsEncryptFailed(DockyardError):
    """Issuance or renewal failed; what served before keeps serving."""


def accounts_dir(services: Services) -> Path:
    return services.settings.letsencrypt_dir / "accounts"


def endpoint_for(services: Services, app: App | None, server: str | None = None) -> Endpoint:
    """The directory an app uses (or `server`, a stored URL) and the CA bundle to trust
    for it: server-ca-file applies to the global server only, so an app switched to a named
    server by its owner is checked against the system's CAs."""
    chosen = parse_server(server or setting_value(services, app, "server"))
    url = NAMED_SERVERS.get(chosen, chosen)
    global_server = parse_server(setting_value(services, None, "server"))
    ca_file = setting_value(services, None, "server-ca-file")
    trusted = ca_file and NAMED_SERVERS.get(global_server, global_server) == url
    return Endpoint(directory_url=url, ca_bundle=Path(ca_file) if trusted else None)


def server_label(endpoint: Endpoint) -> str:
    named = {v: k for k, v in NAMED_SERVERS.items()}
    return named.get(endpoint.directory_url, endpoint.directory_url)


@contextmanager
def issuance_lock(services: Services, app: App) -> Iterator[None]:
    """One order per app at a time: flock conflicts between open files, so this holds
    across threads of one process and across processes (server, local CLI)."""
    directory = services.settings.letsencrypt_dir / "locks"
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(directory / f"{app.id}.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _still_serving(router: Router, app: App) -> str:
    info = router.store.cert(app)
    if info is None:
        return f"{app.name} keeps serving plain HTTP"
    return f"{app.name} keeps its current certificate (expires {info.not_after[:19]} UTC)"


def issue(
    services: Services, app: App, out: Output, actor: str, if_due: bool = False,
    interval: float | None = None,
) -> LeState:
    """Order a certificate for every name `app` answers at and install it. Raises
    LetsEncryptFailed (after recording it) when anything fails; nothing changes then.
    With `if_due`, only if it is still due once the app's issuance lock is held (another
    thread or process may have just done it)."""
    router = Router(services)
    store = LeStore(services)
    with issuance_lock(services, app):
        names = router.server_names(app)
        current = store.get(app)
        if if_due and current is not None:
            if due_reason(router, app, current, datetime.now(UTC)) is None:
                out.step(f"{app.name} already has a current certificate (issued meanwhile)")
                return current
        st = current or LeState(app_id=app.id)
        st = dataclasses.replace(st, enabled=True, last_attempt=time.time())
        store.save(st)
        wildcards = [n for n in names if n.startswith("*.")]
        try:
            if wildcards:
                raise AcmeError(
                    f"HTTP-01 cannot prove wildcard names ({' '.join(wildcards)}): remove "
                    "them from the app or add a certificate with certs:add"
                )
            if router.route(app) is None:
                raise AcmeError(
                    f"{app.name} has no running web process, so nginx routes none of its "
                    "names yet; deploy it first (its certificate is then requested)"
                )
            endpoint = endpoint_for(services, app)
            out.step(f"Requesting a certificate for {app.name} from {server_label(endpoint)}")
            out.detail(f"Domains: {' '.join(names)}")
            account = acme_client.open_account(
                accounts_dir(services), endpoint, setting_value(services, app, "email")
            )
            issued = acme_client.issue(account, names, Webroot(router.paths.acme_challenge_dir))
            bundle = certs.parse_bundle(issued.chain_pem, issued.key_pem)
            missing = sorted(set(names) - set(bundle.info.hostnames))
            if missing:
                raise AcmeError(f"The issued certificate lacks {' '.join(missing)}")
            router.install_certificate(app, bundle)
        except (DockyardError, OSError) as exc:
            message = exc.message if isinstance(exc, DockyardError) else (
                f"{exc.strerror or exc} ({getattr(exc, 'filename', '') or 'no file'})"
            )
            failures = st.failures + 1
            wait = backoff(failures, interval or check_interval())
            st = dataclasses.replace(
                st, failures=failures, last_error=acme_client.clean(message, 600),
                next_attempt=time.time() + wait,
            )  # fmt: skip
            store.save(st)
            services.state.record_event(actor, "letsencrypt:failed", app.name, st.last_error)
            log.warning("certificate not issued", app=app.name, error=st.last_error)
            raise LetsEncryptFailed(
                f"No certificate for {app.name}: {message}\n"
                f"{_still_serving(router, app)}; Dockyard retries in the background "
                f"(letsencrypt:disable {app.name} stops that)"
            ) from None
        renewal = bool(st.fingerprint)
        st = dataclasses.replace(
            st, server=endpoint.directory_url, account=account.uri, domains=tuple(names),
            fingerprint=bundle.info.fingerprint, not_before=bundle.info.not_before,
            not_after=bundle.info.not_after, issued_at=time.time(),
            renewals=st.renewals + int(renewal), failures=0, last_error="", next_attempt=0.0,
        )  # fmt: skip
        store.save(st)
    kind = "letsencrypt:renew" if renewal else "letsencrypt:issue"
    services.state.record_event(actor, kind, app.name, f"{' '.join(names)} until {st.not_after}")
    out.step(f"Certificate installed for {app.name}")
    out.detail(f"Expires: {st.not_after}")
    return st


def _remove_cert(router: Router, app: App) -> None:
    router.apply(lambda: router.store.set_cert(app, None))
    certs.remove(router.paths.certs_dir, router.cert_dir_name(app))


def disable(services: Services, app: App, remove_cert: bool = True) -> bool:
    """Stop managing `app`'s certificate; with `remove_cert`, take ours off nginx (the app
    is then served over plain HTTP). Returns whether one was removed."""
    router = Router(services)
    store = LeStore(services)
    with issuance_lock(services, app):
        st = store.get(app)
        if st is None:
            return False
        installed = router.store.cert(app)
        ours = installed is not None and installed.fingerprint == st.fingerprint != ""
        if remove_cert and ours:
            _remove_cert(router, app)
        store.save(LeState(app_id=app.id, enabled=False, server=st.server, account=st.account,
                           renewals=st.renewals))  # fmt: skip
        return remove_cert and ours


def revoke(services: Services, app: App, out: Output, actor: str) -> None:
    router = Router(services)
    store = LeStore(services)
    with issuance_lock(services, app):
        st = store.get(app)
        installed = router.store.cert(app)
        if st is None or not st.fingerprint or installed is None:
            raise DockyardError(f"{app.name} has no Let's Encrypt certificate to revoke")
        if installed.fingerprint != st.fingerprint:
            raise DockyardError(
                f"The certificate of {app.name} was not issued by Let's Encrypt here "
                "(certs:add replaced it); nothing to revoke"
            )
        paths = router.cert_paths(app)
        chain, key = paths.crt.read_bytes(), paths.key.read_bytes()
        # At the server that issued it, whatever the app's setting says today.
        endpoint = endpoint_for(services, app, server=st.server)
        out.step(f"Revoking the certificate of {app.name} at {server_label(endpoint)}")
        if not acme_client.revoke(endpoint, chain, key):
            out.detail("It was already revoked")
        _remove_cert(router, app)
        store.save(LeState(app_id=app.id, enabled=False, server=st.server, account=st.account,
                           renewals=st.renewals))  # fmt: skip
    services.state.record_event(actor, "letsencrypt:revoke", app.name, st.fingerprint)
    out.step(f"Revoked; {app.name} is served over plain HTTP (letsencrypt:enable for a new one)")


def renew_due(
    services: Services, out: Output, actor: str, apps: list[App] | None = None,
    force: bool = False, background: bool = False,
) -> tuple[list[str], list[str]]:
    """Renew what is due (or, with `force`, every enabled app given). Returns (renewed,
    failed) app names. The background run honours each app's back-off; a user's does not."""
    router = Router(services)
    store = LeStore(services)
    renewed: list[str] = []
    failed: list[str] = []
    for app in apps if apps is not None else services.apps.all():
        st = store.get(app)
        if st is None or not st.enabled:
            continue
        reason = due_reason(router, app, st, datetime.now(UTC))
        if force and reason is None:
            reason = "forced"
        if reason is None:
            clear_resolved_failure(store, st)
            continue
        if background and (
            st.next_attempt > time.time() or router.route(app) is None or _deploying(services, app)
        ):
            continue
        out.step(f"Renewing {app.name}: {reason}")
        try:
            issue(services, app, out, actor, if_due=not force)
            renewed.append(app.name)
        except DockyardError as exc:
            out.warn(exc.message)
            failed.append(app.name)
    return renewed, failed


def _deploying(services: Services, app: App) -> bool:
    """A push or redeploy holds the app's lock: its own post-deploy hook will see to the
    certificate, and the background must not issue it between the switch and that hook."""
    try:
        with app_lock(services.settings.locks_dir, app.name, timeout=0):
            return False
    except AppBusy:
        return True


# ---------------------------------------------------------------- hooks


class _Discard(io.RawIOBase):
    def writable(self) -> bool:
        return True

    def write(self, data: object) -> int:  # type: ignore[override]
        return len(data)  # type: ignore[arg-type]


def quiet_output() -> Output:
    sink = _Discard()
    return Output(sink, sink)  # type: ignore[arg-type]


@lifecycle.in_background
async def renew_in_background(services: Services) -> None:
    interval = check_interval()
    # A first look soon after start (a server that was down may have missed renewals),
    # at a random moment so that many servers do not reach the CA together.
    await asyncio.sleep(random.uniform(0, min(interval, 300.0)))  # noqa: S311
    while True:
        try:
            renewed, failed = await run_blocking(
                renew_due, services, quiet_output(), "letsencrypt", background=True
            )
            if renewed or failed:
                log.info("certificate renewal", renewed=renewed, failed=failed)
        except Exception:
            log.exception("certificate renewal check failed")
        await asyncio.sleep(interval * random.uniform(0.9, 1.1))  # noqa: S311


@pipeline.register_post_deploy
def after_deploy(ctx: Context, app: App) -> None:
    """A certificate for an app that has none yet: one enabled before its first deploy, or
    any app once `auto` is true (an app whose owner disabled Let's Encrypt, or that has a
    certificate from certs:add, is left alone)."""
    services = ctx.services
    router = Router(services)
    if router.route(app) is None:
        return  # nothing routed (no web process): no name could answer HTTP-01
    st = LeStore(services).get(app)
    if st is None:
        if setting_value(services, app, "auto") != "true" or router.store.cert(app):
            return
        ctx.out.step(f"Let's Encrypt: auto is on, requesting a certificate for {app.name}")
    elif due_reason(router, app, st, datetime.now(UTC)) is None:
        return
    issue(services, app, ctx.out, ctx.identity.name, if_due=st is not None)


def clear_resolved_failure(store: LeStore, st: LeState) -> None:
    """A failure whose cause went away (the failing name was removed): not failing now."""
    if st.failures:
        store.save(dataclasses.replace(st, failures=0, last_error="", next_attempt=0.0))


def after_domains_changed(ctx: Context, app: App) -> None:
    """Called by domains:* once the new names route: reissue if the certificate lacks one.
    A failure is a warning: the domains did change, and the background retries."""
    services = ctx.services
    store = LeStore(services)
    st = store.get(app)
    router = Router(services)
    reason = due_reason(router, app, st, datetime.now(UTC))
    if reason is None and st is not None:
        clear_resolved_failure(store, st)
    if reason is None or router.route(app) is None:
        return
    ctx.out.step(f"Let's Encrypt is enabled for {app.name}: reissuing ({reason})")
    try:
        issue(services, app, ctx.out, ctx.identity.name, if_due=True)
    except DockyardError as exc:
        ctx.out.warn(exc.message)


def after_manual_cert(ctx: Context, app: App) -> None:
    """certs:add or certs:remove took over: Let's Encrypt stops managing the app, or its
    next renewal would overwrite the user's choice."""
    st = LeStore(ctx.services).get(app)
    if st is not None and st.enabled:
        disable(ctx.services, app, remove_cert=False)
        ctx.out.detail(f"Let's Encrypt disabled for {app.name} (letsencrypt:enable to return)")


@register_check
def check_renewals(services: Services) -> list[Finding]:
    router = Router(services)
    store = LeStore(services)
    found: list[Finding] = []
    now = datetime.now(UTC)
    enabled = 0
    for app in services.apps.all():
        st = store.get(app)
        if st is None or not st.enabled:
            continue
        enabled += 1
        end = parse_when(st.not_after)
        if st.failures:
            expiry = f"; the certificate expires {st.not_after[:19]} UTC" if end else ""
            found.append(Finding(
                "letsencrypt", False,
                f"{app.name}: {st.failures} failed attempt(s), the last at "
                f"{when_text(st.last_attempt)} UTC: {st.last_error}{expiry}",
                f"make sure {' '.join(router.server_names(app))} resolve here and port 80 "
                f"reaches Dockyard's nginx, then run letsencrypt:auto-renew {app.name}",
            ))  # fmt: skip
        elif end is not None and end - now < EXPIRY_WARNING:
            found.append(Finding(
                "letsencrypt", False, f"{app.name}: certificate expires {st.not_after[:19]} UTC",
                f"letsencrypt:auto-renew {app.name} --force",
            ))  # fmt: skip
    for private in [services.settings.letsencrypt_dir, *accounts_dir(services).glob("*/*.key")]:
        try:
            mode = private.stat().st_mode
        except OSError:
            continue
        if mode & 0o077:
            found.append(Finding("letsencrypt", False,
                                 f"{private} is open to others ({stat.filemode(mode)})",
                                 f"chmod go-rwx {private}"))  # fmt: skip
    ca_file = setting_value(services, None, "server-ca-file")
    if ca_file:
        try:
            parse_ca_file(ca_file)
        except UsageError as exc:
            found.append(Finding("letsencrypt", False, exc.message,
                                 "letsencrypt:set --global server-ca-file FILE"))  # fmt: skip
    if not found:
        found.append(Finding("letsencrypt", True, f"{enabled} app(s) with Let's Encrypt, "
                             "no renewal failing"))  # fmt: skip
    return found


def remove_stale_tokens(services: Services) -> int:
    return Webroot(Router(services).paths.acme_challenge_dir).remove_stale(STALE_TOKEN_AGE)

"""Routing changes, start to finish: change state, render, test, swap, and move traffic.

Each routed app has its own nginx file (`apps/APP.conf`) and, where the kernel can do it,
its own DNAT chain (proxy.dnat) behind one stable upstream address, its VIP. So:

- A routine change of an app's containers (deploy, scale, config change, restart) is one
  `iptables-restore` of that app's chain. nginx's text does not change and nginx is not
  reloaded: client keep-alive connections stay open. `publish` then waits DRAIN_SECONDS
  when containers left, after which no new request reaches them (render.py's upstream
  keep-alive limits bound how long a pooled connection lives).
- A change of what an app answers (domains, certificate, body size, its first or last
  route) rewrites that app's file only: tested alone by `nginx -t` on a small config
  around it, swapped in with a rename, then one reload. Reloads asked for together
  coalesce (nginx.Coalesced). Their cost does not grow with the number of apps.
- A global change (global domain, listen addresses, mode, proxy:set --global, certificates,
  renames) renders every app.

Invariants (what `Router.apply` promises): the state change and the routing happen
together or not at all; a refused config never replaces a good one, and the state change
that caused it is rolled back; changes to different apps never wait for each other
(per-app locks; a global change excludes them all); the server and a local CLI never
interleave (each lock is a thread lock plus an flock under nginx_dir).
"""

from __future__ import annotations

import fcntl
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import structlog

from dockyard.apps import App
from dockyard.services import Services
from dockyard.settings import parse_listen
from proxy import certs, dnat
from proxy.dnat import AppRules, Dnat, DnatError
from proxy.nginx import (
    Frontend,
    NginxError,
    NginxMaster,
    OwnNginx,
    SystemNginxFrontend,
    read_text,
)
from proxy.properties import (
    BODY_SIZE,
    HSTS,
    HSTS_INCLUDE_SUBDOMAINS,
    HSTS_MAX_AGE,
    HSTS_PRELOAD,
    MODE,
    MODE_SYSTEM,
    SYSTEM_CONF_DIR,
)
from proxy.render import (
    HTTP_DEFAULT_PORT,
    HTTPS_DEFAULT_PORT,
    AppRoute,
    CertPaths,
    Hsts,
    Listen,
    NginxPaths,
    listen_address,
    render_app_file,
)
from proxy.store import RouteStore

log = structlog.get_logger("proxy")

# Property keys (namespaced "proxy.").
GLOBAL_DOMAIN = "proxy.global-domain"
# Where `dockyard serve` listens, recorded at its start: a local CLI run does not get the
# server's --http-listen flags, yet must render the same listen directives.
HTTP_LISTEN = "proxy.http-listen"
HTTPS_LISTEN = "proxy.https-listen"

DEFAULT_GLOBAL_DOMAIN = "localhost"
SYSTEM_FILE_PREFIX = SystemNginxFrontend.PREFIX
SYSTEM_COMMON_FILE = SystemNginxFrontend.COMMON
LOCK_FILE = ".reload.lock"
APP_LOCKS_DIR = "locks"
# keepalive_time + keepalive_timeout of a stable upstream (render.py), and a margin for
# nginx's timers: after this long, no kept-alive connection opened before a switch is
# given a new request.
DRAIN_SECONDS = 0.4


class _SharedExclusive:
    """A readers-writer lock for threads: per-app changes share it, global ones own it."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._readers = 0
        self._writer = False

    @contextmanager
    def shared(self) -> Iterator[None]:
        with self._cond:
            while self._writer:
                self._cond.wait()
            self._readers += 1
        try:
            yield
        finally:
            with self._cond:
                self._readers -= 1
                self._cond.notify_all()

    @contextmanager
    def exclusive(self) -> Iterator[None]:
        with self._cond:
            while self._writer or self._readers:
                self._cond.wait()
            self._writer = True
        try:
            yield
        finally:
            with self._cond:
                self._writer = False
                self._cond.notify_all()


_global_locks: dict[Path, _SharedExclusive] = {}
# Per nginx dir: the watchdog's fingerprint the last time everything was in order.
_last_in_order: dict[Path, tuple[object, ...] | None] = {}
_app_locks: dict[tuple[Path, int], threading.Lock] = {}
_locks_guard = threading.Lock()


@contextmanager
def _flock(path: Path, mode: int) -> Iterator[None]:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, mode)
        yield
    finally:
        os.close(fd)


@contextmanager
def reload_lock(nginx_dir: Path, shared: bool = False) -> Iterator[None]:
    """Routing changes of this data dir: shared by per-app changes, exclusive for global
    ones; threads of this process first, then other processes (flock)."""
    nginx_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    with _locks_guard:
        rw = _global_locks.setdefault(nginx_dir, _SharedExclusive())
    with rw.shared() if shared else rw.exclusive():
        with _flock(nginx_dir / LOCK_FILE, fcntl.LOCK_SH if shared else fcntl.LOCK_EX):
            yield


@contextmanager
def app_lock(nginx_dir: Path, app_id: int) -> Iterator[None]:
    """One routing change of one app at a time (held inside the shared reload_lock)."""
    with _locks_guard:
        lock = _app_locks.setdefault((nginx_dir, app_id), threading.Lock())
    locks = nginx_dir / APP_LOCKS_DIR
    locks.mkdir(exist_ok=True, mode=0o700)
    with lock, _flock(locks / f"{app_id}.lock", fcntl.LOCK_EX):
        yield


def system_conf_path(conf_dir: Path, app: str) -> Path:
    """Where mode `system` keeps an app's server block in the system nginx's conf.d."""
    return conf_dir / f"{SYSTEM_FILE_PREFIX}{app}.conf"


def nginx_paths(services: Services) -> NginxPaths:
    return NginxPaths(prefix=services.settings.nginx_dir, user_root=os.geteuid() == 0)


def resolve_upstream(address: str) -> str:
    """`name:port` → `a.b.c.d:port` (the kernel forwards to addresses, not names); an
    address is returned as it is. Raises NginxError with nginx's own wording."""
    host, _, port = address.rpartition(":")
    if dnat.ipv4_target(address) is not None or host.startswith("["):
        return address
    try:
        found = socket.getaddrinfo(host, int(port), socket.AF_INET, socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        found = []
    if not found:
        raise NginxError(
            "nginx refused the new configuration; the previous one keeps serving:\n"
            f'host not found in upstream "{address}"'
        )
    return f"{found[0][4][0]}:{port}"


@dataclass(frozen=True)
class Plan:
    """How one app is routed: its file's text (None: not routed) and its DNAT rules."""

    text: str | None
    rules: AppRules | None
    route: AppRoute | None


class Router:
    def __init__(self, services: Services) -> None:
        self.services = services
        self.store = RouteStore(services.state)
        self.paths = nginx_paths(services)
        self.master = NginxMaster(self.paths)
        self.home = str(services.settings.data_dir)
        self.dnat = Dnat(self.home) if dnat.available() else None
        self.frontend = self._choose_frontend()

    def _choose_frontend(self) -> Frontend:
        if self.mode() == MODE_SYSTEM:
            return SystemNginxFrontend(self.system_conf_dir(), self.paths)
        return OwnNginx(self.paths)

    # Settings
    def mode(self) -> str:
        return MODE.get(self.services.properties, None)

    def system_conf_dir(self) -> Path:
        return Path(SYSTEM_CONF_DIR.get(self.services.properties, None))

    def global_domain(self) -> str:
        return (
            self.services.properties.get(None, GLOBAL_DOMAIN, DEFAULT_GLOBAL_DOMAIN)
            or DEFAULT_GLOBAL_DOMAIN
        )

    def default_domain(self, app: App) -> str:
        return f"{app.name}.{self.global_domain()}"

    def server_names(self, app: App) -> list[str]:
        names = [self.default_domain(app)]
        names += [d for d in self.store.domains(app) if d not in names]
        return names

    def body_size(self, app: App) -> str:
        return BODY_SIZE.get(self.services.properties, app)

    def hsts(self, app: App) -> Hsts | None:
        """What the app's HTTPS server says in Strict-Transport-Security (on by default)."""
        props = self.services.properties
        if not HSTS.get(props, app):
            return None
        return Hsts(
            max_age=HSTS_MAX_AGE.get(props, app),
            include_subdomains=HSTS_INCLUDE_SUBDOMAINS.get(props, app),
            preload=HSTS_PRELOAD.get(props, app),
        )

    def cert_dir_name(self, app: App) -> str:
        # Keyed by the app's id, not its name: a rename then never leaves nginx pointing
        # at a directory that moved.
        return str(app.id)

    def install_certificate(self, app: App, bundle: certs.CertBundle) -> None:
        """Files and state together, tested by nginx, or neither (certs:add, ACME)."""
        slot = self.cert_dir_name(app)
        saved = certs.snapshot(self.paths.certs_dir, slot)

        def change() -> None:
            certs.install(self.paths.certs_dir, slot, bundle)
            self.store.set_cert(app, bundle.info)

        try:
            self.apply(change, force=True)
        except BaseException:
            certs.restore(self.paths.certs_dir, slot, saved)
            raise

    def cert_paths(self, app: App) -> CertPaths:
        return certs.cert_paths(self.paths.certs_dir, self.cert_dir_name(app))

    # What is routed
    def rules(self, app: App, upstreams: list[str]) -> AppRules | None:
        """The app's DNAT rules for these upstreams, or None (no DNAT: routed the static
        way, upstreams written into its file)."""
        if self.dnat is None or not upstreams:
            return None
        vip = dnat.vip_for(self.home, app.id, upstreams)
        return AppRules.spread(vip, upstreams) if vip is not None else None

    def plan(self, app: App, listen: Listen | None = None) -> Plan:
        upstreams = self.store.upstreams(app)
        if not upstreams and not self.store.held(app):
            # Not routed: no server block, so the host falls to the default 404 server
            # instead of to any other app.
            return Plan(None, None, None)
        rules = self.rules(app, upstreams)  # held (no upstreams): none, the file says 502
        route = AppRoute(
            app=app.name,
            server_names=self.server_names(app),
            upstreams=rules.vip.slots() if rules else upstreams,
            client_max_body_size=self.body_size(app),
            cert=self.cert_paths(app) if self.store.cert(app) else None,
            # Every routed name answers HTTP-01, with or without a certificate.
            acme_root=self.paths.acme_root,
            hsts=self.hsts(app),
            stable=rules is not None,
        )
        text = render_app_file(route, listen or self.listen())
        return Plan(text, rules, route)

    def route(self, app: App) -> AppRoute | None:
        return self.plan(app).route

    def routes(self) -> list[AppRoute]:
        found = (self.route(app) for app in self.services.apps.all())
        return [r for r in found if r is not None]

    def http_listen(self) -> tuple[str, int]:
        stored = self.services.properties.get(None, HTTP_LISTEN)
        return parse_listen(stored) if stored else self.services.settings.http_listen

    def https_listen(self) -> tuple[str, int]:
        stored = self.services.properties.get(None, HTTPS_LISTEN)
        return parse_listen(stored) if stored else self.services.settings.https_listen

    def record_listen(self) -> None:
        settings = self.services.settings
        self.services.properties.set(None, HTTP_LISTEN, listen_address(settings.http_listen))
        self.services.properties.set(None, HTTPS_LISTEN, listen_address(settings.https_listen))

    def listen(self, routes: list[AppRoute] | None = None) -> Listen:
        if routes is None:
            tls = self.store.any_cert()
        else:
            tls = any(r.cert is not None for r in routes)
        return Listen(http=self.http_listen(), https=self.https_listen() if tls else None)

    def urls(self, app: App) -> list[str]:
        if self.store.cert(app):
            scheme, port, default = "https", self.https_listen()[1], HTTPS_DEFAULT_PORT
        else:
            scheme, port, default = "http", self.http_listen()[1], HTTP_DEFAULT_PORT
        suffix = "" if port == default else f":{port}"
        return [f"{scheme}://{name}{suffix}" for name in self.server_names(app)]

    def render(self) -> str:
        """The shared part: the main nginx.conf (own master) or the common file (system)."""
        return self.frontend.shared_text(self.listen())

    def resolve(self, upstreams: list[str]) -> list[str]:
        """Names to addresses where routes go through DNAT; as given otherwise (nginx
        resolves them when it loads the file)."""
        if self.dnat is None:
            return upstreams
        return list(dict.fromkeys(resolve_upstream(u) for u in upstreams))

    # Changes
    def apply(
        self, change: Callable[[], None] | None = None, force: bool = False,
        app: App | None = None,
    ) -> None:  # fmt: skip
        """Make `change` (state writes) and route accordingly, or neither. With `app`, the
        change concerns that app's routing only and nothing else is rendered; without, the
        whole configuration is. Without `force`, a change that leaves nginx's text as it
        is does not reload nginx."""
        if app is None:
            with reload_lock(self.paths.prefix):
                self._apply_global(change, force)
            return
        with reload_lock(self.paths.prefix, shared=True):
            with app_lock(self.paths.prefix, app.id):
                drain = self._apply_app(app, change, force)
        if drain:
            time.sleep(DRAIN_SECONDS)

    def _apply_app(self, app: App, change: Callable[[], None] | None, force: bool) -> bool:
        """One app's routing; returns whether containers left its routes (the caller then
        waits DRAIN_SECONDS before saying they no longer get requests)."""
        frontend = self.frontend
        path = frontend.app_file(app.name)
        tested: Path | None = None
        with self.services.state.transaction():
            before = self.plan(app)
            if change is not None:
                change()
            after = self.plan(app)
            text_changed = after.text != read_text(path) if after.text else path.exists()
            # Rules nginx will use exist before it reloads; rules nginx stops using go
            # after (an app's last route, a new VIP): no connection finds its VIP unmapped.
            moved = self.dnat is not None and after.rules != before.rules
            later = moved and before.rules is not None and (
                after.rules is None or after.rules.vip != before.rules.vip
            ) and (text_changed or force)
            try:
                if after.text is not None and (text_changed or force):
                    frontend.prepare()
                    tested = frontend.test_app(app.name, after.text)
                if moved and not later:
                    self._switch(app, after.rules, before.rules)
                elif later and after.rules is not None and before.rules is not None:
                    self.dnat.widen(app.id, after.rules, before.rules)  # type: ignore[union-attr]
            except BaseException:
                if tested is not None:
                    tested.unlink(missing_ok=True)
                raise
            if tested is not None:
                os.replace(tested, path)
            elif after.text is None:
                path.unlink(missing_ok=True)
        if text_changed or force:
            frontend.reload()
        if later:
            self._switch(app, after.rules, before.rules, widened=after.rules is not None)
        left = before.rules is not None and after.rules is not None and bool(
            before.rules.targets - after.rules.targets
        )
        return left and before.rules.vip == after.rules.vip  # type: ignore[union-attr]

    def _switch(
        self, app: App, new: AppRules | None, old: AppRules | None, widened: bool = False
    ) -> None:
        assert self.dnat is not None
        try:
            self.dnat.switch(app.id, new, old, widened)
        except DnatError as exc:
            # The kernel did not hold what state said (rules flushed, a crash between
            # state and kernel): put this home's whole table right, this app included.
            log.warning("dnat out of step with state; replacing this home's rules",
                        error=exc.message)  # fmt: skip
            wanted = self._all_rules()
            if new is not None:
                wanted[app.id] = new
            else:
                wanted.pop(app.id, None)
            self.dnat.replace_all(wanted, stale=[app.id])

    def _all_rules(self) -> dict[int, AppRules]:
        found = {}
        for other in self.services.apps.all():
            rules = self.rules(other, self.store.upstreams(other))
            if rules is not None:
                found[other.id] = rules
        return found

    def _apply_global(self, change: Callable[[], None] | None, force: bool) -> None:
        with self.services.state.transaction():
            old_rules = self._all_rules() if self.dnat is not None else {}
            if change is not None:
                change()
            self.frontend = self._choose_frontend()
            changed = self._install_everything(force, old_rules)
        if changed or force:
            self.frontend.reload()

    def _install_everything(self, force: bool, old_rules: dict[int, AppRules] | None) -> bool:
        """Render every app and the shared part; test what changed; move DNAT; swap.
        Returns whether nginx's text changed. Nothing is replaced if anything is refused.
        `old_rules` None: compare DNAT with the kernel itself."""
        frontend = self.frontend
        frontend.prepare()
        listen = self.listen()
        plans = {a: self.plan(a, listen) for a in self.services.apps.all()}
        wanted = {a.name: p.text for a, p in plans.items() if p.text is not None}
        present = frontend.app_files()
        tested: dict[str, Path] = {}
        changed = False
        try:
            for name, text in wanted.items():
                if force or text != read_text(frontend.app_file(name)):
                    tested[name] = frontend.test_app(name, text)
            rules = {a.id: p.rules for a, p in plans.items() if p.rules is not None}
            if self.dnat is not None:
                complete = True
                if old_rules is None:
                    old_rules, complete = self.dnat.installed()
                if rules != old_rules or not complete:
                    self.dnat.replace_all(rules, stale=old_rules)
            try:
                changed = frontend.install_main(self.render())
            except BaseException:
                if self.dnat is not None and rules != old_rules:
                    self.dnat.replace_all(old_rules, stale=rules)
                raise
        except BaseException:
            for tmp in tested.values():
                tmp.unlink(missing_ok=True)
            raise
        for name, tmp in tested.items():
            os.replace(tmp, frontend.app_file(name))
        for name, path in present.items():
            if name not in wanted:
                path.unlink(missing_ok=True)
                changed = True
        return changed or bool(tested)

    # Starting and watching our own master
    def is_serving(self) -> bool:
        """Is there an nginx that follows this data dir's routes right now?"""
        return self.frontend.is_serving()

    def start_or_adopt(self) -> int | None:
        """At server start: render from state, then adopt the running master (reloading it
        only if its configuration changed) or start one. Traffic of a running master is
        not touched when nothing changed: a Dockyard restart closes no connection."""
        self.record_listen()
        with reload_lock(self.paths.prefix):
            self.frontend = self._choose_frontend()
            return self.frontend.start(self._install_everything(False, None))

    def reconcile(self) -> None:
        """Watchdog step: files and DNAT rules equal to what state says (a local CLI's
        change, a flushed table), nginx alive. Rendering every app is skipped while nothing
        it reads has changed since the last step that found everything in order (state.db
        and its WAL, nginx's files, the kernel's rules of this home), so an idle server's
        watchdog costs the same with 1 app or 100."""
        with reload_lock(self.paths.prefix):
            self.frontend = self._choose_frontend()
            seen = self._fingerprint()
            if seen is not None and _last_in_order.get(self.paths.prefix) == seen:
                self.frontend.watch(False)
                return
            self.frontend.watch(self._install_everything(False, None))
            self._prune_certs()
            _last_in_order[self.paths.prefix] = self._fingerprint()

    def _fingerprint(self) -> tuple[object, ...] | None:
        """What the watchdog's rendering depends on, cheaply: sizes and times of the state
        files and nginx's files, and this home's rules as the kernel has them."""
        try:
            stats = []
            db = self.services.settings.state_db
            for path in (db, db.with_name(db.name + "-wal"), self.paths.conf, self.paths.apps_dir):
                st = path.stat() if path.exists() else None
                stats.append((st.st_mtime_ns, st.st_size) if st else None)
            files = sorted(
                (name, f.stat().st_mtime_ns) for name, f in self.frontend.app_files().items()
            )
            rules = self.dnat.installed() if self.dnat is not None else None
        except (OSError, DnatError):
            return None
        return (tuple(stats), tuple(files), repr(rules))

    def _prune_certs(self) -> None:
        """Certificate files of apps destroyed while this process did not see it happen."""
        keep = {self.cert_dir_name(a) for a in self.services.apps.all() if self.store.cert(a)}
        try:
            entries = list(self.paths.certs_dir.iterdir())
        except OSError:
            return
        for entry in entries:
            if entry.is_dir() and entry.name not in keep:
                certs.remove(self.paths.certs_dir, entry.name)

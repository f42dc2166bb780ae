"""Routing changes, start to finish: change state, render everything, `nginx -t`, swap, reload.

Every change goes through `Router.apply`, which holds a process-wide lock and an flock under
nginx_dir (so the server and a local CLI never interleave), makes the state change inside a
transaction, renders the complete configuration from state, and lets nginx test it before
anything is replaced. A refused config rolls the state change back and raises nginx's
message; the running config keeps serving.
"""

from __future__ import annotations

import fcntl
import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import structlog

from dockyard.apps import App
from dockyard.services import Services
from dockyard.settings import parse_listen
from proxy import certs
from proxy.nginx import NginxError, NginxMaster, SystemNginx
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
    render_main_config,
    render_server_block,
    render_upgrade_map,
)
from proxy.sites import site_routes
from proxy.store import RouteStore

log = structlog.get_logger("proxy")

# Property keys (namespaced "proxy.").
GLOBAL_DOMAIN = "proxy.global-domain"
# Where `dockyard serve` listens, recorded at its start: a local CLI run does not get the
# server's --http-listen flags, yet must render the same listen directives.
HTTP_LISTEN = "proxy.http-listen"
HTTPS_LISTEN = "proxy.https-listen"

DEFAULT_GLOBAL_DOMAIN = "localhost"
SYSTEM_FILE_PREFIX = "dockyard-"
# Outside the per-app pattern, so no app name can collide with it.
SYSTEM_COMMON_FILE = "dockyard.conf"
LOCK_FILE = ".reload.lock"

_process_lock = threading.Lock()


@contextmanager
def reload_lock(nginx_dir: Path) -> Iterator[None]:
    """One routing change at a time: threads of this process, then other processes."""
    with _process_lock:
        nginx_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(nginx_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)


def system_conf_path(conf_dir: Path, app: str) -> Path:
    """Where mode `system` keeps an app's server block in the system nginx's conf.d."""
    return conf_dir / f"{SYSTEM_FILE_PREFIX}{app}.conf"


def nginx_paths(services: Services) -> NginxPaths:
    return NginxPaths(prefix=services.settings.nginx_dir, user_root=os.geteuid() == 0)


class Router:
    def __init__(self, services: Services) -> None:
        self.services = services
        self.store = RouteStore(services.state)
        self.paths = nginx_paths(services)
        self.master = NginxMaster(self.paths)

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

    def cert_paths(self, app: App) -> CertPaths:
        return certs.cert_paths(self.paths.certs_dir, self.cert_dir_name(app))

    # What is routed
    def route(self, app: App) -> AppRoute | None:
        upstreams = self.store.upstreams(app)
        if not upstreams:
            # No live containers: no server block, so the host falls to the default 404
            # server instead of to any other app.
            return None
        return AppRoute(
            app=app.name,
            server_names=self.server_names(app),
            upstreams=upstreams,
            client_max_body_size=self.body_size(app),
            cert=self.cert_paths(app) if self.store.cert(app) else None,
            # Every routed name answers HTTP-01, with or without a certificate.
            acme_root=self.paths.acme_root,
            hsts=self.hsts(app),
        )

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

    def listen(self, routes: list[AppRoute]) -> Listen:
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
        # Sites (proxy/sites.py) first: the first server block naming a host wins.
        routes = [*site_routes(self.services), *self.routes()]
        return render_main_config(self.paths, routes, self.listen(routes))

    # Changes
    def apply(self, change: Callable[[], None] | None = None, force: bool = False) -> None:
        """Make `change` (state writes) and route accordingly, or neither. Without `force`,
        a change that leaves the rendered config as it is does not reload nginx."""
        with reload_lock(self.paths.prefix):
            if self.mode() == MODE_SYSTEM:
                self._apply_system(change)
            else:
                self._apply_own(change, force)

    def _apply_own(self, change: Callable[[], None] | None, force: bool) -> None:
        self.master.prepare_dirs()
        with self.services.state.transaction():
            if change is not None:
                change()
            text = self.render()
            if not force and text == _read_text(self.paths.conf) and self.master.pid():
                return
            self._install(text)
        self.master.reload()

    def _install(self, text: str) -> None:
        """Test `text` as the whole configuration, then move it into place atomically."""
        conf = self.paths.conf
        tmp = conf.with_name(conf.name + ".new")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        try:
            self.master.test(tmp)
        except NginxError:
            tmp.unlink(missing_ok=True)
            raise
        os.replace(tmp, conf)

    def _apply_system(self, change: Callable[[], None] | None) -> None:
        conf_dir = self.system_conf_dir()
        nginx = SystemNginx()
        with self.services.state.transaction():
            if change is not None:
                change()
            routes = self.routes()
            sites = site_routes(self.services)
            listen = self.listen([*sites, *routes])
            wanted = {system_conf_path(conf_dir, r.app): render_server_block(r, listen)
                      for r in routes}  # fmt: skip
            # Sites' blocks live in the common file, whose name no app's file can have.
            wanted[conf_dir / SYSTEM_COMMON_FILE] = "\n".join(
                [render_upgrade_map(), *(render_server_block(s, listen) for s in sites)]
            )
            saved = _write_system_files(conf_dir, wanted)
            try:
                nginx.test()
            except NginxError:
                _restore_system_files(saved)
                raise
        nginx.reload()

    # Starting and watching our own master
    def is_serving(self) -> bool:
        """Is there an nginx that follows this data dir's routes right now?"""
        return self.mode() == MODE_SYSTEM or self.master.pid() is not None

    def start_or_adopt(self) -> int | None:
        """At server start: render from state, then reload the running master or start one."""
        self.record_listen()
        if self.mode() == MODE_SYSTEM:
            self.apply()
            return None
        with reload_lock(self.paths.prefix):
            self.master.prepare_dirs()
            self._install(self.render())
            pid, started = self.master.ensure_running()
            if not started:
                pid = self.master.reload()
            log.info("nginx ready", pid=pid, adopted=not started)
            return pid

    def reconcile(self) -> None:
        """Watchdog step: master alive and config equal to what state says, else fix it."""
        if self.mode() == MODE_SYSTEM:
            return
        with reload_lock(self.paths.prefix):
            text = self.render()
            changed = text != _read_text(self.paths.conf)
            if changed:
                self.master.prepare_dirs()
                self._install(text)
            if self.master.pid() is None:
                self.master.start()
            elif changed:
                self.master.reload()
            self._prune_certs()

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


def _read_text(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""


def _write_system_files(conf_dir: Path, wanted: dict[Path, str]) -> dict[Path, str | None]:
    """Write our files into conf.d, removing stale ones; returns what to restore."""
    saved: dict[Path, str | None] = {}
    existing = set(conf_dir.glob(f"{SYSTEM_FILE_PREFIX}*.conf"))
    for path in existing | set(wanted):
        try:
            saved[path] = path.read_text()
        except OSError:
            saved[path] = None
        if path in wanted:
            path.write_text(wanted[path])
        else:
            path.unlink(missing_ok=True)
    return saved


def _restore_system_files(saved: dict[Path, str | None]) -> None:
    for path, text in saved.items():
        if text is None:
            path.unlink(missing_ok=True)
        else:
            path.write_text(text)

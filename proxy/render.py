"""nginx configuration text, from plain values. Pure functions: no state, no files.

Every value placed in the text has been validated (proxy.validate) before it gets here;
these functions only arrange it.

The configuration is one main file (`render_main_config`: process settings, the shared
http settings, the default 404 servers, `include apps/*.conf`) and one file per routed app
(`render_server_block`: that app's upstream and server blocks, nothing shared), so one
app's file can be tested (`render_test_config`) and swapped without the others.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

HTTP_DEFAULT_PORT = 80
HTTPS_DEFAULT_PORT = 443
# Our own name for the upgrade map, so it cannot clash with one the system nginx defines.
UPGRADE_VAR = "$dockyard_connection_upgrade"
UPSTREAM_KEEPALIVE = 64
# A stable upstream (the app's VIP slots, forwarded by the kernel, proxy.dnat) closes its
# kept-alive connections after STABLE_KEEPALIVE_TIME of use or STABLE_KEEPALIVE_TIMEOUT
# idle, so none outlives a switch by more than their sum
# (proxy.router.DRAIN_SECONDS): after that no new request reaches a retired container.
STABLE_KEEPALIVE_TIME = "200ms"
STABLE_KEEPALIVE_TIMEOUT = "100ms"
# A retiring or not-yet-listening container must not fail a request: try the next one
# (for a stable upstream: the next slot, most often another container).
NEXT_UPSTREAM_TRIES = 3
NEXT_UPSTREAM_TIMEOUT = "10s"
CONNECT_TIMEOUT = "5s"
SEND_TIMEOUT = "60s"
READ_TIMEOUT = "60s"
NOT_FOUND_TEXT = "404 Not Found: no app is configured for this host\\n"
# HTTP-01 (RFC 8555 §8.3): the ACME server fetches http://NAME/.well-known/acme-challenge/TOKEN.
ACME_CHALLENGE_PREFIX = "/.well-known/acme-challenge/"
# Dokku's nginx defaults for Strict-Transport-Security.
DEFAULT_HSTS_MAX_AGE = 15724800


@dataclass(frozen=True)
class Listen:
    """Where the proxy listens. `https` is None when no app has a certificate."""

    http: tuple[str, int]
    https: tuple[str, int] | None = None


@dataclass(frozen=True)
class CertPaths:
    crt: Path
    key: Path


@dataclass(frozen=True)
class Hsts:
    """The Strict-Transport-Security header an app's HTTPS server sends (None: none)."""

    max_age: int = DEFAULT_HSTS_MAX_AGE
    include_subdomains: bool = True
    preload: bool = False

    def header(self) -> str:
        value = f"max-age={self.max_age}"
        if self.include_subdomains:
            value += "; includeSubDomains"
        if self.preload:
            value += "; preload"
        return value


@dataclass(frozen=True)
class AppRoute:
    app: str
    server_names: Sequence[str]
    upstreams: Sequence[str]
    client_max_body_size: str = "1m"
    cert: CertPaths | None = None
    # Where HTTP-01 tokens are served from (files under
    # ACME_ROOT/.well-known/acme-challenge/); None answers no challenges.
    acme_root: Path | None = None
    hsts: Hsts | None = None
    # True: `upstreams` are the app's stable VIP slots, which the kernel forwards to the
    # live containers (proxy.dnat); changing containers then changes no nginx text.
    stable: bool = False


@dataclass(frozen=True)
class NginxPaths:
    """Where Dockyard's own nginx master keeps everything (all under the data dir)."""

    prefix: Path
    user_root: bool = False
    worker_processes: str = "auto"
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def conf(self) -> Path:
        return self.prefix / "nginx.conf"

    @property
    def apps_dir(self) -> Path:
        """One file per routed app, included by the main config."""
        return self.prefix / "apps"

    @property
    def test_dir(self) -> Path:
        """Scratch configs for `nginx -t` of one app's file."""
        return self.prefix / "test"

    @property
    def pid(self) -> Path:
        return self.prefix / "nginx.pid"

    @property
    def error_log(self) -> Path:
        return self.prefix / "logs" / "error.log"

    @property
    def access_log(self) -> Path:
        return self.prefix / "logs" / "access.log"

    @property
    def temp_dir(self) -> Path:
        return self.prefix / "temp"

    @property
    def certs_dir(self) -> Path:
        return self.prefix / "certs"

    @property
    def acme_root(self) -> Path:
        return self.prefix / "acme"

    @property
    def acme_challenge_dir(self) -> Path:
        return self.acme_root / ACME_CHALLENGE_PREFIX.strip("/")


def listen_address(addr: tuple[str, int]) -> str:
    host, port = addr
    if ":" in host:
        return f"[{host}]:{port}"
    return f"{host}:{port}"


def upstream_name(app: str) -> str:
    return f"dockyard-{app}"


def render_upgrade_map() -> str:
    # Empty Connection for plain requests keeps upstream keepalive working; "upgrade" only
    # when the client asked for it (WebSocket).
    return f"map $http_upgrade {UPGRADE_VAR} {{\n    default upgrade;\n    ''      '';\n}}\n"


def render_default_server(listen: Listen) -> str:
    """Unknown hosts get a plain 404, never another app."""
    lines = [
        "server {",
        f"    listen {listen_address(listen.http)} default_server;",
        "    server_name _;",
        "    default_type text/plain;",
        f'    return 404 "{NOT_FOUND_TEXT}";',
        "}",
    ]
    if listen.https is not None:
        lines += [
            "server {",
            f"    listen {listen_address(listen.https)} ssl default_server;",
            "    server_name _;",
            # No certificate for unknown names: refuse the TLS handshake outright.
            "    ssl_reject_handshake on;",
            "}",
        ]
    return "\n".join(lines) + "\n"


def _proxy_location(route: AppRoute) -> list[str]:
    return [
        "    location / {",
        f"        proxy_pass http://{upstream_name(route.app)};",
        "        proxy_http_version 1.1;",
        "        proxy_set_header Upgrade $http_upgrade;",
        f"        proxy_set_header Connection {UPGRADE_VAR};",
        "        proxy_set_header Host $http_host;",
        "        proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;",
        "        proxy_set_header X-Forwarded-Proto $scheme;",
        "        proxy_set_header X-Forwarded-Host $host;",
        "        proxy_set_header X-Forwarded-Port $server_port;",
        "        proxy_set_header X-Request-Start t=${msec};",
        f"        proxy_connect_timeout {CONNECT_TIMEOUT};",
        "        proxy_buffer_size 16k;",
        "        proxy_buffers 16 16k;",
        "        proxy_busy_buffers_size 32k;",
        f"        proxy_send_timeout {SEND_TIMEOUT};",
        f"        proxy_read_timeout {READ_TIMEOUT};",
        "        proxy_next_upstream error timeout http_502;",
        f"        proxy_next_upstream_tries {NEXT_UPSTREAM_TRIES};",
        f"        proxy_next_upstream_timeout {NEXT_UPSTREAM_TIMEOUT};",
        "    }",
    ]


def _acme_location(route: AppRoute) -> list[str]:
    """HTTP-01 tokens straight from files: a `^~` prefix location wins over `location /`, so
    these paths never reach the app, and a missing token is nginx's own 404. nginx
    normalises the URI (`..`, `%2e%2e`, `%2f`) before matching, so nothing outside the
    challenge directory can be named through it."""
    if route.acme_root is None:
        return []
    return [
        f"    location ^~ {ACME_CHALLENGE_PREFIX} {{",
        f"        root {route.acme_root};",
        "        default_type text/plain;",
        "        try_files $uri =404;",
        "    }",
    ]


def render_server_block(route: AppRoute, listen: Listen) -> str:
    """The upstream and server blocks that route one app's host names to its containers."""
    names = " ".join(route.server_names)
    lines = [f"upstream {upstream_name(route.app)} {{"]
    if route.stable:
        # The app's slots (proxy.dnat): each stands for whichever container the kernel
        # forwards it to now, so none is ever marked down for a failure of the container
        # that was there before.
        lines += [f"    server {u} max_fails=0;" for u in route.upstreams]
        lines += [
            f"    keepalive {UPSTREAM_KEEPALIVE};",
            f"    keepalive_time {STABLE_KEEPALIVE_TIME};",
            f"    keepalive_timeout {STABLE_KEEPALIVE_TIMEOUT};",
            "}",
        ]
    elif route.upstreams:
        lines += [f"    server {u} max_fails=1 fail_timeout=5s;" for u in route.upstreams]
        lines += [f"    keepalive {UPSTREAM_KEEPALIVE};", "}"]
    else:
        # Routed to no container (stopped): every request is a 502 at once.
        lines += ["    server 127.0.0.1:1 down;", "}"]
    common = [
        f"    server_name {names};",
        f"    client_max_body_size {route.client_max_body_size};",
    ]
    if route.cert is None or listen.https is None:
        lines += ["server {", f"    listen {listen_address(listen.http)};", *common]
        lines += [*_acme_location(route), *_proxy_location(route), "}"]
        return "\n".join(lines) + "\n"
    port = listen.https[1]
    suffix = "" if port == HTTPS_DEFAULT_PORT else f":{port}"
    # The redirect lives in `location /`, not at server level: a server-level `return` runs
    # before any location is chosen and would redirect the ACME server's challenge requests
    # too (Let's Encrypt follows them, other ACME servers need not).
    hsts = [] if route.hsts is None else [
        f'    add_header Strict-Transport-Security "{route.hsts.header()}" always;'
    ]  # fmt: skip
    lines += [
        "server {",
        f"    listen {listen_address(listen.http)};",
        f"    server_name {names};",
        *_acme_location(route),
        "    location / {",
        f"        return 301 https://$host{suffix}$request_uri;",
        "    }",
        "}",
        "server {",
        f"    listen {listen_address(listen.https)} ssl;",
        *common,
        # The file holds the leaf and its intermediates (the full chain), leaf first.
        f"    ssl_certificate {route.cert.crt};",
        f"    ssl_certificate_key {route.cert.key};",
        "    ssl_protocols TLSv1.2 TLSv1.3;",
        "    ssl_session_cache shared:dockyard_ssl:10m;",
        *hsts,
        *_proxy_location(route),
        "}",
    ]
    return "\n".join(lines) + "\n"


def render_app_file(route: AppRoute, listen: Listen) -> str:
    """The whole file of one routed app (its own upstream and servers, nothing shared)."""
    return f"# app {route.app}; written by Dockyard, edits here are overwritten\n" + (
        render_server_block(route, listen)
    )


def _events_and_process(paths: NginxPaths, pid: Path, error_log: Path) -> str:
    user = "user root;\n" if paths.user_root else ""
    return (
        f"{user}"
        "daemon on;\n"
        f"worker_processes {paths.worker_processes};\n"
        "worker_rlimit_nofile 16384;\n"
        f"pid {pid};\n"
        f"error_log {error_log} warn;\n"
        "\n"
        "events {\n"
        "    worker_connections 4096;\n"
        "}\n"
        "\n"
    )


def _http_settings(paths: NginxPaths) -> str:
    """The http-level settings every app's file is written against, main and test alike."""
    temp = paths.temp_dir
    body = render_upgrade_map()
    indented = "".join(f"    {line}\n" if line else "\n" for line in body.splitlines())
    return (
        f"    client_body_temp_path {temp / 'client_body'};\n"
        f"    proxy_temp_path {temp / 'proxy'};\n"
        f"    fastcgi_temp_path {temp / 'fastcgi'};\n"
        f"    uwsgi_temp_path {temp / 'uwsgi'};\n"
        f"    scgi_temp_path {temp / 'scgi'};\n"
        f"    access_log {paths.access_log} combined buffer=64k flush=1s;\n"
        "    server_tokens off;\n"
        "    sendfile on;\n"
        "    tcp_nodelay on;\n"
        "    keepalive_timeout 65s;\n"
        "    keepalive_requests 10000;\n"
        "    server_names_hash_bucket_size 128;\n"
        "    server_names_hash_max_size 4096;\n"
        "    types_hash_max_size 2048;\n"
        "    default_type application/octet-stream;\n"
        "\n"
        f"{indented}"
    )


def render_main_config(paths: NginxPaths, listen: Listen) -> str:
    """The main nginx.conf of Dockyard's own master: shared settings, the default 404
    servers and every app's file from `paths.apps_dir`."""
    default = render_default_server(listen)
    indented = "".join(f"    {line}\n" if line else "\n" for line in default.splitlines())
    return (
        "# Written by Dockyard; edits here are overwritten.\n"
        + _events_and_process(paths, paths.pid, paths.error_log)
        + "http {\n"
        + _http_settings(paths)
        + "\n"
        + indented
        + "\n"
        + f"    include {paths.apps_dir}/*.conf;\n"
        + "}\n"
    )


def render_test_config(paths: NginxPaths, app_file: Path) -> str:
    """A config around one app's file alone, for `nginx -t`: the same http settings as
    the main config, so what passes here loads there, and nothing of the other apps."""
    scratch = paths.test_dir
    return (
        _events_and_process(paths, scratch / "nginx.pid", paths.error_log)
        + "http {\n"
        + _http_settings(paths)
        + f"    include {app_file};\n"
        + "}\n"
    )

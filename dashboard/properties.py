"""The dashboard's settings, declared once (`dashboard:set`, `dashboard:report` derive from
these). All are global: they concern the server, not an app, so only an admin sets them.

Invariant: `listen` accepts loopback addresses only. The dashboard's one client is nginx on
the same machine, and it trusts that client's `X-Forwarded-Proto`; a public listener would
let anyone bypass the proxy and its TLS.
"""

from __future__ import annotations

import ipaddress

from dockyard.errors import UsageError
from dockyard.properties import BOOLEAN, BadValue, Level, PropertyGroup, whole_number
from dockyard.settings import parse_listen


def parse_listen_value(value: str) -> str:
    try:
        host, port = parse_listen(value)
    except UsageError:
        raise BadValue("takes HOST:PORT on a loopback address, like 127.0.0.1:8090") from None
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise BadValue("must be a loopback address (127.0.0.1:PORT or [::1]:PORT)")
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


DASHBOARD = PropertyGroup("dashboard")
LISTEN = DASHBOARD.declare(
    "listen", parse_listen_value, levels=Level.GLOBAL,
    help="the dashboard's private address: unset for a unix socket under the data dir, else "
    "a loopback HOST:PORT (port 0: any free port); nginx is its only client",
    note="Takes effect when `dockyard serve` next starts",
)  # fmt: skip
LOGIN_TTL = DASHBOARD.declare(
    "login-ttl", whole_number(2, 3600), int, default="300", levels=Level.GLOBAL,
    help="seconds a `dashboard:login` link stays valid (it works once)",
)  # fmt: skip
SESSION_TTL = DASHBOARD.declare(
    "session-ttl", whole_number(60, 7 * 86400), int, default="14400", levels=Level.GLOBAL,
    help="seconds a dashboard session lasts from sign-in",
)  # fmt: skip
TOKEN_TTL = DASHBOARD.declare(
    "token-ttl", whole_number(1, 365), int, default="90", levels=Level.GLOBAL,
    help="days a `dashboard:token` API token stays valid",
)  # fmt: skip
METRICS = DASHBOARD.declare(
    "metrics", BOOLEAN, lambda v: v == "true", default="true", levels=Level.GLOBAL,
    help="read nginx's access log into per-app traffic metrics",
)  # fmt: skip
STATS_INTERVAL = DASHBOARD.declare(
    "stats-interval", whole_number(5, 3600), int, default="30", levels=Level.GLOBAL,
    help="seconds between samples of the containers' CPU and memory",
)  # fmt: skip

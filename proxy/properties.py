"""The proxy's settings, declared once (`proxy:set`, `proxy:report` come from these).
Every change goes through `Router.apply`: rendered, tested by nginx, then swapped in."""

from __future__ import annotations

from dockyard.names import is_whole_number
from dockyard.properties import BOOLEAN, BadValue, Level, PropertyGroup, whole_number
from proxy.render import DEFAULT_HSTS_MAX_AGE
from proxy.validate import MAX_HSTS_MAX_AGE, check_body_size, check_conf_dir

MODE_OWN = "dockyard"
MODE_SYSTEM = "system"
MODES = (MODE_OWN, MODE_SYSTEM)


def _mode(value: str) -> str:
    if value not in MODES:
        raise BadValue(f"is one of: {', '.join(MODES)}")
    return value


PROXY = PropertyGroup("proxy")


def _large_body(value: str) -> bool:
    """No limit, or above 1 GiB: request bodies are spooled to the data dir's disk."""
    units = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3}
    number, unit = (value[:-1], value[-1].lower()) if value[-1:].isalpha() else (value, "")
    return is_whole_number(number) and (
        int(number) == 0 or int(number) * units.get(unit, 1) > 1024**3
    )


BODY_SIZE = PROXY.declare(
    "client-max-body-size", check_body_size, default="1m", admin_only=_large_body,
    help="largest request body nginx passes on (10m; 0: no limit; above 1g or 0: admins)",
)  # fmt: skip
MODE = PROXY.declare(
    "mode", _mode, default=MODE_OWN, levels=Level.GLOBAL,
    help="`dockyard`: Dockyard's own nginx master; `system`: files in the system nginx",
)  # fmt: skip
SYSTEM_CONF_DIR = PROXY.declare(
    "system-conf-dir", lambda v: str(check_conf_dir(v)), default="/etc/nginx/conf.d",
    levels=Level.GLOBAL, help="where mode `system` writes its server blocks",
)  # fmt: skip
# Strict-Transport-Security on HTTPS answers, with Dokku's names and defaults.
HSTS = PROXY.declare(
    "hsts", BOOLEAN, lambda v: v == "true", default="true",
    help="send Strict-Transport-Security on HTTPS answers",
)  # fmt: skip
HSTS_MAX_AGE = PROXY.declare(
    "hsts-max-age", whole_number(0, MAX_HSTS_MAX_AGE), int, default=str(DEFAULT_HSTS_MAX_AGE),
    help="HSTS max-age in seconds",
)  # fmt: skip
HSTS_INCLUDE_SUBDOMAINS = PROXY.declare(
    "hsts-include-subdomains", BOOLEAN, lambda v: v == "true", default="true",
    help="HSTS covers the app's subdomains too",
)  # fmt: skip
HSTS_PRELOAD = PROXY.declare(
    "hsts-preload", BOOLEAN, lambda v: v == "true", default="false",
    help="ask browsers' HSTS preload lists to include the app",
)  # fmt: skip
